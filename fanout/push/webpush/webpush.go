// Package webpush sends push notifications to browsers: RFC 8030 delivery to the subscription's push
// service, RFC 8291 aes128gcm payload encryption and RFC 8292 VAPID authentication, through
// github.com/SherClockHolmes/webpush-go. It implements push.Sender.
//
// The library's traps, and what this package does about each:
//   - Options.TTL defaults to 0, which a push service reads as "deliver now or drop": a closed browser
//     never sees the message. The TTL sent is the notification's time left (the drop's remaining time).
//   - No Urgency and no Topic by default: Urgency is high (a drop start is time-critical) and Topic is
//     the notification's tag, so a newer message of the same drop replaces an undelivered older one.
//   - A nil HTTPClient makes a new http.Client for every send (no connection reuse): one shared client
//     with a transport sized for the concurrency is given to every send.
//   - It returns the raw *http.Response: every body is drained (bounded) and closed here.
//   - It pads every message to the 4,096-byte record: the record size is fitted to the payload instead
//     (rounded up to 256 bytes, so lengths leak little), which keeps AES-GCM and the upload small.
//   - An empty Subscriber makes Apple answer 403 BadJwtToken: a subject is required (mailto: or https:).
//   - The payload must fit 3,993 bytes (push.MaxPayload), checked before any crypto.
//   - It signs a new VAPID JWT for every message (a generic scalar multiplication to rebuild the public
//     key, then ES256), which its API cannot skip: the header sent is the one cached per push service,
//     but the signing is still paid, about 30% of the notifier's CPU. So by default (EncoderStdlib)
//     the same message is built on the standard library (crypto/ecdh, one signature per push service
//     an hour); Config.Encoder = EncoderLibrary sends through webpush-go, and the tests send through
//     both to the same push-service stand-in.
package webpush

import (
	"context"
	"crypto/ecdh"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"

	"github.com/livedrops/livedrops/fanout/push"
)

// Config configures a Sender. VAPIDPublicKey, VAPIDPrivateKey and Subject are required.
type Config struct {
	// VAPIDPublicKey is the application server's P-256 public key (base64url, uncompressed point), the
	// applicationServerKey browsers subscribed with.
	VAPIDPublicKey string
	// VAPIDPrivateKey is its private scalar (base64url, 32 bytes).
	VAPIDPrivateKey string
	// Subject is the VAPID contact: "mailto:ops@example.com" or an https URL. A bare address gets
	// mailto: prepended.
	Subject string
	// Allow reports whether an endpoint may be sent to (the server's endpoint policy, checked again at
	// send time); nil allows every https endpoint.
	Allow func(endpoint string) bool
	// Client sends the requests; nil means a client of NewTransport(256) with a 15 s timeout.
	Client *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Encoder builds the messages: EncoderStdlib ("" too) or EncoderLibrary (webpush-go).
	Encoder string
}

// Sender sends Web Push messages. It is safe for concurrent use.
type Sender struct {
	cfg    Config
	client *http.Client
	doer   *vapidReuse
	std    *stdlibEncoder // EncoderStdlib; nil with the library
}

// vapidReuse is the HTTPClient given to the library: it sends one VAPID Authorization per push
// service origin for up to an hour (RFC 8292 §2 lets a JWT be reused until it expires; the library's
// expire after 12 h), so each push service verifies one signature an hour, not one per message.
type vapidReuse struct {
	client *http.Client
	now    func() time.Time
	mu     sync.Mutex
	byHost map[string]vapidHeader
}

type vapidHeader struct {
	value string
	until time.Time
}

// vapidReuseFor is how long one Authorization header is sent again.
const vapidReuseFor = time.Hour

