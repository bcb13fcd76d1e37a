// Package auth issues and verifies the bearer tokens of LiveDrops: HS256 JWTs whose subject is the user
// id, with issuer, audience and expiry always checked and a little clock skew tolerated. A token that
// verified is remembered (by its exact text) until it expires, so a client sending the same token
// again costs a map lookup instead of a signature check and a JSON parse.
package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// MinSecretLen is the shortest HMAC secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
const MinSecretLen = 32

// ErrInvalidToken is returned for any token that must not be trusted: malformed, badly signed, expired,
// not yet valid, for another issuer or audience, or without a numeric subject.
var ErrInvalidToken = errors.New("invalid token")

// Config configures a Tokens. Zero values are the documented defaults.
type Config struct {
	// Secret is the HMAC key (required, at least MinSecretLen bytes).
	Secret []byte
	// Issuer is the iss claim written and required; "" means "livedrops".
	Issuer string
	// Audience is the aud claim written and required; "" means "livedrops".
	Audience string
	// TTL is the lifetime of minted tokens; 0 means 24 h.
	TTL time.Duration
	// Leeway is the clock skew tolerated on exp, nbf and iat; 0 means 30 s.
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CacheSize is how many verified tokens are remembered; 0 means 32,768, negative turns the
	// cache off. Past it, some remembered tokens are forgotten (and verified again when they come).
	CacheSize int
}

// Tokens mints and verifies tokens with one configuration. It is safe for concurrent use.
type Tokens struct {
	cfg    Config
	parser *jwt.Parser
	seed   maphash.Seed
	shards []cacheShard // nil when the cache is off
}

// cacheShard remembers verified tokens: the text of the token → its user and the last moment it is
// valid (exp plus the leeway). Only tokens whose signature, issuer, audience, nbf and iat checked out
// are kept; nbf and iat cannot stop being valid later, exp is checked again on every use.
type cacheShard struct {
	mu     sync.Mutex
	tokens map[string]verified
}

type verified struct {
	userID int64
	until  time.Time
}

const cacheShards = 16

// New validates cfg and returns a Tokens.
func New(cfg Config) (*Tokens, error) {
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("auth: secret is %d bytes, need at least %d", len(cfg.Secret), MinSecretLen)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "livedrops"
	}
	if cfg.Audience == "" {
		cfg.Audience = "livedrops"
	}
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.TTL < 0 || cfg.Leeway < 0 {
		return nil, errors.New("auth: TTL and Leeway must not be negative")
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 32_768
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
	)
	t := &Tokens{cfg: cfg, parser: parser, seed: maphash.MakeSeed()}
	if cfg.CacheSize > 0 {
		t.shards = make([]cacheShard, cacheShards)
		for i := range t.shards {
			t.shards[i].tokens = make(map[string]verified)
		}
	}
	return t, nil
}

// Mint returns a signed token for userID that expires after ttl (0 means the configured TTL).
func (t *Tokens) Mint(userID int64, ttl time.Duration) (string, error) {
	if userID <= 0 {
		return "", fmt.Errorf("auth: mint: user id %d is not positive", userID)
	}
	if ttl <= 0 {
		ttl = t.cfg.TTL
	}
	now := t.cfg.Now()
	claims := jwt.RegisteredClaims{
		Issuer:    t.cfg.Issuer,
		Subject:   strconv.FormatInt(userID, 10),
		Audience:  jwt.ClaimStrings{t.cfg.Audience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.cfg.Secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return s, nil
}

// Verify checks a token and returns its user id. Every failure wraps ErrInvalidToken.
func (t *Tokens) Verify(token string) (int64, error) {
	id, _, err := t.VerifyExpiry(token)
	return id, err
}

// VerifyExpiry is Verify that also returns until when the token verifies: its expiry plus the leeway,
// the moment Verify starts refusing it (a hub closes an open socket then).
func (t *Tokens) VerifyExpiry(token string) (userID int64, validUntil time.Time, err error) {
	if t.shards == nil {
		return t.verifyClaims(token)
	}
	sh := &t.shards[maphash.String(t.seed, token)%cacheShards]
	sh.mu.Lock()
	v, ok := sh.tokens[token]
	sh.mu.Unlock()
	if ok {
		if t.cfg.Now().Before(v.until) {
			return v.userID, v.until, nil
		}
		sh.mu.Lock()
		delete(sh.tokens, token)
		sh.mu.Unlock()
		return 0, time.Time{}, fmt.Errorf("%w: token has expired", ErrInvalidToken)
	}
	id, until, err := t.verifyClaims(token)
	if err != nil {
		return 0, time.Time{}, err
	}
	sh.mu.Lock()
	if limit := max(1, t.cfg.CacheSize/cacheShards); len(sh.tokens) >= limit {
		// Forget the expired, then any, until a quarter of the room is free.
		now := t.cfg.Now()
		for k, e := range sh.tokens {
			if !now.Before(e.until) {
				delete(sh.tokens, k)
			}
		}
		for k := range sh.tokens {
			if len(sh.tokens) < limit*3/4 {
				break
			}
			delete(sh.tokens, k)
		}
	}
	sh.tokens[token] = verified{userID: id, until: until}
	sh.mu.Unlock()
	return id, until, nil
}

// verifyClaims checks a token and returns its user id and the last moment it is valid.
func (t *Tokens) verifyClaims(token string) (int64, time.Time, error) {
	var c claims
	_, err := t.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.cfg.Secret, nil })
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || id <= 0 {
		return 0, time.Time{}, fmt.Errorf("%w: subject %q is not a user id", ErrInvalidToken, c.Subject)
	}
	// WithExpirationRequired: the token has an exp. The parser accepts a token while now is before
	// exp + leeway; the cache does the same.
	exp, _ := c.GetExpirationTime() // read once already, by the validator
	return id, exp.Add(t.cfg.Leeway), nil
}

