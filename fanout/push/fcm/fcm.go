// Package fcm sends push notifications through Firebase Cloud Messaging's HTTP v1 API: one
// `POST {base}/v1/projects/{project}/messages:send` per device (the batch API is gone since 2024), many
// in flight over HTTP/2, authorised by an OAuth2 access token that golang.org/x/oauth2/google mints
// from a service-account key (the JWT-bearer grant at the key's token_uri, or a configured one). It
// implements push.Sender.
//
// What FCM's answers mean (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode): UNREGISTERED and
// SENDER_ID_MISMATCH, and INVALID_ARGUMENT about message.token, mean the token is gone; other
// INVALID_ARGUMENT is our message's fault (not retried); QUOTA_EXCEEDED waits at least a minute;
// UNAVAILABLE and INTERNAL are retried; UNAUTHENTICATED, PERMISSION_DENIED and THIRD_PARTY_AUTH_ERROR
// are our credentials, never the device's. A token is only ever deleted on an explicit error code.
package fcm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/livedrops/livedrops/fanout/push"
)

// Scope is the OAuth2 scope of FCM sends.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// DefaultBaseURL is FCM's API.
const DefaultBaseURL = "https://fcm.googleapis.com"

// Config configures a Sender. CredentialsJSON is required.
type Config struct {
	// CredentialsJSON is the service account's key file (type service_account).
	CredentialsJSON []byte
	// ProjectID is the Firebase project; "" means the key file's project_id.
	ProjectID string
	// BaseURL is where the API is; "" means DefaultBaseURL. Tests and staging point it at a local server.
	BaseURL string
	// TokenURL is the OAuth2 token endpoint; "" means the key file's token_uri.
	TokenURL string
	// Client sends the messages; nil means a client of NewTransport() with a 15 s timeout.
	Client *http.Client
	// TokenClient fetches access tokens; nil means Client.
	TokenClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewTransport is an HTTP/2 transport for FCM: every send is a stream, many streams share a
// connection (and new connections open when a server's stream limit is reached). With an http://
// base URL (a local stand-in) it speaks HTTP/2 without TLS (prior knowledge), as it would over TLS.
func NewTransport() *http.Transport {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		Protocols:             new(http.Protocols),
	}
	t.Protocols.SetHTTP2(true)
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}

// Sender sends FCM messages. It is safe for concurrent use.
type Sender struct {
	cfg     Config
	client  *http.Client
	sendURL string
	jwt     *oauthConfig

	mu sync.Mutex
	ts oauth2.TokenSource
}

type oauthConfig struct {
	newSource func() oauth2.TokenSource
}

// New reads the key and returns a Sender. It fetches no token yet.
func New(cfg Config) (*Sender, error) {
	if len(cfg.CredentialsJSON) == 0 {
		return nil, errors.New("fcm: the service account key (credentials JSON) is required")
	}
	conf, err := google.JWTConfigFromJSON(cfg.CredentialsJSON, Scope)
	if err != nil {
		return nil, fmt.Errorf("fcm: service account key: %w", err)
	}
	if cfg.ProjectID == "" {
		var f struct {
			ProjectID string `json:"project_id"`
		}
		_ = json.Unmarshal(cfg.CredentialsJSON, &f)
		cfg.ProjectID = f.ProjectID
	}
	if cfg.ProjectID == "" {
		return nil, errors.New("fcm: no project id: the key file has none and none is configured")
	}
	if cfg.TokenURL != "" {
		conf.TokenURL = cfg.TokenURL
	}
	if conf.TokenURL == "" {
		return nil, errors.New("fcm: the key file names no token_uri and none is configured")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Transport: NewTransport(), Timeout: 15 * time.Second}
	}
	tokenClient := cfg.TokenClient
	if tokenClient == nil {
		tokenClient = client
	}
	s := &Sender{cfg: cfg, client: client,
		sendURL: strings.TrimRight(cfg.BaseURL, "/") + "/v1/projects/" + cfg.ProjectID + "/messages:send"}
	s.jwt = &oauthConfig{newSource: func() oauth2.TokenSource {
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, tokenClient)
		return conf.TokenSource(ctx) // caches the token until shortly before it expires
	}}
	s.ts = s.jwt.newSource()
	return s, nil
}

