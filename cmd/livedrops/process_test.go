package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedrops/livedrops/store/storetest"
)

// These tests run the real binary, as `make run` does, with its own dev stack in a data dir.

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "livedrops")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// devProcess is one `livedrops all` child and what its log told.
type devProcess struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []map[string]any
	exit chan error
}

func startDevProcess(t *testing.T, bin, dataDir string) *devProcess {
	t.Helper()
	cmd := exec.Command(bin, "all")
	cmd.Env = append(os.Environ(),
		"LIVEDROPS_HTTP_ADDR=127.0.0.1:0", "LIVEDROPS_DATA_DIR="+dataDir,
		"DATABASE_URL=", "REDIS_URL=", "NATS_URL=", "LIVEDROPS_JWT_SECRET=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, exit: make(chan error, 1)}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				p.mu.Lock()
				p.logs = append(p.logs, line)
				p.mu.Unlock()
			}
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.exit
		}
	})
	return p
}

// field returns the value of key in the first log line with message msg.
func (p *devProcess) field(msg, key string) (any, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		if l["msg"] == msg {
			v, ok := l[key]
			return v, ok
		}
	}
	return nil, false
}

func (p *devProcess) waitReady(t *testing.T, timeout time.Duration) string {
	t.Helper()
	var addr string
	checkFor(t, timeout, func() error {
		select {
		case err := <-p.exit:
			p.exit <- err
			return fmt.Errorf("livedrops exited before ready: %v; log: %v", err, p.logs)
		default:
		}
		v, ok := p.field("listening", "addr")
		if !ok {
			return errors.New("not listening yet")
		}
		addr = v.(string)
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %d", resp.StatusCode)
		}
		return nil
	})
	return addr
}

func (p *devProcess) pid(t *testing.T, msg string) int {
	t.Helper()
	v, ok := p.field(msg, "pid")
	if !ok {
		t.Fatalf("no %q log line with a pid", msg)
	}
	return int(v.(float64))
}

func (p *devProcess) databaseURL(t *testing.T) string {
	t.Helper()
	v, ok := p.field("listening", "database_url")
	if !ok {
		t.Fatal("no database_url in the listening line")
	}
	return v.(string)
}

func (p *devProcess) signalAndWait(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exit:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("livedrops did not exit within 60 s of %v", sig)
		return nil
	}
}

func waitGone(t *testing.T, name string, pid int) {
	t.Helper()
	checkFor(t, 15*time.Second, func() error {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("%s (pid %d) still running: kill(0) = %v", name, pid, err)
		}
		return nil
	})
}

func TestDevStackLifecycle(t *testing.T) {
	bin := buildBinary(t)
	dataDir := filepath.Join(storetest.PrivateDir(t), "data")

	// First run: initdb included, ready well within the 90 s the README promises.
	first := startDevProcess(t, bin, dataDir)
	start := time.Now()
	first.waitReady(t, 90*time.Second)
	t.Logf("first run ready in %s", time.Since(start).Round(time.Millisecond))
	pgPID, redisPID := first.pid(t, "postgres started"), first.pid(t, "redis started")

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, first.databaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO users (name, email) VALUES ('Ada', 'ada@example.com')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	// Ctrl-C: a clean exit, and nothing left running.
	if err := first.signalAndWait(t, syscall.SIGINT); err != nil {
		t.Fatalf("exit after SIGINT: %v", err)
	}
	waitGone(t, "postgres", pgPID)
	waitGone(t, "redis-server", redisPID)

	// Second run: the data of the first is there.
	second := startDevProcess(t, bin, dataDir)
	second.waitReady(t, 60*time.Second)
	conn, err = pgx.Connect(ctx, second.databaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	var name string
	err = conn.QueryRow(ctx, "SELECT name FROM users WHERE email = 'ada@example.com'").Scan(&name)
	conn.Close(ctx)
	if err != nil || name != "Ada" {
		t.Fatalf("user of the first run: got %q, %v; want Ada", name, err)
	}

	// SIGKILL gives no chance to clean up: the children must still go (parent-death signal).
	pgPID, redisPID = second.pid(t, "postgres started"), second.pid(t, "redis started")
	_ = second.signalAndWait(t, syscall.SIGKILL)
	waitGone(t, "postgres", pgPID)
	waitGone(t, "redis-server", redisPID)

	// And the stack starts again on the data a killed run left.
	third := startDevProcess(t, bin, dataDir)
	third.waitReady(t, 60*time.Second)
	if err := third.signalAndWait(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

func TestDevStackMissingBinaryIsNamed(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "all")
	cmd.Env = []string{"PATH=" + t.TempDir(), "LIVEDROPS_HTTP_ADDR=127.0.0.1:0", "LIVEDROPS_DATA_DIR=" + t.TempDir(),
		"DATABASE_URL=postgres://u@127.0.0.1:1/x"} // PostgreSQL given, so Redis is the first to start
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Fatalf("got %v, want exit status 1\n%s", err, out)
	}
	if want := "apt-get install -y redis-server"; !contains(out, want) {
		t.Fatalf("output does not name %q:\n%s", want, out)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
