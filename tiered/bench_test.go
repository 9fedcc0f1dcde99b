package tiered

// Benchmarks of the lookup and revocation paths against their raw limits,
// on the workload of internal/workload (BENCHMARKS.md has the figures and
// bench/cmd/benchsuite runs them). Each comparison runs its variants in the
// order A, B, B, A in one process, on the same keys and the same Redis, so
// that a drift of the machine's speed falls on both.
//
// Every benchmark body is a function of an operation count, so that
// TestBenchSmoke runs them all for a few operations in the normal test run.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/testenv"
	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// The workload of the benchmarks (the smoke test uses smaller numbers).
const (
	benchSessions = 100_000 // sessions in Redis
	benchL1       = 10_000  // L1 entries
	benchZipf     = 1.1
	traceLen      = 1 << 16
)

// benchEnv is one redis-server holding a loaded population, one in-memory
// backend, and the replicas built on them.
type benchEnv struct {
	tb       testing.TB
	te       *testenv.Env
	srv      *redistest.Server
	rdb      *redis.Client // a plain client, for the raw baselines
	backend  *backendtest.Server
	layout   rediscache.Layout
	sessions int
}

func newBenchEnv(tb testing.TB, sessions int) *benchEnv {
	tb.Helper()
	te := testenv.New(tb, testenv.Options{})
	layout, err := rediscache.NewLayout("", "", 1)
	if err != nil {
		tb.Fatal(err)
	}
	e := &benchEnv{tb: tb, te: te, srv: te.Redis, backend: te.Backend, layout: layout, sessions: sessions}
	e.rdb = e.client("raw")
	if err := workload.Load(context.Background(), e.rdb, layout, 0, sessions, rediscache.DefaultSessionTTL); err != nil {
		tb.Fatal(err)
	}
	return e
}

