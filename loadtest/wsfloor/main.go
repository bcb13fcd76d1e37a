// Command wsfloor is the floor of bench-fanout: the least WebSocket fan-out server coder/websocket allows
// (research/realtime-anchors.md §7), measured in the same run as the hub so the hub's figures come with
// a ratio to what the machine can do at all. It accepts any socket on /ws (no token, no follow list, no
// subscription), greets it with a hello, and on POST /broadcast writes the request body as one text
// message to every socket from -workers goroutines writing in place, with no timer per write. It imports
// no LiveDrops package.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	workers := flag.Int("workers", 2, "goroutines writing a broadcast")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "wsfloor:", err)
		os.Exit(1)
	}
}

type server struct {
	workers int
	mu      sync.Mutex
	conns   []*websocket.Conn
}

func run(ctx context.Context, addr string, workers int) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := &server{workers: max(1, workers)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("POST /broadcast", s.broadcast)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("LISTENING %s\n", ln.Addr())
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	if err := c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"hello","conn_id":"floor"}`)); err != nil {
		_ = c.CloseNow()
		return
	}
	c.CloseRead(context.Background()) // a reader answers pings and notices the close
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
}

// broadcast writes the body to every socket: the sockets split in -workers parts, each written in turn.
func (s *server) broadcast(w http.ResponseWriter, r *http.Request) {
	msg, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	conns := s.conns
	s.mu.Unlock()
	var wg sync.WaitGroup
	per := (len(conns) + s.workers - 1) / s.workers
	for i := 0; i < len(conns); i += max(1, per) {
		part := conns[i:min(i+per, len(conns))]
		wg.Go(func() {
			for _, c := range part {
				_ = c.Write(context.Background(), websocket.MessageText, msg)
			}
		})
	}
	wg.Wait()
	w.WriteHeader(http.StatusNoContent)
}
