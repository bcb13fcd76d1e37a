package httpkit

import (
	"bufio"
	"net"
	"net/http"
)

// recorder wraps a ResponseWriter to learn the status and size of the answer.
// AccessLog, Metrics, Recover and Timeout share one recorder per request when
// they are stacked directly (see wrap).
type recorder struct {
	http.ResponseWriter
	status   int
	bytes    int64
	started  bool // a final status was sent, or the connection was hijacked
	hijacked bool
}

// wrap returns w itself when it is already a recorder, else a new recorder.
func wrap(w http.ResponseWriter) *recorder {
	if rec, ok := w.(*recorder); ok {
		return rec
	}
	return &recorder{ResponseWriter: w}
}

// Status returns the status sent, or 200 when the handler sent none (which is
// what net/http answers then).
func (rec *recorder) Status() int {
	if rec.status == 0 {
		return http.StatusOK
	}
	return rec.status
}

func (rec *recorder) WriteHeader(code int) {
	// Informational answers other than 101 may precede the final one.
	if !rec.started && (code >= 200 || code == http.StatusSwitchingProtocols) {
		rec.status = code
		rec.started = true
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if !rec.started {
		rec.status = http.StatusOK
		rec.started = true
	}
	n, err := rec.ResponseWriter.Write(b)
	rec.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// Flush implements http.Flusher, for handlers that type-assert it.
func (rec *recorder) Flush() { _ = rec.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (rec *recorder) FlushError() error {
	err := http.NewResponseController(rec.ResponseWriter).Flush()
	if err == nil && !rec.started {
		rec.status = http.StatusOK
		rec.started = true
	}
	return err
}

// Hijack implements http.Hijacker, for handlers that type-assert it; it
// returns http.ErrNotSupported when the underlying writer cannot hijack.
func (rec *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(rec.ResponseWriter).Hijack()
	if err == nil {
		rec.started = true
		rec.hijacked = true
	}
	return conn, rw, err
}