// client returns a client configured as a gateway's (context deadlines on),
// closed at cleanup.
func (e *benchEnv) client(name string) *redis.Client {
	rdb := e.te.Client(name)
	e.tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// replica starts a tiered Cache with its own client (with rhooks added),
// its connections and its subscriber named name and an L1 of benchL1
// entries, waits until its subscription is synced, and closes it at
// cleanup.
func (e *benchEnv) replica(name string, hooks testHooks, edit func(*Options), rhooks ...redis.Hook) *Cache {
	e.tb.Helper()
	rdb := e.te.Client(name)
	for _, h := range rhooks {
		rdb.AddHook(h)
	}
	edits := []func(*Options){func(o *Options) {
		o.Local = localcache.Options{Size: benchL1}
		o.SubscriberName = name
	}}
	if edit != nil {
		edits = append(edits, edit)
	}
	return startReplica(e.tb, name, rdb, 1, e.backend.URL(), hooks, edits...)
}

// benchTimer is the part of *testing.B that the bodies use; in the smoke
// test it does nothing.
type benchTimer interface {
	ResetTimer()
	StopTimer()
	StartTimer()
}

type noTimer struct{}

func (noTimer) ResetTimer() {}
func (noTimer) StopTimer()  {}
func (noTimer) StartTimer() {}

// parallel runs n calls of op spread over g goroutines, each goroutine
// walking the trace from its own offset, and returns when all are done.
// op returns false to report a wrong answer, which fails tb.
func parallel(tb testing.TB, n, g int, trace workload.Trace, op func(i int32) bool) {
	tb.Helper()
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := range g {
		count := n / g
		if w < n%g {
			count++
		}
		wg.Go(func() {
			j := (w * 7919) % len(trace)
			for range count {
				if !op(trace[j]) {
					bad.Add(1)
				}
				j++
				if j == len(trace) {
					j = 0
				}
			}
		})
	}
	wg.Wait()
	if b := bad.Load(); b > 0 {
		tb.Fatalf("%d of %d operations gave a wrong answer", b, n)
	}
}

// l1Bench holds the two sides of the L1-hit comparison: tiered Lookup on a
// replica whose L1 holds sessions [0, size), and golang-lru's thread-safe
// Cache.Get holding the same records, with the same Zipf keys.
type l1Bench struct {
	c     *Cache
	raw   *lru.Cache[string, session.Record]
	ids   []string
	trace workload.Trace
}

func newL1Bench(tb testing.TB, sessions, size int) *l1Bench {
	tb.Helper()
	e := newBenchEnv(tb, sessions)
	c := e.replica("l1", testHooks{}, func(o *Options) { o.Local.Size = size })
	raw, err := lru.New[string, session.Record](size)
	if err != nil {
		tb.Fatal(err)
	}
	lb := &l1Bench{c: c, raw: raw, ids: workload.IDs(size), trace: workload.Zipf(size, benchZipf, traceLen, 1)}
	for i, id := range lb.ids {
		rec, tier, err := c.LookupTier(context.Background(), id)
		if want := workload.Record(i); err != nil || tier != TierL2 || rec != want {
			tb.Fatalf("LookupTier(%q) = %+v, %v, %v; want %+v from L2", id, rec, tier, err, want)
		}
		raw.Add(id, rec)
	}
	return lb
}

// run makes n L1-hit lookups (side "lookup") or raw gets (side "raw") from
// g goroutines and fails tb unless every one was a hit.
func (lb *l1Bench) run(tb testing.TB, timer benchTimer, n, g int, side string) {
	tb.Helper()
	ctx := context.Background()
	var op func(i int32) bool
	switch side {
	case "lookup":
		op = func(i int32) bool {
			_, err := lb.c.Lookup(ctx, lb.ids[i])
			return err == nil
		}
	case "raw":
		op = func(i int32) bool {
			_, ok := lb.raw.Get(lb.ids[i])
			return ok
		}
	default:
		tb.Fatalf("unknown side %q", side)
	}
	before := lb.c.Stats().L1Hits
	timer.ResetTimer()
	parallel(tb, n, g, lb.trace, op)
	timer.StopTimer()
	if got := lb.c.Stats().L1Hits - before; side == "lookup" && got != int64(n) {
		tb.Fatalf("L1 hits = %d of %d lookups, want all", got, n)
	}
}

// abba is the order in which a comparison runs its two sides.
var abba = [...]string{"lookup", "raw", "raw", "lookup"}

// BenchmarkL1Hit compares an L1-hit Lookup with golang-lru's Cache.Get on
// the same keys (Zipf 1.1 over the 10,000 cached sessions), serially and
// from GOMAXPROCS goroutines. Target: at most 1.5x, 0 allocs/op.
func BenchmarkL1Hit(b *testing.B) {
	lb := newL1Bench(b, benchSessions, benchL1)
	for _, mode := range []struct {
		name string
		g    int
	}{{"serial", 1}, {"parallel", runtime.GOMAXPROCS(0)}} {
		for _, side := range abba {
			b.Run(mode.name+"/"+side, func(b *testing.B) {
				b.ReportAllocs()
				lb.run(b, b, b.N, mode.g, side)
			})
		}
	}
}

// TestLookupL1HitAllocatesNothing: the L1-hit path makes no allocation.
func TestLookupL1HitAllocatesNothing(t *testing.T) {
	lb := newL1Bench(t, 100, 100)
	ctx := context.Background()
	for _, id := range []string{lb.ids[0], lb.ids[99]} {
		var err error
		allocs := testing.AllocsPerRun(1000, func() { _, err = lb.c.Lookup(ctx, id) })
		if err != nil {
			t.Fatalf("Lookup(%q) = %v, want an L1 hit", id, err)
		}
		if allocs != 0 {
			t.Errorf("Lookup(%q) L1 hit: %v allocations, want 0", id, allocs)
		}
	}
}

// l2Bench holds the two sides of the L2-hit comparison: tiered Lookup on a
// replica whose L1 holds one entry (so that every lookup of uniformly drawn
// sessions misses it), and go-redis HGETALL of the same keys on a client
// with the same options.
type l2Bench struct {
	c      *Cache
	rdb    *redis.Client
	layout rediscache.Layout
	ids    []string
	trace  workload.Trace
}

func newL2Bench(tb testing.TB, sessions int) *l2Bench {
	tb.Helper()
	e := newBenchEnv(tb, sessions)
	c := e.replica("l2", testHooks{}, func(o *Options) { o.Local.Size = 1 })
	return &l2Bench{c: c, rdb: e.client("hgetall"), layout: e.layout, ids: workload.IDs(sessions), trace: workload.Uniform(sessions, traceLen, 2)}
}

// run makes n lookups (side "lookup") or HGETALLs (side "raw") from g
// goroutines and returns the share of lookups that failed. A lookup fails
// closed (an error, never a wrong record) when Redis does not answer
// within rediscache's CallTimeout, which a loaded two-core machine
// sometimes causes at 64 goroutines; more than 1% fails tb, and so do
// fewer than 99% of the answered lookups coming from L2 (the rest are L1
// hits of a key drawn twice in a row).
func (lb *l2Bench) run(tb testing.TB, timer benchTimer, n, g int, side string) (failed float64) {
	tb.Helper()
	ctx := context.Background()
	var errs atomic.Int64
	var op func(i int32) bool
	switch side {
	case "lookup":
		op = func(i int32) bool {
			rec, err := lb.c.Lookup(ctx, lb.ids[i])
			if err != nil {
				errs.Add(1)
				return true
			}
			return rec.DeviceSessionID == lb.ids[i]
		}
	case "raw":
		// The key is built per call, as Lookup builds it.
		op = func(i int32) bool {
			h, err := lb.rdb.HGetAll(ctx, lb.layout.SessionKey(lb.ids[i])).Result()
			return err == nil && len(h) == 3
		}
	default:
		tb.Fatalf("unknown side %q", side)
	}
	before := lb.c.Stats().L2Hits
	timer.ResetTimer()
	parallel(tb, n, g, lb.trace, op)
	timer.StopTimer()
	e := errs.Load()
	if e > int64(n)/100 {
		tb.Fatalf("%d of %d lookups failed, want at most 1%%", e, n)
	}
	if got := lb.c.Stats().L2Hits - before; side == "lookup" && got < (int64(n)-e)*99/100 {
		tb.Fatalf("L2 hits = %d of %d answered lookups, want at least 99%%", got, int64(n)-e)
	}
	return float64(e) / float64(n)
}

// BenchmarkL2Hit compares a Lookup that misses L1 and hits Redis with a raw
// go-redis HGETALL of the same key, at 1, 16 and 64 goroutines. Targets:
// at 1 goroutine at most 1.1x the time of raw; at 64 (where concurrent
// reads share pipelines) at least 2x its throughput.
func BenchmarkL2Hit(b *testing.B) {
	lb := newL2Bench(b, benchSessions)
	for _, g := range []int{1, 16, 64} {
		for _, side := range abba {
			b.Run(fmt.Sprintf("g%d/%s", g, side), func(b *testing.B) {
				b.ReportAllocs()
				failed := lb.run(b, b, b.N, g, side)
				b.ReportMetric(100*failed, "failed-%")
			})
		}
	}
}

// rawChannel is the channel of the raw pub/sub baseline.
const rawChannel = "bench_raw_channel"

// fanoutBench measures publish -> applied in three replicas against a raw
// go-redis PUBLISH -> received by three subscribers on the same server.
type fanoutBench struct {
	tb       testing.TB
	rdb      *redis.Client // a plain client of the server, for INFO
	ids      []string
	next     int
	replicas []*Cache
	pub      *rediscache.Cache // the revoking party (the backend, an operator)

	want    atomic.Pointer[string] // the session id whose application is awaited
	applied chan time.Time

	rawPub  *redis.Client
	rawWant atomic.Pointer[string] // the payload awaited
	rawGot  chan time.Time
}

func newFanoutBench(tb testing.TB, sessions int) *fanoutBench {
	tb.Helper()
	e := newBenchEnv(tb, sessions)
	f := &fanoutBench{tb: tb, rdb: e.rdb, ids: workload.IDs(sessions), applied: make(chan time.Time, 16), rawGot: make(chan time.Time, 16)}
	hooks := testHooks{applied: func(m session.Invalidation) {
		if p := f.want.Load(); p != nil && m.SessionID == *p {
			f.applied <- time.Now()
		}
	}}
	for i := range 3 {
		f.replicas = append(f.replicas, e.replica("r"+strconv.Itoa(i), hooks, nil))
	}
	pub, err := rediscache.New(e.client("publisher"), rediscache.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	f.pub = pub
	f.rawPub = e.client("raw-publisher")
	var wg sync.WaitGroup
	var subs []*redis.PubSub
	for i := range 3 {
		ps := e.client("raw-subscriber-"+strconv.Itoa(i)).Subscribe(context.Background(), rawChannel)
		if _, err := ps.Receive(context.Background()); err != nil { // the subscription confirmation
			tb.Fatal(err)
		}
		subs = append(subs, ps)
		wg.Go(func() {
			for {
				msg, err := ps.ReceiveMessage(context.Background())
				if err != nil {
					return // closed
				}
				if p := f.rawWant.Load(); p != nil && msg.Payload == *p {
					f.rawGot <- time.Now()
				}
			}
		})
	}
	tb.Cleanup(func() {
		for _, ps := range subs {
			ps.Close()
		}
		wg.Wait()
	})
	return f
}

// await returns the latest of three arrival times.
func (f *fanoutBench) await(ch <-chan time.Time, what string) time.Time {
	f.tb.Helper()
	var last time.Time
	timeout := time.After(5 * time.Second)
	for range 3 {
		select {
		case t := <-ch:
			if t.After(last) {
				last = t
			}
		case <-timeout:
			f.tb.Fatalf("%s: not received by three subscribers within 5s", what)
		}
	}
	return last
}

// revoke revokes id through Redis and returns the time until all three
// replicas applied it; it fails unless all three then hold it revoked.
func (f *fanoutBench) revoke(id string) time.Duration {
	f.tb.Helper()
	f.want.Store(&id)
	start := time.Now()
	if _, err := f.pub.RevokeSession(context.Background(), id); err != nil {
		f.tb.Fatal(err)
	}
	d := f.await(f.applied, "revocation of "+session.Redact(id)).Sub(start)
	f.want.Store(nil)
	for i, r := range f.replicas {
		if got, ok := r.l1.Get(id); !ok || got.Status != session.StatusRevoked {
			f.tb.Fatalf("replica %d: L1 Get(%q) = %v, %v after the revocation was applied, want revoked", i, id, got.Status, ok)
		}
	}
	return d
}

// publish publishes a message of the same size on the raw channel and
// returns the time until all three raw subscribers received it.
func (f *fanoutBench) publish(id string, seq int) time.Duration {
	f.tb.Helper()
	payload := fmt.Sprintf(`{"session":%q,"seq":%d,"stripe":0,"at_ms":%d}`, id, seq, time.Now().UnixMilli())
	f.rawWant.Store(&payload)
	start := time.Now()
	if err := f.rawPub.Publish(context.Background(), rawChannel, payload).Err(); err != nil {
		f.tb.Fatal(err)
	}
	d := f.await(f.rawGot, "raw publish").Sub(start)
	f.rawWant.Store(nil)
	return d
}

// run makes n revocations and n raw publishes, alternating which goes
// first. Before each revocation the session is cached in all three L1s.
func (f *fanoutBench) run(timer benchTimer, n int) (ours, raw []time.Duration) {
	f.tb.Helper()
	ctx := context.Background()
	for k := range n {
		id := f.ids[f.next%len(f.ids)]
		f.next++
		timer.StopTimer()
		for i, r := range f.replicas {
			if _, err := r.Lookup(ctx, id); err != nil {
				f.tb.Fatalf("replica %d: Lookup(%q) = %v", i, id, err)
			}
		}
		timer.StartTimer()
		if k%2 == 0 {
			ours = append(ours, f.revoke(id))
			raw = append(raw, f.publish(id, k))
		} else {
			raw = append(raw, f.publish(id, k))
			ours = append(ours, f.revoke(id))
		}
	}
	return ours, raw
}

// quantile returns the q-quantile (nearest rank) of ds, which it sorts.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// serverMicros returns INFO commandstats' usec_per_call of a command (in
// lower case, for example "evalsha"), or 0 when it has not run.
func (f *fanoutBench) serverMicros(cmd string) float64 {
	f.tb.Helper()
	info, err := f.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		f.tb.Fatal(err)
	}
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for field := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(field, "usec_per_call="); ok {
				us, err := strconv.ParseFloat(v, 64)
				if err != nil {
					f.tb.Fatalf("usec_per_call %q: %v", v, err)
				}
				return us
			}
		}
	}
	return 0
}

