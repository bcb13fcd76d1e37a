package pushtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
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

// FCMConfig configures an FCM stand-in. Zero values are the documented defaults.
type FCMConfig struct {
	// ProjectID is the Firebase project the key belongs to and the API accepts. Default "livedrops-test".
	ProjectID string
	// TokenTTL is the lifetime of the access tokens issued. Default 1h.
	TokenTTL time.Duration
	// Faults decides the answers; nil accepts everything.
	Faults Faults
	// Keep keeps every Delivery for Deliveries (tests); otherwise only counts are kept.
	Keep bool
	// OnAccept is called with every accepted message.
	OnAccept func(Delivery)
}

// FCM is a running FCM stand-in: an OAuth2 token endpoint and the HTTP v1 send API on one loopback
// listener.
type FCM struct {
	cfg    FCMConfig
	srv    *http.Server
	ln     net.Listener
	base   string
	key    *rsa.PrivateKey
	email  string
	ledger *ledger

	mu     sync.Mutex
	tokens map[string]time.Time // access token -> expiry
	issued int
	revoke bool
}

// StartFCM starts an FCM stand-in on 127.0.0.1 with a new service-account key; Close stops it.
func StartFCM(cfg FCMConfig) (*FCM, error) {
	if cfg.ProjectID == "" {
		cfg.ProjectID = "livedrops-test"
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = time.Hour
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &FCM{cfg: cfg, ln: ln, base: "http://" + ln.Addr().String(), key: key,
		email:  "livedrops-push@" + cfg.ProjectID + ".iam.gserviceaccount.com",
		ledger: newLedger(cfg.Keep, cfg.OnAccept), tokens: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.serveToken)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", f.serveSend)
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	f.srv.Protocols.SetHTTP1(true)
	f.srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

// BaseURL is the API's base URL (http://127.0.0.1:port), the Sender's BaseURL.
func (f *FCM) BaseURL() string { return f.base }

// TokenURL is the OAuth2 token endpoint, the key file's token_uri.
func (f *FCM) TokenURL() string { return f.base + "/token" }

// ProjectID is the project of the key.
func (f *FCM) ProjectID() string { return f.cfg.ProjectID }

// CredentialsJSON is a service-account key file for this stand-in: its token_uri is TokenURL.
func (f *FCM) CredentialsJSON() []byte {
	der := x509.MarshalPKCS1PrivateKey(f.key)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})
	b, _ := json.MarshalIndent(map[string]string{
		"type": "service_account", "project_id": f.cfg.ProjectID, "private_key_id": "test-key-1",
		"private_key": string(pemKey), "client_email": f.email, "client_id": "1",
		"auth_uri": f.base + "/auth", "token_uri": f.TokenURL(),
	}, "", "  ")
	return b
}

// Close stops the server.
func (f *FCM) Close() error { return f.srv.Close() }

// Stats are the counters.
func (f *FCM) Stats() Stats { return f.ledger.stats() }

// Count is how often the message of event was accepted for token.
func (f *FCM) Count(token, event string) int { return f.ledger.count(token, event) }

// Deliveries are the accepted messages (with FCMConfig.Keep).
func (f *FCM) Deliveries() []Delivery { return f.ledger.deliveries() }

// TokensIssued counts the access tokens the token endpoint issued.
func (f *FCM) TokensIssued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued
}

// RevokeTokens makes every access token issued so far invalid (FCM then answers 401), as when a key is
// rotated; with refuseNew the token endpoint also refuses new ones (a revoked key) until called again
// with false.
func (f *FCM) RevokeTokens(refuseNew bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = map[string]time.Time{}
	f.revoke = refuseNew
}

// oauthError answers like Google's token endpoint.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// serveToken is the JWT-bearer grant (RFC 7523) as Google's token endpoint serves it.
func (f *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "want the jwt-bearer grant")
		return
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != "test-key-1" {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		return &f.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(f.TokenURL()), jwt.WithIssuer(f.email),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(time.Minute))
	if err != nil {
		f.ledger.invalid.Add(1)
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT Signature: "+err.Error())
		return
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if exp == nil || iat == nil || exp.Sub(iat.Time) > time.Hour+time.Minute {
		f.ledger.invalid.Add(1)
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT: exp more than an hour after iat")
		return
	}
	scope, _ := claims["scope"].(string)
	if !strings.Contains(" "+scope+" ", " https://www.googleapis.com/auth/firebase.messaging ") {
		f.ledger.invalid.Add(1)
		oauthError(w, http.StatusBadRequest, "invalid_scope", "the firebase.messaging scope is required")
		return
	}
	raw := make([]byte, 24)
	_, _ = rand.Read(raw)
	tok := "ya29.test-" + hex.EncodeToString(raw)
	f.mu.Lock()
	if f.revoke {
		f.mu.Unlock()
		oauthError(w, http.StatusUnauthorized, "invalid_client", "the key was revoked")
		return
	}
	f.tokens[tok] = time.Now().Add(f.cfg.TokenTTL)
	f.issued++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer",
		"expires_in": int(f.cfg.TokenTTL / time.Second)})
}

