package tiered

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/session"
)

// massRevocation is one replica revoking many single sessions at once (the
// sessions of a leaked credential) while three others hold them in L1.
type massRevocation struct {
	tb     testing.TB
	env    *benchEnv
	origin *Cache
	others []*Cache
	ids    []string

	mu      sync.Mutex       // guards applied, missing and fanouts
	applied []map[string]int // per other replica: applications of each id
	missing int              // (replica, id) pairs not applied yet
	fanouts []time.Duration  // message's at_ms to first application, each replica
	all     chan struct{}    // closed when every replica applied every id
}

func newMassRevocation(tb testing.TB, n int) *massRevocation {
	tb.Helper()
	e := newBenchEnv(tb, n)
	m := &massRevocation{tb: tb, env: e, ids: workload.IDs(n), all: make(chan struct{})}
	m.origin = e.replica("origin", testHooks{}, nil)
	for i := range 3 {
		applied := make(map[string]int, n)
		for _, id := range m.ids {
			applied[id] = 0
		}
		m.applied = append(m.applied, applied)
		m.missing += n
		hooks := testHooks{applied: func(inv session.Invalidation) {
			now := time.Now()
			m.mu.Lock()
			defer m.mu.Unlock()
			k, ok := applied[inv.SessionID]
			if !ok || inv.SessionID == "" {
				return
			}
			applied[inv.SessionID] = k + 1
			if k > 0 {
				return // a replay
			}
			m.fanouts = append(m.fanouts, now.Sub(time.UnixMilli(inv.AtMS)))
			if m.missing--; m.missing == 0 {
				close(m.all)
			}
		}}
		m.others = append(m.others, e.replica("r"+strconv.Itoa(i), hooks, nil))
	}
	ctx := context.Background()
	for _, id := range m.ids {
		for i, r := range append([]*Cache{m.origin}, m.others...) {
			if _, err := r.Lookup(ctx, id); err != nil {
				tb.Fatalf("replica %d: Lookup(%q) = %v", i, id, err)
			}
		}
	}
	return m
}

