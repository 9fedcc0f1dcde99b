package tiered

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
)

// The sizing figures of SCALING.md: Redis memory per session (fast, and a
// bound checked on every run), and, behind SESSIONCACHE_SOAK=1, the mixed
// workload on one node against a three-master cluster, L2 lookups per
// second per layout, and the bytes of a cluster-bus PUBLISH message.

// soak skips a long measurement unless SESSIONCACHE_SOAK=1.
func soak(t *testing.T) {
	t.Helper()
	if os.Getenv("SESSIONCACHE_SOAK") != "1" {
		t.Skip("a long measurement: set SESSIONCACHE_SOAK=1")
	}
}

// maxBytesPerSession is the Redis memory per active session that the sizing
// guide of SCALING.md assumes (hash, share of the user index, keyspace
// overhead), with headroom over the measured figure, by stripe count: with
// several stripes a user's index is one set per stripe that holds one of
// their sessions, so a user with few sessions has about one small set per
// session.
func maxBytesPerSession(stripes int) int {
	if stripes == 1 {
		return 512
	}
	return 640
}

// singleTopology describes one redis-server with one stripe.
func singleTopology(t *testing.T, srv *redistest.Server) *topology {
	t.Helper()
	newClient := func(name string) *redis.Client {
		return redis.NewClient(&redis.Options{Addr: srv.Addr, ClientName: name, ContextTimeoutEnabled: true})
	}
	admin := newClient("admin")
	t.Cleanup(func() { _ = admin.Close() })
	return &topology{
		name:      "one node",
		stripes:   1,
		client:    func(name string) redis.UniversalClient { return newClient(name) },
		admin:     admin,
		cli:       func(*testing.T) []string { return []string{"-p", strconv.Itoa(srv.Port)} },
		nodes:     func(t *testing.T) []*redis.Client { return []*redis.Client{srv.Client(t)} },
		primaries: func(t *testing.T) []*redis.Client { return []*redis.Client{srv.Client(t)} },
	}
}

// infoInt returns an integer field of INFO section.
func infoInt(t *testing.T, rdb *redis.Client, section, field string) int64 {
	t.Helper()
	text, err := rdb.Info(ctx, section).Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("INFO %s %s = %q: %v", section, field, v, err)
			}
			return n
		}
	}
	t.Fatalf("INFO %s has no %s", section, field)
	return 0
}

// TestRedisMemoryPerSession measures what a session costs Redis with the
// one-stripe layout and the 16-stripe (cluster) layout, and checks it
// against the figure the sizing guide uses: used_memory growth per active
// session (its hash, its share of the user's indexes, keyspace and expiry
// entries), MEMORY USAGE of a hash active and revoked, and of a
// stripe's log per entry.
func TestRedisMemoryPerSession(t *testing.T) {
	const n = 6000
	for _, stripes := range []int{1, 16} {
		t.Run(fmt.Sprintf("stripes=%d", stripes), func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.Client(t)
			c, err := rediscache.New(rdb, rediscache.Options{Stripes: stripes})
			if err != nil {
				t.Fatal(err)
			}
			l := c.Layout()
			before := infoInt(t, rdb, "memory", "used_memory")
			if err := workload.Load(ctx, rdb, l, 0, n, rediscache.DefaultSessionTTL); err != nil {
				t.Fatal(err)
			}
			perSession := float64(infoInt(t, rdb, "memory", "used_memory")-before) / n
			usage := func(key string) int64 {
				t.Helper()
				v, err := rdb.MemoryUsage(ctx, key, 0).Result()
				if err != nil {
					t.Fatalf("MEMORY USAGE %s: %v", key, err)
				}
				return v
			}
			id := workload.ID(7)
			active := usage(l.SessionKey(id))
			index := usage(l.UserSessionsKey(workload.UserID(7), l.Stripe(id)))
			// 1,000 revocations: the hash gains revoked_at_ms, the log
			// one entry each.
			const revocations = 1000
			logBefore := int64(0)
			for k := range stripes {
				logBefore += usageOr0(t, rdb, l.LogKey(k))
			}
			for i := range revocations {
				if _, err := c.RevokeSession(ctx, workload.ID(i)); err != nil {
					t.Fatal(err)
				}
			}
			var logBytes int64
			for k := range stripes {
				logBytes += usageOr0(t, rdb, l.LogKey(k))
			}
			revoked := usage(l.SessionKey(id))
			perLogEntry := float64(logBytes-logBefore) / revocations
			t.Logf("stripes %d: used_memory +%.0f B per active session; MEMORY USAGE: hash %d B active, %d B revoked; "+
				"the user's index of its stripe %d B; log %.0f B per entry (%d stripes × LogMaxLen %d ≈ %.1f MB when full)",
				stripes, perSession, active, revoked, index, perLogEntry,
				stripes, rediscache.DefaultLogMaxLen, perLogEntry*float64(stripes*rediscache.DefaultLogMaxLen)/1e6)
			if limit := maxBytesPerSession(stripes); perSession > float64(limit) {
				t.Errorf("used_memory per session = %.0f B, want at most %d (SCALING.md's sizing guide)", perSession, limit)
			}
			if revoked <= active {
				t.Errorf("MEMORY USAGE of a revoked hash = %d, want more than the active %d (revoked_at_ms)", revoked, active)
			}
		})
	}
}