// BenchmarkFanout revokes sessions cached in three replicas and measures
// the time from the revoking call to the third replica's L1 flip, against
// a raw PUBLISH to three go-redis subscribers, interleaved. Run it with
// -benchtime=1000x for the 1,000 revocations of the target (p99 at most
// 1.5x of raw). The metrics are in microseconds; script-us and publish-us
// are the time Redis spent per revocation script (EVALSHA) and per raw
// PUBLISH (INFO commandstats).
func BenchmarkFanout(b *testing.B) {
	f := newFanoutBench(b, benchSessions)
	if err := f.rdb.ConfigResetStat(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	ours, raw := f.run(b, b.N)
	b.StopTimer()
	b.ReportMetric(f.serverMicros("evalsha"), "script-us")
	b.ReportMetric(f.serverMicros("publish"), "publish-us")
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(quantile(ours, 0.50)), "p50-us")
	b.ReportMetric(us(quantile(ours, 0.99)), "p99-us")
	b.ReportMetric(us(quantile(raw, 0.50)), "raw-p50-us")
	b.ReportMetric(us(quantile(raw, 0.99)), "raw-p99-us")
	b.ReportMetric(0, "ns/op")
}

// l2Reads is a go-redis hook that calls a function after every HGETALL,
// the L2 read of a lookup.
type l2Reads struct {
	after atomic.Pointer[func()]
}

