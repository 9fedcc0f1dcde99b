// Package redistest starts real redis-server processes on free loopback
// ports for tests, and stops them when the test ends.
//
// A test that calls Start fails (it never skips) when redis-server is not on
// the PATH: the README's test command installs it. Servers run with no
// persistence in a temporary directory, so each test starts from an empty
// keyspace.
//
// Beyond a single server the package starts a replica (StartReplica), a
// Redis Cluster (StartCluster, which also needs redis-cli) and a Sentinel
// group (StartSentinel); it serves TLS with a throw-away certificate
// authority (NewTestCA, Options.TLS) and ACLs (Options.ACLFile,
// Options.Password). Everything listens on 127.0.0.1 only and every process
// is killed at test cleanup.
//
// Concurrency: a Server, Cluster or Sentinel may be used from several
// goroutines, but the helpers that take a testing.TB, and the methods that
// fail the test (Restart, Promote, KillMaster, ...), must be called from the
// test's own goroutine, as t.Fatal requires.
package redistest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options configures a server. Zero fields mean defaults.
type Options struct {
	// Config holds extra redis.conf lines, such as "maxmemory 2mb".
	Config []string

	// TLS, when set, makes the server speak TLS only: "port 0" and a
	// tls-port with the CA's server certificate (valid for 127.0.0.1 and
	// localhost); clients are not asked for certificates
	// ("tls-auth-clients no"). Addr and TLSAddr are then that TLS port.
	TLS *CA

	// ACLFile, when not empty, is the content of an ACL file ("user alice
	// on >secret ~* +@all", one user a line) that the server loads with
	// "aclfile".
	ACLFile string

	// Password, when not empty, is the default user's password: "requirepass"
	// or, when ACLFile is set, a "user default on >Password ~* &* +@all"
	// line added to that file (an ACLFile that defines the default user
	// itself and a Password conflict: Start fails the test). Client and the
	// readiness probe authenticate with it.
	Password string
}

// Server is one redis-server process.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	conf string
	// Addr is host:port of the server on loopback: the TLS port when the
	// server was started with Options.TLS (it then has no plain port).
	Addr string
	// Port is the TCP port.
	Port int
	// TLSAddr is Addr when the server was started with Options.TLS, and
	// empty otherwise.
	TLSAddr string

	ca       *CA      // Options.TLS
	password string   // Options.Password
	args     []string // extra command-line arguments after the config file

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd
}

// Binary returns the path of redis-server, failing tb when it is missing.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("%s not found on PATH: install Debian's redis-server and redis-tools (see README, \"Tests\"): %v", name, err)
	}
	return p
}

// Start starts a redis-server on a free loopback port. It is stopped when
// the test and its subtests end.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: Binary(tb, "redis-server"), dir: tb.TempDir()}
	s.Port = FreePort(tb)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	lines := []string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(s.Port),
		"dir " + s.dir,
		`save ""`,
		"appendonly no",
		"protected-mode no",
		"logfile " + filepath.Join(s.dir, "redis.log"),
		// A replica's first sync starts at once, not after 5s.
		"repl-diskless-sync-delay 0",
	}
	lines = append(lines, s.secureConfig(opts)...)
	lines = append(lines, opts.Config...)
	s.conf = filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(s.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		tb.Fatalf("redistest: write config: %v", err)
	}
	s.start()
	tb.Cleanup(s.Kill)
	return s
}

func (s *Server) start() {
	s.tb.Helper()
	cmd := exec.Command(s.bin, append([]string{s.conf}, s.args...)...)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("redistest: start redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	go func() { _ = cmd.Wait() }()
	if err := s.waitReady(10 * time.Second); err != nil {
		s.tb.Fatalf("redistest: redis-server on %s: %v\n%s", s.Addr, err, s.Log())
	}
}

// Log returns the server's log file contents.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return string(b)
}

// Dir returns the server's working directory.
func (s *Server) Dir() string { return s.dir }

// Client returns a go-redis client for the server, closed at cleanup. It
// uses TLS and the default user's password when the server was started
// with them.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	return s.ClientWith(tb, &redis.Options{Password: s.password})
}

