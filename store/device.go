package store

import (
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"path"
	"strings"
	"time"
)

// Platform is a push provider a device is reached through.
type Platform string

// The platforms of POST /users/{id}/devices.
const (
	// PlatformFCM is Firebase Cloud Messaging (Android, iOS through APNs, and web apps using the FCM SDK):
	// the device is its registration token.
	PlatformFCM Platform = "fcm"
	// PlatformWebPush is the browser's Push API (RFC 8030, 8291, 8292): the device is its
	// PushSubscription (endpoint and keys).
	PlatformWebPush Platform = "webpush"
)

// Device limits.
const (
	// MaxDevicesPerUser is how many push devices one user may hold; registering one more is
	// ErrLimitExceeded (delete one first).
	MaxDevicesPerUser = 20
	// MaxDeviceTokenLen bounds an FCM token and a Web Push endpoint, in bytes (the schema's cap).
	MaxDeviceTokenLen = 2048
	// minFCMTokenLen: FCM registration tokens are well over 100 characters; anything this short is a
	// mistake, not a token.
	minFCMTokenLen = 32
)

// WebPushKeys are a PushSubscription's keys, base64url without padding: P256dh the user agent's
// uncompressed P-256 public key (65 bytes), Auth its 16-byte authentication secret.
type WebPushKeys struct {
	P256dh string `json:"p256dh"`
	Auth   string `json:"auth"`
}

// NewDevice is what POST /users/{id}/devices registers: an FCM token, or a Web Push endpoint with its
// keys.
type NewDevice struct {
	Platform Platform
	// Token is the FCM registration token (fcm) or the subscription's endpoint URL (webpush).
	Token string
	// Keys are the subscription's keys (webpush only).
	Keys WebPushKeys
}

// Device is a registered push device.
type Device struct {
	ID        int64
	UserID    int64
	Platform  Platform
	Token     string
	Keys      *WebPushKeys // webpush only
	CreatedAt time.Time
}

type deviceJSON struct {
	DeviceID  int64    `json:"device_id"`
	UserID    int64    `json:"user_id"`
	Platform  Platform `json:"platform"`
	CreatedAt msTime   `json:"created_at"`
}

// MarshalJSON encodes {device_id,user_id,platform,created_at}: never the token or the keys, which are
// credentials to push to the device.
func (d Device) MarshalJSON() ([]byte, error) {
	return json.Marshal(deviceJSON{d.ID, d.UserID, d.Platform, msTime(d.CreatedAt)})
}

// EndpointPolicy says which Web Push endpoints the server accepts and sends to: a list of patterns
// "scheme://host" where host may hold path.Match wildcards ("https://*.push.apple.com",
// "http://127.0.0.1:*"). Sending to any URL a client names would let clients make the server request
// internal addresses (SSRF), so only the browsers' push services are allowed by default.
type EndpointPolicy []string

// DefaultEndpointPolicy lists the push services of Chrome, Edge, Firefox and Safari.
var DefaultEndpointPolicy = EndpointPolicy{
	"https://fcm.googleapis.com",
	"https://updates.push.services.mozilla.com",
	"https://*.push.services.mozilla.com",
	"https://*.push.apple.com",
	"https://*.notify.windows.com",
}

// ParseEndpointPolicy reads a comma-separated list of patterns and checks each.
func ParseEndpointPolicy(s string) (EndpointPolicy, error) {
	var p EndpointPolicy
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		scheme, host, ok := strings.Cut(part, "://")
		if !ok || (scheme != "https" && scheme != "http") || host == "" || strings.ContainsAny(host, "/@?#") {
			return nil, Invalid("endpoint pattern", "%q: want https://host or http://host, the host may hold * wildcards", part)
		}
		if _, err := path.Match(host, ""); err != nil {
			return nil, Invalid("endpoint pattern", "%q: %v", part, err)
		}
		p = append(p, part)
	}
	return p, nil
}

// Allows reports whether endpoint is an absolute URL of an allowed push service, with no user
// information or fragment.
func (p EndpointPolicy) Allows(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.User != nil || u.Fragment != "" || u.Host == "" || u.Opaque != "" {
		return false
	}
	host := strings.ToLower(u.Host)
	for _, pat := range p {
		scheme, hostPat, _ := strings.Cut(pat, "://")
		if u.Scheme != scheme {
			continue
		}
		if ok, _ := path.Match(strings.ToLower(hostPat), host); ok {
			return true
		}
	}
	return false
}

// Validate checks d and returns it normalised (keys as unpadded base64url). Bad input is a
// *FieldError naming the field of the request body (token, subscription.endpoint, subscription.keys.*).
func (d NewDevice) Validate(endpoints EndpointPolicy) (NewDevice, error) {
	switch d.Platform {
	case PlatformFCM:
		if len(d.Token) < minFCMTokenLen || len(d.Token) > MaxDeviceTokenLen {
			return d, Invalid("token", "an FCM registration token is %d to %d characters, got %d", minFCMTokenLen, MaxDeviceTokenLen, len(d.Token))
		}
		for i := 0; i < len(d.Token); i++ {
			if c := d.Token[i]; c <= ' ' || c > '~' {
				return d, Invalid("token", "contains a character (byte %d) no FCM token has", i)
			}
		}
		if d.Keys != (WebPushKeys{}) {
			return d, Invalid("subscription", "is for platform webpush, not fcm")
		}
		return d, nil
	case PlatformWebPush:
		if d.Token == "" {
			return d, Invalid("subscription.endpoint", "is required")
		}
		if len(d.Token) > MaxDeviceTokenLen {
			return d, Invalid("subscription.endpoint", "is %d bytes long, the limit is %d", len(d.Token), MaxDeviceTokenLen)
		}
		if !endpoints.Allows(d.Token) {
			return d, Invalid("subscription.endpoint", "is not the URL of a push service this server sends to")
		}
		p256dh, err := decodeKey(d.Keys.P256dh)
		if err != nil {
			return d, Invalid("subscription.keys.p256dh", "is not base64url")
		}
		if len(p256dh) != 65 || p256dh[0] != 4 {
			return d, Invalid("subscription.keys.p256dh", "must be an uncompressed P-256 point (65 bytes), got %d bytes", len(p256dh))
		}
		if _, err := ecdh.P256().NewPublicKey(p256dh); err != nil {
			return d, Invalid("subscription.keys.p256dh", "is not a point on the P-256 curve")
		}
		auth, err := decodeKey(d.Keys.Auth)
		if err != nil {
			return d, Invalid("subscription.keys.auth", "is not base64url")
		}
		if len(auth) != 16 {
			return d, Invalid("subscription.keys.auth", "must be a 16-byte secret, got %d bytes", len(auth))
		}
		d.Keys = WebPushKeys{P256dh: base64.RawURLEncoding.EncodeToString(p256dh), Auth: base64.RawURLEncoding.EncodeToString(auth)}
		return d, nil
	case "":
		return d, Invalid("platform", "is required: fcm or webpush")
	}
	return d, Invalid("platform", "want fcm or webpush, got %q", truncateText(string(d.Platform), 20))
}

// decodeKey reads base64url or standard base64, padded or not (browsers send unpadded base64url;
// some libraries pad).
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "+/") {
		return base64.RawStdEncoding.Strict().DecodeString(s)
	}
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
