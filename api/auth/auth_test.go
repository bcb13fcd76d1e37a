package auth_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/livedrops/livedrops/api/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func newTokens(t *testing.T, now func() time.Time) *auth.Tokens {
	t.Helper()
	tk, err := auth.New(auth.Config{Secret: secret, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestMintVerifyRoundTrip(t *testing.T) {
	tk := newTokens(t, nil)
	tok, err := tk.Mint(42, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Verify(tok)
	if err != nil || got != 42 {
		t.Fatalf("Verify = %d, %v; want 42, nil", got, err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tk := newTokens(t, clock)
	sign := func(claims jwt.Claims, method jwt.SigningMethod, key any) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := func() jwt.RegisteredClaims {
		return jwt.RegisteredClaims{Issuer: "livedrops", Subject: "7", Audience: jwt.ClaimStrings{"livedrops"},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	}
	with := func(f func(*jwt.RegisteredClaims)) jwt.RegisteredClaims { c := base(); f(&c); return c }

	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"garbage", "not.a.jwt"},
		{"wrong secret", sign(base(), jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"))},
		{"alg none", sign(base(), jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType)},
		{"HS512", sign(base(), jwt.SigningMethodHS512, secret)},
		{"expired beyond leeway", sign(with(func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute)) }), jwt.SigningMethodHS256, secret)},
		{"no expiry", sign(with(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }), jwt.SigningMethodHS256, secret)},
		{"not yet valid", sign(with(func(c *jwt.RegisteredClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }), jwt.SigningMethodHS256, secret)},
		{"other issuer", sign(with(func(c *jwt.RegisteredClaims) { c.Issuer = "evil" }), jwt.SigningMethodHS256, secret)},
		{"other audience", sign(with(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"other"} }), jwt.SigningMethodHS256, secret)},
		{"subject not a number", sign(with(func(c *jwt.RegisteredClaims) { c.Subject = "alice" }), jwt.SigningMethodHS256, secret)},
		{"subject zero", sign(with(func(c *jwt.RegisteredClaims) { c.Subject = "0" }), jwt.SigningMethodHS256, secret)},
		{"subject negative", sign(with(func(c *jwt.RegisteredClaims) { c.Subject = "-3" }), jwt.SigningMethodHS256, secret)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tk.Verify(tc.token)
			if !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("Verify = %d, %v; want ErrInvalidToken", id, err)
			}
		})
	}
}

func TestClockSkewTolerated(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	minter := newTokens(t, func() time.Time { return now.Add(10 * time.Second) }) // issuer's clock runs ahead
	verifier := newTokens(t, func() time.Time { return now })
	tok, err := minter.Mint(9, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifier.Verify(tok); err != nil {
		t.Fatalf("10 s of skew refused: %v", err)
	}
}

func TestNewRefusesShortSecret(t *testing.T) {
	if _, err := auth.New(auth.Config{Secret: []byte("short")}); err == nil {
		t.Fatal("short secret accepted")
	}
}

func TestMintRefusesBadUser(t *testing.T) {
	if _, err := newTokens(t, nil).Mint(0, 0); err == nil {
		t.Fatal("user 0 minted")
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer  abc ", "abc", true},
		{"Basic abc", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		got, ok := auth.BearerToken(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzVerify(f *testing.F) {
	tk, err := auth.New(auth.Config{Secret: secret})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := tk.Mint(1, 0)
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add(strings.Repeat("A", 1000))
	f.Fuzz(func(t *testing.T, token string) {
		id, err := tk.Verify(token)
		if err == nil && id <= 0 {
			t.Fatalf("accepted token with user id %d", id)
		}
		if err != nil && !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("error %v does not wrap ErrInvalidToken", err)
		}
	})
}

func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer\tx", "Basic Zm9v", "", "Bearer", " Bearer  t "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, ok := auth.BearerToken(header)
		if ok != (tok != "") {
			t.Fatalf("BearerToken(%q) = %q, %v: ok must mean a token", header, tok, ok)
		}
		if ok && (strings.TrimSpace(tok) != tok || !strings.Contains(header, tok)) {
			t.Fatalf("BearerToken(%q) = %q: not a trimmed part of the header", header, tok)
		}
	})
}

// TestVerifyCache: a remembered token answers like a verified one, and stops being valid at the
// moment the parser would refuse it; the cache's size is bounded; off, every call verifies.
func TestVerifyCache(t *testing.T) {
	for _, size := range []int{0, -1, 8} {
		t.Run(fmt.Sprintf("size %d", size), func(t *testing.T) {
			var mu sync.Mutex
			now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
			tk, err := auth.New(auth.Config{Secret: secret, Now: clock, TTL: time.Minute, Leeway: 10 * time.Second, CacheSize: size})
			if err != nil {
				t.Fatal(err)
			}
			tokens := make([]string, 40)
			for i := range tokens {
				if tokens[i], err = tk.Mint(int64(i+1), 0); err != nil {
					t.Fatal(err)
				}
			}
			// Twice over, so the second round is answered from the cache (or, past its size, verified again).
			for round := range 2 {
				var wg sync.WaitGroup
				for i, tok := range tokens {
					wg.Go(func() {
						if got, err := tk.Verify(tok); err != nil || got != int64(i+1) {
							t.Errorf("round %d: Verify(token of %d) = %d, %v", round, i+1, got, err)
						}
					})
				}
				wg.Wait()
			}
			// A token differing in one character of its signature is refused, cached twin or not.
			dot := strings.LastIndexByte(tokens[0], '.')
			swap := byte('A')
			if tokens[0][dot+1] == 'A' {
				swap = 'B'
			}
			tampered := tokens[0][:dot+1] + string(swap) + tokens[0][dot+2:]
			if _, err := tk.Verify(tampered); !errors.Is(err, auth.ErrInvalidToken) {
				t.Errorf("tampered token: got %v, want ErrInvalidToken", err)
			}
			// Valid until exp + leeway, not a moment longer.
			advance(time.Minute + 10*time.Second - time.Millisecond)
			if _, err := tk.Verify(tokens[1]); err != nil {
				t.Errorf("just before exp + leeway: got %v, want valid", err)
			}
			advance(time.Millisecond)
			for round := range 2 {
				if _, err := tk.Verify(tokens[1]); !errors.Is(err, auth.ErrInvalidToken) {
					t.Errorf("at exp + leeway (call %d): got %v, want ErrInvalidToken", round+1, err)
				}
			}
		})
	}
}

// VerifyExpiry says until when a token verifies: its expiry plus the leeway, after which Verify refuses it.
func TestVerifyExpiry(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := now
	tk := newTokens(t, func() time.Time { return clock })
	tok, err := tk.Mint(9, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, until, err := tk.VerifyExpiry(tok)
	if want := now.Add(time.Hour + 30*time.Second); err != nil || id != 9 || !until.Equal(want) {
		t.Fatalf("VerifyExpiry = %d, %s, %v; want 9, %s, nil", id, until, err, want)
	}
	if id2, until2, err := tk.VerifyExpiry(tok); err != nil || id2 != 9 || !until2.Equal(until) {
		t.Fatalf("VerifyExpiry again (remembered) = %d, %s, %v; want 9, %s, nil", id2, until2, err, until)
	}
	clock = until.Add(-time.Second)
	if _, err := tk.Verify(tok); err != nil {
		t.Errorf("a second before validUntil: %v", err)
	}
	clock = until.Add(time.Second)
	if _, err := tk.Verify(tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a second after validUntil: got %v, want ErrInvalidToken", err)
	}
}
