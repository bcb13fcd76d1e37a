package pushtest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// WebPushConfig configures a Web Push stand-in.
type WebPushConfig struct {
	// VAPIDPublicKey is the application server key subscriptions are made with (base64url): a message
	// signed with another key is refused with 403, as push services do. Required.
	VAPIDPublicKey string
	// Seed derives every subscription's keys (so a load test can make millions without the server
	// storing them); any bytes.
	Seed []byte
	// Faults decides the answers; nil accepts everything.
	Faults Faults
	// Keep keeps every Delivery for Deliveries (tests); otherwise only counts are kept.
	Keep bool
	// OnAccept is called with every accepted message.
	OnAccept func(Delivery)
}

// WebPush is a running Web Push stand-in: a push service on a loopback listener whose subscriptions
// are the endpoints <base>/push/<id>.
type WebPush struct {
	cfg    WebPushConfig
	srv    *http.Server
	ln     net.Listener
	base   string
	vapid  []byte
	ledger *ledger

	mu   sync.Mutex
	jwts map[string]time.Time // verified VAPID JWTs -> exp (verifying each costs an ECDSA verify)
	subs sync.Map             // subscription id -> *subKeys, derived once
}

type subKeys struct {
	priv *ecdh.PrivateKey
	auth []byte
}

// StartWebPush starts a Web Push stand-in on 127.0.0.1; Close stops it.
func StartWebPush(cfg WebPushConfig) (*WebPush, error) {
	vapid, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(cfg.VAPIDPublicKey, "="))
	if err != nil {
		return nil, fmt.Errorf("pushtest: VAPID public key: %w", err)
	}
	if _, err := ecdh.P256().NewPublicKey(vapid); err != nil {
		return nil, fmt.Errorf("pushtest: VAPID public key: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &WebPush{cfg: cfg, ln: ln, base: "http://" + ln.Addr().String(), vapid: vapid,
		ledger: newLedger(cfg.Keep, cfg.OnAccept), jwts: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /push/{id}", s.servePush)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Origin is the push service's origin (the VAPID JWT's audience).
func (s *WebPush) Origin() string { return s.base }

// Close stops the server.
func (s *WebPush) Close() error { return s.srv.Close() }

// Stats are the counters.
func (s *WebPush) Stats() Stats { return s.ledger.stats() }

// Count is how often the message of event was accepted for subscription id.
func (s *WebPush) Count(id, event string) int { return s.ledger.count(id, event) }

// Deliveries are the accepted messages (with WebPushConfig.Keep).
func (s *WebPush) Deliveries() []Delivery { return s.ledger.deliveries() }

// Subscription is what a browser's PushSubscription holds.
type Subscription struct {
	ID       string
	Endpoint string
	P256dh   string // base64url
	Auth     string // base64url
}

// Subscription returns the subscription with id (any string of URL path characters): its endpoint and
// public keys, derived from the seed.
func (s *WebPush) Subscription(id string) (Subscription, error) {
	priv, auth, err := s.keys(id)
	if err != nil {
		return Subscription{}, err
	}
	return Subscription{ID: id, Endpoint: s.base + "/push/" + id,
		P256dh: base64.RawURLEncoding.EncodeToString(priv.PublicKey().Bytes()),
		Auth:   base64.RawURLEncoding.EncodeToString(auth)}, nil
}

// keys derives the user agent's private key and auth secret of subscription id (once per id).
func (s *WebPush) keys(id string) (*ecdh.PrivateKey, []byte, error) {
	if k, ok := s.subs.Load(id); ok {
		sk := k.(*subKeys)
		return sk.priv, sk.auth, nil
	}
	priv, auth, err := s.derive(id)
	if err == nil {
		s.subs.Store(id, &subKeys{priv, auth})
	}
	return priv, auth, err
}

func (s *WebPush) derive(id string) (*ecdh.PrivateKey, []byte, error) {
	for i := 0; i < 8; i++ {
		h := hmac.New(sha256.New, s.cfg.Seed)
		fmt.Fprintf(h, "p256:%s:%d", id, i)
		if k, err := ecdh.P256().NewPrivateKey(h.Sum(nil)); err == nil {
			a := hmac.New(sha256.New, s.cfg.Seed)
			fmt.Fprintf(a, "auth:%s", id)
			return k, a.Sum(nil)[:16], nil
		}
	}
	return nil, nil, errors.New("pushtest: no key for " + id)
}

var topicPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func (s *WebPush) servePush(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	refuse := func(status int, msg string) {
		s.ledger.invalid.Add(1)
		http.Error(w, msg, status)
	}
	// RFC 8030 §5.2: TTL is required.
	ttlSecs, err := strconv.Atoi(r.Header.Get("TTL"))
	if err != nil || ttlSecs < 0 {
		refuse(http.StatusBadRequest, "TTL header missing or malformed")
		return
	}
	if u := r.Header.Get("Urgency"); u != "" && u != "very-low" && u != "low" && u != "normal" && u != "high" {
		refuse(http.StatusBadRequest, "bad Urgency")
		return
	}
	topic := r.Header.Get("Topic")
	if topic != "" && !topicPattern.MatchString(topic) {
		refuse(http.StatusBadRequest, "Topic must be at most 32 base64url characters")
		return
	}
	if err := s.checkVAPID(r.Header.Get("Authorization")); err != nil {
		refuse(http.StatusForbidden, "VAPID: "+err.Error())
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "aes128gcm" {
		refuse(http.StatusBadRequest, "Content-Encoding must be aes128gcm, got "+ce)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4097))
	if err != nil {
		return
	}
	if len(body) > 4096 {
		refuse(http.StatusRequestEntityTooLarge, "the body exceeds 4096 bytes")
		return
	}
	priv, auth, err := s.keys(id)
	if err != nil {
		refuse(http.StatusNotFound, "no such subscription")
		return
	}
	plain, err := Decrypt(body, priv, auth)
	if err != nil {
		refuse(http.StatusBadRequest, "decrypt: "+err.Error())
		return
	}
	var env struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(plain, &env); err != nil {
		refuse(http.StatusBadRequest, "the payload is not JSON")
		return
	}
	attempt := s.ledger.attempt(id)
	var fault Fault
	if s.cfg.Faults != nil {
		fault = s.cfg.Faults(id, attempt)
	}
	if !hold(r, fault.Delay) {
		s.ledger.abandoned.Add(1)
		return
	}
	if fault.Status != 0 {
		s.ledger.refused.Add(1)
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		http.Error(w, "fault injected", fault.Status)
		return
	}
	w.Header().Set("Location", s.base+"/message/"+id)
	w.WriteHeader(http.StatusCreated)
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	s.ledger.accept(Delivery{Device: id, EventID: env.EventID, Payload: plain, TTL: time.Duration(ttlSecs) * time.Second,
		Topic: topic, At: time.Now(), Proto: r.Proto})
}

// checkVAPID verifies `vapid t=<JWT>, k=<public key>` (RFC 8292 §3): k is the key subscriptions were
// made with, t an ES256 JWT signed by it whose aud is this origin, exp within 24 h, sub a contact.
func (s *WebPush) checkVAPID(h string) error {
	rest, ok := strings.CutPrefix(h, "vapid ")
	if !ok {
		return errors.New("want the vapid scheme")
	}
	var t, k string
	for _, part := range strings.Split(rest, ",") {
		name, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch name {
		case "t":
			t = v
		case "k":
			k = v
		}
	}
	pub, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k, "="))
	if err != nil || string(pub) != string(s.vapid) {
		return errors.New("k is not the application server key of the subscription")
	}
	now := time.Now()
	s.mu.Lock()
	exp, seen := s.jwts[t]
	s.mu.Unlock()
	if seen {
		if now.After(exp) {
			return errors.New("the JWT expired")
		}
		return nil
	}
	key, err := ecdsaKey(pub)
	if err != nil {
		return err
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(t, claims, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(s.base), jwt.WithExpirationRequired())
	if err != nil {
		return err
	}
	e, _ := claims.GetExpirationTime()
	if e.Sub(now) > 24*time.Hour {
		return errors.New("exp is more than 24 hours ahead")
	}
	sub, _ := claims["sub"].(string)
	if !strings.HasPrefix(sub, "mailto:") && !strings.HasPrefix(sub, "https:") || len(sub) < 10 {
		return fmt.Errorf("sub %q is no contact (mailto: or https:)", sub)
	}
	s.mu.Lock()
	if len(s.jwts) > 10000 {
		s.jwts = map[string]time.Time{}
	}
	s.jwts[t] = e.Time
	s.mu.Unlock()
	return nil
}

func ecdsaKey(uncompressed []byte) (*ecdsa.PublicKey, error) {
	// An uncompressed point in a SubjectPublicKeyInfo, parsed by x509 into an *ecdsa.PublicKey.
	spki := append([]byte{0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
		0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00}, uncompressed...)
	k, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, err
	}
	pk, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return pk, nil
}

