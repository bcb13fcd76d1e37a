package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// debugServer serves Go's profiles on LIVEDROPS_DEBUG_ADDR, a listener of its own so that /debug/pprof/
// never shares the public port. Block and mutex profiling are switched on with it (a runtime setting of
// the whole process): about one blocking event per millisecond blocked is sampled, and one mutex contention in 100.
type debugServer struct {
	srv *http.Server
	ln  net.Listener
}

func startDebug(addr string, logger *slog.Logger) (*debugServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener on %s: %w", addr, err)
	}
	runtime.SetBlockProfileRate(int(time.Millisecond))
	runtime.SetMutexProfileFraction(100)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	d := &debugServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("debug server", "err", err)
		}
	}()
	logger.Info("debug listener", "addr", ln.Addr().String())
	return d, nil
}

func (d *debugServer) Close() error { return d.srv.Close() }