func (v *vapidReuse) Do(req *http.Request) (*http.Response, error) {
	origin := req.URL.Scheme + "://" + req.URL.Host
	now := v.now()
	v.mu.Lock()
	h, ok := v.byHost[origin]
	switch {
	case ok && now.Before(h.until):
		req.Header.Set("Authorization", h.value)
	default:
		if len(v.byHost) > 1000 {
			v.byHost = map[string]vapidHeader{}
		}
		v.byHost[origin] = vapidHeader{value: req.Header.Get("Authorization"), until: now.Add(vapidReuseFor)}
	}
	v.mu.Unlock()
	resp, err := v.client.Do(req)
	if err == nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
		v.mu.Lock()
		delete(v.byHost, origin) // a refused JWT is not sent again
		v.mu.Unlock()
	}
	return resp, err
}

// NewTransport is an HTTP transport for many requests in flight to few push services: up to maxConns
// kept-alive connections per host (the default 2 would open and close a connection for most
// requests under load), HTTP/2 where the push service offers it over TLS.
func NewTransport(maxConns int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4 * maxConns,
		MaxIdleConnsPerHost:   maxConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// New checks cfg and returns a Sender.
func New(cfg Config) (*Sender, error) {
	pub, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(cfg.VAPIDPublicKey, "="))
	if err != nil {
		return nil, errors.New("webpush: VAPID public key is not base64url")
	}
	if _, err := ecdh.P256().NewPublicKey(pub); err != nil {
		return nil, errors.New("webpush: VAPID public key is not an uncompressed P-256 point")
	}
	priv, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(cfg.VAPIDPrivateKey, "="))
	if err != nil {
		return nil, errors.New("webpush: VAPID private key is not base64url")
	}
	k, err := ecdh.P256().NewPrivateKey(priv)
	if err != nil {
		return nil, errors.New("webpush: VAPID private key is not a P-256 scalar")
	}
	if string(k.PublicKey().Bytes()) != string(pub) {
		return nil, errors.New("webpush: the VAPID public and private keys are not one pair")
	}
	switch {
	case cfg.Subject == "":
		return nil, errors.New("webpush: a VAPID subject (mailto: or https:) is required; push services refuse messages without one")
	case strings.HasPrefix(cfg.Subject, "mailto:"):
		// The library prepends mailto: to anything that is not https:.
		cfg.Subject = strings.TrimPrefix(cfg.Subject, "mailto:")
	case strings.HasPrefix(cfg.Subject, "https:"):
	case strings.Contains(cfg.Subject, "@"):
	default:
		return nil, fmt.Errorf("webpush: VAPID subject %q: want mailto:address or an https URL", cfg.Subject)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Transport: NewTransport(256), Timeout: 15 * time.Second}
	}
	sender := &Sender{cfg: cfg, client: client, doer: &vapidReuse{client: client, now: cfg.Now, byHost: map[string]vapidHeader{}}}
	switch cfg.Encoder {
	case EncoderLibrary:
	case "", EncoderStdlib:
		if sender.std, err = newStdlibEncoder(cfg); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("webpush: encoder %q: want %s or %s", cfg.Encoder, EncoderLibrary, EncoderStdlib)
	}
	return sender, nil
}

// recordSize fits the aes128gcm record to a payload of n bytes: the library puts the 86-byte header
// inside the record and needs 16 bytes of tag and one delimiter byte; rounded up to 256 bytes.
func recordSize(n int) uint32 {
	const overhead = 86 + 16 + 1
	rs := (n + overhead + 255) / 256 * 256
	return uint32(min(rs, int(webpushgo.MaxRecordSize)))
}

