package hub_test

import (
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/api/auth"
	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/hub"
)

// A socket whose token expires is closed with 4401 when the token stops verifying, WebSocket and SSE
// alike; a socket with a longer-lived token of the same user stays open and keeps receiving.
func TestTokenExpiryClosesOpenSockets(t *testing.T) {
	e := newEnv(t)
	seedGraph(e)
	// The same secret as the env's tokens, with almost no leeway, so a token stops verifying at its exp.
	tokens, err := auth.New(auth.Config{Secret: []byte("0123456789abcdef0123456789abcdef"), Leeway: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n := e.startHubWith(hub.Config{}, func(d *hub.Deps) { d.Verifier = tokens })
	short, err := tokens.Mint(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ws := n.dialWS(1, dialOpts{token: short})
	ws.hello()
	sse, resp := n.dialSSE(1, dialOpts{token: short})
	if sse == nil {
		t.Fatalf("SSE refused: %s", resp.Status)
	}
	sse.hello()
	long := n.dialWS(1, dialOpts{}) // the env's token: an hour
	long.hello()

	code, reason := ws.closed()
	took := time.Since(start)
	if code != hub.CloseUnauthorized || reason != "token expired" {
		t.Fatalf("close %d %q, want %d \"token expired\"", code, reason, hub.CloseUnauthorized)
	}
	// exp has a precision of a second, and the hub looks every second.
	if took < time.Second || took > 4*time.Second {
		t.Errorf("closed %s after connecting with a 2 s token, want at its expiry", took)
	}
	m := sse.next()
	for m.Type != "close" {
		m = sse.next()
	}
	if m.event != "close" || !strings.Contains(m.raw, `"code":4401`) {
		t.Errorf("SSE goodbye %s (event %q), want a close event with code 4401", m.raw, m.event)
	}
	ev := e.publish(creatorEvent(fanout.DropStarted, 10, 100))
	long.expect(ev)
	if got := n.metric("livedrops_hub_disconnects_total", "reason", "token_expired"); got != 2 {
		t.Errorf("disconnects for an expired token: got %v, want 2", got)
	}
}
