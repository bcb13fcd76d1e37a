// Package auth issues and verifies the bearer tokens of LiveDrops: HS256 JWTs whose subject is the user
// id, with issuer, audience and expiry always checked and a little clock skew tolerated.
package auth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

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
}

// Tokens mints and verifies tokens with one configuration.
type Tokens struct {
	cfg    Config
	parser *jwt.Parser
}

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
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
	)
	return &Tokens{cfg: cfg, parser: parser}, nil
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
	var claims jwt.RegisteredClaims
	_, err = t.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return t.cfg.Secret, nil })
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return 0, time.Time{}, fmt.Errorf("%w: subject %q is not a user id", ErrInvalidToken, claims.Subject)
	}
	return id, claims.ExpiresAt.Add(t.cfg.Leeway), nil
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