// ProjectID is the Firebase project messages are sent to.
func (s *Sender) ProjectID() string { return s.cfg.ProjectID }

func (s *Sender) tokenSource() oauth2.TokenSource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ts
}

// dropToken forgets the cached access token (FCM refused it), unless another send already did.
func (s *Sender) dropToken(used oauth2.TokenSource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ts == used {
		s.ts = s.jwt.newSource()
	}
}

// message is the v1 send request body.
type message struct {
	Message struct {
		Token        string            `json:"token"`
		Notification *notification     `json:"notification,omitempty"`
		Data         map[string]string `json:"data,omitempty"`
		Android      *android          `json:"android,omitempty"`
		APNS         *apns             `json:"apns,omitempty"`
		Webpush      *webpush          `json:"webpush,omitempty"`
	} `json:"message"`
}

type notification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type android struct {
	CollapseKey  string               `json:"collapse_key,omitempty"`
	Priority     string               `json:"priority,omitempty"`
	TTL          string               `json:"ttl,omitempty"`
	Notification *androidNotification `json:"notification,omitempty"`
}

type androidNotification struct {
	Tag string `json:"tag,omitempty"`
}

type apns struct {
	Headers map[string]string `json:"headers,omitempty"`
}

type webpush struct {
	Headers map[string]string `json:"headers,omitempty"`
}

// body encodes n for token with lifetime ttl: a notification message shown by the system, the same
// fields as data for the app, and per platform the lifetime, the collapse key and high priority.
func body(n *push.Notification, token string, ttl time.Duration, now time.Time) ([]byte, error) {
	var m message
	m.Message.Token = token
	m.Message.Notification = &notification{Title: n.Title, Body: n.Body}
	m.Message.Data = map[string]string{
		"type": n.Type, "event_id": n.EventID, "drop_id": strconv.FormatInt(n.DropID, 10),
		"creator_id": strconv.FormatInt(n.CreatorID, 10), "url": n.URL, "tag": n.Tag,
	}
	secs := int64(ttl / time.Second)
	m.Message.Android = &android{CollapseKey: n.Tag, Priority: "HIGH", TTL: strconv.FormatInt(secs, 10) + "s",
		Notification: &androidNotification{Tag: n.Tag}}
	m.Message.APNS = &apns{Headers: map[string]string{
		"apns-expiration":  strconv.FormatInt(now.Add(ttl).Unix(), 10),
		"apns-collapse-id": n.Tag,
		"apns-priority":    "10",
		"apns-push-type":   "alert",
	}}
	m.Message.Webpush = &webpush{Headers: map[string]string{"TTL": strconv.FormatInt(secs, 10), "Urgency": "high", "Topic": n.Tag}}
	return json.Marshal(m)
}

