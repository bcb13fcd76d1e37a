package hub

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/livedrops/livedrops/api/httpkit"
)

// ServeSSE serves GET /events: the same events as /ws, as Server-Sent Events, for clients that cannot
// hold a WebSocket. Refusals are plain problem+json answers (EventSource does not retry a non-200
// answer): 401 without a valid token, 403 for a page of another origin, 429 over the socket cap, 503
// while draining. The stream itself is written on the hijacked connection, by the same workers as
// WebSockets; Last-Event-ID (or ?since=) resumes, ?watch=1,2 watches drops.
func (h *Hub) ServeSSE(w http.ResponseWriter, r *http.Request) {
	t0 := h.cfg.Now()
	token := takeToken(r)
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SetupTimeout)
	defer cancel()
	release, err := h.admit(ctx)
	if err != nil {
		h.m.refused.WithLabelValues(refuseBusy).Inc()
		w.Header().Set("Retry-After", "1")
		httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusServiceUnavailable, Code: "unavailable",
			Detail: "the hub is busy setting other streams up; try again shortly"})
		return
	}
	defer release()
	origin := r.Header.Get("Origin")
	if ok, _ := matchOrigin(origin, r.Host, h.cfg.AllowedOrigins); !ok {
		h.m.refused.WithLabelValues(refuseOrigin).Inc()
		httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusForbidden, Code: "forbidden",
			Detail: "this origin may not connect"})
		return
	}
	if origin != "" {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
	}
	if token == "" {
		h.m.refused.WithLabelValues(refuseNoToken).Inc()
		unauthorized(w, r, "a bearer token is required (Authorization header or access_token parameter)")
		return
	}
	userID, until, err := h.verify(token)
	if err != nil {
		h.m.refused.WithLabelValues(refuseBadToken).Inc()
		unauthorized(w, r, "the token is invalid or expired")
		return
	}
	if h.draining.Load() {
		h.m.refused.WithLabelValues(refuseDraining).Inc()
		after := jitter(h.cfg.DrainSpread)
		w.Header().Set("Retry-After", strconv.FormatInt(int64(after/time.Second)+1, 10))
		httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusServiceUnavailable, Code: "unavailable",
			Detail: "this hub is draining; reconnect (" + drainReason(after) + ")"})
		return
	}
	req, err := h.parseRequest(r, r.Header.Get("Last-Event-ID"))
	if err != nil {
		h.m.refused.WithLabelValues(refuseBadWatch).Inc()
		httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusBadRequest, Code: "invalid_argument",
			Detail: err.Error()})
		return
	}

	h.conns.Add(1) // for the setup here, then for the reader goroutine
	reading := false
	defer func() {
		if !reading {
			h.conns.Done()
		}
	}()
	c := h.newConn(userID, true)
	c.expires = until
	err = h.join(ctx, c)
	switch {
	case errors.Is(err, errOverCap):
		h.m.refused.WithLabelValues(refuseOverCap).Inc()
		httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusTooManyRequests, Code: "too_many_sockets",
			Detail: "this user holds the most sockets allowed; close one first"})
		return
	case err != nil:
		h.log.Warn("hub: socket setup", "conn_id", c.id, "user_id", userID, "err", err)
		c.closeWith(CloseServerError, "", reasonSetup, nil)
		w.Header().Set("Retry-After", "1")
		httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusServiceUnavailable, Code: "unavailable",
			Detail: "try again shortly"})
		return
	}
	head := sseHead(w.Header())
	tr, err := hijack(w, h.cfg.BacklogBytes)
	if err != nil {
		c.closeWith(CloseServerError, "", reasonSetup, nil)
		httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusHTTPVersionNotSupported, Code: "http1_required",
			Detail: "event streams are served over HTTP/1.1"})
		return
	}
	if _, err := tr.conn.Write(head); err != nil {
		c.closeWith(CloseServerError, "", reasonWriteError, nil)
		_ = tr.conn.Close()
		return
	}
	if !c.attach(tr, nil, CloseDraining, drainReason(0)) {
		return
	}
	if h.draining.Load() {
		c.release()
		c.closeWith(CloseDraining, drainReason(jitter(h.cfg.DrainSpread)), reasonDrain, nil)
	} else {
		h.start(ctx, c, req, t0)
	}
	reading = true
	go func() {
		defer h.conns.Done()
		h.readSSE(c)
	}()
}

// readSSE waits for the client to go: an SSE client sends nothing after its request.
func (h *Hub) readSSE(c *conn) {
	buf := make([]byte, 64)
	for {
		if _, err := c.tr.br.Read(buf); err != nil {
			break
		}
	}
	c.closeWith(CloseServerError, "", reasonClient, nil)
	_ = c.tr.conn.Close()
}

// sseHead is the HTTP answer of an event stream, with the headers the middleware set on w (request id,
// CORS). The body runs until the connection closes.
func sseHead(hdr http.Header) []byte {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n" +
		"Connection: close\r\nX-Accel-Buffering: no\r\n")
	for k, vs := range hdr {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Type", "Content-Length", "Connection", "Cache-Control", "Transfer-Encoding":
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(k+v, "\r\n") {
				continue
			}
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

func unauthorized(w http.ResponseWriter, r *http.Request, detail string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="livedrops"`)
	httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusUnauthorized, Code: "unauthorized", Detail: detail})
}
