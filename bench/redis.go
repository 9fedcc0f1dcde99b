package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Server is a redis-server process on a free loopback port, without
// persistence, started by StartServer and stopped by Close.
type Server struct {
	// Addr is 127.0.0.1:port.
	Addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// StartServer starts redis-server (found on the PATH) with its working
// directory and log under dir, and waits until it answers PING.
func StartServer(dir string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("bench: redis-server not found on PATH (install Debian's redis-server): %w", err)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	return startServer(bin, dir, ports[0])
}

// startServer starts bin on port, without persistence, with its
// configuration, working directory and log in dir and the extra
// redis.conf lines given, and waits until it answers PING.
func startServer(bin, dir string, port int, extra ...string) (*Server, error) {
	conf := strings.Join(append([]string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		"dir " + dir,
		`save ""`,
		"appendonly no",
		"protected-mode no",
		"logfile " + filepath.Join(dir, "redis.log"),
	}, extra...), "\n") + "\n"
	path := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, cmd: exec.Command(bin, path), done: make(chan struct{})}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start redis-server: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	// Polling is the only way to learn that another process is ready.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ping(s.Addr)
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("bench: redis-server on %s not ready: %w", s.Addr, err)
		}
		select {
		case <-s.done:
			return nil, errors.New("bench: redis-server exited at start; see " + filepath.Join(dir, "redis.log"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Close kills the process and waits for it. It is idempotent.
func (s *Server) Close() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
	}
	<-s.done
}

func ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
