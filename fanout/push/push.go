// Package push is the domain of push notifications for followers without an open socket: the device a
// notification goes to, the notification itself, the one small interface every provider implements,
// and what a provider's answer means (Result). It uses the standard library only; the providers beneath
// it are fanout/push/fcm (Firebase Cloud Messaging HTTP v1) and fanout/push/webpush (RFC 8030/8291/8292),
// and fanout/notifier is the worker job that sends.
package push

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Provider names a push provider; it is the label value of the push metrics.
type Provider string

// The providers.
const (
	FCM     Provider = "fcm"
	WebPush Provider = "webpush"
)

// Providers lists every provider, for metrics that pre-create their series.
var Providers = []Provider{FCM, WebPush}

// Device is where a notification goes.
type Device struct {
	ID       int64
	UserID   int64
	Provider Provider
	// Token is the FCM registration token, or the Web Push subscription's endpoint URL.
	Token string
	// P256dh and Auth are the Web Push subscription's keys (base64url); empty for FCM.
	P256dh, Auth string
}

// Notification is one drop's message to its followers' devices.
type Notification struct {
	// EventID is the id of the live event that caused it; with the device id, the dedupe key.
	EventID string `json:"event_id"`
	// Type is the event type ("drop.started").
	Type      string `json:"type"`
	DropID    int64  `json:"drop_id"`
	CreatorID int64  `json:"creator_id"`
	Title     string `json:"title"`
	Body      string `json:"body"`
	// URL is the deep link to the drop page ("/#/drops/42").
	URL string `json:"url"`
	// Tag collapses notifications of one drop on the device: the FCM collapse key, the Web Push Topic.
	Tag string `json:"tag"`
	// Expires is when the notification stops being worth showing (the drop's end): the provider TTL is
	// the time left until it. Not part of the payload.
	Expires time.Time `json:"-"`
	// EventTS is when the event happened, for the lag metric. Not part of the payload.
	EventTS time.Time `json:"-"`
}

// MaxPayload is the largest Web Push plaintext: a push service must accept 4,096 bytes of body (RFC
// 8030 §7.2), of which aes128gcm takes 103 (RFC 8291 §4).
const MaxPayload = 3993

// Payload is the JSON the device receives (the Web Push plaintext, what a service worker's
// event.data.json() gives): {"type","event_id","drop_id","creator_id","title","body","url","tag"}.
func (n *Notification) Payload() ([]byte, error) {
	b, err := json.Marshal(struct {
		Type      string `json:"type"`
		EventID   string `json:"event_id"`
		DropID    int64  `json:"drop_id"`
		CreatorID int64  `json:"creator_id"`
		Title     string `json:"title"`
		Body      string `json:"body"`
		URL       string `json:"url"`
		Tag       string `json:"tag"`
	}{n.Type, n.EventID, n.DropID, n.CreatorID, n.Title, n.Body, n.URL, n.Tag})
	if err != nil {
		return nil, fmt.Errorf("push: payload: %w", err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("push: payload is %d bytes, the limit is %d", len(b), MaxPayload)
	}
	return b, nil
}

// TTL is the provider time-to-live at now: the whole seconds until Expires, at most 28 days (both FCM's
// and the push services' ceiling). Zero or less means the notification is stale: do not send it.
func (n *Notification) TTL(now time.Time) time.Duration {
	ttl := n.Expires.Sub(now).Truncate(time.Second)
	return min(ttl, MaxTTL)
}

// MaxTTL is the longest lifetime FCM accepts (2,419,200 s).
const MaxTTL = 28 * 24 * time.Hour

// Outcome is what a provider's answer means for one message.
type Outcome int

// The outcomes.
const (
	// Sent: the provider accepted the message (accepted is not delivered, but it is the provider's now).
	Sent Outcome = iota + 1
	// Retry: a transient failure (5xx, 429, a network error): try again after Result.RetryAfter at
	// the earliest, with backoff.
	Retry
	// Gone: the device no longer exists (FCM UNREGISTERED or SENDER_ID_MISMATCH, Web Push 404/410):
	// delete it, never retry.
	Gone
	// Rejected: the message itself is refused (FCM INVALID_ARGUMENT, Web Push 413, ...): retrying
	// cannot help; park it with the reason.
	Rejected
	// AuthFailed: our own credentials are refused (FCM 401/403 of the project, Web Push VAPID 401/403):
	// alert the operator; the message is retried later, after a pause of the whole provider.
	AuthFailed
)

func (o Outcome) String() string {
	switch o {
	case Sent:
		return "sent"
	case Retry:
		return "retry"
	case Gone:
		return "gone"
	case Rejected:
		return "rejected"
	case AuthFailed:
		return "auth_failed"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is a provider's answer to one message.
type Result struct {
	Outcome Outcome
	// Reason is a fixed word for metrics and the dead-letter stream: "unavailable", "quota_exceeded",
	// "unregistered", "invalid_argument", "payload_too_large", "network", ...
	Reason string
	// Status is the HTTP status, 0 when there was no answer.
	Status int
	// RetryAfter is the least wait before a retry the provider asked for (Retry-After), or the floor
	// the provider's documentation sets (a minute for FCM's 429).
	RetryAfter time.Duration
	// Credentials is true when the provider refused our own credentials (OAuth token, VAPID key): the
	// operator's alert (livedrops_push_auth_failures_total), whatever the outcome.
	Credentials bool
	// Err describes the failure; nil when Sent.
	Err error
}

// Sender sends one notification to one device of its provider. Implementations are safe for
// concurrent use, close every response body, and never retry themselves: the caller decides from the
// Result.
type Sender interface {
	Send(ctx context.Context, n *Notification, d Device) Result
}

// Drop is what a notification says about a drop.
type Drop struct {
	ID           int64
	CreatorID    int64
	CreatorName  string
	ProductTitle string
	PriceCents   int64
	EndTime      time.Time
	// Over is true when the drop has ended or sold out: nothing left to announce.
	Over bool
}

// Claim is the state of one (event, device) pair in the notifier's dedupe store after a claim.
type Claim int

// The claim states.
const (
	// Claimed: this worker holds the pair now and sends.
	Claimed Claim = iota + 1
	// Done: the pair was finished before (sent, removed or parked): skip it.
	Done
	// Busy: another worker holds the pair; try again when its lease ends.
	Busy
)
