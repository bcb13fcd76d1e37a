package auth_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
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

// reference verifies token as golang-jwt's own RegisteredClaims would, with the options auth.New uses:
// what Verify must agree with (claims are decoded by auth's own type, BENCHMARKS.md issue 11).
func reference(token string, now time.Time) (int64, time.Time, bool) {
	p := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithIssuer("livedrops"),
		jwt.WithAudience("livedrops"), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithLeeway(30*time.Second), jwt.WithTimeFunc(func() time.Time { return now }))
	var c jwt.RegisteredClaims
	if _, err := p.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return secret, nil }); err != nil {
		return 0, time.Time{}, false
	}
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || id <= 0 {
		return 0, time.Time{}, false
	}
	return id, c.ExpiresAt.Add(30 * time.Second), true
}

// signClaims signs a claims set given as JSON text, as any HS256 issuer would.
func signClaims(tb testing.TB, claimsJSON string) string {
	tb.Helper()
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claimsJSON))
	sig, err := jwt.SigningMethodHS256.Sign(unsigned, secret)
	if err != nil {
		tb.Fatal(err)
	}
	return unsigned + "." + enc.EncodeToString(sig)
}

// TestClaimsAsRegisteredClaims: every shape of the claims a token may carry is accepted or refused as
// jwt.RegisteredClaims would have it, with the same user and expiry.
func TestClaimsAsRegisteredClaims(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tk := newTokens(t, func() time.Time { return now })
	n := now.Unix()
	tests := []struct {
		name, claims string
		ok           bool
	}{
		{"minted shape", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":["livedrops"],"exp":%d,"nbf":%d,"iat":%d}`, n+60, n, n), true},
		{"audience as one string", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d}`, n+60), true},
		{"audience among others", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":["x","livedrops"],"exp":%d}`, n+60), true},
		{"escaped strings", fmt.Sprintf(`{"iss":"live\u0064rops","sub":"\u0037","aud":["liv\u0065drops"],"exp":%d}`, n+60), true},
		{"fractional dates", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d.75,"iat":%d.5}`, n+60, n), true},
		{"exponent date", `{"iss":"livedrops","sub":"7","aud":"livedrops","exp":1.8e9}`, true},
		{"keys in other case", fmt.Sprintf(`{"ISS":"livedrops","Sub":"7","AUD":"livedrops","Exp":%d}`, n+60), true},
		{"unknown claims", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d,"jti":"x","role":{"a":[1]}}`, n+60), true},
		{"null nbf and iat", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d,"nbf":null,"iat":null}`, n+60), true},
		{"within leeway", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d}`, n-20), true},
		{"expired", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d}`, n-31), false},
		{"no exp", `{"iss":"livedrops","sub":"7","aud":"livedrops"}`, false},
		{"null exp", `{"iss":"livedrops","sub":"7","aud":"livedrops","exp":null}`, false},
		{"exp a bool", `{"iss":"livedrops","sub":"7","aud":"livedrops","exp":true}`, false},
		{"issued in the future", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d,"iat":%d}`, n+600, n+60), false},
		{"not yet valid", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d,"nbf":%d}`, n+600, n+60), false},
		{"no audience", fmt.Sprintf(`{"iss":"livedrops","sub":"7","exp":%d}`, n+60), false},
		{"null audience", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":null,"exp":%d}`, n+60), false},
		{"empty audience", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":[],"exp":%d}`, n+60), false},
		{"audience a number", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":5,"exp":%d}`, n+60), false},
		{"audience with a null", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":["livedrops",null],"exp":%d}`, n+60), false},
		{"audience with a number", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":["livedrops",1],"exp":%d}`, n+60), false},
		{"other audience", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"other","exp":%d}`, n+60), false},
		{"other issuer", fmt.Sprintf(`{"iss":"other","sub":"7","aud":"livedrops","exp":%d}`, n+60), false},
		{"subject a number", fmt.Sprintf(`{"iss":"livedrops","sub":7,"aud":"livedrops","exp":%d}`, n+60), false},
		{"claims an array", `[1,2]`, false},
		{"claims not JSON", `{"iss":`, false},
		{"exp in a string", fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":"%d"}`, n+60), true},
		{"exp a string but no number", `{"iss":"livedrops","sub":"7","aud":"livedrops","exp":"soon"}`, false},
		{"exp past what a float64 holds exactly", `{"iss":"livedrops","sub":"7","aud":"livedrops","exp":9007199254740993}`, true},
		{"exp past int64 seconds", `{"iss":"livedrops","sub":"7","aud":"livedrops","exp":99999999999999999999}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token := signClaims(t, tc.claims)
			id, until, err := tk.VerifyExpiry(token)
			if got := err == nil; got != tc.ok {
				t.Fatalf("VerifyExpiry(%s) = %d, %v; want ok %v", tc.claims, id, err, tc.ok)
			}
			if err != nil && !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			refID, refUntil, refOK := reference(token, now)
			if refOK != tc.ok || tc.ok && (refID != id || !refUntil.Equal(until)) {
				t.Fatalf("jwt.RegisteredClaims: %d, %s, ok %v; auth: %d, %s, ok %v", refID, refUntil, refOK, id, until, tc.ok)
			}
		})
	}
}

// FuzzClaims: whatever claims a correctly signed token carries, Verify accepts it exactly when
// jwt.RegisteredClaims does, with the same user and expiry.
func FuzzClaims(f *testing.F) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	n := now.Unix()
	f.Add(fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":["livedrops"],"exp":%d,"nbf":%d,"iat":%d}`, n+60, n, n))
	f.Add(fmt.Sprintf(`{"iss":"livedrops","sub":"7","aud":"livedrops","exp":%d.5}`, n+60))
	f.Add(`{"iss":"livedrops","sub":"1","aud":["a",null],"exp":1e10}`)
	f.Add(`{"aud":{"x":1},"exp":"1"}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, claimsJSON string) {
		tk, err := auth.New(auth.Config{Secret: secret, Now: func() time.Time { return now }, CacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		token := signClaims(t, claimsJSON)
		id, until, err := tk.VerifyExpiry(token)
		if err != nil && !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("error %v does not wrap ErrInvalidToken", err)
		}
		refID, refUntil, refOK := reference(token, now)
		if refOK != (err == nil) || refOK && (refID != id || !refUntil.Equal(until)) {
			t.Fatalf("claims %s: auth accepts user %d until %s; jwt.RegisteredClaims: %d, %s, ok %v",
				claimsJSON, id, until, refID, refUntil, refOK)
		}
	})
}

// BenchmarkVerifyUncached is the verification of a token seen for the first time (a socket's connect).
func BenchmarkVerifyUncached(b *testing.B) {
	tk, err := auth.New(auth.Config{Secret: secret, CacheSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	token, err := tk.Mint(123456, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tk.Verify(token); err != nil {
			b.Fatal(err)
		}
	}
}