func (h *l2Reads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *l2Reads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	// Concurrent Gets share pipelines (rediscache's batched reads).
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if f := h.after.Load(); f != nil {
			for _, cmd := range cmds {
				if cmd.Name() == "hgetall" {
					(*f)()
				}
			}
		}
		return err
	}
}
func (h *l2Reads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if f := h.after.Load(); f != nil && cmd.Name() == "hgetall" {
			(*f)()
		}
		return err
	}
}

// coldShared looks up one id that only the backend knows from `lookups`
// goroutines at once, n times with a new id each time, and returns the
// backend calls made per id. c's client must carry reads. The backend
// holds its answer until every lookup has read L2 (and missed), so that all
// of them are concurrent with the backend call.
func coldShared(tb testing.TB, e *benchEnv, c *Cache, reads *l2Reads, n, lookups int) float64 {
	tb.Helper()
	before := e.backend.Calls()
	for k := range n {
		rec, _ := e.backend.NewSession(fmt.Sprintf("cold-user-%d", k))
		release := make(chan struct{})
		e.backend.SetBeforeRespond(func(string, session.Record, bool) { <-release })
		var missed, done sync.WaitGroup
		missed.Add(lookups)
		after := missed.Done
		reads.after.Store(&after)
		var bad atomic.Int64
		for range lookups {
			done.Go(func() {
				if got, err := c.Lookup(context.Background(), rec.DeviceSessionID); err != nil || got != rec {
					bad.Add(1)
				}
			})
		}
		missed.Wait()
		reads.after.Store(nil)
		close(release)
		done.Wait()
		e.backend.SetBeforeRespond(nil)
		if b := bad.Load(); b > 0 {
			tb.Fatalf("%d of %d concurrent cold lookups failed", b, lookups)
		}
		if got := e.backend.CallsFor(rec.DeviceSessionID); got != 1 {
			tb.Errorf("backend calls for %d concurrent cold lookups of one id = %d, want 1", lookups, got)
		}
	}
	return float64(e.backend.Calls()-before) / float64(n)
}

