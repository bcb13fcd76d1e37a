package hub_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedrops/livedrops/api/httpkit"
	"github.com/livedrops/livedrops/hub"
)

// unconfirmedBus is the real subscriber whose subscriptions the NATS server never confirms in time, as
// under a connect burst.
type unconfirmedBus struct{ hub.Bus }

func (unconfirmedBus) Flush(context.Context) error { return errors.New("nats: flush: timeout") }

// A socket whose subscriptions cannot be confirmed gets no hello (which would promise every event from
// then on) but a close that says reconnect.
func TestUnconfirmedSubscriptionsCloseWithReconnect(t *testing.T) {
	e := newEnv(t)
	e.users(1, 2)
	e.creators(2)
	e.follow(1, 2)

	deps := e.newDep("hub-unconfirmed")
	deps.Bus = unconfirmedBus{deps.Bus}
	reg := prometheus.NewRegistry()
	deps.Registerer = reg
	h, err := hub.New(hub.Config{}, deps)
	if err != nil {
		t.Fatal(err)
	}
	router := httpkit.NewRouter(httpkit.Options{Logger: deps.Logger})
	router.Get("/ws", h.ServeWS)
	srv := httptest.NewServer(router)
	t.Cleanup(func() {
		srv.Close()
		if err := h.Shutdown(context.Background()); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
	})
	n := &node{e: e, h: h, srv: srv, reg: reg}

	c := n.dialWS(1, dialOpts{})
	for m := range c.frames {
		if m.Type == "hello" {
			t.Fatalf("got hello %s, want a close before it", m.raw)
		}
	}
	code, _ := c.closed()
	if int(code) != hub.CloseServerError || !hub.Reconnect(int(code)) {
		t.Fatalf("close code %d, want %d (reconnect)", code, hub.CloseServerError)
	}
}
