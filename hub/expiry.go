package hub

import (
	"container/heap"
	"sync"
	"time"
)

// Token lifetime on open sockets (issue 13). A socket's token is checked at connect; the socket is
// closed with CloseUnauthorized when the token stops verifying (its expiry plus the verifier's leeway:
// the SDK then asks its getToken for a new one and resumes). One heap per hub orders the live sockets by
// expiry, and one goroutine looks at its top every second: no timer or goroutine per socket, and a
// socket leaves the heap when it closes.

// ExpiringVerifier is a Verifier that also tells until when a token verifies (*auth.Tokens is one). With
// a plain Verifier, expiry is checked only at connect.
type ExpiringVerifier interface {
	VerifyExpiry(token string) (userID int64, validUntil time.Time, err error)
}

// verify checks token: its user, and the unix ns at which it stops verifying (0: not known).
func (h *Hub) verify(token string) (userID, until int64, err error) {
	if ev, ok := h.d.Verifier.(ExpiringVerifier); ok {
		id, t, err := ev.VerifyExpiry(token)
		if err != nil {
			return 0, 0, err
		}
		return id, t.UnixNano(), nil
	}
	id, err := h.d.Verifier.Verify(token)
	return id, 0, err
}

// expiries is the heap of live sockets by the expiry of their token.
type expiries struct {
	mu sync.Mutex
	h  expiryHeap
}

type expiryHeap []*conn

func (x expiryHeap) Len() int           { return len(x) }
func (x expiryHeap) Less(i, j int) bool { return x[i].expires < x[j].expires }
func (x expiryHeap) Swap(i, j int) {
	x[i], x[j] = x[j], x[i]
	x[i].expIdx, x[j].expIdx = int32(i), int32(j)
}
func (x *expiryHeap) Push(v any) {
	c := v.(*conn)
	c.expIdx = int32(len(*x))
	*x = append(*x, c)
}
func (x *expiryHeap) Pop() any {
	old := *x
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*x = old[:len(old)-1]
	c.expIdx = -1
	return c
}

// track puts a live socket whose token expires in the heap, unless it is closed already (the caller
// holds c.mu, under which closeWith marks it closed before it calls untrack).
func (e *expiries) track(c *conn) {
	e.mu.Lock()
	heap.Push(&e.h, c)
	e.mu.Unlock()
}

// untrack takes c out of the heap, if it is there.
func (e *expiries) untrack(c *conn) {
	e.mu.Lock()
	if c.expIdx >= 0 {
		heap.Remove(&e.h, int(c.expIdx))
	}
	e.mu.Unlock()
}

// due pops the sockets whose token stopped verifying at now (unix ns), appending them to out.
func (e *expiries) due(now int64, out []*conn) []*conn {
	e.mu.Lock()
	for len(e.h) > 0 && e.h[0].expires <= now {
		out = append(out, heap.Pop(&e.h).(*conn))
	}
	e.mu.Unlock()
	return out
}

// expiryLoop closes, every second, the sockets whose token expired.
func (h *Hub) expiryLoop() {
	defer h.bg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var buf []*conn
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		buf = h.expiries.due(h.cfg.Now().UnixNano(), buf[:0])
		for _, c := range buf {
			c.closeWith(CloseUnauthorized, "token expired", reasonExpired, nil)
		}
		clear(buf)
	}
}
