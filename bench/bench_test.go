package bench

import (
	"bytes"
	"context"
	"image/png"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/workload"
)

func TestMain(m *testing.M) { redistest.VerifyTestMain(m) }

// TestMixedSmoke runs the mixed workload briefly on every system and checks
// that each one answered every operation and served hits from memory.
func TestMixedSmoke(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const sessions = 2000
	trace := workload.Zipf(sessions, 1.1, 1<<14, 1)
	for _, name := range Systems {
		t.Run(name, func(t *testing.T) {
			res, err := RunMixed(context.Background(), name, MixedOptions{
				Addr: srv.Addr, Sessions: sessions, L1: 500, Trace: trace, Workers: 4,
				Warmup: 100 * time.Millisecond, WarmupOps: 1, Measure: 300 * time.Millisecond,
			})
			if err != nil {
				t.Fatalf("RunMixed(%s) = %v", name, err)
			}
			t.Logf("%s: %.0f ops/s, hit ratio %.3f, hit p50 %v p99 %v, lookup p99 %v", name, res.Throughput, res.HitRatio, res.HitP50, res.HitP99, res.LookupP99)
			if res.Lookups == 0 || res.Revocations == 0 || res.LocalHits == 0 {
				t.Errorf("RunMixed(%s) = %+v, want lookups, revocations and local hits", name, res)
			}
			if res.RevokeP50 <= 0 {
				t.Errorf("RunMixed(%s): revocation p50 %v, want positive", name, res.RevokeP50)
			}
			if res.HitP50 <= 0 || res.HitP50 > res.LookupP99 {
				t.Errorf("RunMixed(%s): hit p50 %v, lookup p99 %v; want 0 < hit p50 <= lookup p99", name, res.HitP50, res.LookupP99)
			}
		})
	}
}

// BenchmarkMixed runs the mixed workload of BENCHMARKS.md once per system
// (run it with -benchtime=1x); bench/cmd/benchsuite runs it ten times,
// interleaved, for the figures.
func BenchmarkMixed(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	trace := workload.Zipf(100_000, 1.1, 1<<22, 1)
	for _, name := range Systems {
		b.Run(name, func(b *testing.B) {
			var res MixedResult
			for range b.N {
				var err error
				if res, err = RunMixed(context.Background(), name, MixedOptions{Addr: srv.Addr, Trace: trace}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(res.Throughput, "ops/s")
			b.ReportMetric(100*res.HitRatio, "hit-%")
			b.ReportMetric(float64(res.HitP50.Nanoseconds()), "hit-p50-ns")
			b.ReportMetric(float64(res.HitP99.Nanoseconds()), "hit-p99-ns")
			b.ReportMetric(float64(res.LookupP99.Nanoseconds()), "lookup-p99-ns")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestScaleSmoke measures two small points of the scale curve: an L1 that
// holds every session ends with (almost) no Redis reads; a smaller one
// with some.
func TestScaleSmoke(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	if err := LoadFresh(context.Background(), srv.Addr, SystemSessioncache, 1000); err != nil {
		t.Fatal(err)
	}
	opts := ScaleOptions{Addr: srv.Addr, Sessions: 1000, Workers: 4, Warmup: 100 * time.Millisecond, Measure: 200 * time.Millisecond}
	var ratios []float64
	for _, l1 := range []int{100, 2000} {
		opts.L1 = l1
		p, err := RunScale(context.Background(), opts)
		if err != nil {
			t.Fatalf("RunScale(L1 %d) = %v", l1, err)
		}
		t.Logf("%+v", p)
		if p.LookupsPerSec <= 0 || p.HitRatio <= 0 || p.HitRatio > 1 {
			t.Errorf("RunScale(L1 %d) = %+v, want lookups and a hit ratio in (0, 1]", l1, p)
		}
		ratios = append(ratios, p.HitRatio)
	}
	if ratios[1] < 0.99 || ratios[0] >= ratios[1] {
		t.Errorf("hit ratios with L1 100 and 2000 of 1000 sessions = %v, want the second at least 0.99 and above the first", ratios)
	}
}

// TestRueidisCapacity checks rueidisEntryBytes: a rueidis client sized for
// 1,000 sessions keeps about 1,000 of the most recent ones.
func TestRueidisCapacity(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const sessions, l1 = 3000, 1000
	ctx := context.Background()
	if err := LoadFresh(ctx, srv.Addr, SystemRueidis, sessions); err != nil {
		t.Fatal(err)
	}
	s, err := newRueidis(srv.Addr, l1, workload.IDs(sessions))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for i := range sessions {
		if _, err := s.lookup(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	// Walking back from the most recent, the hits are the sessions kept.
	hits := 0
	for i := sessions - 1; i >= 0; i-- {
		local, err := s.lookup(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if local {
			hits++
		}
	}
	t.Logf("rueidis sized for %d sessions kept %d", l1, hits)
	if hits < l1*85/100 || hits > l1*115/100 {
		t.Errorf("rueidis sized for %d sessions kept %d, want within 15%%", l1, hits)
	}
}

// TestWritePNG draws the two panels of the scale curve and decodes the
// result.
func TestWritePNG(t *testing.T) {
	var buf bytes.Buffer
	panels := []Panel{
		{Title: "L1 hit ratio", XLabel: "L1 entries", YLabel: "hit ratio", YMin: 0, YMax: 1, YPercent: true, Series: []Series{
			{Name: "10k sessions", X: []float64{1e3, 1e4, 1e5}, Y: []float64{0.7, 1, 1}},
			{Name: "1M sessions", X: []float64{1e3, 1e4, 1e5}, Y: []float64{0.5, 0.7, 0.85}},
		}},
		{Title: "Redis reads/s", XLabel: "L1 entries", YLabel: "reads/s", LogY: true, Series: []Series{
			{Name: "1M sessions", X: []float64{1e3, 1e4, 1e5}, Y: []float64{50000, 20000, 3000}},
		}},
	}
	if err := WritePNG(&buf, panels); err != nil {
		t.Fatalf("WritePNG = %v", err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("png.Decode = %v", err)
	}
	if got := img.Bounds().Dx(); got != 960 {
		t.Errorf("width = %d, want 960 (two panels)", got)
	}
	// The first series is drawn in the first palette colour somewhere.
	found := false
	for y := 0; y < img.Bounds().Dy() && !found; y++ {
		for x := 0; x < 480 && !found; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			found = r>>8 == 31 && g>>8 == 119 && b>>8 == 180
		}
	}
	if !found {
		t.Errorf("the first series is not drawn")
	}
}
