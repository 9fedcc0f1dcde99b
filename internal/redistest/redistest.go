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
	"errors"
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

	mu   sync.Mutex // guards proc
	proc *process   // nil before launch and after Kill
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

// Start starts a redis-server on a free loopback port (see FreePort). It
// is stopped when the test and its subtests end.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	return start(tb, opts, FreePort)
}

// start is Start with the port reservation as a parameter.
func start(tb testing.TB, opts Options, reserve func(testing.TB) int) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: Binary(tb, "redis-server"), dir: tb.TempDir()}
	s.run(reserve, "redis.conf", func() []string {
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
		return append(lines, opts.Config...)
	})
	return s
}

// portTries bounds the ports run tries for one server.
const portTries = 5

// readyTimeout bounds the wait for a started process to serve.
const readyTimeout = 10 * time.Second

// run starts the server's process on a port from reserve, with the
// configuration that config returns for s.Port (written to confName in
// the server's directory), and kills it at cleanup. When the process
// exits because another process listens on that port, run tries again
// on a new port: nobody knows the server's address yet. Ports from
// FreePort are not handed to other sockets by the kernel, but a program
// that picks a port by listening on port 0, closing, and binding it again
// can bind one of them in between.
func (s *Server) run(reserve func(testing.TB) int, confName string, config func() []string) {
	s.tb.Helper()
	s.conf = filepath.Join(s.dir, confName)
	for try := 1; ; try++ {
		s.Port = reserve(s.tb)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		if err := os.WriteFile(s.conf, []byte(strings.Join(config(), "\n")+"\n"), 0o600); err != nil {
			s.tb.Fatalf("redistest: write config: %v", err)
		}
		err := s.launch()
		if err == nil {
			break
		}
		if errors.Is(err, errPortTaken) && try < portTries {
			s.tb.Logf("redistest: %v; trying another port", err)
			continue
		}
		s.tb.Fatalf("redistest: redis-server on %s: %v\n%s", s.Addr, err, s.Log())
	}
	// After reserve's cleanups: the process is gone before its port is
	// released.
	s.tb.Cleanup(s.Kill)
}

// errPortTaken is launch's error when redis-server could not bind its port
// because another process listens on it.
var errPortTaken = errors.New("another process listens on the port")

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited and been reaped
	err    error         // cmd.Wait's result; read after exited is closed
}

// launch starts redis-server with s.conf and waits until it serves on
// s.Addr itself: a PING must be answered, and the socket listening on
// the port must be this process's. When it returns an error, the process
// has exited.
func (s *Server) launch() error {
	logStart := len(s.Log())
	cmd := exec.Command(s.bin, append([]string{s.conf}, s.args...)...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	err := s.waitReady(p, readyTimeout)
	if err == nil {
		return nil
	}
	s.Kill()
	if log := s.Log(); len(log) >= logStart && portInUse(log[logStart:], s.Addr) {
		return fmt.Errorf("%w: %s (redis-server: %v)", errPortTaken, s.Addr, p.err)
	}
	return err
}

// portInUse reports whether a redis-server log says that the server could
// not listen on addr because the address is in use.
func portInUse(log, addr string) bool {
	for line := range strings.Lines(log) {
		if strings.Contains(line, "listening socket "+addr+": bind: Address already in use") {
			return true
		}
	}
	return false
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
	if s.proc != nil {
		_ = s.proc.cmd.Process.Signal(sig)
	}
}

// Pause stops the process with SIGSTOP: connections stay open, nothing is
// answered. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused process.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Kill ends the process with SIGKILL and waits until it has exited, and so
// closed its sockets. The port stays reserved for the server until the
// test ends.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Restart kills the process and starts it again on the same port, with an
// empty keyspace. It fails the test when another process listens on the
// port meanwhile.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	if err := s.launch(); err != nil {
		s.tb.Fatalf("redistest: restart redis-server on %s: %v\n%s", s.Addr, err, s.Log())
	}
}

// FreePort returns a loopback port reserved until tb ends: a socket with
// SO_REUSEADDR is bound to 127.0.0.1 and that port, and does not listen.
// On Linux the kernel then hands the port to no bind to port 0 (a listener
// on "127.0.0.1:0", as toxiproxy and httptest open) and to no outgoing
// connection, in any process; a port that was merely free a moment ago
// could be taken by another test before its server bound it, or while the
// server restarts. A program given the port binds it all the same if it
// sets SO_REUSEADDR, as redis-server and Go's net.Listen do; one that
// does not gets "address already in use".
func FreePort(tb testing.TB) int {
	tb.Helper()
	fd, port, err := boundSocket(true)
	if err != nil {
		tb.Fatalf("redistest: free port: %v", err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	return port
}

// ClosedAddr returns a loopback address where connections are refused
// until tb ends: a socket is bound to the port but does not listen, so no
// other process can take the port meanwhile (a port that was merely free a
// moment ago may be listened on by another test by the time it is dialed).
// Unlike FreePort's socket it has no SO_REUSEADDR, so no listener can bind
// the port either.
func ClosedAddr(tb testing.TB) string {
	tb.Helper()
	fd, port, err := boundSocket(false)
	if err != nil {
		tb.Fatalf("redistest: closed address: %v", err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// boundSocket returns a TCP socket bound to 127.0.0.1 and a port the
// kernel chose, not listening, with SO_REUSEADDR when reuse is set. It is
// closed on exec, so redis-server processes do not inherit it.
func boundSocket(reuse bool) (fd, port int, err error) {
	syscall.ForkLock.RLock()
	fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return 0, 0, fmt.Errorf("socket: %w", err)
	}
	if reuse {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
			syscall.Close(fd)
			return 0, 0, fmt.Errorf("SO_REUSEADDR: %w", err)
		}
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return 0, 0, fmt.Errorf("bind: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return 0, 0, fmt.Errorf("getsockname: %w", err)
	}
	return fd, sa.(*syscall.SockaddrInet4).Port, nil
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

// waitReady polls s.Addr with PING until it is answered and the socket
// listening on s.Port is p's, p exits, or timeout passes. Another process
// may answer on the port while p starts: p then fails to bind it and
// exits.
func (s *Server) waitReady(p *process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("redis-server exited before it served: %v", p.err)
		default:
		}
		last = ping(s.Addr, s.tlsConfig(), s.password)
		if last == nil {
			mine, known := listensOn(p.cmd.Process.Pid, s.Port)
			if mine || !known {
				return nil
			}
			last = fmt.Errorf("PING on %s was answered, but not by this redis-server (pid %d)", s.Addr, p.cmd.Process.Pid)
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("not ready after %v: %w", timeout, last)
		}
		select {
		case <-p.exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// listensOn reports whether process pid holds a socket listening on TCP
// port, from Linux's /proc. known is false when /proc/net/tcp cannot be
// read, so that it cannot tell.
func listensOn(pid, port int) (listens, known bool) {
	sockets := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		known = true
		for line := range strings.Lines(string(b)) {
			// sl local_address rem_address st ... inode, with the
			// addresses as hex IP:port and st 0A for LISTEN.
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if !ok {
				continue
			}
			if n, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(n) == port {
				sockets["socket:["+f[9]+"]"] = true
			}
		}
	}
	if !known || len(sockets) == 0 {
		return false, known
	}
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false, true
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && sockets[target] {
			return true, true
		}
	}
	return false, true
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
