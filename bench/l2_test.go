package bench

import (
	"context"
	"fmt"
	"testing"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// TestL2PeersSmoke runs every side of the L2-hit comparison briefly and
// checks that each read Redis once per lookup and that Redis's CPU was
// measured.
func TestL2PeersSmoke(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	const sessions = 2000
	if err := LoadFresh(ctx, srv.Addr, SystemSessioncache, sessions); err != nil {
		t.Fatal(err)
	}
	p, err := NewL2Peers(ctx, srv.Addr, sessions)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, g := range []int{1, 16} {
		for _, side := range []string{L2Lookup, L2Raw, L2Rueidis} {
			ph, err := p.Run(ctx, side, 400, g, nil, nil)
			if err != nil {
				t.Fatalf("Run(%s, g%d) = %v", side, g, err)
			}
			t.Logf("%s g%d: %v, %d reads, Redis CPU %.1f µs/read, HGETALL %.2f µs", side, g, ph.Elapsed, ph.Reads, ph.CPUPerRead(), ph.UsecPerRead())
			if ph.Reads < 380 || ph.Reads > 400 || ph.RedisCPU <= 0 || ph.HgetallUsec <= 0 {
				t.Errorf("Run(%s, g%d) = %+v, want about 400 reads and Redis time", side, g, ph)
			}
		}
	}
	if _, err := p.Run(ctx, "other", 1, 1, nil, nil); err == nil {
		t.Errorf("Run(other) = nil error, want an unknown side")
	}
}

// BenchmarkL2Peers compares an L2-hit Lookup with a raw go-redis HGETALL
// and a rueidis HGETALL of the same keys at 1, 16 and 64 goroutines, in
// the order A, B, C, C, B, A (at 1 goroutine only sessioncache and
// go-redis, A, B, B, A). Besides the time per lookup it reports Redis's CPU
// time per HGETALL (INFO cpu) and the time Redis ran each (INFO
// commandstats), over the timed phase. bench/cmd/benchsuite runs it in
// every round of the library's L2-hit comparison.
func BenchmarkL2Peers(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	const sessions = 100_000
	if err := LoadFresh(ctx, srv.Addr, SystemSessioncache, sessions); err != nil {
		b.Fatal(err)
	}
	p, err := NewL2Peers(ctx, srv.Addr, sessions)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	for _, g := range []int{1, 16, 64} {
		order := []string{L2Lookup, L2Raw, L2Rueidis, L2Rueidis, L2Raw, L2Lookup}
		if g == 1 {
			order = []string{L2Lookup, L2Raw, L2Raw, L2Lookup}
		}
		for _, side := range order {
			b.Run(fmt.Sprintf("g%d/%s", g, side), func(b *testing.B) {
				b.ReportAllocs()
				ph, err := p.Run(ctx, side, b.N, g, b.ResetTimer, b.StopTimer)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(ph.CPUPerRead(), "redis-cpu-us/read")
				b.ReportMetric(ph.UsecPerRead(), "redis-cmd-us/read")
				b.ReportMetric(100*float64(ph.Failed)/float64(ph.Ops), "failed-%")
			})
		}
	}
}