// Send encrypts n's payload for d and posts it to d's push service.
func (s *Sender) Send(ctx context.Context, n *push.Notification, d push.Device) push.Result {
	if d.Provider != push.WebPush {
		return push.Result{Outcome: push.Rejected, Reason: "wrong_provider", Err: fmt.Errorf("webpush: device %d is %s", d.ID, d.Provider)}
	}
	if !strings.HasPrefix(d.Token, "https://") && s.cfg.Allow == nil || s.cfg.Allow != nil && !s.cfg.Allow(d.Token) {
		return push.Result{Outcome: push.Rejected, Reason: "endpoint_not_allowed", Err: fmt.Errorf("webpush: device %d: endpoint not allowed", d.ID)}
	}
	ttl := n.TTL(s.cfg.Now())
	if ttl <= 0 {
		return push.Result{Outcome: push.Rejected, Reason: "expired", Err: errors.New("webpush: the notification has expired")}
	}
	payload, err := n.Payload()
	if err != nil {
		return push.Result{Outcome: push.Rejected, Reason: "payload_too_large", Err: err}
	}
	var resp *http.Response
	if s.std != nil {
		body, err := encrypt(payload, d.P256dh, d.Auth)
		if err != nil {
			return push.Result{Outcome: push.Rejected, Reason: "bad_subscription", Err: fmt.Errorf("webpush: device %d: %w", d.ID, err)}
		}
		if resp, err = s.post(ctx, d.Token, body, ttl, topic(n.Tag)); err != nil {
			return push.Result{Outcome: push.Retry, Reason: "network", Err: fmt.Errorf("webpush: device %d: %w", d.ID, err)}
		}
	} else {
		resp, err = webpushgo.SendNotificationWithContext(ctx, payload,
			&webpushgo.Subscription{Endpoint: d.Token, Keys: webpushgo.Keys{Auth: d.Auth, P256dh: d.P256dh}},
			&webpushgo.Options{
				HTTPClient:      s.doer,
				RecordSize:      recordSize(len(payload)),
				Subscriber:      s.cfg.Subject,
				Topic:           topic(n.Tag),
				TTL:             int(ttl / time.Second),
				Urgency:         webpushgo.UrgencyHigh,
				VAPIDPublicKey:  s.cfg.VAPIDPublicKey,
				VAPIDPrivateKey: s.cfg.VAPIDPrivateKey,
			})
		if err != nil {
			if resp != nil {
				drain(resp)
			}
			if ctx.Err() != nil || isNetwork(err) {
				return push.Result{Outcome: push.Retry, Reason: "network", Err: fmt.Errorf("webpush: device %d: %w", d.ID, err)}
			}
			// Encryption or request building failed: the subscription's keys are unusable.
			return push.Result{Outcome: push.Rejected, Reason: "bad_subscription", Err: fmt.Errorf("webpush: device %d: %w", d.ID, err)}
		}
	}
	defer drain(resp)
	return classify(resp, s.cfg.Now())
}

// classify reads what a push service's status means (RFC 8030 §5, §7; the research table).
func classify(resp *http.Response, now time.Time) push.Result {
	r := push.Result{Status: resp.StatusCode, RetryAfter: push.ParseRetryAfter(resp.Header.Get("Retry-After"), now)}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		r.Outcome = push.Sent
		return r
	case code == http.StatusNotFound || code == http.StatusGone:
		r.Outcome, r.Reason = push.Gone, "gone"
	case code == http.StatusRequestEntityTooLarge:
		r.Outcome, r.Reason = push.Rejected, "payload_too_large"
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		// Our VAPID key or JWT refused (or the subscription was made with another key): an operator's
		// matter, not a device's; retrying the same JWT cannot help.
		r.Outcome, r.Reason, r.Credentials = push.Rejected, "vapid_rejected", true
	case code == http.StatusTooManyRequests || code == http.StatusNotAcceptable:
		// 406: what Windows' push service answers instead of 429.
		r.Outcome, r.Reason = push.Retry, "rate_limited"
		r.RetryAfter = max(r.RetryAfter, 5*time.Second)
	case code >= 500:
		r.Outcome, r.Reason = push.Retry, "unavailable"
	default:
		r.Outcome, r.Reason = push.Rejected, "client_error"
	}
	r.Err = fmt.Errorf("webpush: push service answered %s", resp.Status)
	return r
}

// topic makes a Topic header value: at most 32 characters of the URL-safe base64 alphabet.
func topic(tag string) string {
	var b strings.Builder
	for i := 0; i < len(tag) && b.Len() < 32; i++ {
		c := tag[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

func isNetwork(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// GenerateKeys makes a VAPID key pair: the private scalar and the public point, base64url unpadded.
func GenerateKeys() (privateKey, publicKey string, err error) {
	return webpushgo.GenerateVAPIDKeys()
}
