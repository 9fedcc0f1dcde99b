package redistest

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestStartServesCommandsAndRestartsEmpty(t *testing.T) {
	s := Start(t, Options{Config: []string{"maxmemory 8mb"}})
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k = %q, %v; want %q", got, err, "v")
	}
	if got, err := c.ConfigGet(ctx, "maxmemory").Result(); err != nil || got["maxmemory"] != "8388608" {
		t.Fatalf("CONFIG GET maxmemory = %v, %v; want 8388608", got, err)
	}
	s.Restart()
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS k after restart = %d, %v; want 0", n, err)
	}
}

func TestClosedAddrRefusesConnections(t *testing.T) {
	addr := ClosedAddr(t)
	for range 3 {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			t.Fatalf("dial %s succeeded, want refused", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v, want connection refused", addr, err)
		}
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		t.Fatalf("listen on %s succeeded while the address is held", addr)
	}
}
