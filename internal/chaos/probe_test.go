package chaos

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// probe looks up a set of sessions on one replica, one after the other,
// every interval, until stopped, recording every lookup.
type probe struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex // guards lookups
	lookups []Lookup
}

func startProbe(t *testing.T, r *Replica, ri int, ids []string, interval time.Duration) *probe {
	t.Helper()
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			for _, id := range ids {
				l := lookup(r, ri, id)
				p.mu.Lock()
				p.lookups = append(p.lookups, l)
				p.mu.Unlock()
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(p.end)
	return p
}

// end stops the probe and waits for it; it is idempotent.
func (p *probe) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// results stops the probe and returns its lookups.
func (p *probe) results() []Lookup {
	p.end()
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lookups)
}
