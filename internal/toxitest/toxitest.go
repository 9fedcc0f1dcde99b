// Package toxitest puts an in-process toxiproxy TCP proxy between a test's
// client and a server, to inject network faults: a black hole, latency,
// connection resets.
//
// Start listens on a free 127.0.0.1 port and forwards every connection to
// the upstream address; the proxy is stopped at test cleanup: listener and
// connections closed, and Stop returns once every proxied connection's
// pipeline has seen its input end. Faults apply to the connections open
// when they are set and to new ones, until Clear.
//
// A black hole and a reset use toxics of this package rather than
// toxiproxy's "timeout" and "reset_peer": those close their stage of a
// connection's pipeline (on removal, or on the first chunk) while the stage
// in front of it may still hold a chunk to pass on, and that stage then
// blocks on the send for ever, a goroutine that outlives the test. The
// toxics here close their stage the same way but keep receiving, and
// dropping, until the connection's input ends.
//
// Concurrency: a Proxy may be used from several goroutines, but its methods
// fail the test on error (t.Fatal), so call them from the test's own
// goroutine.
package toxitest

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// endWait bounds how long Clear and Stop wait for connections to end once
// closed; it takes milliseconds unless a pipeline stage is stuck.
const endWait = 10 * time.Second

// Toxic types registered by this package.
const (
	linkType      = "toxitest_link"
	blackholeType = "toxitest_blackhole"
	resetType     = "toxitest_reset_peer"
)

func init() {
	toxics.Register(linkType, new(linkToxic))
	toxics.Register(blackholeType, new(blackholeToxic))
	toxics.Register(resetType, new(resetToxic))
}

// proxies maps a Proxy's id to the Proxy while it runs, for the toxics,
// which toxiproxy builds from JSON attributes.
var (
	proxies sync.Map // uint64 → *Proxy
	lastID  atomic.Uint64
)

func lookup(id uint64) *Proxy {
	if p, ok := proxies.Load(id); ok {
		return p.(*Proxy)
	}
	return nil
}

// Proxy is one running toxiproxy proxy.
type Proxy struct {
	tb       testing.TB
	proxy    *toxiproxy.Proxy
	addr     string
	upstream string
	id       uint64

	links  ends // one per connection and direction, closed when its input ends
	drains ends // one per stage a removed black hole left draining

	mu      sync.Mutex // serialises toxic changes and Stop; guards stopped
	stopped bool
}

// Start starts a proxy from a free loopback port to upstream (host:port)
// and stops it at cleanup. Nothing is dialled until a client connects.
func Start(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, tb.Name(), "127.0.0.1:0", upstream)
	px := &Proxy{tb: tb, proxy: p, upstream: upstream, id: lastID.Add(1)}
	proxies.Store(px.id, px)
	// The link toxics come first in each direction and stay until Stop:
	// every connection's pipeline then reports its end.
	px.add("link_upstream", linkType, "upstream", 1, px.attrs())
	px.add("link_downstream", linkType, "downstream", 1, px.attrs())
	if err := p.Start(); err != nil {
		proxies.Delete(px.id)
		tb.Fatalf("toxitest: start proxy to %s: %v", upstream, err)
	}
	px.addr = p.Listen
	tb.Cleanup(px.Stop)
	return px
}

// Addr returns the proxy's listening address (127.0.0.1:port); point the
// client at it instead of the upstream.
func (p *Proxy) Addr() string { return p.addr }

// Upstream returns the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Blackhole drops all data in both directions without closing
// connections, so requests time out and new connections are accepted but
// never answered. Clear lifts it, and closes the connections it held.
func (p *Proxy) Blackhole() {
	p.tb.Helper()
	p.add("blackhole_upstream", blackholeType, "upstream", 1, p.attrs())
	p.add("blackhole_downstream", blackholeType, "downstream", 1, p.attrs())
}

// Latency delays every chunk of data sent by the upstream (the replies) by
// d, replacing an earlier Latency. d is rounded down to milliseconds.
func (p *Proxy) Latency(d time.Duration) {
	p.tb.Helper()
	if d < 0 {
		p.tb.Fatalf("toxitest: Latency(%v): negative", d)
	}
	p.remove("latency_downstream")
	p.add("latency_downstream", "latency", "downstream", 1, map[string]any{"latency": d.Milliseconds()})
}

// ResetPeer makes the proxy close every connection as soon as the client
// sends data on it: connections opened after the call are reset with a
// TCP RST, those already open are closed. Clear lifts it.
func (p *Proxy) ResetPeer() {
	p.tb.Helper()
	// toxiproxy sets SO_LINGER 0 (close with RST) on a new connection whose
	// pipeline holds a "reset_peer" toxic; at toxicity 0 it passes data on.
	p.add("reset_peer_linger_upstream", "reset_peer", "upstream", 0, map[string]any{"timeout": 0})
	p.add("reset_peer_upstream", resetType, "upstream", 1, map[string]any{})
}

