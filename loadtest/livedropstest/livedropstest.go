// Package livedropstest runs the real livedrops binary for tests outside cmd/livedrops: it builds it
// from this module, seeds a data dir with `livedrops seed` and starts `livedrops all` (the dev stack of
// `make run`: PostgreSQL, Redis and NATS in the data dir) on a free loopback port, stopping it when
// asked. Tests and load generators that measure or scrape what users run use it instead of wiring
// packages; its functions return errors rather than take a testing.TB, so that a TestMain can share
// one stack among tests and a command can use it too.
package livedropstest

import (
	"bufio"
	"bytes"
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
	"time"
)

// Build compiles ./cmd/livedrops of this module into dir and returns the binary's path.
func Build(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "livedrops")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/livedrops")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/livedrops: %w\n%s", err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the livedrops module")
	}
	return filepath.Dir(mod), nil
}

// TempDir makes a fresh temporary dir that PostgreSQL, run as its own user under root, can reach;
// remove it when done.
func TempDir() (string, error) {
	dir, err := os.MkdirTemp("", "livedropstest-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

// env is the environment of a child: the test's, with the dev stack's variables cleared so a
// developer's DATABASE_URL never leaks into a test, then extra.
func env(dataDir string, extra []string) []string {
	e := append(os.Environ(), "LIVEDROPS_DATA_DIR="+dataDir, "DATABASE_URL=", "REDIS_URL=", "NATS_URL=",
		"LIVEDROPS_JWT_SECRET=", "LIVEDROPS_HTTP_ADDR=127.0.0.1:0", "LIVEDROPS_LOG_LEVEL=warn")
	// exec.Cmd keeps the last value of a repeated name.
	return append(e, extra...)
}

// Seed runs `livedrops seed args...` on dataDir (no `all` may run on it) and returns its JSON summary.
func Seed(bin, dataDir string, args ...string) (map[string]any, error) {
	cmd := exec.Command(bin, append([]string{"seed"}, args...)...)
	cmd.Env = env(dataDir, nil)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("livedrops seed %v: %w\n%s", args, err, stderr.Bytes())
	}
	var res map[string]any
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("livedrops seed printed %q: %w", out, err)
	}
	return res, nil
}

// Token runs `livedrops token --user id` with dataDir's secret.
func Token(bin, dataDir string, user int64) (string, error) {
	cmd := exec.Command(bin, "token", "--user", fmt.Sprint(user))
	cmd.Env = env(dataDir, nil)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("livedrops token: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Process is a running livedrops role.
type Process struct {
	// URL is its base URL, http://127.0.0.1:port.
	URL string
	// DatabaseURL, RedisURL and NatsURL are the services it uses, from its listening log line (the dev
	// stack's have no passwords, so they are whole).
	DatabaseURL, RedisURL, NatsURL string

	role string
	cmd  *exec.Cmd
	exit chan error
	mu   sync.Mutex
	tail []string // its last log lines, for failure messages

	stopOnce sync.Once
	stopErr  error
}

// StartAll starts `livedrops all` on dataDir with extra environment (NAME=value) and waits until
// /readyz answers 200, at most three minutes (the first start runs initdb). Stop it when done.
func StartAll(bin, dataDir string, extra ...string) (*Process, error) {
	return Start(bin, "all", dataDir, extra...)
}

// Start starts `livedrops role` (all, api, hub or worker) on a free loopback port with dataDir as its
// data dir and extra environment (the services' URLs and the secret, for a role other than all), and
// waits until /readyz answers 200. Stop it when done.
func Start(bin, role, dataDir string, extra ...string) (*Process, error) {
	cmd := exec.Command(bin, role)
	cmd.Env = env(dataDir, append([]string{"LIVEDROPS_LOG_LEVEL=info"}, extra...))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{role: role, cmd: cmd, exit: make(chan error, 1)}
	listening := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > 50 {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
			var rec map[string]any
			if strings.Contains(line, `"listening"`) && json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "listening" {
				select {
				case listening <- rec:
				default:
				}
			}
		}
		p.exit <- cmd.Wait()
	}()
	fail := func(format string, args ...any) (*Process, error) {
		err := fmt.Errorf(format, args...)
		return nil, errors.Join(err, p.Stop())
	}
	select {
	case rec := <-listening:
		p.URL = "http://" + fmt.Sprint(rec["addr"])
		p.DatabaseURL, _ = rec["database_url"].(string)
		p.RedisURL, _ = rec["redis_url"].(string)
		p.NatsURL, _ = rec["nats_url"].(string)
	case err := <-p.exit:
		p.exit <- err // for Stop
		return fail("livedrops %s exited before listening: %v\n%s", role, err, p.Log())
	case <-time.After(2 * time.Minute):
		return fail("livedrops %s not listening after 2m\n%s", role, p.Log())
	}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			return fail("%s/readyz (%s) not 200 after 1m (%v)\n%s", p.URL, role, err, p.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log returns the process's last log lines.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// Stop sends SIGTERM and waits for the exit, at most a minute (then it kills). An exit status other
// than 0, or an exit before Stop, is an error. Later calls return the first call's answer.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Process) stop() error {
	select {
	case err := <-p.exit:
		return fmt.Errorf("livedrops %s had exited by itself (%v)\n%s", p.role, err, p.Log())
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exit:
		if err != nil {
			return fmt.Errorf("livedrops %s exited with %w after SIGTERM\n%s", p.role, err, p.Log())
		}
		return nil
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.exit
		return fmt.Errorf("livedrops %s still running 1m after SIGTERM; killed\n%s", p.role, p.Log())
	}
}
