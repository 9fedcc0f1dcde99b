package backendtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/session"
)

// TestCloseUnblocksHang checks that Close returns promptly while requests
// hang, and that the hung requests fail instead of getting an answer.
func TestCloseUnblocksHang(t *testing.T) {
	const hung = 3
	s := NewServer()
	defer s.Close()
	s.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	started := make(chan struct{}, hung)
	s.onWait = func() { started <- struct{}{} }
	s.SetFault(Fault{Hang: true})

	c, err := backend.New(backend.Options{BaseURL: s.URL(), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	type result struct {
		rec session.Record
		err error
	}
	results := make(chan result, hung)
	for range hung {
		go func() {
			rec, err := c.Fetch(context.Background(), "dev-1")
			results <- result{rec, err}
		}()
	}
	for range hung {
		<-started
	}

	start := time.Now()
	s.Close()
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Close() with %d hung requests took %v, want well under 1s", hung, elapsed)
	}
	for range hung {
		r := <-results
		if r.err == nil || errors.Is(r.err, context.DeadlineExceeded) || r.rec != (session.Record{}) {
			t.Errorf("Fetch(%q) hung across Close = %+v, %v, want a zero record and a connection error", "dev-1", r.rec, r.err)
		}
	}
}

// TestCloseUnblocksLatency checks that Close also cuts a Latency fault short.
func TestCloseUnblocksLatency(t *testing.T) {
	s := NewServer()
	defer s.Close()
	s.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	s.SetFault(Fault{Latency: time.Hour})
	arrived := make(chan struct{})
	s.onWait = func() { close(arrived) }
	c, err := backend.New(backend.Options{BaseURL: s.URL(), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	done := make(chan error, 1)
	go func() {
		_, err := c.Fetch(context.Background(), "dev-1")
		done <- err
	}()
	<-arrived
	start := time.Now()
	s.Close()
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Close() with a request in an hour of Latency took %v, want well under 1s", elapsed)
	}
	if err := <-done; err == nil {
		t.Errorf("Fetch(%q) delayed across Close = nil error, want a connection error", "dev-1")
	}
}
