// Package toxitest puts an in-process toxiproxy TCP proxy between a test's
// client and a server, to inject network faults: a black hole, latency,
// connection resets.
//
// Start listens on a free 127.0.0.1 port and forwards every connection to
// the upstream address; the proxy is stopped (listener and connections
// closed, its goroutines ended) at test cleanup. Faults apply to the
// connections open when they are set and to new ones, until Clear.
//
// Concurrency: a Proxy may be used from several goroutines, but its methods
// fail the test on error (t.Fatal), so call them from the test's own
// goroutine.
package toxitest

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is one running toxiproxy proxy.
type Proxy struct {
	tb       testing.TB
	proxy    *toxiproxy.Proxy
	addr     string
	upstream string

	mu      sync.Mutex // serialises toxic changes and Stop; guards stopped
	stopped bool
}

// Start starts a proxy from a free loopback port to upstream (host:port)
// and stops it at cleanup. Nothing is dialled until a client connects.
func Start(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, tb.Name(), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		tb.Fatalf("toxitest: start proxy to %s: %v", upstream, err)
	}
	px := &Proxy{tb: tb, proxy: p, addr: p.Listen, upstream: upstream}
	tb.Cleanup(px.Stop)
	return px
}

// Addr returns the proxy's listening address (127.0.0.1:port); point the
// client at it instead of the upstream.
func (p *Proxy) Addr() string { return p.addr }

// Upstream returns the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Blackhole drops all data in both directions ("timeout" toxics with
// timeout 0) without closing connections, so requests time out and new
// connections are accepted but never answered. Clear lifts it, and closes
// the connections it held.
func (p *Proxy) Blackhole() {
	p.tb.Helper()
	p.add("blackhole_upstream", "timeout", "upstream", map[string]any{"timeout": 0})
	p.add("blackhole_downstream", "timeout", "downstream", map[string]any{"timeout": 0})
}

// Latency delays every chunk of data sent by the upstream (the replies) by
// d, replacing an earlier Latency. d is rounded down to milliseconds.
func (p *Proxy) Latency(d time.Duration) {
	p.tb.Helper()
	if d < 0 {
		p.tb.Fatalf("toxitest: Latency(%v): negative", d)
	}
	p.remove("latency_downstream")
	p.add("latency_downstream", "latency", "downstream", map[string]any{"latency": d.Milliseconds()})
}

// ResetPeer makes the proxy close every connection as soon as the client
// sends data on it ("reset_peer" toxic with timeout 0): connections opened
// after the call are reset with a TCP RST, those already open are closed.
// Clear lifts it.
func (p *Proxy) ResetPeer() {
	p.tb.Helper()
	p.add("reset_peer_upstream", "reset_peer", "upstream", map[string]any{"timeout": 0})
}

// Clear removes every toxic. Removing a Blackhole closes the connections
// it held, so clients reconnect.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Toxics.ResetToxics(context.Background())
}

// Stop closes the listener and every proxied connection. It is idempotent
// and runs at cleanup.
func (p *Proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	p.proxy.Toxics.ResetToxics(context.Background())
	p.proxy.Stop()
}

func (p *Proxy) add(name, typ, stream string, attrs map[string]any) {
	p.tb.Helper()
	body, err := json.Marshal(map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs,
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
