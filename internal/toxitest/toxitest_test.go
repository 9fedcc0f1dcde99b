package toxitest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	redistest.VerifyTestMain(m)
}

// setup starts a redis-server, a proxy in front of it, and a client of the
// proxy that gives up after timeout and never retries.
func setup(t *testing.T, timeout time.Duration) (*Proxy, *redis.Client) {
	t.Helper()
	s := redistest.Start(t, redistest.Options{})
	p := Start(t, s.Addr)
	if p.Upstream() != s.Addr {
		t.Fatalf("Upstream() = %q, want %q", p.Upstream(), s.Addr)
	}
	c := redis.NewClient(&redis.Options{
		Addr:        p.Addr(),
		DialTimeout: timeout,
		ReadTimeout: timeout,
		MaxRetries:  -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING through the proxy = %v, want nil", err)
	}
	return p, c
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestBlackholeTimesOutAndClearRestores(t *testing.T) {
	ctx := context.Background()
	p, c := setup(t, 300*time.Millisecond)
	p.Blackhole()
	if err := c.Ping(ctx).Err(); !isTimeout(err) {
		t.Fatalf("PING through a black hole = %v, want a timeout", err)
	}
	// A new connection is accepted but never answered either.
	fresh := redis.NewClient(&redis.Options{Addr: p.Addr(), DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer fresh.Close()
	if err := fresh.Ping(ctx).Err(); !isTimeout(err) {
		t.Fatalf("PING on a new connection through a black hole = %v, want a timeout", err)
	}
	p.Clear()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Clear = %v, want nil", err)
	}
}

func TestLatencyDelaysReplies(t *testing.T) {
	ctx := context.Background()
	p, c := setup(t, 2*time.Second)
	const d = 150 * time.Millisecond
	p.Latency(d)
	p.Latency(d) // replaces, does not fail on the existing toxic
	start := time.Now()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING with latency = %v, want nil", err)
	}
	if got := time.Since(start); got < d {
		t.Fatalf("PING with Latency(%v) took %v, want at least %v", d, got, d)
	}
	p.Clear()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Clear = %v, want nil", err)
	}
}

func TestResetPeerClosesConnections(t *testing.T) {
	ctx := context.Background()
	p, c := setup(t, time.Second)
	p.ResetPeer()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatalf("PING on an open connection after ResetPeer = nil, want an error")
	}
	if err := c.Ping(ctx).Err(); err == nil || isTimeout(err) {
		t.Fatalf("PING on a new connection after ResetPeer = %v, want a connection error", err)
	}
	p.Clear()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Clear = %v, want nil", err)
	}
}

func TestStopClosesListenerEndsGoroutinesAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := redistest.Start(t, redistest.Options{})
	before := goleak.IgnoreCurrent() // the redis-server's process waiter
	p := Start(t, s.Addr)
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1})
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the proxy = %v, want nil", err)
	}
	p.Blackhole() // a toxic holding the connection must not keep goroutines
	p.Stop()
	p.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatalf("PING after Stop = nil, want an error")
	}
	if conn, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("dial %s after Stop = nil error, want connection refused", p.Addr())
	}
	if err := c.Close(); err != nil {
		t.Fatalf("client Close: %v", err)
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("goroutines left after Stop: %v", err)
	}
}

// flood is a TCP endpoint pair driver: every connection it is given gets a
// writer that sends data until the connection fails and a reader that
// discards what arrives until then, then closes the connection.
type flood struct {
	wg      sync.WaitGroup
	started chan struct{} // one value per connection, on its first byte read
}

func newFlood() *flood { return &flood{started: make(chan struct{}, 64)} }

func (f *flood) run(c net.Conn) {
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		buf := bytes.Repeat([]byte("x"), 4096)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	go func() {
		defer f.wg.Done()
		defer c.Close()
		buf := make([]byte, 4096)
		first := true
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			if first {
				first = false
				f.started <- struct{}{}
			}
		}
	}()
}

// wait waits until every connection has failed and been closed.
func (f *flood) wait(t *testing.T, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: connections still open after 10s", what)
	}
}

// floodServer listens on a free loopback port and floods every connection
// it accepts.
func floodServer(t *testing.T) (addr string, f *flood, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f = newFlood()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.run(c)
		}
	}()
	return ln.Addr().String(), f, func() { ln.Close(); <-accepted }
}

// dialFlood opens n connections to addr that flood it, and waits until
// each has received data.
func dialFlood(t *testing.T, addr string, n int, f *flood) {
	t.Helper()
	for range n {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		f.run(c)
	}
}

func awaitStarted(t *testing.T, f *flood, n int) {
	t.Helper()
	for range n {
		select {
		case <-f.started:
		case <-time.After(10 * time.Second):
			t.Fatalf("no data through the proxy within 10s")
		}
	}
}

// Removing a Blackhole while data is flowing through it in both
// directions closes the connections and leaves no goroutine behind:
// toxiproxy's own timeout toxic, once removed, left the stub in front of
// it blocked forever on a send nobody received.
func TestClearUnderTrafficLeavesNoGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	addr, server, stopServer := floodServer(t)
	p := Start(t, addr)
	const n = 8
	clients := newFlood()
	dialFlood(t, p.Addr(), n, clients)
	awaitStarted(t, clients, n)
	awaitStarted(t, server, n)
	p.Blackhole()
	p.Clear()
	clients.wait(t, "after Clear, clients")
	server.wait(t, "after Clear, server side")
	p.Stop()
	stopServer()
	if err := goleak.Find(before); err != nil {
		t.Fatalf("goroutines left after Clear and Stop: %v", err)
	}
}

// A ResetPeer that closes connections carrying a stream of data leaves no
// goroutine behind: toxiproxy's own reset_peer toxic closed its stub on the
// first chunk and left the stub in front of it blocked on the next.
func TestResetPeerUnderTrafficLeavesNoGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	addr, server, stopServer := floodServer(t)
	p := Start(t, addr)
	const n = 8
	clients := newFlood()
	dialFlood(t, p.Addr(), n, clients)
	awaitStarted(t, clients, n)
	awaitStarted(t, server, n)
	p.ResetPeer()
	clients.wait(t, "after ResetPeer, open clients")
	// New connections are reset as soon as they send.
	fresh := newFlood()
	dialFlood(t, p.Addr(), n, fresh)
	fresh.wait(t, "after ResetPeer, new clients")
	server.wait(t, "after ResetPeer, server side")
	p.Stop()
	stopServer()
	if err := goleak.Find(before); err != nil {
		t.Fatalf("goroutines left after ResetPeer and Stop: %v", err)
	}
}
