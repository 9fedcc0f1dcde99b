package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// TestMain checks that no test of the package leaves a goroutine behind
// (watch's subscription, the runbook's replicas, go-redis pools).
func TestMain(m *testing.M) { redistest.VerifyTestMain(m) }

// testEnv is a real redis-server with a rediscache.Cache writing to it.
type testEnv struct {
	srv   *redistest.Server
	url   string
	rdb   *redis.Client
	cache *rediscache.Cache
}

func newTestEnv(t *testing.T, opts rediscache.Options) *testEnv {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t)
	c, err := rediscache.New(rdb, opts)
	if err != nil {
		t.Fatalf("rediscache.New: %v", err)
	}
	return &testEnv{srv: srv, url: "redis://" + srv.Addr, rdb: rdb, cache: c}
}

// testKey returns a valid client public key derived from n.
func testKey(n int) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{byte(n)}, session.PublicKeySize))
}

// fillActive writes an active session through the library.
func fillActive(t *testing.T, c *rediscache.Cache, id, userID string) {
	t.Helper()
	rec := session.Record{DeviceSessionID: id, UserID: userID, ClientPublicKey: testKey(len(id)), Status: session.StatusActive}
	got, err := c.Fill(context.Background(), rec)
	if err != nil {
		t.Fatalf("Fill(%q) error: %v", id, err)
	}
	if got.Status != session.StatusActive {
		t.Fatalf("Fill(%q) stored status %q, want active", id, got.Status)
	}
}

// runCmd runs sessionctl in-process and returns its exit status and output.
// goCommand returns the go command: the one in $GOROOT/bin (go test sets
// GOROOT for the tests it runs), else the one on PATH.
func goCommand(t *testing.T) string {
	t.Helper()
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command in $GOROOT/bin or on PATH: %v", err)
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// needTool returns the path of a program a test runs. Without it the test
// is skipped on a developer's machine and fails under CI=true, where
// .ci/run installs it.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (CI=true: .ci/run installs it from Debian's packages)", name)
	}
	t.Skipf("%s is not installed: install it from Debian's packages to run this test", name)
	return ""
}

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := dispatch(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// syncBuffer is an io.Writer that goroutines may share and a test may wait
// on for some text to appear.
type syncBuffer struct {
	mu      sync.Mutex // guards buf and changed
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor blocks until the buffer holds want, failing t after 10s.
func (b *syncBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		has, changed := strings.Contains(b.buf.String(), want), b.changed
		b.mu.Unlock()
		if has {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("output never contained %q; it is:\n%s", want, b.String())
		}
	}
}

// countingListener accepts TCP connections and counts them, so that a test
// can prove that a command never connected.
type countingListener struct {
	ln    net.Listener
	conns atomic.Int64
	done  chan struct{}
}

func listenCounting(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countingListener{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-l.done })
	return l
}

func (l *countingListener) url() string { return "redis://" + l.ln.Addr().String() }

// closedURL is a Redis URL on a loopback address that refuses connections.
func closedURL(t *testing.T) string {
	return "redis://" + redistest.ClosedAddr(t)
}

// TestBadInputExitsUsageWithoutConnecting proves that an invalid id or bad
// usage is reported with exit status 2 and one line, before any connection:
// the listener standing in for Redis sees no connection at all.
func TestBadInputExitsUsageWithoutConnecting(t *testing.T) {
	l := listenCounting(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"inspect glob", []string{"inspect", "dev*1"}, "invalid identifier"},
		{"inspect braces", []string{"inspect", "{s1}x"}, "invalid identifier"},
		{"inspect colon", []string{"inspect", "session:x"}, "invalid identifier"},
		{"inspect too long", []string{"inspect", strings.Repeat("a", 129)}, "longer than 128"},
		{"inspect CRLF", []string{"inspect", "a\r\nFLUSHALL"}, "invalid identifier"},
		{"inspect no id", []string{"inspect"}, "want exactly one session id"},
		{"inspect two ids", []string{"inspect", "a", "b"}, "want exactly one session id"},
		{"revoke space", []string{"revoke", "dev 1"}, "invalid identifier"},
		{"revoke dot segment", []string{"revoke", ".."}, "dot segment"},
		{"revoke-user empty", []string{"revoke-user", ""}, "user id is empty"},
		{"revoke-user glob", []string{"revoke-user", "u?"}, "invalid identifier"},
		{"watch argument", []string{"watch", "extra"}, "takes no arguments"},
		{"watch negative count", []string{"watch", "-count", "-1"}, "-count must be"},
		{"stats bad prefix", []string{"stats", "-prefix", "a*"}, "prefix has a disallowed byte"},
		{"stats bad stripes", []string{"stats", "-stripes", "2000"}, "stripes 2000 out of range"},
		{"inspect timeout vs fill window", []string{"inspect", "-timeout", "5s", "dev-1"}, "must exceed 4 × -timeout"},
		{"unknown flag", []string{"stats", "-nope"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{tt.args[0], "-redis", l.url()}, tt.args[1:]...)
			code, stdout, stderr := runCmd(t, args...)
			if code != exitUsage {
				t.Errorf("%v: exit %d, want %d; stderr %q", tt.args, code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("%v: stderr %q does not contain %q", tt.args, stderr, tt.want)
			}
			if tt.name != "unknown flag" && strings.Count(stderr, "\n") != 1 {
				t.Errorf("%v: stderr is not one line: %q", tt.args, stderr)
			}
			if stdout != "" {
				t.Errorf("%v: stdout %q, want nothing", tt.args, stdout)
			}
			if strings.Contains(stderr, "FLUSHALL") || strings.Contains(stderr, "dev*1") {
				t.Errorf("%v: stderr repeats the rejected id: %q", tt.args, stderr)
			}
		})
	}
	if n := l.conns.Load(); n != 0 {
		t.Errorf("the commands opened %d connections for bad input, want 0", n)
	}
}

