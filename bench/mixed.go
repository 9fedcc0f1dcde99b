package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/rediscache"
)

// MixedOptions configures one run of the mixed workload. Zero fields mean
// the documented defaults (the workload of BENCHMARKS.md).
type MixedOptions struct {
	// Addr is the redis-server to use; the run flushes it. Required.
	Addr string
	// Sessions is the population in Redis. Default 100,000.
	Sessions int
	// L1 is the in-process capacity of every system, in sessions. Default
	// 10,000.
	L1 int
	// Trace is the sequence of session indexes the workers walk, each
	// from its own offset. Default: workload.Zipf(Sessions, 1.1, 1<<22, 1).
	Trace workload.Trace
	// Workers is the number of goroutines. Default 16.
	Workers int
	// RevokeEvery makes every RevokeEvery-th operation of a worker a
	// revocation of the session at that point of the trace, the others
	// lookups. Default 100 (1%).
	RevokeEvery int
	// The warm-up lasts at least Warmup and until WarmupOps operations
	// were made (TinyLFU admits a session only once it has been seen
	// often: go-redis/cache needs about a million operations to reach its
	// steady hit ratio), for at most MaxWarmup. Defaults 1s, 1,000,000 and
	// 30s.
	Warmup    time.Duration
	WarmupOps int64
	MaxWarmup time.Duration
	// Measure is the duration of the measured phase. Default 3s.
	Measure time.Duration
	// SampleEvery: the latency of one operation in SampleEvery is
	// measured (reading the clock costs about as much as an L1 hit).
	// Default 8.
	SampleEvery int
}

func (o *MixedOptions) setDefaults() error {
	if o.Addr == "" {
		return fmt.Errorf("bench: MixedOptions.Addr is required")
	}
	if o.Sessions == 0 {
		o.Sessions = 100_000
	}
	if o.L1 == 0 {
		o.L1 = 10_000
	}
	if o.Trace == nil {
		o.Trace = workload.Zipf(o.Sessions, 1.1, 1<<22, 1)
	}
	if o.Workers == 0 {
		o.Workers = 16
	}
	if o.RevokeEvery == 0 {
		o.RevokeEvery = 100
	}
	if o.Warmup == 0 {
		o.Warmup = time.Second
	}
	if o.WarmupOps == 0 {
		o.WarmupOps = 1_000_000
	}
	if o.MaxWarmup == 0 {
		o.MaxWarmup = 30 * time.Second
	}
	if o.Measure == 0 {
		o.Measure = 3 * time.Second
	}
	if o.SampleEvery == 0 {
		o.SampleEvery = 8
	}
	switch {
	case o.Sessions < 0 || o.L1 < 0 || o.Workers < 0 || o.RevokeEvery < 0 || o.SampleEvery < 0 ||
		o.Warmup < 0 || o.WarmupOps < 0 || o.MaxWarmup < 0 || o.Measure < 0:
		return fmt.Errorf("bench: negative MixedOptions field: %+v", *o)
	case len(o.Trace) < o.Workers:
		return fmt.Errorf("bench: trace of %d indexes for %d workers", len(o.Trace), o.Workers)
	}
	for _, i := range o.Trace[:min(len(o.Trace), 1000)] {
		if int(i) >= o.Sessions {
			return fmt.Errorf("bench: trace index %d outside %d sessions", i, o.Sessions)
		}
	}
	return nil
}

// MixedResult is what one system did in the measured phase.
type MixedResult struct {
	System string
	// Ops counts lookups and revocations; Errors the failed ones (more
	// than 1% fail the run).
	Ops, Lookups, Revocations, LocalHits, Errors uint64
	// Throughput is Ops per second of the measured phase.
	Throughput float64
	// HitRatio is LocalHits / Lookups.
	HitRatio float64
	// Warmup is how long the warm-up lasted.
	Warmup time.Duration
	// HitP50 and HitP99 are the latencies of lookups answered from
	// process memory and LookupP50 and LookupP99 of all lookups (sampled,
	// see MixedOptions.SampleEvery); RevokeP50 of every revocation.
	HitP50, HitP99, LookupP50, LookupP99, RevokeP50 time.Duration
}

// Phases of a run, read by the workers every 64 operations.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// workerStats is what one worker counted in the measured phase.
type workerStats struct {
	ops, lookups, revocations, hits, errors uint64
	hit, all, rev                           Histogram
	firstErr                                error
}

