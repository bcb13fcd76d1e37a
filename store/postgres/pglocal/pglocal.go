// Package pglocal runs a PostgreSQL server from the machine's own binaries in a data directory: the
// dev stack of `livedrops all` and the real database of the tests.
//
// On first start the directory is initialised with initdb; later starts find the data again. The server
// listens on a loopback TCP port only (no Unix socket), trusts local connections, and runs in its own
// process group so a Ctrl-C at the terminal reaches the parent first and the parent decides the shutdown
// order. If the parent dies without stopping it, the kernel sends the server SIGINT (parent-death
// signal: a fast shutdown, which ends every session; SIGTERM's smart shutdown would wait for clients
// of other processes), so no postmaster outlives a crashed or killed parent.
//
// PostgreSQL refuses to run as root. When this process is root, the server runs as the `postgres` OS user,
// which owns the data directory; it keeps only CAP_DAC_READ_SEARCH (ambient) so it can reach a data
// directory below a folder that user may not enter, such as /root.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

// ErrMissingBinary reports that a PostgreSQL program is not installed; the error text names the command
// that installs it.
var ErrMissingBinary = errors.New("PostgreSQL binary not found")

// Config says where and how to run the server. Zero values are the documented defaults.
type Config struct {
	// Dir is the data directory (required). initdb runs into it when it holds no cluster yet.
	Dir string
	// Port is the loopback TCP port; 0 picks a free one at each start.
	Port int
	// BinDir holds initdb and postgres; "" looks on PATH, then in /usr/lib/postgresql/*/bin (Debian).
	BinDir string
	// RunAs is the OS user that runs the server when this process is root; "" means "postgres".
	RunAs string
	// Ephemeral trades durability for speed (initdb --no-sync, fsync=off, synchronous_commit=off):
	// for tests only, never for data anyone wants to keep.
	Ephemeral bool
	// Settings are extra server settings passed as -c name=value.
	Settings map[string]string
	// StartTimeout bounds initdb plus start-up; 0 means 90 s.
	StartTimeout time.Duration
	// Logger receives start and stop notes; nil discards them.
	Logger *slog.Logger
}

// Server is a running PostgreSQL postmaster started by Start.
type Server struct {
	cfg     Config
	port    int
	cmd     *exec.Cmd
	logPath string
	logger  *slog.Logger

	done    chan struct{} // closed when the postmaster has exited
	waitErr error         // valid after done is closed

	stopOnce sync.Once
	stopErr  error
}

// SuperUser is the database superuser created by initdb.
const SuperUser = "postgres"

// Start initialises the data directory if needed, starts the server and waits until it accepts
// connections.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("pglocal: Config.Dir is required")
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 90 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("pglocal: data dir: %w", err)
	}
	initdb, err := findBinary(cfg.BinDir, "initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := findBinary(cfg.BinDir, "postgres")
	if err != nil {
		return nil, err
	}
	cred, err := credential(cfg.RunAs)
	if err != nil {
		return nil, err
	}
	if err := ensureCluster(ctx, logger, initdb, dir, cred, cfg.Ephemeral); err != nil {
		return nil, err
	}

	port := cfg.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"-D", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
	}
	settings := map[string]string{}
	if cfg.Ephemeral {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range cfg.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}

	logPath := dir + ".log"
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pglocal: open server log: %w", err)
	}
	defer logFile.Close() // the child holds its own copy

	cmd := exec.Command(postgres, args...)
	cmd.Dir = "/"
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(cred)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pglocal: start %s: %w", postgres, err)
	}
	s := &Server{cfg: cfg, port: port, cmd: cmd, logPath: logPath, logger: logger, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()

	if err := s.waitReady(ctx); err != nil {
		stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer stopCancel()
		_ = s.Stop(stopCtx)
		return nil, fmt.Errorf("pglocal: server did not become ready: %w\n%s", err, tail(logPath, 2048))
	}
	logger.Info("postgres started", "dir", dir, "port", port, "pid", cmd.Process.Pid)
	return s, nil
}

// Port is the TCP port the server listens on (127.0.0.1).
func (s *Server) Port() int { return s.port }