// ClientWith returns a go-redis client with opts, closed at cleanup. It
// fills opts.Addr with the server's address and, when the server speaks TLS
// and opts.TLSConfig is nil, sets a TLS configuration that trusts the
// server's CA. Credentials are left as given, so opts can name any user;
// opts is modified.
func (s *Server) ClientWith(tb testing.TB, opts *redis.Options) *redis.Client {
	tb.Helper()
	opts.Addr = s.Addr
	if s.ca != nil && opts.TLSConfig == nil {
		opts.TLSConfig = s.ca.ClientConfig()
	}
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// tlsConfig returns the client TLS configuration for the server, or nil
// when it speaks plain TCP.
func (s *Server) tlsConfig() *tls.Config {
	if s.ca == nil {
		return nil
	}
	return s.ca.ClientConfig()
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Pause stops the process with SIGSTOP: connections stay open, nothing is
// answered. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused process.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Kill ends the process with SIGKILL and waits until its port is closed.
func (s *Server) Kill() {
	s.signal(syscall.SIGCONT)
	s.signal(syscall.SIGKILL)
	s.mu.Lock()
	s.cmd = nil
	s.mu.Unlock()
	waitClosed(s.Addr, 5*time.Second)
}

// Restart kills the process and starts it again on the same port, with an
// empty keyspace.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	s.start()
}

// held is the set of ports FreePort has handed out to tests still running
// in this process. A server keeps its port across Restart; while it is
// down, the kernel may offer that port to another test's FreePort, whose
// server would then answer on the restarted server's address.
var held struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago and
// that no other running test of this process holds. The port is held until
// tb ends.
func FreePort(tb testing.TB) int {
	tb.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("redistest: free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		held.Lock()
		taken := held.ports[port]
		if !taken {
			if held.ports == nil {
				held.ports = map[int]bool{}
			}
			held.ports[port] = true
		}
		held.Unlock()
		if !taken {
			tb.Cleanup(func() {
				held.Lock()
				delete(held.ports, port)
				held.Unlock()
			})
			return port
		}
	}
	tb.Fatalf("redistest: no free port that this process does not hold after 100 tries")
	return 0
}

// ClosedAddr returns a loopback address where connections are refused
// until tb ends: a socket is bound to the port but does not listen, so no
// other process can take the port meanwhile (a port that was merely free a
// moment ago may be listened on by another test by the time it is dialed).
func ClosedAddr(tb testing.TB) string {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatalf("redistest: closed address: socket: %v", err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatalf("redistest: closed address: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatalf("redistest: closed address: getsockname: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

// WaitReady polls addr with PING until it answers PONG (or refuses it with
// NOAUTH or NOPERM: the server is up, the caller lacks credentials) or
// timeout passes. Polling is the only way to learn that another process is
// ready.
func WaitReady(addr string, timeout time.Duration) error {
	return waitPing(addr, nil, "", timeout)
}

// WaitReadyTLS is WaitReady over TLS with cfg.
func WaitReadyTLS(addr string, cfg *tls.Config, timeout time.Duration) error {
	return waitPing(addr, cfg, "", timeout)
}

func (s *Server) waitReady(timeout time.Duration) error {
	return waitPing(s.Addr, s.tlsConfig(), s.password, timeout)
}

func waitPing(addr string, cfg *tls.Config, password string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		last = ping(addr, cfg, password)
		if last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %w", timeout, last)
}

// ping sends PING (after AUTH when password is set) on a new connection,
// over TLS when cfg is not nil. A server that refuses PING for want of
// authentication (NOAUTH, NOPERM) is up, so that counts as ready too.
func ping(addr string, cfg *tls.Config, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var conn net.Conn
	var err error
	if cfg != nil {
		d := tls.Dialer{Config: cfg}
		conn, err = d.DialContext(ctx, "tcp", addr)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	r := bufio.NewReader(conn)
	if password != "" {
		if _, err := conn.Write(respCommand("AUTH", password)); err != nil {
			return err
		}
		if _, err := r.ReadString('\n'); err != nil {
			return err
		}
	}
	if _, err := conn.Write(respCommand("PING")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(line, "+PONG"),
		strings.HasPrefix(line, "-NOAUTH"),
		strings.HasPrefix(line, "-NOPERM"):
		return nil
	}
	return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
}

// respCommand encodes args as a RESP array of bulk strings.
func respCommand(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
	}
	return b
}

func waitClosed(addr string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		conn.Close()
		time.Sleep(20 * time.Millisecond)
	}
}