// fcmError answers like FCM: a google.rpc.Status with an FcmError detail.
func fcmError(w http.ResponseWriter, status int, rpcStatus, errorCode, msg, retryAfter string) {
	details := []map[string]any{}
	if errorCode != "" {
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": errorCode})
	}
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": status, "message": msg, "status": rpcStatus, "details": details}})
}

var rpcStatus = map[int]string{
	400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
	410: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
}

var ttlPattern = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)

// fcmMessage is what the stand-in reads of a send request; unknown fields are refused as FCM does.
type fcmMessage struct {
	ValidateOnly bool `json:"validate_only"`
	Message      struct {
		Token        string                               `json:"token"`
		Topic        string                               `json:"topic"`
		Condition    string                               `json:"condition"`
		Name         string                               `json:"name"`
		Notification *struct{ Title, Body, Image string } `json:"notification"`
		Data         map[string]string                    `json:"data"`
		Android      *struct {
			CollapseKey  string          `json:"collapse_key"`
			Priority     string          `json:"priority"`
			TTL          string          `json:"ttl"`
			Notification json.RawMessage `json:"notification"`
		} `json:"android"`
		APNS *struct {
			Headers map[string]string `json:"headers"`
			Payload json.RawMessage   `json:"payload"`
		} `json:"apns"`
		Webpush *struct {
			Headers      map[string]string `json:"headers"`
			Notification json.RawMessage   `json:"notification"`
			FCMOptions   json.RawMessage   `json:"fcm_options"`
		} `json:"webpush"`
		FCMOptions json.RawMessage `json:"fcm_options"`
	} `json:"message"`
}

func (f *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("project") != f.cfg.ProjectID {
		f.ledger.invalid.Add(1)
		fcmError(w, http.StatusForbidden, "PERMISSION_DENIED", "", "Permission denied on project "+r.PathValue("project"), "")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	exp, known := f.tokens[tok]
	f.mu.Unlock()
	if !ok || !known || time.Now().After(exp) {
		f.ledger.invalid.Add(1)
		fcmError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "",
			"Request had invalid authentication credentials. Expected OAuth 2 access token.", "")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	bad := func(msg string) {
		f.ledger.invalid.Add(1)
		fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", msg, "")
	}
	var m fcmMessage
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		bad("Invalid JSON payload received. " + err.Error())
		return
	}
	msg := m.Message
	targets := 0
	for _, t := range []string{msg.Token, msg.Topic, msg.Condition} {
		if t != "" {
			targets++
		}
	}
	switch {
	case targets != 1:
		bad("Exactly one of token, topic or condition must be set")
		return
	case len(body) > 4096+1024:
		bad("Message is too big")
		return
	case msg.Android != nil && msg.Android.TTL != "" && !ttlPattern.MatchString(msg.Android.TTL):
		bad("Invalid value at 'message.android.ttl'")
		return
	}
	var ttl time.Duration
	if msg.Android != nil && msg.Android.TTL != "" {
		secs, _ := strconv.ParseFloat(strings.TrimSuffix(msg.Android.TTL, "s"), 64)
		if secs > 2419200 {
			bad("Invalid value at 'message.android.ttl': more than 28 days")
			return
		}
		ttl = time.Duration(secs * float64(time.Second))
	}
	attempt := f.ledger.attempt(msg.Token)
	var fault Fault
	if f.cfg.Faults != nil {
		fault = f.cfg.Faults(msg.Token, attempt)
	}
	if !hold(r, fault.Delay) {
		f.ledger.abandoned.Add(1)
		return
	}
	if fault.Status != 0 {
		f.ledger.refused.Add(1)
		code := fault.ErrorCode
		status := fault.Status
		if code == "UNREGISTERED" {
			status = http.StatusNotFound // FCM's status for it, whatever the fault said
		}
		fcmError(w, status, rpcStatus[status], code, "fault injected", fault.RetryAfter)
		return
	}
	d := Delivery{Device: msg.Token, EventID: msg.Data["event_id"], Payload: body, TTL: ttl, At: time.Now(), Proto: r.Proto}
	if msg.Android != nil {
		d.Topic = msg.Android.CollapseKey
	}
	raw := make([]byte, 8)
	_, _ = rand.Read(raw)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_, err = fmt.Fprintf(w, `{"name":"projects/%s/messages/0:%s"}`+"\n", f.cfg.ProjectID, hex.EncodeToString(raw))
	if err == nil {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		f.ledger.accept(d)
	}
}