// usageOr0 is MEMORY USAGE of key, 0 when it does not exist.
func usageOr0(t *testing.T, rdb *redis.Client, key string) int64 {
	t.Helper()
	v, err := rdb.MemoryUsage(ctx, key, 0).Result()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return 0
		}
		t.Fatalf("MEMORY USAGE %s: %v", key, err)
	}
	return v
}

// mixedResult is what one run of the mixed workload measured.
type mixedResult struct {
	ops, lookups, revocations, errors int64
	dur                               time.Duration
	l1Hits, l2Hits, backendCalls      int64
	p50, p99                          time.Duration
}

func (r mixedResult) String() string {
	return fmt.Sprintf("%.0f ops/s (%d lookups, %d revocations, %d errors in %v); L1 hit ratio %.3f, L2 hits %.0f/s, backend calls %d; op latency p50 %v p99 %v",
		float64(r.ops)/r.dur.Seconds(), r.lookups, r.revocations, r.errors, r.dur.Round(time.Millisecond),
		float64(r.l1Hits)/float64(r.lookups), float64(r.l2Hits)/r.dur.Seconds(), r.backendCalls, r.p50, r.p99)
}

// mixedWorkload loads sessions into the topology and runs three replicas
// with an L1 of l1Size, workers goroutines each, for dur: each operation is
// a lookup of a Zipf(1.1) session, or, one time in a hundred, a revocation
// of one.
func mixedWorkload(t *testing.T, topo *topology, sessions, l1Size, workers int, dur time.Duration) mixedResult {
	t.Helper()
	e := newScaleEnv(t, topo)
	if err := workload.Load(ctx, topo.admin, e.layout, 0, sessions, rediscache.DefaultSessionTTL); err != nil {
		t.Fatal(err)
	}
	var rs []*scaleReplica
	for i := range 3 {
		rs = append(rs, e.replica(t, "mix"+strconv.Itoa(i), testHooks{}, func(o *Options) {
			o.Local = localcache.Options{Size: l1Size}
		}))
	}
	ids := workload.IDs(sessions)
	var res mixedResult
	var mu sync.Mutex
	var samples []time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ops, lookups, revocations, errs atomic.Int64
	for w := range 3 * workers {
		r := rs[w%3]
		trace := workload.Zipf(sessions, 1.1, 1<<16, uint64(w+1))
		rng := rand.New(rand.NewPCG(uint64(w), 7))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; ; i++ {
				select {
				case <-stop:
					mu.Lock()
					samples = append(samples, mine...)
					mu.Unlock()
					return
				default:
				}
				id := ids[trace[i%len(trace)]]
				start := time.Now()
				var err error
				if rng.IntN(100) == 0 {
					err = r.Revoke(ctx, id)
					revocations.Add(1)
				} else {
					_, err = r.Lookup(ctx, id)
					lookups.Add(1)
				}
				if i%16 == 0 {
					mine = append(mine, time.Since(start))
				}
				if err != nil {
					errs.Add(1)
				}
				ops.Add(1)
			}
		}()
	}
	start := time.Now()
	time.Sleep(dur) // the measurement's length, not a synchronisation
	close(stop)
	wg.Wait()
	res.dur = time.Since(start)
	res.ops, res.lookups, res.revocations, res.errors = ops.Load(), lookups.Load(), revocations.Load(), errs.Load()
	for _, r := range rs {
		st := r.Stats()
		res.l1Hits += st.L1Hits
		res.l2Hits += st.L2Hits
		res.backendCalls += st.BackendCalls
	}
	slices.Sort(samples)
	res.p50, res.p99 = percentile(samples, 50), percentile(samples, 99)
	return res
}

