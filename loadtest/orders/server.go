package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverKind starts the server of a run as a process of its own: `livedrops all`, or the floor
// (loadtest/orderfloor) for the runs of mode floor.
type serverKind struct {
	path      string // the livedrops binary
	floorPath string // the orderfloor binary; "" when the floor does not run
	env       []string
	rateUser  int
	pprofDir  string // where profiles of every run go; "" for none
}

func (s serverKind) describe() string {
	d := "livedrops all (" + s.path + "), per-user limit " + strconv.Itoa(s.rateUser) + "/s, per-address limit off"
	if s.floorPath != "" {
		d += "; floor " + s.floorPath
	}
	return d
}

// chooseServer checks that the binary has the order mode setting the runs switch, and finds the floor.
func chooseServer(o options) (serverKind, error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return serverKind{}, err
	}
	out, _ := exec.Command(bin, "all", "-h").CombinedOutput()
	if !strings.Contains(string(out), "LIVEDROPS_ORDER_MODE") {
		return serverKind{}, fmt.Errorf("%s has no LIVEDROPS_ORDER_MODE setting: build it (make build)", bin)
	}
	k := serverKind{path: bin, env: o.serverEnv, rateUser: o.rateUser, pprofDir: o.pprofDir}
	if o.floor {
		if k.floorPath, err = filepath.Abs(o.floorBin); err != nil {
			return serverKind{}, err
		}
		if _, err := os.Stat(k.floorPath); err != nil {
			return serverKind{}, fmt.Errorf("the floor service: %w (go build -o %s ./loadtest/orderfloor)", err, o.floorBin)
		}
	}
	return k, nil
}

type server struct {
	cmd   *exec.Cmd
	base  string
	pprof string // base URL of its /debug/pprof/, "" when off
	done  chan error
}

// start starts the server for c on a free port and waits until it is ready.
func (s serverKind) start(ctx context.Context, st *stack, c config, name string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	logPath := filepath.Join(st.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(st.dir, name)
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	ready := "/readyz"
	var pprofAddr string
	if s.pprofDir != "" {
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		pprofAddr = "127.0.0.1:" + strconv.Itoa(pport)
	}
	if c.mode == modeFloor {
		pool := c.pool
		if pool == 0 {
			pool = 4
		}
		cmd = exec.Command(s.floorPath, "-http-addr", addr, "-database-url", st.dbURL, "-pool", strconv.Itoa(pool),
			"-pprof-addr", pprofAddr)
		cmd.Env = cleanEnv()
		ready = "/healthz"
	} else {
		cmd = exec.Command(s.path, "all")
		cmd.Env = append(cleanEnv(),
			"DATABASE_URL="+st.dbURL, "REDIS_URL="+st.redisURL, "LIVEDROPS_DATA_DIR="+dataDir,
			"LIVEDROPS_JWT_SECRET="+st.secret, "LIVEDROPS_HTTP_ADDR="+addr,
			"LIVEDROPS_ORDER_MODE="+c.mode, "LIVEDROPS_DB_MAX_CONNS="+strconv.Itoa(c.pool),
			// The per-user limit is on, as deployed; the buyers all come from one address, so the
			// per-address limit is off.
			"LIVEDROPS_RATE_USER="+strconv.Itoa(s.rateUser), "LIVEDROPS_RATE_IP=0",
			// A baseline buyer may queue for seconds on the row lock; that is the measurement, not a failure.
			"LIVEDROPS_REQUEST_TIMEOUT=60s", "LIVEDROPS_LOG_LEVEL=warn")
		if pprofAddr != "" {
			cmd.Env = append(cmd.Env, "LIVEDROPS_PPROF_ADDR="+pprofAddr)
		}
		cmd.Env = append(cmd.Env, s.env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Should this program die, the server goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	srv := &server{cmd: cmd, base: "http://" + addr, done: make(chan error, 1)}
	if pprofAddr != "" {
		srv.pprof = "http://" + pprofAddr + "/debug/pprof/"
	}
	go func() { srv.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(srv.base + ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return srv, nil
			}
		}
		select {
		case err := <-srv.done:
			return nil, fmt.Errorf("server exited before it was ready: %v (log in %s)", err, logPath)
		case <-ctx.Done():
			_ = srv.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = srv.stop()
			return nil, fmt.Errorf("server not ready after 2 minutes (log in %s)", logPath)
		}
	}
}

// cleanEnv is this process's environment without the settings the bench gives the binary itself.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "LIVEDROPS_") || k == "DATABASE_URL" ||
			k == "REDIS_URL" || k == "NATS_URL" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// stop ends the server with SIGTERM (a graceful shutdown) and waits.
func (s *server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("server: %w", err)
		}
		return nil
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return errors.New("server did not stop within 60 s; killed")
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