// claims are the registered claims of a token as jwt.RegisteredClaims has them, but the dates are
// kept as the JSON numbers they are (json.Number, as jwt.NumericDate reads them) and the audience as
// its JSON text, and both are decoded when the validator asks for them: RegisteredClaims decodes each
// date and the audience with a json.Unmarshal of its own inside the claims' decoding, which made the
// claims most of a verification's CPU and the deepest stack a hub's socket setup grows (its goroutine
// is new for every socket: BENCHMARKS.md, issue 11). golang-jwt's validator reads them through the
// jwt.Claims methods, as it reads RegisteredClaims, and accepts and refuses the same tokens.
type claims struct {
	Issuer    string          `json:"iss"`
	Subject   string          `json:"sub"`
	Audience  json.RawMessage `json:"aud"`
	ExpiresAt json.Number     `json:"exp"`
	NotBefore json.Number     `json:"nbf"`
	IssuedAt  json.Number     `json:"iat"`
}

func (c *claims) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(c.ExpiresAt) }
func (c *claims) GetNotBefore() (*jwt.NumericDate, error)      { return numericDate(c.NotBefore) }
func (c *claims) GetIssuedAt() (*jwt.NumericDate, error)       { return numericDate(c.IssuedAt) }
func (c *claims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *claims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *claims) GetAudience() (jwt.ClaimStrings, error)       { return parseAudience(c.Audience) }

// numericDate reads a date claim as jwt.NumericDate does (seconds, fractions kept, then truncated to
// jwt.TimePrecision); nil when the claim is absent or null. A whole number of seconds that a float64
// holds exactly is read without strconv.ParseFloat (the same value, and a smaller stack).
func numericDate(n json.Number) (*jwt.NumericDate, error) {
	if n == "" {
		return nil, nil
	}
	if sec, err := strconv.ParseInt(string(n), 10, 64); err == nil && -1<<53 < sec && sec < 1<<53 {
		return jwt.NewNumericDate(time.Unix(sec, 0)), nil
	}
	f, err := n.Float64()
	if err != nil {
		return nil, fmt.Errorf("could not convert json number value to float: %w", err)
	}
	whole, frac := math.Modf(f)
	return jwt.NewNumericDate(time.Unix(int64(whole), int64(frac*1e9))), nil
}

// parseAudience reads an aud claim as jwt.ClaimStrings does: one string, an array of strings, or null
// or absent (none); anything else is jwt.ErrInvalidType. The usual one-element array of a plain string
// is read without a json.Unmarshal.
func parseAudience(raw json.RawMessage) (jwt.ClaimStrings, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if s, ok := bytes.CutPrefix(raw, []byte(`["`)); ok {
		if s, ok := bytes.CutSuffix(s, []byte(`"]`)); ok && !bytes.ContainsAny(s, `"\`) && utf8.Valid(s) {
			return jwt.ClaimStrings{string(s)}, nil
		}
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return jwt.ClaimStrings{s}, nil
	case '[':
		var list []*string // a null element is refused, not read as ""
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, jwt.ErrInvalidType
		}
		out := make(jwt.ClaimStrings, len(list))
		for i, s := range list {
			if s == nil {
				return nil, jwt.ErrInvalidType
			}
			out[i] = *s
		}
		return out, nil
	}
	return nil, jwt.ErrInvalidType
}

// BearerToken extracts the token of an `Authorization: Bearer <token>` header value; ok is false when the
// header is absent or of another scheme.
func BearerToken(header string) (token string, ok bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(header), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