// l2Throughput runs goroutines that read random loaded sessions straight
// from rediscache (the path of every L1 miss) for dur and returns reads per
// second.
func l2Throughput(t *testing.T, topo *topology, sessions, goroutines int, dur time.Duration) float64 {
	t.Helper()
	rdb := topo.client("l2-bench")
	defer rdb.Close()
	c, err := rediscache.New(rdb, rediscache.Options{Stripes: topo.stripes})
	if err != nil {
		t.Fatal(err)
	}
	ids := workload.IDs(sessions)
	var n, errs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		rng := rand.New(rand.NewPCG(uint64(g), 11))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Get(ctx, ids[rng.IntN(len(ids))]); err != nil {
					errs.Add(1)
				}
				n.Add(1)
			}
		}()
	}
	start := time.Now()
	time.Sleep(dur) // the measurement's length
	close(stop)
	wg.Wait()
	if e := errs.Load(); e > 0 {
		t.Errorf("%d of %d L2 reads failed", e, n.Load())
	}
	return float64(n.Load()) / time.Since(start).Seconds()
}

// TestSoakSizing measures, on one redis-server and on a three-master
// cluster (no replicas) started on the same machine: the mixed workload
// (99% lookups, 1% revocations, Zipf 1.1 over 100,000 sessions, L1 of
// 10,000, three replicas of 8 workers), and L2 reads per second with 64
// goroutines. Everything shares two cores, so the cluster cannot show
// scale-out here: the figures bound the per-shard cost, not the gain.
func TestSoakSizing(t *testing.T) {
	soak(t)
	const (
		sessions = 100_000
		dur      = 10 * time.Second
	)
	run := func(t *testing.T, topo *topology) {
		res := mixedWorkload(t, topo, sessions, 10_000, 8, dur)
		t.Logf("%s, mixed workload: %v", topo.name, res)
		if res.errors > 0 {
			t.Errorf("%d operations failed", res.errors)
		}
		t.Logf("%s, L2 reads (rediscache.Get, 64 goroutines): %.0f/s", topo.name, l2Throughput(t, topo, sessions, 64, 5*time.Second))
	}
	t.Run("OneNode", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		run(t, singleTopology(t, srv))
		t.Logf("one node: used_memory %d MB after the run", infoInt(t, srv.Client(t), "memory", "used_memory")>>20)
	})
	t.Run("Cluster", func(t *testing.T) {
		cluster := redistest.StartCluster(t, redistest.ClusterOptions{})
		topo := clusterTopology(t, cluster)
		run(t, topo)
		t.Logf("cluster PUBLISH bus message: %s", busBytesPerPublish(t, cluster, topo))
	})
}

// busBytesPerPublish publishes 2,000 messages of the library's size in one
// pipeline and measures, with ss, the bytes the cluster bus carried for
// them; it reports why when ss is not installed.
func busBytesPerPublish(t *testing.T, cluster *redistest.Cluster, topo *topology) string {
	t.Helper()
	ss, err := exec.LookPath("ss")
	if err != nil {
		return "not measured (ss not installed)"
	}
	busPorts := map[string]bool{}
	text, err := topo.admin.ClusterNodes(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) > 1 {
			addr, _, _ := strings.Cut(f[1], ",")
			if _, cport, ok := strings.Cut(addr, "@"); ok {
				busPorts[cport] = true
			}
		}
	}
	sent := func() int64 {
		out, err := exec.Command(ss, "-tinH", "state", "established").Output()
		if err != nil {
			t.Fatalf("ss: %v", err)
		}
		var total int64
		onBus := false
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, " ") {
				f := strings.Fields(line)
				onBus = false
				for _, a := range f {
					if i := strings.LastIndexByte(a, ':'); i >= 0 && busPorts[a[i+1:]] {
						onBus = true
					}
				}
				continue
			}
			if !onBus {
				continue
			}
			for f := range strings.FieldsSeq(line) {
				if v, ok := strings.CutPrefix(f, "bytes_sent:"); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					total += n
				}
			}
		}
		return total
	}
	const n = 2000
	payload := `{"session":"device-session-00001234","seq":123456,"stripe":7,"at_ms":1800000000000}`
	bus0 := readBus(t, topo)
	b0 := sent()
	pipe := topo.admin.Pipeline()
	for range n {
		pipe.Publish(ctx, sizingChannel, payload)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := readBus(t, topo).minus(bus0).publish
	bytes := sent() - b0
	if msgs == 0 {
		t.Fatal("no PUBLISH bus message counted")
	}
	return fmt.Sprintf("%d messages (%d payload bytes each) cost %d bus messages and %d bytes on the bus: %.0f B per bus message",
		n, len(payload), msgs, bytes, float64(bytes)/float64(msgs))
}

// sizingChannel is the channel of the bus measurement
// (nobody subscribes: the bus carries every PUBLISH regardless).
const sizingChannel = "session_invalidation_sizing"