// Decrypt opens an aes128gcm Web Push message (RFC 8291 §3.4, RFC 8188) with the user agent's private
// key and auth secret, and returns the plaintext without its padding.
func Decrypt(body []byte, ua *ecdh.PrivateKey, auth []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("too short for the aes128gcm header")
	}
	salt, rs, idLen := body[:16], binary.BigEndian.Uint32(body[16:20]), int(body[20])
	if rs < 18 {
		return nil, errors.New("record size below 18")
	}
	if idLen != 65 || len(body) < 21+idLen {
		return nil, errors.New("keyid must be the 65-byte application server public key")
	}
	asPub, err := ecdh.P256().NewPublicKey(body[21 : 21+idLen])
	if err != nil {
		return nil, fmt.Errorf("keyid: %w", err)
	}
	ciphertext := body[21+idLen:]
	if len(ciphertext) < 17 {
		return nil, errors.New("no ciphertext")
	}
	secret, err := ua.ECDH(asPub)
	if err != nil {
		return nil, err
	}
	hm := func(key []byte, parts ...[]byte) []byte {
		m := hmac.New(sha256.New, key)
		for _, p := range parts {
			m.Write(p)
		}
		return m.Sum(nil)
	}
	prkKey := hm(auth, secret)
	keyInfo := append(append([]byte("WebPush: info\x00"), ua.PublicKey().Bytes()...), asPub.Bytes()...)
	ikm := hm(prkKey, keyInfo, []byte{1})
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
	plain, err := gcm.Open(nil, nonce, ciphertext, nil)
	if err != nil {
		return nil, fmt.Errorf("authentication failed: %w", err)
	}
	// Padding: the plaintext ends with the delimiter 0x02 (last record) followed by zeros.
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 || plain[i] != 2 {
		return nil, errors.New("no last-record delimiter")
	}
	return plain[:i], nil
}