// Send posts one message to FCM for d.
func (s *Sender) Send(ctx context.Context, n *push.Notification, d push.Device) push.Result {
	if d.Provider != push.FCM {
		return push.Result{Outcome: push.Rejected, Reason: "wrong_provider", Err: fmt.Errorf("fcm: device %d is %s", d.ID, d.Provider)}
	}
	now := s.cfg.Now()
	ttl := n.TTL(now)
	if ttl <= 0 {
		return push.Result{Outcome: push.Rejected, Reason: "expired", Err: errors.New("fcm: the notification has expired")}
	}
	b, err := body(n, d.Token, ttl, now)
	if err != nil {
		return push.Result{Outcome: push.Rejected, Reason: "invalid_argument", Err: fmt.Errorf("fcm: encode: %w", err)}
	}
	ts := s.tokenSource()
	tok, err := ts.Token()
	if err != nil {
		s.dropToken(ts)
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return push.Result{Outcome: push.AuthFailed, Reason: "oauth", Credentials: true, Err: fmt.Errorf("fcm: access token: %w", err)}
		}
		return push.Result{Outcome: push.Retry, Reason: "network", Err: fmt.Errorf("fcm: access token: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.sendURL, bytes.NewReader(b))
	if err != nil {
		return push.Result{Outcome: push.Rejected, Reason: "invalid_argument", Err: fmt.Errorf("fcm: request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	tok.SetAuthHeader(req)
	resp, err := s.client.Do(req)
	if err != nil {
		return push.Result{Outcome: push.Retry, Reason: "network", Err: fmt.Errorf("fcm: device %d: %w", d.ID, err)}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	r := classify(resp.StatusCode, resp.Header.Get("Retry-After"), raw, now)
	if resp.StatusCode == http.StatusUnauthorized {
		s.dropToken(ts) // fetch a fresh token for the next send
	}
	return r
}

// errorBody is FCM's error answer (google.rpc.Status with FcmError details).
type errorBody struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// classify reads an answer of messages:send.
func classify(status int, retryAfter string, raw []byte, now time.Time) push.Result {
	r := push.Result{Status: status, RetryAfter: push.ParseRetryAfter(retryAfter, now)}
	if status == http.StatusOK {
		r.Outcome = push.Sent
		return r
	}
	var eb errorBody
	_ = json.Unmarshal(raw, &eb)
	code := eb.Error.Status
	tokenField := false
	for _, d := range eb.Error.Details {
		if d.ErrorCode != "" {
			code = d.ErrorCode
		}
		for _, fv := range d.FieldViolations {
			if fv.Field == "message.token" {
				tokenField = true
			}
		}
	}
	r.Err = fmt.Errorf("fcm: %d %s: %s", status, code, eb.Error.Message)
	// A device is gone only on its error code with the status FCM gives it.
	switch {
	case code == "UNREGISTERED" && status == http.StatusNotFound:
		r.Outcome, r.Reason = push.Gone, "unregistered"
	case code == "SENDER_ID_MISMATCH" && status == http.StatusForbidden:
		r.Outcome, r.Reason = push.Gone, "sender_id_mismatch"
	case code == "INVALID_ARGUMENT" && tokenField && status == http.StatusBadRequest:
		r.Outcome, r.Reason = push.Gone, "invalid_token"
	case status == http.StatusTooManyRequests || status == http.StatusBadRequest && (code == "QUOTA_EXCEEDED" || code == "RESOURCE_EXHAUSTED"):
		// "exponential backoff with a minimum initial delay of 1 minute"
		r.Outcome, r.Reason = push.Retry, "quota_exceeded"
		r.RetryAfter = max(r.RetryAfter, time.Minute)
	case status >= 500:
		r.Outcome, r.Reason = push.Retry, "unavailable"
	case code == "THIRD_PARTY_AUTH_ERROR":
		r.Outcome, r.Reason, r.Credentials = push.AuthFailed, "third_party_auth_error", true
	case status == http.StatusUnauthorized || code == "UNAUTHENTICATED":
		r.Outcome, r.Reason, r.Credentials = push.AuthFailed, "unauthenticated", true
	case status == http.StatusForbidden || code == "PERMISSION_DENIED":
		r.Outcome, r.Reason, r.Credentials = push.AuthFailed, "permission_denied", true
	case status == http.StatusNotFound:
		// A 404 without UNREGISTERED is the URL (a wrong project), not the device: never delete for it.
		r.Outcome, r.Reason, r.Credentials = push.AuthFailed, "project_not_found", true
	case status == http.StatusRequestEntityTooLarge:
		r.Outcome, r.Reason = push.Rejected, "payload_too_large"
	case status == http.StatusBadRequest:
		r.Outcome, r.Reason = push.Rejected, "invalid_argument"
	default:
		r.Outcome, r.Reason = push.Rejected, "client_error"
	}
	return r
}
