package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// Sampling of the block and mutex profiles while the pprof listener is on: one blocking event per
// 10 µs spent blocked, one mutex contention event in 100. Both cost a little on every blocking
// operation, which is why they are set only when LIVEDROPS_PPROF_ADDR asks for profiles.
const (
	pprofBlockRate     = 10_000 // ns
	pprofMutexFraction = 100
)

// pprofServer serves net/http/pprof on its own listener, apart from the public router, so profiles are
// never reachable through the API's address.
type pprofServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// startPprof listens on addr and serves /debug/pprof/ there; it also turns on the block and mutex
// profiles.
func startPprof(addr string, logger *slog.Logger) (*pprofServer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: listen on %s: %w", addr, err)
	}
	runtime.SetBlockProfileRate(pprofBlockRate)
	runtime.SetMutexProfileFraction(pprofMutexFraction)
	p := &pprofServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
			ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)},
		ln: ln, done: make(chan error, 1),
	}
	go func() { p.done <- p.srv.Serve(ln) }()
	logger.Info("pprof listening", "addr", ln.Addr().String())
	return p, nil
}

// Addr is the address the pprof listener listens on.
func (p *pprofServer) Addr() string { return p.ln.Addr().String() }

// Close stops the listener; a profile being taken is cut short.
func (p *pprofServer) Close(ctx context.Context) error {
	err := p.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, p.srv.Close())
	}
	if serveErr := <-p.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	runtime.SetBlockProfileRate(0)
	runtime.SetMutexProfileFraction(0)
	return err
}
