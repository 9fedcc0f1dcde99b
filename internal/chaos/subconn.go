package chaos

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// SubControl injects faults into a replica's subscriber connections from the
// client side, where toxiproxy cannot: it parses the RESP stream that Redis
// sends and can drop whole pub/sub messages (a message lost on a connection
// that stays up, as when a client library drops it), and it can stop reading
// altogether (a stalled consumer, which makes Redis buffer its output and,
// past client-output-buffer-limit pubsub, cut the connection).
//
// It wraps every connection its Dial makes. It is safe for concurrent use.
type SubControl struct {
	channel string

	mu      sync.Mutex // guards the fields below
	drop    int        // numbered messages still to drop
	dropped int        // numbered messages dropped so far
	stalled chan struct{}
}

// NewSubControl returns a control for connections subscribed to channel.
func NewSubControl(channel string) *SubControl {
	return &SubControl{channel: channel}
}

// Dial dials addr and wraps the connection; use it as the subscriber
// client's redis.Options.Dialer.
func (s *SubControl) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &subConn{Conn: c, ctl: s, closed: make(chan struct{})}, nil
}

// DropNext makes the connection drop the next n messages on the channel that
// carry a sequence number.
func (s *SubControl) DropNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop += n
}

// Dropped returns how many messages were dropped.
func (s *SubControl) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Stall stops every read until Release: the bytes stay in the kernel's
// buffers and then in Redis' output buffer for the client. Reads still time
// out at their deadlines.
func (s *SubControl) Stall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled == nil {
		s.stalled = make(chan struct{})
	}
}

// Release ends a Stall.
func (s *SubControl) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled != nil {
		close(s.stalled)
		s.stalled = nil
	}
}

func (s *SubControl) gate() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalled
}

// shouldDrop reports whether the frame f, a complete RESP frame, is a
// numbered message on the channel that must be dropped, and counts it.
func (s *SubControl) shouldDrop(f []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drop == 0 {
		return false
	}
	kind, channel, payload, ok := parseMessage(f)
	if !ok || kind != "message" || channel != s.channel || !bytes.Contains(payload, []byte(`"seq":`)) {
		return false
	}
	s.drop--
	s.dropped++
	return true
}

// subConn is one wrapped connection. Reads are made by one goroutine at a
// time (go-redis' PubSub holds its lock), so only deadline and closed are
// shared with other goroutines.
type subConn struct {
	net.Conn
	ctl *SubControl

	in  []byte // bytes read, not yet a complete frame
	out []byte // complete frames to return
	buf [32 << 10]byte

	mu       sync.Mutex // guards deadline
	deadline time.Time

	closeOnce sync.Once
	closed    chan struct{}
}

func (c *subConn) SetDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *subConn) SetReadDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *subConn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
}

func (c *subConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// Read returns whole frames that passed the filter. It waits while the
// control is stalled, until the stall ends, the read deadline passes or the
// connection is closed.
func (c *subConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if err := c.waitGate(); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(c.buf[:])
		c.in = append(c.in, c.buf[:n]...)
		c.filter()
		if err != nil && len(c.out) == 0 {
			return 0, err
		}
	}
}

func (c *subConn) waitGate() error {
	gate := c.ctl.gate()
	if gate == nil {
		return nil
	}
	c.mu.Lock()
	deadline := c.deadline
	c.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-gate:
		return nil
	case <-expired:
		return os.ErrDeadlineExceeded
	case <-c.closed:
		return net.ErrClosed
	}
}

// filter moves the complete frames of in to out, leaving out the dropped
// ones. Bytes it cannot parse are passed on as they are.
func (c *subConn) filter() {
	for len(c.in) > 0 {
		n, ok, bad := frameLen(c.in)
		if bad {
			c.out = append(c.out, c.in...)
			c.in = c.in[:0]
			return
		}
		if !ok {
			return
		}
		if !c.ctl.shouldDrop(c.in[:n]) {
			c.out = append(c.out, c.in[:n]...)
		}
		c.in = c.in[n:]
	}
	c.in = nil
}

// frameLen returns the length of the RESP2 or RESP3 frame at the start of
// b: ok is false if b holds only part of it, bad is true if b does not
// start with a frame.
func frameLen(b []byte) (n int, ok, bad bool) {
	if len(b) == 0 {
		return 0, false, false
	}
	end := bytes.Index(b, []byte("\r\n"))
	if end < 0 {
		return 0, false, false
	}
	head := end + 2
	switch b[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return head, true, false
	case '$', '!', '=':
		size, err := strconv.Atoi(string(b[1:end]))
		if err != nil {
			return 0, false, true
		}
		if size < 0 {
			return head, true, false
		}
		if len(b) < head+size+2 {
			return 0, false, false
		}
		return head + size + 2, true, false
	case '*', '>', '~', '%', '|':
		count, err := strconv.Atoi(string(b[1:end]))
		if err != nil {
			return 0, false, true
		}
		if b[0] == '%' || b[0] == '|' {
			count *= 2
		}
		off := head
		for range max(count, 0) {
			m, ok, bad := frameLen(b[off:])
			if !ok || bad {
				return 0, ok, bad
			}
			off += m
		}
		return off, true, false
	}
	return 0, false, true
}

// parseMessage reads a pub/sub message frame: an array or push of three
// bulk strings (kind, channel, payload).
func parseMessage(f []byte) (kind, channel string, payload []byte, ok bool) {
	if len(f) < 4 || (f[0] != '*' && f[0] != '>') || !bytes.HasPrefix(f[1:], []byte("3\r\n")) {
		return "", "", nil, false
	}
	rest := f[4:]
	var parts [3][]byte
	for i := range parts {
		n, ok, bad := frameLen(rest)
		if !ok || bad || rest[0] != '$' {
			return "", "", nil, false
		}
		el := rest[:n]
		start := bytes.Index(el, []byte("\r\n")) + 2
		parts[i] = el[start : len(el)-2]
		rest = rest[n:]
	}
	return string(parts[0]), string(parts[1]), parts[2], true
}