// run calls MarkRevoked for every id from one goroutine and waits until
// Redis holds every revocation and the three other replicas applied them.
// It returns the time until Redis held them all, until they were all
// applied, and the fan-out of each message (at_ms to application).
func (m *massRevocation) run() (held, applied time.Duration, fanouts []time.Duration) {
	m.tb.Helper()
	start := time.Now()
	for _, id := range m.ids {
		m.origin.MarkRevoked(id)
	}
	deadline := time.After(60 * time.Second)
	for m.origin.Stats().RevocationsPending > 0 {
		select {
		case <-deadline:
			m.tb.Fatalf("%d revocations still owed after 60s", m.origin.Stats().RevocationsPending)
		case <-time.After(time.Millisecond):
		}
	}
	held = time.Since(start)
	select {
	case <-m.all:
	case <-deadline:
		m.mu.Lock()
		n := m.missing
		m.mu.Unlock()
		m.tb.Fatalf("%d of %d applications missing after 60s", n, len(m.ids)*len(m.others))
	}
	applied = time.Since(start)
	for i, r := range m.others {
		st := r.Stats()
		if st.ResyncDrops > 0 || st.Channel.Gaps > 0 || st.ChannelLost > 0 {
			m.tb.Logf("replica %d: %d losses, %d gaps, %d replayed, %d resync drops", i, st.ChannelLost, st.Channel.Gaps, st.Channel.Replayed, st.ResyncDrops)
		}
		for _, id := range m.ids {
			if got, ok := r.l1.Get(id); ok && got.Status != session.StatusRevoked {
				m.tb.Fatalf("replica %d: L1 Get(%q) = %v after the revocation was applied, want revoked", i, id, got.Status)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return held, applied, m.fanouts
}

// rawBurst publishes one message per id, of the revocations' size, on the
// raw channel, in pipelines of 128 PUBLISH from one client, to three plain
// go-redis subscribers, and returns the messages per second until all three
// received them all and the delay from each pipeline's sending to each
// reception: what Redis pub/sub alone does with the same burst.
func (m *massRevocation) rawBurst() (perS float64, delays []time.Duration) {
	m.tb.Helper()
	ctx := context.Background()
	var mu sync.Mutex // guards sent and delays
	sent := make(map[string]time.Time, len(m.ids))
	var wg sync.WaitGroup
	for i := range 3 {
		ps := m.env.client("raw-burst-"+strconv.Itoa(i)).Subscribe(ctx, rawChannel)
		if _, err := ps.Receive(ctx); err != nil {
			m.tb.Fatal(err)
		}
		defer ps.Close()
		wg.Go(func() {
			for range m.ids {
				msg, err := ps.ReceiveMessage(ctx)
				if err != nil {
					return
				}
				now := time.Now()
				mu.Lock()
				delays = append(delays, now.Sub(sent[msg.Payload]))
				mu.Unlock()
			}
		})
	}
	pub := m.env.client("raw-burst-publisher")
	start := time.Now()
	for i := 0; i < len(m.ids); i += 128 {
		pipe := pub.Pipeline()
		batch := m.ids[i:min(i+128, len(m.ids))]
		payloads := make([]string, len(batch))
		for k, id := range batch {
			payloads[k] = fmt.Sprintf(`{"session":%q,"seq":%d,"stripe":0,"at_ms":%d}`, id, i+k+1, start.UnixMilli())
			pipe.Publish(ctx, rawChannel, payloads[k])
		}
		now := time.Now()
		mu.Lock()
		for _, p := range payloads {
			sent[p] = now
		}
		mu.Unlock()
		if _, err := pipe.Exec(ctx); err != nil {
			m.tb.Fatal(err)
		}
	}
	wg.Wait()
	return float64(len(m.ids)) / time.Since(start).Seconds(), delays
}

// BenchmarkMassRevocation revokes 10,000 sessions, cached in four replicas,
// from one of them (MarkRevoked in a loop, as a push dispatcher does after
// a credential leak) on a real redis-server, and reports the revocations per
// second until Redis held them all (held-per-s) and until the three other
// replicas applied them all (applied-per-s), and the fan-out of the
// messages, from the Redis time in each message to its application in a
// replica's L1 (fanout-p50-us, fanout-p99-us; the Redis time has
// millisecond precision, so these may read up to 1 ms high). Beside it, the
// same burst of raw PUBLISH to three go-redis subscribers (raw-per-s,
// raw-p99-us), the limit of the channel itself on this machine. Run it with
// -benchtime=1x: each op is the whole burst.
func BenchmarkMassRevocation(b *testing.B) {
	const n = 10_000
	var heldRate, appliedRate, p50, p99, rawRate, rawP99 float64
	for range b.N {
		b.StopTimer()
		m := newMassRevocation(b, n)
		rate, delays := m.rawBurst()
		rawRate += rate
		rawP99 += float64(quantile(delays, 0.99).Microseconds())
		b.StartTimer()
		held, applied, fanouts := m.run()
		b.StopTimer()
		heldRate += n / held.Seconds()
		appliedRate += n / applied.Seconds()
		p50 += float64(quantile(fanouts, 0.50).Microseconds())
		p99 += float64(quantile(fanouts, 0.99).Microseconds())
		b.Logf("%d revocations: held in Redis after %v, applied by 3 replicas after %v; fan-out p50 %v, p99 %v, max %v; raw PUBLISH burst: %.0f/s, p99 %v",
			n, held, applied, quantile(fanouts, 0.50), quantile(fanouts, 0.99), quantile(fanouts, 1), rate, quantile(delays, 0.99))
	}
	k := float64(b.N)
	b.ReportMetric(heldRate/k, "held-per-s")
	b.ReportMetric(appliedRate/k, "applied-per-s")
	b.ReportMetric(p50/k, "fanout-p50-us")
	b.ReportMetric(p99/k, "fanout-p99-us")
	b.ReportMetric(rawRate/k, "raw-per-s")
	b.ReportMetric(rawP99/k, "raw-p99-us")
	b.ReportMetric(0, "ns/op")
}

// TestMassRevocationSmoke runs the mass revocation on 500 sessions: every
// revocation is written, published once and applied by every replica.
func TestMassRevocationSmoke(t *testing.T) {
	m := newMassRevocation(t, 500)
	held, applied, fanouts := m.run()
	if len(fanouts) != 3*500 {
		t.Fatalf("%d applications, want %d", len(fanouts), 3*500)
	}
	if got := m.origin.Stats().RevocationsPublished; got != 500 {
		t.Errorf("origin Stats().RevocationsPublished = %d, want 500", got)
	}
	for i, applied := range m.applied {
		for id, n := range applied {
			if n != 1 {
				t.Fatalf("replica %d applied session %s %d times, want once", i, session.Redact(id), n)
			}
		}
	}
	t.Logf("500 revocations: held after %v, applied after %v, fan-out p99 %v", held, applied, quantile(fanouts, 0.99))
}
