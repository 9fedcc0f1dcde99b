package chaos

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/tiered"
)

// paced runs lookups of random ids on r at about rate a second, from
// workers goroutines, until stopped, recording each.
type paced struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex // guards lookups
	lookups []Lookup
}

func startPaced(t *testing.T, r *Replica, list []string, rate, workers int) *paced {
	t.Helper()
	p := &paced{stop: make(chan struct{})}
	period := time.Duration(workers) * time.Second / time.Duration(rate)
	for w := range workers {
		rng := rand.New(rand.NewPCG(uint64(w), 7))
		p.wg.Go(func() {
			tick := time.NewTicker(period)
			defer tick.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-tick.C:
				}
				l := lookup(r, 0, list[rng.IntN(len(list))])
				p.mu.Lock()
				p.lookups = append(p.lookups, l)
				p.mu.Unlock()
			}
		})
	}
	t.Cleanup(p.end)
	return p
}

func (p *paced) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

func (p *paced) results() []Lookup {
	p.end()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lookups
}

// hitRatio returns the share of the lookups that began in [from, from+d)
// answered by L1, and how many began then.
func hitRatio(lookups []Lookup, from time.Time, d time.Duration) (float64, int) {
	n, hits := 0, 0
	for _, l := range lookups {
		if l.Call.Before(from) || !l.Call.Before(from.Add(d)) {
			continue
		}
		n++
		if l.Tier == tiered.TierL1 {
			hits++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(hits) / float64(n), n
}

// TestReplayVersusFlush measures what replaying the log saves: a replica
// holds 1,000 sessions in L1 under 2,000 lookups a second; its subscriber
// connection is blackholed while 10 sessions are revoked, then restored.
// With the log intact the replica replays the 10 and keeps its L1; with
// the log trimmed (XTRIM MAXLEN 0) it must drop its active entries. The
// figure is the L1 hit ratio in the second after the resync.
func TestReplayVersusFlush(t *testing.T) {
	const sessions, rate = 1000, 2000
	ratios := map[string]float64{}
	for _, tc := range []struct {
		name          string
		trim, tracked bool
	}{
		// Replay alone is what a replica does on a Redis without
		// tracking; with tracking, a lost connection may have missed
		// hand edits that no log holds, so every resync drops.
		{"replay", false, false}, {"flush", true, false}, {"tracked", false, true},
	} {
		name, trim := tc.name, tc.trim
		t.Run(name, func(t *testing.T) {
			env := NewEnv(t, Config{Replicas: 2, L1Size: 2 * sessions, Untracked: !tc.tracked})
			a, b := env.Replicas[0], env.Replicas[1]
			list := ids(env.NewSessions(sessions, 100))
			warm(t, b, list)
			p := startPaced(t, b, list, rate, 4)
			waitUntil(time.Now(), 300*time.Millisecond)

			start := time.Now()
			b.SubProxy.Blackhole()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, ok := b.Events.Wait(ctx, "lost", start); !ok {
				t.Fatal("the blackhole was not detected")
			}
			for _, id := range list[:10] {
				revokeVia(t, env, a, id)
			}
			if trim {
				if err := env.Admin.XTrimMaxLen(ctx, env.Layout.LogKey(0), 0).Err(); err != nil {
					t.Fatalf("XTRIM: %v", err)
				}
			}
			lifted := time.Now()
			b.SubProxy.Clear()
			synced, ok := b.Events.Wait(ctx, "synced", lifted)
			if !ok {
				t.Fatal("no resync after the blackhole was lifted")
			}
			waitUntil(synced.At, 1100*time.Millisecond)
			lookups := p.results()
			ratio, n := hitRatio(lookups, synced.At, time.Second)
			before, m := hitRatio(lookups, start.Add(-300*time.Millisecond), 300*time.Millisecond)
			ratios[name] = ratio
			t.Logf("%s: resync replayed %d, drop active %v; L1 hit ratio in the second after it: %.3f over %d lookups (%.3f over %d before the blackhole)",
				name, synced.Replayed, synced.DropActive, ratio, n, before, m)
			if wantDrop := trim || tc.tracked; wantDrop != synced.DropActive || (!trim && synced.Replayed != 10) {
				t.Errorf("resync = %+v; want DropActive %v and, with the log intact, 10 replayed", synced, wantDrop)
			}
		})
	}
	t.Logf("L1 hit ratio in the second after a reconnect: replay %.3f, flush %.3f, tracked (replay and drop) %.3f",
		ratios["replay"], ratios["flush"], ratios["tracked"])
	if ratios["replay"] <= ratios["flush"] {
		t.Errorf("hit ratio with replay %.3f, with flush %.3f: want replay above flush", ratios["replay"], ratios["flush"])
	}
}
