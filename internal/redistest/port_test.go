package redistest

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// TestFreePortHoldsThePort checks that the port stays bound after FreePort
// returns: a socket without SO_REUSEADDR cannot bind it (the kernel's
// choice of a port for port 0 or an outgoing connection skips it alike),
// while a server told the port, which sets SO_REUSEADDR as redis-server
// and net.Listen do, can.
func TestFreePortHoldsThePort(t *testing.T) {
	port := FreePort(t)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind 127.0.0.1:%d without SO_REUSEADDR = %v, want EADDRINUSE: FreePort does not hold the port", port, err)
	}
	for range 2 {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("listen on the port FreePort returned: %v", err)
		}
		l.Close()
	}
}

// TestStartMovesOffATakenPort gives Start, as its first port, one that
// another redis-server listens on: the new server cannot bind it, and
// Start must notice (the other server answers PING there) and start on
// another port.
func TestStartMovesOffATakenPort(t *testing.T) {
	other := Start(t, Options{})
	var tried []int
	reserve := func(tb testing.TB) int {
		port := other.Port
		if len(tried) > 0 {
			port = FreePort(tb)
		}
		tried = append(tried, port)
		return port
	}
	s := start(t, Options{}, reserve)
	if len(tried) != 2 || s.Port != tried[1] || s.Port == other.Port {
		t.Fatalf("ports tried %v, server on %d; want %d, then a free one for the server", tried, s.Port, other.Port)
	}
	ctx := context.Background()
	for _, srv := range []*Server{s, other} {
		dir, err := srv.Client(t).ConfigGet(ctx, "dir").Result()
		if err != nil {
			t.Fatalf("CONFIG GET dir on %s: %v", srv.Addr, err)
		}
		if dir["dir"] != srv.Dir() {
			t.Fatalf("the server on %s runs in %q, want %q", srv.Addr, dir["dir"], srv.Dir())
		}
	}
}

// TestRestartNoticesATakenPort restarts a server while another program
// listens on its port and answers PING: the restart must report the port
// taken, not take the other program for the server.
func TestRestartNoticesATakenPort(t *testing.T) {
	s := Start(t, Options{})
	s.Kill()
	// A program that binds the port by number, with SO_REUSEADDR, as one
	// that picked it by listening on port 0 and closing would.
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		t.Fatalf("listen on the stopped server's port: %v", err)
	}
	servePong(t, l)
	if err := ping(s.Addr, nil, ""); err != nil {
		t.Fatalf("PING on the other program: %v", err)
	}
	err = s.launch()
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("launch on a port another program listens on = %v, want %v", err, errPortTaken)
	}
	if s.alive() {
		t.Fatalf("server alive after a failed launch")
	}
}

// servePong answers "+PONG" to every read on l's connections until the
// test ends.
func servePong(t *testing.T, l net.Listener) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				buf := make([]byte, 512)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write([]byte("+PONG\r\n")); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}
