package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/tiered"
)

// ScaleOptions configures one point of the scale curve: lookups only, Zipf
// popularity, on a Redis that holds at least Sessions sessions (LoadFresh
// with SystemSessioncache).
type ScaleOptions struct {
	// Addr is the redis-server. Required.
	Addr string
	// Sessions and L1 are the point: the population the lookups draw from
	// and the L1 capacity. Required.
	Sessions, L1 int
	// IDs are workload.IDs of at least Sessions sessions. Default: built.
	IDs []string
	// Zipf is the exponent. Default 1.1.
	Zipf float64
	// Workers is the number of goroutines. Default 16.
	Workers int
	// Warmup is the minimum warm-up; it lasts until 10 × L1 lookups were
	// made (the L1 is full and its segments settled by then), for at most
	// MaxWarmup. Defaults 1s and 20s.
	Warmup, MaxWarmup time.Duration
	// Measure is the measured phase. Default 3s.
	Measure time.Duration
}

// ScalePoint is one measured point of the scale curve.
type ScalePoint struct {
	Sessions, L1 int
	// HitRatio is the share of lookups answered by L1.
	HitRatio float64
	// LookupsPerSec is the lookup throughput; L2PerSec the Redis reads
	// (L1 misses) per second it caused.
	LookupsPerSec, L2PerSec float64
	// L2Per100k is the Redis reads per second that 100,000 lookups per
	// second cause: the miss ratio, scaled.
	L2Per100k float64
	// Warmup is how long the warm-up lasted.
	Warmup time.Duration
	// Failed is the share of lookups that failed closed (Redis did not
	// answer within rediscache's CallTimeout); more than 1% fails the run.
	Failed float64
}

// RunScale measures one point of the scale curve with a new tiered cache.
func RunScale(ctx context.Context, opts ScaleOptions) (ScalePoint, error) {
	if opts.Addr == "" || opts.Sessions <= 0 || opts.L1 <= 0 {
		return ScalePoint{}, fmt.Errorf("bench: ScaleOptions needs Addr, Sessions and L1: %+v", opts)
	}
	if opts.IDs == nil {
		opts.IDs = workload.IDs(opts.Sessions)
	}
	if opts.Zipf == 0 {
		opts.Zipf = 1.1
	}
	if opts.Workers == 0 {
		opts.Workers = 16
	}
	if opts.Warmup == 0 {
		opts.Warmup = time.Second
	}
	if opts.MaxWarmup == 0 {
		opts.MaxWarmup = 20 * time.Second
	}
	if opts.Measure == 0 {
		opts.Measure = 3 * time.Second
	}
	if len(opts.IDs) < opts.Sessions {
		return ScalePoint{}, fmt.Errorf("bench: %d ids for %d sessions", len(opts.IDs), opts.Sessions)
	}
	rdb := redis.NewClient(&redis.Options{Addr: opts.Addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	l2, err := rediscache.New(rdb, rediscache.Options{SessionTTL: RedisTTL})
	if err != nil {
		return ScalePoint{}, err
	}
	c, err := tiered.New(tiered.Options{Redis: l2, Backend: noBackend{}, Local: localcache.Options{Size: opts.L1, TTL: LocalTTL}})
	if err != nil {
		return ScalePoint{}, err
	}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitSynced(wctx); err != nil {
		return ScalePoint{}, fmt.Errorf("bench: WaitSynced: %w", err)
	}

	trace := workload.Zipf(opts.Sessions, opts.Zipf, 1<<22, 3)
	var stop atomic.Bool
	// lookups counts in steps of 64; failures counts all the run's.
	var lookups, failures atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := range opts.Workers {
		wg.Go(func() {
			j := w * len(trace) / opts.Workers
			for !stop.Load() {
				for range 64 {
					if _, err := c.Lookup(ctx, opts.IDs[trace[j]]); err != nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, &err)
					}
					if j++; j == len(trace) {
						j = 0
					}
				}
				lookups.Add(64)
			}
		})
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < opts.Warmup || (lookups.Load() < 10*int64(opts.L1) && time.Since(start) < opts.MaxWarmup) {
		select {
		case <-ctx.Done():
			return ScalePoint{}, ctx.Err()
		case <-tick.C:
		}
	}
	warm := time.Since(start)
	before, n0 := c.Stats(), lookups.Load()
	begin := time.Now()
	select {
	case <-ctx.Done():
		return ScalePoint{}, ctx.Err()
	case <-time.After(opts.Measure):
	}
	after, n1 := c.Stats(), lookups.Load()
	elapsed := time.Since(begin).Seconds()
	f, total := failures.Load(), lookups.Load()
	if f > total/100 {
		return ScalePoint{}, fmt.Errorf("bench: %d of %d lookups failed; first: %w", f, total, *firstErr.Load())
	}
	hits := after.L1Hits - before.L1Hits
	misses := (after.L2Hits - before.L2Hits) + (after.BackendCalls - before.BackendCalls)
	p := ScalePoint{Sessions: opts.Sessions, L1: opts.L1, Warmup: warm, LookupsPerSec: float64(n1-n0) / elapsed, L2PerSec: float64(misses) / elapsed,
		Failed: float64(f) / float64(max(total, 1))}
	if hits+misses > 0 {
		p.HitRatio = float64(hits) / float64(hits+misses)
		p.L2Per100k = 100_000 * float64(misses) / float64(hits+misses)
	}
	return p, nil
}