// URL is a connection URL for the database name as the superuser.
func (s *Server) URL(database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", SuperUser, s.port, database)
}

// PID is the postmaster's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Done is closed when the server process has exited, for whatever reason.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop shuts the server down: a fast shutdown (SIGINT: running transactions roll back, the data is
// checkpointed), then an immediate one (SIGQUIT) and a kill if ctx expires first. It is safe to call more
// than once.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx) })
	return s.stopErr
}

func (s *Server) stop(ctx context.Context) error {
	select {
	case <-s.done:
		return nil // already gone
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
		s.logger.Info("postgres stopped", "port", s.port)
		return nil
	case <-ctx.Done():
	}
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	return fmt.Errorf("pglocal: postgres did not stop in time, forced: %w", ctx.Err())
}

func (s *Server) waitReady(ctx context.Context) error {
	url := s.URL("postgres") + "&connect_timeout=2"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := pgconn.Connect(ctx, url)
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// ensureCluster runs initdb when dir holds no cluster. It initialises a sibling temporary directory and
// renames it into place, so an interrupted initdb never leaves a half-made cluster behind.
func ensureCluster(ctx context.Context, logger *slog.Logger, initdb, dir string, cred *syscall.Credential, ephemeral bool) error {
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return ensureOwner(dir, cred)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("pglocal: %s is not empty but holds no PostgreSQL cluster (no PG_VERSION); move it away or choose another data dir", dir)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("pglocal: create parent of %s: %w", dir, err)
	}
	tmp := dir + ".initdb"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("pglocal: clear %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("pglocal: create %s: %w", tmp, err)
	}
	if err := ensureOwner(tmp, cred); err != nil {
		return err
	}
	args := []string{"-D", tmp, "-U", SuperUser, "--auth=trust", "--encoding=UTF8", "--locale=C"}
	if ephemeral {
		args = append(args, "--no-sync")
	}
	logger.Info("initialising postgres data directory", "dir", dir)
	cmd := exec.CommandContext(ctx, initdb, args...)
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = sysProcAttr(cred)
	if err := cmd.Run(); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("pglocal: initdb: %w\n%s", err, out.Bytes())
	}
	_ = os.Remove(dir) // an empty directory may stand in the way of the rename
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("pglocal: move new cluster into %s: %w", dir, err)
	}
	return nil
}

func ensureOwner(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("pglocal: give %s to uid %d: %w", dir, cred.Uid, err)
	}
	return nil
}

// credential is nil when this process is not root (the server runs as we do), else the RunAs user's.
func credential(runAs string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if runAs == "" {
		runAs = "postgres"
	}
	u, err := user.Lookup(runAs)
	if err != nil {
		return nil, fmt.Errorf("pglocal: PostgreSQL refuses to run as root and the user %q does not exist (%v): "+
			"create it with `useradd --system --user-group --home-dir /var/lib/postgresql %s`", runAs, err, runAs)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pglocal: uid of %s: %w", runAs, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pglocal: gid of %s: %w", runAs, err)
	}
	// No supplementary groups: the server must not keep root's.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	if cred != nil {
		attr.Credential = cred
		attr.AmbientCaps = []uintptr{unix.CAP_DAC_READ_SEARCH}
	}
	return attr
}

// findBinary looks in binDir when set, else on PATH, then where Debian's postgresql packages put the
// server programs.
func findBinary(binDir, name string) (string, error) {
	if binDir != "" {
		p := filepath.Join(binDir, name)
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("%w: %s: %v; install PostgreSQL with `apt-get update && apt-get install -y postgresql`",
				ErrMissingBinary, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob(filepath.Join("/usr/lib/postgresql", "*", "bin", name))
	if len(matches) > 0 {
		sort.Strings(matches)
		return matches[len(matches)-1], nil // the newest major version
	}
	return "", fmt.Errorf("%w: %s is neither on PATH nor in /usr/lib/postgresql/*/bin; "+
		"install it with `apt-get update && apt-get install -y postgresql`", ErrMissingBinary, name)
}

// FreePort asks the kernel for a free loopback TCP port. Another process may take it before it is used,
// which is rare enough for a dev stack and tests.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
