package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/tiered"
)

// The sides of the L2-hit comparison against the peers.
const (
	// L2Lookup is sessioncache: tiered.Cache.Lookup on a replica whose L1
	// holds one entry, so that every lookup of uniformly drawn sessions
	// reads Redis (rediscache shares pipelines between concurrent reads).
	L2Lookup = "lookup"
	// L2Raw is a go-redis HGETALL of the same key on a client with the
	// same options.
	L2Raw = "raw"
	// L2Rueidis is a rueidis HGETALL (Do, client-side caching off):
	// rueidis pipelines concurrent commands on its connections by itself.
	L2Rueidis = "rueidis"
)

// L2Peers holds the three sides of the L2-hit comparison on one
// redis-server loaded with sessions (LoadFresh with SystemSessioncache).
// Its methods must not be called concurrently.
type L2Peers struct {
	rdb   *redis.Client // the replica's client
	c     *tiered.Cache
	raw   *redis.Client
	rue   rueidis.Client
	info  *redis.Client
	ids   []string
	keys  []string
	trace workload.Trace
}

// NewL2Peers builds the three sides for sessions [0, sessions) on the
// Redis at addr.
func NewL2Peers(ctx context.Context, addr string, sessions int) (*L2Peers, error) {
	p := &L2Peers{ids: workload.IDs(sessions), trace: workload.Uniform(sessions, 1<<16, 2)}
	keys, err := sessionKeys(p.ids)
	if err != nil {
		return nil, err
	}
	p.keys = keys
	opts := func(name string) *redis.Options {
		return &redis.Options{Addr: addr, ClientName: name, ContextTimeoutEnabled: true}
	}
	p.rdb, p.raw, p.info = redis.NewClient(opts("l2")), redis.NewClient(opts("hgetall")), redis.NewClient(opts("info"))
	l2, err := rediscache.New(p.rdb, rediscache.Options{SessionTTL: RedisTTL})
	if err != nil {
		p.Close()
		return nil, err
	}
	if p.c, err = tiered.New(tiered.Options{Redis: l2, Backend: noBackend{}, Local: localcache.Options{Size: 1, TTL: LocalTTL}}); err != nil {
		p.Close()
		return nil, err
	}
	if p.rue, err = rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, ClientName: "rueidis"}); err != nil {
		p.Close()
		return nil, fmt.Errorf("bench: rueidis: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.c.WaitSynced(wctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("bench: WaitSynced: %w", err)
	}
	return p, nil
}

// Close closes every client. It is idempotent.
func (p *L2Peers) Close() {
	if p.c != nil {
		p.c.Close()
	}
	if p.rue != nil {
		p.rue.Close()
	}
	for _, c := range []*redis.Client{p.rdb, p.raw, p.info} {
		if c != nil {
			c.Close()
		}
	}
}

// L2Phase is what one side did in one call of Run.
type L2Phase struct {
	Ops, Failed int
	Elapsed     time.Duration
	// Reads is the HGETALLs Redis ran in the phase; RedisCPU the CPU time
	// redis-server used, and HgetallUsec the time it spent running the
	// HGETALLs (INFO deltas around the phase).
	Reads       int64
	RedisCPU    time.Duration
	HgetallUsec int64
}

// CPUPerRead returns the Redis CPU time per HGETALL, in microseconds.
func (ph L2Phase) CPUPerRead() float64 {
	return float64(ph.RedisCPU.Microseconds()) / float64(max(ph.Reads, 1))
}

// UsecPerRead returns the Redis time running one HGETALL, in microseconds.
func (ph L2Phase) UsecPerRead() float64 {
	return float64(ph.HgetallUsec) / float64(max(ph.Reads, 1))
}

// Run makes n reads on side from g goroutines, each walking the uniform
// trace from its own offset. start and stop, when not nil, are called
// right before the first read and after the last (a benchmark's timer).
// A lookup that fails closed (Redis slower than rediscache's CallTimeout)
// is counted in Failed; more than 1% of them, or a wrong answer, is an
// error.
func (p *L2Peers) Run(ctx context.Context, side string, n, g int, start, stop func()) (L2Phase, error) {
	var op func(i int32) (ok bool, err error)
	switch side {
	case L2Lookup:
		op = func(i int32) (bool, error) {
			rec, err := p.c.Lookup(ctx, p.ids[i])
			return err != nil || rec.DeviceSessionID == p.ids[i], err
		}
	case L2Raw:
		op = func(i int32) (bool, error) {
			h, err := p.raw.HGetAll(ctx, p.keys[i]).Result()
			return err != nil || len(h) == 3, err
		}
	case L2Rueidis:
		op = func(i int32) (bool, error) {
			h, err := p.rue.Do(ctx, p.rue.B().Hgetall().Key(p.keys[i]).Build()).AsStrMap()
			return err != nil || len(h) == 3, err
		}
	default:
		return L2Phase{}, fmt.Errorf("bench: unknown L2 side %q", side)
	}
	before, err := ReadRedisCounters(ctx, p.info)
	if err != nil {
		return L2Phase{}, err
	}
	var failed, wrong atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	if start != nil {
		start()
	}
	t0 := time.Now()
	for w := range g {
		count := n / g
		if w < n%g {
			count++
		}
		wg.Go(func() {
			j := (w * 7919) % len(p.trace)
			for range count {
				ok, err := op(p.trace[j])
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
				if !ok {
					wrong.Add(1)
				}
				if j++; j == len(p.trace) {
					j = 0
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if stop != nil {
		stop()
	}
	after, err := ReadRedisCounters(ctx, p.info)
	if err != nil {
		return L2Phase{}, err
	}
	d := after.Sub(before)
	ph := L2Phase{Ops: n, Failed: int(failed.Load()), Elapsed: elapsed, Reads: d.Commands["hgetall"].Calls,
		RedisCPU: time.Duration(d.CPUSeconds * float64(time.Second)), HgetallUsec: d.Commands["hgetall"].Usec}
	switch {
	case wrong.Load() > 0:
		return ph, fmt.Errorf("bench: %s: %d of %d reads gave a wrong answer", side, wrong.Load(), n)
	case int64(ph.Failed) > int64(n)/100:
		return ph, fmt.Errorf("bench: %s: %d of %d reads failed; first: %w", side, ph.Failed, n, *firstErr.Load())
	case ph.Reads < int64(n-ph.Failed)*95/100:
		// A lookup of the key drawn just before it hits the one-entry L1.
		return ph, fmt.Errorf("bench: %s: Redis ran %d HGETALLs for %d reads, want at least 95%%", side, ph.Reads, n)
	}
	return ph, nil
}