// TestConnectionErrorsAreOneLine checks the operator-facing message and
// exit status 1 for an unreachable Redis, missing or wrong credentials, and
// TLS failures, for every incident command.
func TestConnectionErrorsAreOneLine(t *testing.T) {
	closed := closedURL(t)
	auth := redistest.Start(t, redistest.Options{Password: "sekret"})
	ca := redistest.NewTestCA(t)
	tlsSrv := redistest.Start(t, redistest.Options{TLS: ca})
	otherCA := redistest.NewTestCA(t)

	tests := []struct {
		name  string
		flags []string
		want  string
	}{
		{"unreachable", []string{"-redis", closed}, "Redis unreachable"},
		{"no password", []string{"-redis", "redis://" + auth.Addr}, "Redis requires a password"},
		{"wrong password", []string{"-redis", "redis://:wrong@" + auth.Addr}, "Redis refused the credentials"},
		{"TLS untrusted CA", []string{"-redis", "rediss://" + tlsSrv.Addr}, "TLS certificate not trusted"},
		{"TLS other CA", []string{"-redis", "rediss://" + tlsSrv.Addr, "-tls-ca", otherCA.CAFile()}, "TLS certificate not trusted"},
		{"plaintext to TLS port", []string{"-redis", "redis://" + tlsSrv.Addr}, "Redis closed the connection"},
		{"TLS to plaintext port", []string{"-redis", "rediss://" + auth.Addr, "-tls-ca", ca.CAFile(), "-timeout", "300ms"}, "plaintext"},
	}
	commands := [][]string{{"inspect", "dev-1"}, {"revoke", "dev-1"}, {"revoke-user", "u-1"}, {"watch"}, {"stats"}}
	for _, tt := range tests {
		for _, cmd := range commands {
			t.Run(tt.name+"/"+cmd[0], func(t *testing.T) {
				t.Parallel() // each waits for go-redis's dial retries
				args := append(append([]string{cmd[0]}, tt.flags...), cmd[1:]...)
				code, stdout, stderr := runCmd(t, args...)
				if code != exitFailure {
					t.Errorf("exit %d, want %d; stderr %q", code, exitFailure, stderr)
				}
				if !strings.Contains(stderr, tt.want) || !strings.HasPrefix(stderr, "sessionctl "+cmd[0]+": ") {
					t.Errorf("stderr %q, want one line \"sessionctl %s: ...%s...\"", stderr, cmd[0], tt.want)
				}
				if strings.Count(stderr, "\n") != 1 {
					t.Errorf("stderr is not one line: %q", stderr)
				}
				if strings.Contains(stderr, "sekret") || strings.Contains(stderr, "wrong@") {
					t.Errorf("stderr shows a password: %q", stderr)
				}
				if stdout != "" {
					t.Errorf("stdout %q, want nothing", stdout)
				}
			})
		}
	}

	t.Run("TLS trusted", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "stats", "-redis", "rediss://"+tlsSrv.Addr, "-tls-ca", ca.CAFile())
		if code != exitOK || !strings.Contains(stdout, "0 keys matching session:*") {
			t.Errorf("stats over TLS: exit %d, stdout %q, stderr %q; want 0 and an empty keyspace", code, stdout, stderr)
		}
	})
	t.Run("password right", func(t *testing.T) {
		code, _, stderr := runCmd(t, "stats", "-redis", "redis://:sekret@"+auth.Addr)
		if code != exitOK {
			t.Errorf("stats with the password: exit %d, stderr %q, want 0", code, stderr)
		}
	})
}

// TestHelpDocumentsExitCodes checks that every incident command's -h
// documents the exit statuses and exits 0.
func TestHelpDocumentsExitCodes(t *testing.T) {
	for _, name := range []string{"inspect", "revoke", "revoke-user", "watch", "stats"} {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := runCmd(t, name, "-h")
			if code != exitOK {
				t.Errorf("%s -h: exit %d, want 0", name, code)
			}
			for _, want := range []string{"exit status:", "0  success", "1  the operation failed", "2  bad usage", "-redis", "-prefix", "-stripes", "-json"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("%s -h does not mention %q:\n%s", name, want, stderr)
				}
			}
		})
	}
}
