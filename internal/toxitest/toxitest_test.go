package toxitest

import (
	"context"
	"errors"
	"net"
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