// unknownFlood looks up `ids` distinct unknown ids `rounds` times each from
// 64 goroutines, well within the negative TTL, and returns the backend
// calls made per id.
func unknownFlood(tb testing.TB, e *benchEnv, c *Cache, tag string, ids, rounds int) float64 {
	tb.Helper()
	unknown := make([]string, ids)
	for i := range unknown {
		unknown[i] = fmt.Sprintf("unknown-%s-%08d", tag, i)
	}
	before := e.backend.Calls()
	var bad atomic.Int64
	for range rounds {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < int64(ids); i = next.Add(1) - 1 {
					if _, err := c.Lookup(context.Background(), unknown[i]); !errors.Is(err, session.ErrNotFound) {
						bad.Add(1)
					}
				}
			})
		}
		wg.Wait()
	}
	if b := bad.Load(); b > 0 {
		tb.Fatalf("%d lookups of unknown ids did not return ErrNotFound", b)
	}
	calls := e.backend.Calls() - before
	if calls > int64(ids) {
		tb.Errorf("backend calls for %d unknown ids looked up %d times each = %d, want at most %d", ids, rounds, calls, ids)
	}
	return float64(calls) / float64(ids)
}

// BenchmarkBackendProtection reports the backend calls per id when 1,000
// lookups of one cold id run at once (target 1), and when 10,000 distinct
// unknown ids are each looked up three times within the negative TTL
// (target at most 1). Run it with -benchtime=1x.
func BenchmarkBackendProtection(b *testing.B) {
	e := newBenchEnv(b, 0)
	reads := &l2Reads{}
	c := e.replica("protect", testHooks{}, func(o *Options) { o.NegativeTTL = time.Minute }, reads)
	b.ResetTimer()
	cold := coldShared(b, e, c, reads, b.N, 1000)
	flood := 0.0
	for k := range b.N {
		flood += unknownFlood(b, e, c, strconv.Itoa(k), DefaultNegativeSize, 3)
	}
	b.StopTimer()
	b.ReportMetric(cold, "cold-calls/id")
	b.ReportMetric(flood/float64(b.N), "unknown-calls/id")
	b.ReportMetric(0, "ns/op")
}

