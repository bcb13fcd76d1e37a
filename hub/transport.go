package hub

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// The hub writes to sockets from a few worker goroutines, in place, instead of a writer goroutine per
// socket (research/realtime-anchors.md §7). A worker must never block on one slow socket, so the
// hijacked connection is wrapped in a nonblockConn: a write that the kernel cannot take at once keeps
// its remainder in a backlog and returns; the socket is then marked slow and a goroutine of its own
// waits for the peer (see conn.runSlow). Healthy sockets cost no goroutine and no timer per write.

var (
	errBacklogFull = errors.New("hub: socket backlog full")
	errWriteStall  = errors.New("hub: socket write stalled")
)

// nonblockConn is a net.Conn whose Write never waits for the peer.
type nonblockConn struct {
	net.Conn
	raw syscall.RawConn

	mu      sync.Mutex
	backlog []byte // bytes accepted but not yet in the kernel
	limit   int    // most bytes the backlog may hold
	err     error  // sticky: the connection is dead

	// State of the raw write callback, kept here so writing allocates nothing.
	cur     []byte
	n       int
	werr    error
	writeFn func(fd uintptr) bool
	flushFn func(fd uintptr) bool
}

// newNonblockConn wraps c when it exposes its file descriptor (TCP and Unix sockets); ok is false
// otherwise and the caller writes to c with blocking writes.
func newNonblockConn(c net.Conn, limit int) (*nonblockConn, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	nb := &nonblockConn{Conn: c, raw: raw, limit: limit}
	nb.writeFn = nb.writeOnce
	nb.flushFn = nb.flushOnce
	return nb, true
}

// writeOnce writes nb.cur without waiting; it always reports done so RawConn.Write returns at once.
func (nb *nonblockConn) writeOnce(fd uintptr) bool {
	for nb.n < len(nb.cur) {
		m, err := syscall.Write(int(fd), nb.cur[nb.n:])
		if m > 0 {
			nb.n += m
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			nb.werr = err
			return true
		case m == 0:
			nb.werr = io.ErrShortWrite
			return true
		}
	}
	return true
}

// Write hands p to the kernel, or to the backlog when the kernel's buffer is full or a backlog waits.
func (nb *nonblockConn) Write(p []byte) (int, error) {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	return nb.writeLocked(p)
}

func (nb *nonblockConn) writeLocked(p []byte) (int, error) {
	if nb.err != nil {
		return 0, nb.err
	}
	if len(nb.backlog) > 0 {
		if len(nb.backlog)+len(p) > nb.limit {
			nb.err = errBacklogFull
			return 0, nb.err
		}
		nb.backlog = append(nb.backlog, p...)
		return len(p), nil
	}
	nb.cur, nb.n, nb.werr = p, 0, nil
	err := nb.raw.Write(nb.writeFn)
	n, werr := nb.n, nb.werr
	nb.cur = nil
	if err == nil {
		err = werr
	}
	if err != nil {
		nb.err = err
		return n, err
	}
	if n < len(p) {
		if len(p)-n > nb.limit {
			nb.err = errBacklogFull
			return n, nb.err
		}
		nb.backlog = append(nb.backlog[:0], p[n:]...)
	}
	return len(p), nil
}

// backlogged reports whether bytes wait for the peer.
func (nb *nonblockConn) backlogged() bool {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	return len(nb.backlog) > 0
}

// flushOnce writes what it can of the backlog; it reports done when the backlog is empty or the
// connection failed, and otherwise lets RawConn.Write wait until the socket is writable again.
func (nb *nonblockConn) flushOnce(fd uintptr) bool {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	for len(nb.backlog) > 0 && nb.err == nil {
		m, err := syscall.Write(int(fd), nb.backlog)
		if m > 0 {
			nb.backlog = nb.backlog[:copy(nb.backlog, nb.backlog[m:])]
		}
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			nb.err = err
		case m == 0:
			nb.err = io.ErrShortWrite
		}
	}
	if len(nb.backlog) == 0 && cap(nb.backlog) > 4<<10 {
		nb.backlog = nil // a long backlog's buffer is not kept for the socket's life
	}
	return true
}

// flush waits until the backlog is in the kernel, for at most timeout; a peer that takes nothing for that
// long is stalled.
func (nb *nonblockConn) flush(timeout time.Duration) error {
	if err := nb.Conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	err := nb.raw.Write(nb.flushFn)
	_ = nb.Conn.SetWriteDeadline(time.Time{})
	nb.mu.Lock()
	defer nb.mu.Unlock()
	if nb.err != nil {
		return nb.err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		nb.err = errWriteStall
		return nb.err
	}
	if err != nil {
		nb.err = err
	}
	return err
}

// hijacked is a connection taken over from net/http.
type hijacked struct {
	conn net.Conn          // what the hub writes to: a *nonblockConn when possible
	nb   *nonblockConn     // nil when the connection cannot be written without blocking
	br   *bufio.Reader     // reads the client, starting with bytes net/http had buffered
	bw   *bufio.ReadWriter // for coder/websocket
}

// Buffer sizes of a hijacked connection. net/http's are 4 KiB each. Client frames are tiny, and the hub
// writes its frames whole, bytes built once per event (frame.wsBytes), straight to the connection, so
// the write buffer only serves coder/websocket's close frame: small buffers save most of a socket's idle
// memory.
const (
	readBufSize  = 64
	writeBufSize = 64
)

// hijack takes the connection of w over. Headers already written through w (the 101 of an upgrade) are
// flushed by net/http first.
func hijack(w http.ResponseWriter, backlogLimit int) (*hijacked, error) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("hijack: %w", err)
	}
	if err := brw.Writer.Flush(); err != nil {
		c.Close()
		return nil, fmt.Errorf("hijack: flush: %w", err)
	}
	h := &hijacked{conn: c}
	if nb, ok := newNonblockConn(c, backlogLimit); ok {
		h.conn, h.nb = nb, nb
	}
	h.br = brw.Reader
	if h.br.Buffered() == 0 {
		// net/http's reader is dropped for a smaller one.
		h.br = bufio.NewReaderSize(h.conn, readBufSize)
	}
	h.bw = bufio.NewReadWriter(h.br, bufio.NewWriterSize(h.conn, writeBufSize))
	return h, nil
}

// upgradeWriter is the ResponseWriter handed to websocket.Accept: its Hijack returns our wrapped
// connection and small buffers instead of net/http's.
type upgradeWriter struct {
	http.ResponseWriter
	backlogLimit int
	h            *hijacked
}

func (u *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, err := hijack(u.ResponseWriter, u.backlogLimit)
	if err != nil {
		return nil, nil, err
	}
	u.h = h
	return h.conn, h.bw, nil
}