// RunMixed flushes the Redis at opts.Addr, loads the sessions the named
// system reads (hashes for sessioncache and rueidis, msgpack strings for
// go-redis/cache), and runs the mixed workload on it: a warm-up, then the
// measured phase.
func RunMixed(ctx context.Context, name string, opts MixedOptions) (MixedResult, error) {
	if err := opts.setDefaults(); err != nil {
		return MixedResult{}, err
	}
	if err := LoadFresh(ctx, opts.Addr, name, opts.Sessions); err != nil {
		return MixedResult{}, err
	}
	ids := workload.IDs(opts.Sessions)
	sys, err := newSystem(ctx, name, opts.Addr, opts.L1, ids)
	if err != nil {
		return MixedResult{}, err
	}
	defer sys.close()

	var phase atomic.Int32
	var warmOps atomic.Int64
	stats := make([]*workerStats, opts.Workers)
	var wg sync.WaitGroup
	for w := range opts.Workers {
		st := &workerStats{}
		stats[w] = st
		wk := sys.worker()
		start := w * len(opts.Trace) / opts.Workers
		wg.Go(func() { runWorker(ctx, wk, st, &phase, &warmOps, opts, start) })
	}
	warmStart := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	for ctx.Err() == nil {
		if d := time.Since(warmStart); d >= opts.MaxWarmup || (d >= opts.Warmup && warmOps.Load() >= opts.WarmupOps) {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	tick.Stop()
	phase.Store(phaseMeasure)
	begin := time.Now()
	warm := begin.Sub(warmStart)
	timer := time.NewTimer(opts.Measure)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	phase.Store(phaseStop)
	elapsed := time.Since(begin)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return MixedResult{}, err
	}

	res := MixedResult{System: name, Warmup: warm}
	var hit, all, rev Histogram
	for _, st := range stats {
		res.Ops += st.ops
		res.Lookups += st.lookups
		res.Revocations += st.revocations
		res.LocalHits += st.hits
		res.Errors += st.errors
		hit.Merge(&st.hit)
		all.Merge(&st.all)
		rev.Merge(&st.rev)
		if st.firstErr != nil && err == nil {
			err = st.firstErr
		}
	}
	// A lookup or revocation that Redis does not answer in time fails
	// (sessioncache fails closed); a few under a load spike are counted,
	// more than 1% fail the run.
	if res.Errors > res.Ops/100 {
		return res, fmt.Errorf("bench: %s: %d of %d operations failed; first: %w", name, res.Errors, res.Ops, err)
	}
	res.Throughput = float64(res.Ops) / elapsed.Seconds()
	if res.Lookups > 0 {
		res.HitRatio = float64(res.LocalHits) / float64(res.Lookups)
	}
	res.HitP50, res.HitP99 = hit.Quantile(0.50), hit.Quantile(0.99)
	res.LookupP50, res.LookupP99 = all.Quantile(0.50), all.Quantile(0.99)
	res.RevokeP50 = rev.Quantile(0.50)
	return res, nil
}

func runWorker(ctx context.Context, wk worker, st *workerStats, phase *atomic.Int32, warmOps *atomic.Int64, opts MixedOptions, j int) {
	trace := opts.Trace
	ph := phaseWarmup
	// Latencies are read as time.Since(epoch): one monotonic clock read
	// each, where time.Now also reads the wall clock.
	epoch := time.Now()
	for n := 0; ; n++ {
		if n%64 == 0 {
			if ph == phaseWarmup && n > 0 {
				warmOps.Add(64)
			}
			if ph = phase.Load(); ph == phaseStop {
				return
			}
		}
		i := int(trace[j])
		if j++; j == len(trace) {
			j = 0
		}
		measuring := ph == phaseMeasure
		var t0 time.Duration
		sample := measuring && n%opts.SampleEvery == 0
		if sample {
			t0 = time.Since(epoch)
		}
		if n%opts.RevokeEvery == opts.RevokeEvery-1 {
			// Every revocation of the measured phase is timed: they are
			// few, and far slower than two clock reads.
			t0 = time.Since(epoch)
			err := wk.revoke(ctx, i)
			if !measuring {
				continue
			}
			st.rev.Record(time.Since(epoch) - t0)
			st.ops++
			st.revocations++
			st.count(err)
			continue
		}
		local, err := wk.lookup(ctx, i)
		if !measuring {
			continue
		}
		if sample {
			d := time.Since(epoch) - t0
			st.all.Record(d)
			if local && err == nil {
				st.hit.Record(d)
			}
		}
		st.ops++
		st.lookups++
		if local && err == nil {
			st.hits++
		}
		st.count(err)
	}
}

func (st *workerStats) count(err error) {
	if err != nil {
		st.errors++
		if st.firstErr == nil {
			st.firstErr = err
		}
	}
}

// LoadFresh flushes the Redis at addr and loads sessions [0, n) in the
// form the named system reads.
func LoadFresh(ctx context.Context, addr, name string, n int) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("bench: FLUSHALL: %w", err)
	}
	if name == SystemGoCache {
		return LoadGoCache(ctx, rdb, 0, n)
	}
	layout, err := rediscache.NewLayout("", "", 1)
	if err != nil {
		return err
	}
	return workload.Load(ctx, rdb, layout, 0, n, RedisTTL)
}