// redisBytes loads n sessions into an empty redis-server and returns the
// growth of used_memory per session (hashes, user indexes and the keyspace's
// own overhead) and the mean MEMORY USAGE of a session hash.
func redisBytes(tb testing.TB, n int) (perSession, perHash float64) {
	tb.Helper()
	srv := redistest.Start(tb, redistest.Options{})
	rdb := srv.Client(tb)
	ctx := context.Background()
	layout, err := rediscache.NewLayout("", "", 1)
	if err != nil {
		tb.Fatal(err)
	}
	before := usedMemory(tb, rdb)
	if err := workload.Load(ctx, rdb, layout, 0, n, rediscache.DefaultSessionTTL); err != nil {
		tb.Fatal(err)
	}
	after := usedMemory(tb, rdb)
	sample := min(n, 1000)
	var total int64
	for i := range sample {
		k := layout.SessionKey(workload.ID(i * (n / sample)))
		v, err := rdb.MemoryUsage(ctx, k, 0).Result()
		if err != nil {
			tb.Fatalf("MEMORY USAGE %s: %v", k, err)
		}
		total += v
	}
	return float64(after-before) / float64(n), float64(total) / float64(sample)
}

// usedMemory returns INFO memory's used_memory.
func usedMemory(tb testing.TB, rdb *redis.Client) int64 {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatalf("used_memory %q: %v", v, err)
			}
			return n
		}
	}
	tb.Fatalf("INFO memory has no used_memory")
	return 0
}

// BenchmarkRedisMemory reports the Redis memory of the 100,000 sessions of
// the workload: used_memory growth per session and MEMORY USAGE of one
// session hash. Run it with -benchtime=1x.
func BenchmarkRedisMemory(b *testing.B) {
	var perSession, perHash float64
	for range b.N {
		perSession, perHash = redisBytes(b, benchSessions)
	}
	b.ReportMetric(perSession, "used-B/session")
	b.ReportMetric(perHash, "hash-B/session")
	b.ReportMetric(0, "ns/op")
}

// TestBenchSmoke runs every benchmark body above for a few operations on
// a small population, so that the suite cannot rot unnoticed.
func TestBenchSmoke(t *testing.T) {
	t.Run("L1Hit", func(t *testing.T) {
		lb := newL1Bench(t, 2000, 200)
		for _, side := range abba {
			lb.run(t, noTimer{}, 200, 1, side)
			lb.run(t, noTimer{}, 200, runtime.GOMAXPROCS(0), side)
		}
	})
	t.Run("L2Hit", func(t *testing.T) {
		lb := newL2Bench(t, 2000)
		for _, side := range abba[:2] {
			lb.run(t, noTimer{}, 200, 16, side)
		}
	})
	t.Run("Fanout", func(t *testing.T) {
		f := newFanoutBench(t, 100)
		ours, raw := f.run(noTimer{}, 10)
		if len(ours) != 10 || len(raw) != 10 || quantile(ours, 0.5) <= 0 || quantile(raw, 0.5) <= 0 {
			t.Fatalf("fan-out samples = %v and %v, want 10 positive each", ours, raw)
		}
	})
	t.Run("BackendProtection", func(t *testing.T) {
		e := newBenchEnv(t, 0)
		reads := &l2Reads{}
		c := e.replica("protect", testHooks{}, func(o *Options) { o.NegativeTTL = time.Minute }, reads)
		if got := coldShared(t, e, c, reads, 1, 100); got != 1 {
			t.Errorf("coldShared = %v backend calls per id, want 1", got)
		}
		if got := unknownFlood(t, e, c, "smoke", 300, 2); got != 1 {
			t.Errorf("unknownFlood = %v backend calls per id, want 1", got)
		}
	})
	t.Run("RedisMemory", func(t *testing.T) {
		perSession, perHash := redisBytes(t, 300)
		if perSession <= 0 || perHash <= 0 {
			t.Errorf("redisBytes = %v, %v; want positive", perSession, perHash)
		}
	})
}
