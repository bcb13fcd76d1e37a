package webpush

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The encoders of Config.Encoder.
const (
	// EncoderStdlib (the default) builds the RFC 8291 aes128gcm message with the standard library's
	// crypto/ecdh and signs one VAPID JWT per push service an hour, where webpush-go signs one per
	// message: about 40% less CPU per push in bench-push (BENCHMARKS.md), the difference between
	// meeting its 30 s target and not.
	EncoderStdlib = "stdlib"
	// EncoderLibrary builds each message with github.com/SherClockHolmes/webpush-go. The tests send
	// through both encoders to the same push-service stand-in, so the library is the reference the
	// stdlib encoder is held to.
	EncoderLibrary = "webpush-go"
)

// stdlibEncoder is EncoderStdlib's state: the VAPID key and the JWTs signed so far.
type stdlibEncoder struct {
	key     *ecdsa.PrivateKey
	pub     string // base64url, the k= of the header
	subject string // with its mailto: or https:
	now     func() time.Time

	mu   sync.Mutex
	jwts map[string]vapidHeader // origin -> header
}

func newStdlibEncoder(cfg Config) (*stdlibEncoder, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(cfg.VAPIDPrivateKey, "="))
	if err != nil {
		return nil, errors.New("webpush: VAPID private key is not base64url")
	}
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("webpush: VAPID private key: %w", err)
	}
	subject := cfg.Subject
	if !strings.HasPrefix(subject, "https:") {
		subject = "mailto:" + subject // New trimmed a mailto: prefix for the library's sake
	}
	return &stdlibEncoder{key: key, pub: strings.TrimRight(cfg.VAPIDPublicKey, "="), subject: subject, now: cfg.Now,
		jwts: map[string]vapidHeader{}}, nil
}

// authorization is the VAPID Authorization header for endpoint's origin (RFC 8292 §3), signed once an
// hour per origin; the JWT is valid for 12 hours (Apple refuses more than 24).
func (e *stdlibEncoder) authorization(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", err
	}
	origin := u.Scheme + "://" + u.Host
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if h, ok := e.jwts[origin]; ok && now.Before(h.until) {
		return h.value, nil
	}
	t, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"aud": origin, "exp": now.Add(12 * time.Hour).Unix(), "sub": e.subject,
	}).SignedString(e.key)
	if err != nil {
		return "", fmt.Errorf("webpush: sign VAPID JWT: %w", err)
	}
	if len(e.jwts) > 1000 {
		e.jwts = map[string]vapidHeader{}
	}
	h := "vapid t=" + t + ", k=" + e.pub
	e.jwts[origin] = vapidHeader{value: h, until: now.Add(vapidReuseFor)}
	return h, nil
}

func (e *stdlibEncoder) forget(endpoint string) {
	if u, err := url.Parse(endpoint); err == nil {
		e.mu.Lock()
		delete(e.jwts, u.Scheme+"://"+u.Host)
		e.mu.Unlock()
	}
}

// encrypt builds the aes128gcm body of payload for the user agent's key p256dh and secret auth (RFC
// 8291 §3.4 with RFC 8188's header): salt, record size, the application server's ephemeral public key,
// then one record of the payload, the last-record delimiter and padding to a multiple of 256 bytes.
func encrypt(payload []byte, p256dh, authSecret string) ([]byte, error) {
	uaBytes, err := decodeKey(p256dh)
	if err != nil {
		return nil, errors.New("p256dh is not base64")
	}
	ua, err := ecdh.P256().NewPublicKey(uaBytes)
	if err != nil {
		return nil, fmt.Errorf("p256dh: %w", err)
	}
	auth, err := decodeKey(authSecret)
	if err != nil || len(auth) != 16 {
		return nil, errors.New("auth is not a 16-byte secret")
	}
	as, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	secret, err := as.ECDH(ua)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	asPub := as.PublicKey().Bytes()
	hm := func(key []byte, parts ...[]byte) []byte {
		m := hmac.New(sha256.New, key)
		for _, p := range parts {
			m.Write(p)
		}
		return m.Sum(nil)
	}
	ikm := hm(hm(auth, secret), []byte("WebPush: info\x00"), uaBytes, asPub, []byte{1})
	prk := hm(salt, ikm)
	cek := hm(prk, []byte("Content-Encoding: aes128gcm\x00"), []byte{1})[:16]
	nonce := hm(prk, []byte("Content-Encoding: nonce\x00"), []byte{1})[:12]
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	// Padded to 256 bytes, within the 4,096 bytes a push service must take (86 of header, 16 of tag).
	padded := min((len(payload)+1+255)/256*256, 4096-86-gcm.Overhead())
	if len(payload)+1 > padded {
		return nil, errors.New("payload too large")
	}
	plain := make([]byte, padded)
	copy(plain, payload)
	plain[len(payload)] = 2
	out := make([]byte, 0, 86+padded+gcm.Overhead())
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, uint32(padded+gcm.Overhead())) // rs: this one record

	out = append(out, byte(len(asPub)))
	out = append(out, asPub...)
	return gcm.Seal(out, nonce, plain, nil), nil
}

// decodeKey reads base64url or standard base64, padded or not.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "+/") {
		return base64.RawStdEncoding.DecodeString(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// post sends an encrypted body to endpoint with the headers of RFC 8030 and 8292 (EncoderStdlib).
func (s *Sender) post(ctx context.Context, endpoint string, body []byte, ttl time.Duration, topicValue string) (*http.Response, error) {
	authz, err := s.std.authorization(endpoint)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	h := req.Header
	h.Set("Content-Encoding", "aes128gcm")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("TTL", strconv.FormatInt(int64(ttl/time.Second), 10))
	h.Set("Urgency", "high")
	if topicValue != "" {
		h.Set("Topic", topicValue)
	}
	h.Set("Authorization", authz)
	resp, err := s.client.Do(req)
	if err == nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
		s.std.forget(endpoint) // a refused JWT is not sent again
	}
	return resp, err
}