// Clear removes every toxic. Removing a Blackhole closes the connections
// it held, so clients reconnect; Clear returns once they are closed.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := p.proxy.Toxics.GetToxicArray()
	// Last first in each direction: a removal that finds a connection's
	// stage already closed leaves that stage in the connection's pipeline,
	// which would shift the stages behind it.
	for _, t := range slices.Backward(ts) {
		if w, ok := t.(*toxics.ToxicWrapper); ok && w.Type != linkType {
			_ = p.proxy.Toxics.RemoveToxic(context.Background(), w.Name)
		}
	}
	if n := p.drains.wait(endWait); n > 0 {
		p.tb.Errorf("toxitest: %d connection directions held by a black hole still open %v after Clear", n, endWait)
	}
}

// Stop closes the listener and every proxied connection, and waits until
// each connection's pipeline has seen its input end. It is idempotent and
// runs at cleanup.
func (p *Proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	defer proxies.Delete(p.id)
	// The toxics stay: closing the connections ends each pipeline from its
	// input, and every stage passes the end on, whereas removing a toxic
	// interrupts stages that may be holding data.
	p.proxy.Stop()
	// A stage toxiproxy itself leaves blocked (its write to a connection
	// failed with a chunk in flight) is toxiproxy's, not the test's: it is
	// logged, and left to the package's leak check to judge (internal/chaos
	// ignores that goroutine).
	if n := p.links.wait(endWait) + p.drains.wait(endWait); n > 0 {
		p.tb.Logf("toxitest: %d proxied connection directions still running %v after Stop", n, endWait)
	}
}

func (p *Proxy) attrs() map[string]any { return map[string]any{"proxy": p.id} }

func (p *Proxy) add(name, typ, stream string, toxicity float64, attrs map[string]any) {
	p.tb.Helper()
	body, err := json.Marshal(map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": toxicity, "attributes": attrs,
	})
	if err != nil {
		p.tb.Fatalf("toxitest: encode %s toxic: %v", typ, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.proxy.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		p.tb.Fatalf("toxitest: add %s toxic %q: %v", typ, name, err)
	}
}

// remove removes the toxic name if it is set.
func (p *Proxy) remove(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proxy.Toxics.GetToxic(name) != nil {
		_ = p.proxy.Toxics.RemoveToxic(context.Background(), name)
	}
}

// ends is a set of channels, each closed when something ends.
type ends struct {
	mu   sync.Mutex
	open []chan struct{}
}

// add returns a new channel for the caller to close; it forgets the
// channels already closed.
func (e *ends) add() chan struct{} {
	ch := make(chan struct{})
	e.mu.Lock()
	defer e.mu.Unlock()
	e.open = slices.DeleteFunc(e.open, isClosed)
	e.open = append(e.open, ch)
	return ch
}

// wait waits up to d until every channel added so far is closed, and
// returns how many are still open.
func (e *ends) wait(d time.Duration) int {
	e.mu.Lock()
	open := slices.Clone(e.open)
	e.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for i, ch := range open {
		select {
		case <-ch:
		case <-timer.C:
			return len(slices.DeleteFunc(open[i:], isClosed))
		}
	}
	return 0
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// linkToxic passes data on unchanged and reports, through the Proxy named
// by its attribute, when the pipeline of a connection direction sees its
// input end (the stub's state, made once per pipeline).
type linkToxic struct {
	Proxy uint64 `json:"proxy"`
}

type linkState struct {
	once sync.Once
	end  chan struct{}
}

func (t *linkToxic) NewState() any {
	s := &linkState{end: make(chan struct{})}
	if p := lookup(t.Proxy); p != nil {
		s.end = p.links.add()
	}
	return s
}

func (t *linkToxic) Pipe(stub *toxics.ToxicStub) {
	s, _ := stub.State.(*linkState)
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				if s != nil {
					s.once.Do(func() { close(s.end) })
				}
				return
			}
			stub.Output <- c
		}
	}
}

// blackholeToxic drops all data. Removing it closes its stub, which ends
// the connection, and keeps dropping what the stage in front still passes
// on until the connection's input ends.
type blackholeToxic struct {
	Proxy uint64 `json:"proxy"`
}

func (t *blackholeToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
		}
	}
}

// Cleanup runs on removal, after Pipe returned on an interrupt, with the
// toxic collection locked: it must not wait for the connection to end.
func (t *blackholeToxic) Cleanup(stub *toxics.ToxicStub) {
	stub.Close()
	var done chan struct{}
	if p := lookup(t.Proxy); p != nil {
		done = p.drains.add()
	}
	go func() {
		if done != nil {
			defer close(done)
		}
		for range stub.Input {
		}
	}()
}

// resetToxic closes its stub, which ends the connection, on the first
// chunk, then drops what the stage in front still passes on until the
// connection's input ends.
type resetToxic struct{}

func (t *resetToxic) Pipe(stub *toxics.ToxicStub) {
	select {
	case <-stub.Interrupt:
	case c := <-stub.Input:
		stub.Close()
		if c != nil {
			for range stub.Input {
			}
		}
	}
}
