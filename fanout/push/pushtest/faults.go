// Package pushtest runs local servers that speak the push providers' real wire protocols, for tests
// and for make bench-push (never for production):
//
//   - FCM: an OAuth2 token endpoint that verifies the RS256 JWT-bearer assertion of a service-account
//     key it generated (ServiceAccount) and issues access tokens, and FCM's HTTP v1 messages:send
//     (HTTP/1.1 and HTTP/2 without TLS) that checks the bearer token and the JSON message like FCM.
//   - Web Push: a push service that checks the VAPID Authorization (RFC 8292: the ES256 JWT's
//     signature, audience, expiry and subject), the TTL, Urgency and Topic headers, and decrypts the
//     aes128gcm body (RFC 8291) with the private key of the subscription it issued.
//
// Both count what they accepted per (device, event), answer like the real services on demand (503 with
// Retry-After, 404/410 for gone devices, 429, slow answers) through a Faults function, and accept a
// message only once its answer is written: a client that went away before the answer did not get it
// delivered, as with a real provider.
package pushtest

import (
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is how a stand-in answers one request instead of accepting it.
type Fault struct {
	// Status is the HTTP status to answer; 0 accepts the message.
	Status int
	// ErrorCode is FCM's errorCode detail (UNREGISTERED, QUOTA_EXCEEDED, ...); ignored by Web Push.
	ErrorCode string
	// RetryAfter is sent as Retry-After when set ("2", or an HTTP date).
	RetryAfter string
	// Delay holds the answer this long first; a client that gives up meanwhile gets nothing, and an
	// acceptance after the delay is then not counted.
	Delay time.Duration
}

// Faults decides, per request, how to answer: device is the FCM token or the Web Push subscription id,
// attempt counts the requests for that device so far (1 for the first).
type Faults func(device string, attempt int) Fault

// RandomFaults answers like a provider under load: every request fails with 503 (Retry-After 1) with
// probability unavailable, and the devices of a fixed fraction gone (chosen by a hash of the device,
// the same on every attempt) are answered as unregistered (FCM 404 UNREGISTERED, Web Push 410).
func RandomFaults(unavailable, gone float64) Faults {
	return func(device string, _ int) Fault {
		if Gone(device, gone) {
			return Fault{Status: http.StatusGone, ErrorCode: "UNREGISTERED"}
		}
		if rand.Float64() < unavailable {
			return Fault{Status: http.StatusServiceUnavailable, ErrorCode: "UNAVAILABLE", RetryAfter: "1"}
		}
		return Fault{}
	}
}

// Gone reports whether RandomFaults(_, fraction) treats device as gone.
func Gone(device string, fraction float64) bool {
	h := fnv.New64a()
	_, _ = h.Write([]byte(device))
	return float64(h.Sum64()%1_000_000) < fraction*1_000_000
}

// Delivery is one accepted message.
type Delivery struct {
	// Device is the FCM token or the Web Push subscription id.
	Device string
	// EventID is the message's event_id (FCM data, or the decrypted Web Push payload).
	EventID string
	// Payload is the FCM request body or the decrypted Web Push plaintext.
	Payload []byte
	// TTL is the lifetime the message asked for.
	TTL time.Duration
	// Topic is the collapse key (FCM android.collapse_key, Web Push Topic).
	Topic string
	// At is when it was accepted.
	At time.Time
	// Proto is the HTTP version it came over ("HTTP/2.0").
	Proto string
}

// ledger counts requests and deliveries; safe for concurrent use.
type ledger struct {
	keep     bool // keep every Delivery (tests); benchmarks only count
	mu       sync.Mutex
	attempts map[string]int
	counts   map[[2]string]int // (device, event) -> accepted
	all      []Delivery
	last     time.Time

	requests  atomic.Int64
	accepted  atomic.Int64
	refused   atomic.Int64 // answered with a fault status
	abandoned atomic.Int64 // the client left during a delay
	invalid   atomic.Int64 // refused for a protocol error (auth, format)
	onAccept  func(Delivery)
}

func newLedger(keep bool, onAccept func(Delivery)) *ledger {
	return &ledger{keep: keep, attempts: map[string]int{}, counts: map[[2]string]int{}, onAccept: onAccept}
}

func (l *ledger) attempt(device string) int {
	l.requests.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attempts[device]++
	return l.attempts[device]
}

func (l *ledger) accept(d Delivery) {
	l.accepted.Add(1)
	l.mu.Lock()
	l.counts[[2]string{d.Device, d.EventID}]++
	if l.keep {
		l.all = append(l.all, d)
	}
	if d.At.After(l.last) {
		l.last = d.At
	}
	l.mu.Unlock()
	if l.onAccept != nil {
		l.onAccept(d)
	}
}

// Stats are a stand-in's counters.
type Stats struct {
	Requests  int64 // requests received
	Accepted  int64 // messages accepted (answered 2xx)
	Refused   int64 // answered with a fault
	Abandoned int64 // the client went away during a delayed answer
	Invalid   int64 // refused for a protocol error (bad token, bad JWT, bad body): a bug of the sender
	// Duplicates counts the (device, event) pairs accepted more than once.
	Duplicates int64
	// Pairs counts the distinct (device, event) pairs accepted.
	Pairs int64
	// Last is when the last message was accepted.
	Last time.Time
}

func (l *ledger) stats() Stats {
	s := Stats{Requests: l.requests.Load(), Accepted: l.accepted.Load(), Refused: l.refused.Load(),
		Abandoned: l.abandoned.Load(), Invalid: l.invalid.Load()}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.counts {
		s.Pairs++
		if n > 1 {
			s.Duplicates++
		}
	}
	s.Last = l.last
	return s
}

// count is how often (device, event) was accepted.
func (l *ledger) count(device, event string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[[2]string{device, event}]
}

func (l *ledger) deliveries() []Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Delivery(nil), l.all...)
}

// hold waits d or until the client leaves; it reports whether the client is still there.
func hold(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return r.Context().Err() == nil
	case <-r.Context().Done():
		return false
	}
}
