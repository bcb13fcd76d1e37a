package hub

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/livedrops/livedrops/api/httpkit"
)

// ServeWS serves GET /ws: it upgrades to a WebSocket, then authenticates. Refusals travel as close codes
// (CloseUnauthorized, CloseForbidden, CloseTooManySockets, CloseBadFrame, CloseDraining) because a
// browser cannot read the HTTP status of a failed upgrade; a request that is no upgrade at all is
// answered 426 problem+json.
func (h *Hub) ServeWS(w http.ResponseWriter, r *http.Request) {
	t0 := h.cfg.Now()
	token := takeToken(r)
	if !headerHas(r.Header, "Connection", "upgrade") || !headerHas(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		httpkit.WriteProblem(w, r, httpkit.Problem{Status: http.StatusUpgradeRequired, Code: "upgrade_required",
			Detail: "GET /ws is a WebSocket endpoint; GET /events serves the same events as Server-Sent Events"})
		return
	}
	// The whole setup, from checking the token to the hello, runs inside the setup stage, on one of its
	// goroutines.
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SetupTimeout)
	defer cancel()
	release, admitErr := h.admit(ctx)
	if admitErr != nil {
		h.setupWS(ctx, w, r, token, t0, admitErr) // refused: a close frame, on this goroutine
		return
	}
	defer release()
	h.inStage(func() { h.setupWS(ctx, w, r, token, t0, nil) })
}

// setupWS upgrades r, checks it and sets its socket up; admitErr is why the socket got no place in the
// setup stage (it is refused once upgraded).
func (h *Hub) setupWS(ctx context.Context, w http.ResponseWriter, r *http.Request, token string, t0 time.Time, admitErr error) {
	originOK, _ := matchOrigin(r.Header.Get("Origin"), r.Host, h.cfg.AllowedOrigins)
	var userID, until int64
	var authErr error
	if token != "" {
		userID, until, authErr = h.verify(token)
	}
	req, reqErr := h.parseRequest(r, "")

	uw := &upgradeWriter{ResponseWriter: w, backlogLimit: h.cfg.BacklogBytes}
	var self atomic.Pointer[conn] // the socket, once it exists, for the control-frame callbacks
	ws, err := websocket.Accept(uw, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // origin checked above
		// Pongs are noted for the keep-alive; pings are answered by the socket's writer (keepalive.go).
		OnPongReceived: func(context.Context, []byte) {
			if c := self.Load(); c != nil {
				c.pongAt.Store(h.cfg.Now().UnixNano())
			}
		},
		OnPingReceived: func(_ context.Context, payload []byte) bool {
			c := self.Load()
			if c == nil {
				return true // nothing else writes yet: coder/websocket answers
			}
			if !c.allowFrame(frameWSPing) {
				c.closeWith(CloseTooManyFrames, "too many frames", reasonFrameRate, nil)
				return false
			}
			c.offer(wsPong(payload))
			return false
		},
	})
	if err != nil {
		return // Accept answered the client
	}
	refuse := func(code int, reason, why string) {
		h.m.refused.WithLabelValues(why).Inc()
		_ = ws.Close(websocket.StatusCode(code), reason)
	}
	switch {
	case !originOK:
		refuse(CloseForbidden, "origin not allowed", refuseOrigin)
		return
	case token == "":
		refuse(CloseUnauthorized, "no token", refuseNoToken)
		return
	case authErr != nil:
		refuse(CloseUnauthorized, "invalid or expired token", refuseBadToken)
		return
	case reqErr != nil:
		refuse(CloseBadFrame, "bad watch parameter", refuseBadWatch)
		return
	case h.draining.Load():
		refuse(CloseDraining, drainReason(jitter(h.cfg.DrainSpread)), refuseDraining)
		return
	case admitErr != nil:
		refuse(CloseServerError, "hub busy, reconnect", refuseBusy)
		return
	}
	ws.SetReadLimit(h.cfg.ReadLimit)

	h.conns.Add(1) // for the setup here, then for the reader goroutine
	c := h.newConn(userID, false)
	c.expires = until
	self.Store(c)
	err = h.join(ctx, c)
	if errors.Is(err, errOverCap) {
		h.conns.Done()
		refuse(CloseTooManySockets, "too many sockets for this user", refuseOverCap)
		return
	}
	if !c.attach(uw.h, ws, CloseDraining, drainReason(0)) {
		h.conns.Done()
		_ = ws.CloseNow()
		return
	}
	switch {
	case err != nil:
		h.log.Warn("hub: socket setup", "conn_id", c.id, "user_id", userID, "err", err)
		c.release()
		c.closeWith(CloseServerError, "setup failed, reconnect", reasonSetup, nil)
	case h.draining.Load():
		c.release()
		c.closeWith(CloseDraining, drainReason(jitter(h.cfg.DrainSpread)), reasonDrain, nil)
	default:
		h.start(ctx, c, req, t0)
	}
	// The handler returns and a fresh goroutine reads: net/http's state of the request (its buffers, the
	// stack the setup grew) is garbage from here on, which is most of an idle socket's memory.
	go func() {
		defer h.conns.Done()
		h.readWS(c)
	}()
}

// readWS reads client frames until the socket ends; it is also what answers pings and close frames.
func (h *Hub) readWS(c *conn) {
	why := reasonClient
	for {
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				why = reasonBadFrame
			}
			break
		}
		if c.isClosed() {
			continue // closing: what the client still sends is read (to end the handshake) and ignored
		}
		if typ != websocket.MessageText {
			c.h.m.frames[frameBad].Inc()
			c.closeWith(CloseBadFrame, "binary frames are not part of the protocol", reasonBadFrame, nil)
			continue
		}
		f, err := ParseClientFrame(data)
		if err != nil {
			c.h.m.frames[frameBad].Inc()
			c.closeWith(CloseBadFrame, "bad frame", reasonBadFrame, nil)
			continue
		}
		kind := frameWatch
		switch f.Op {
		case OpUnwatch:
			kind = frameUnwatch
		case OpPing:
			kind = framePing
		}
		if !c.allowFrame(kind) {
			c.closeWith(CloseTooManyFrames, "too many frames", reasonFrameRate, nil)
			continue
		}
		h.handleFrame(c, f)
	}
	c.closeWith(int(websocket.StatusNormalClosure), "", why, nil)
	_ = c.ws.CloseNow()
}

// headerHas reports whether a comma-separated header of h holds token, case-insensitively.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
