package tiered

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// This file holds what the Redis Cluster and Sentinel suites share: a
// topology (how to reach the deployment), an environment of replicas on it,
// and the core invariant tests written once for both.

// clusterReload is the ClusterStateReloadInterval of the cluster clients:
// go-redis v9 otherwise keeps its slot map for up to a minute after a
// master dies, unless a MOVED reply forces a reload.
const clusterReload = 250 * time.Millisecond

// topology is a Redis deployment that the scale tests run replicas on.
type topology struct {
	name    string
	stripes int
	// client returns a new client whose connections carry name; the
	// caller closes it.
	client func(name string) redis.UniversalClient
	// admin is a client for assertions, closed at cleanup.
	admin redis.UniversalClient
	// cli returns the redis-cli arguments that reach the deployment's
	// current primary (with -c on a cluster).
	cli func(t *testing.T) []string
	// nodes returns a client of every live data node (primaries and
	// replicas), each closed at cleanup.
	nodes func(t *testing.T) []*redis.Client
	// primaries returns a client of every live primary, closed at cleanup.
	primaries func(t *testing.T) []*redis.Client
}

// clusterTopology describes a Redis Cluster with Stripes 16.
func clusterTopology(t *testing.T, c *redistest.Cluster) *topology {
	t.Helper()
	newClient := func(name string) *redis.ClusterClient {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                      c.Addrs(),
			ClientName:                 name,
			ContextTimeoutEnabled:      true,
			ClusterStateReloadInterval: clusterReload,
		})
	}
	admin := newClient("admin")
	t.Cleanup(func() { _ = admin.Close() })
	live := func(t *testing.T, masters bool) []*redis.Client {
		t.Helper()
		var out []*redis.Client
		for _, n := range c.Nodes() {
			if n.Failed || (masters && !n.Master) {
				continue
			}
			out = append(out, n.Server.Client(t))
		}
		return out
	}
	return &topology{
		name:    "cluster",
		stripes: 16,
		client:  func(name string) redis.UniversalClient { return newClient(name) },
		admin:   admin,
		cli: func(t *testing.T) []string {
			t.Helper()
			for _, n := range c.Nodes() {
				if n.Master && !n.Failed {
					return []string{"-c", "-p", strconv.Itoa(n.Server.Port)}
				}
			}
			t.Fatal("no live master")
			return nil
		},
		nodes:     func(t *testing.T) []*redis.Client { return live(t, false) },
		primaries: func(t *testing.T) []*redis.Client { return live(t, true) },
	}
}

// sentinelTopology describes a Sentinel group with one stripe.
func sentinelTopology(t *testing.T, sg *redistest.Sentinel) *topology {
	t.Helper()
	newClient := func(name string) *redis.Client {
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:            sg.MasterName(),
			SentinelAddrs:         sg.SentinelAddrs(),
			ClientName:            name,
			ContextTimeoutEnabled: true,
		})
	}
	admin := newClient("admin")
	t.Cleanup(func() { _ = admin.Close() })
	return &topology{
		name:    "sentinel",
		stripes: 1,
		client:  func(name string) redis.UniversalClient { return newClient(name) },
		admin:   admin,
		cli: func(t *testing.T) []string {
			return []string{"-p", strconv.Itoa(sg.Primary().Port)}
		},
		nodes: func(t *testing.T) []*redis.Client {
			return []*redis.Client{sg.Primary().Client(t), sg.Replica().Client(t)}
		},
		primaries: func(t *testing.T) []*redis.Client { return []*redis.Client{sg.Primary().Client(t)} },
	}
}

// scaleEnv is a backend and replicas on a topology. Each subtest makes its
// own, so backends and ids never mix; the Redis deployment is shared.
type scaleEnv struct {
	topo    *topology
	backend *backendtest.Server
	layout  rediscache.Layout
}

func newScaleEnv(t *testing.T, topo *topology) *scaleEnv {
	t.Helper()
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	layout, err := rediscache.NewLayout("", "", topo.stripes)
	if err != nil {
		t.Fatal(err)
	}
	return &scaleEnv{topo: topo, backend: be, layout: layout}
}

// scaleReplica is one gateway replica with its own Redis client.
type scaleReplica struct {
	*Cache
	obs  *observer
	rdb  redis.UniversalClient
	name string
}

// replica starts a tiered cache with its own client and waits until its
// subscription is synced. The subscriber is unnamed, so on a cluster it
// subscribes on the master serving the channel name's slot (go-redis's
// choice), which the failover tests kill; the client's connections are
// named after the replica all the same.
func (e *scaleEnv) replica(t *testing.T, name string, hooks testHooks, edit ...func(*Options)) *scaleReplica {
	t.Helper()
	hooks, obs := observed(hooks)
	rdb := e.topo.client(name)
	c := startReplica(t, name, rdb, e.topo.stripes, e.backend.URL(), hooks, edit...)
	return &scaleReplica{Cache: c, obs: obs, rdb: rdb, name: name}
}

// replicas starts n replicas named prefix1..prefixN.
func (e *scaleEnv) replicas(t *testing.T, prefix string, n int) []*scaleReplica {
	t.Helper()
	rs := make([]*scaleReplica, n)
	for i := range rs {
		rs[i] = e.replica(t, prefix+strconv.Itoa(i+1), testHooks{})
	}
	return rs
}

// redisStatus returns the status field of a session's hash ("" if none).
func (e *scaleEnv) redisStatus(t *testing.T, id string) string {
	t.Helper()
	s, err := e.topo.admin.HGet(context.Background(), e.layout.SessionKey(id), "status").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatalf("HGET %s status: %v", e.layout.SessionKey(id), err)
	}
	return s
}

// redisCLI runs redis-cli against the topology's primary with args.
func (e *scaleEnv) redisCLI(t *testing.T, args ...string) string {
	t.Helper()
	cli := redistest.Binary(t, "redis-cli")
	out, err := exec.Command(cli, append(e.topo.cli(t), args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// killSubscribers closes every pub/sub connection of every node.
func (e *scaleEnv) killSubscribers(t *testing.T) {
	t.Helper()
	for _, n := range e.topo.nodes(t) {
		if err := n.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
		}
	}
}

// waitReplicated polls every primary until each of its replicas has
// acknowledged the primary's replication offset, so that a failover after
// it loses nothing written before it. Polling is the only way to learn
// what another process has done.
func (e *scaleEnv) waitReplicated(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, p := range e.topo.primaries(t) {
		for {
			lag, err := replicationLag(p)
			if err == nil && lag == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replicas of %s not caught up within %v: lag %d bytes, %v", p.Options().Addr, timeout, lag, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// replicationLag returns how many bytes the slowest replica of a primary
// lags behind it; an error when it has none online.
func replicationLag(p *redis.Client) (int64, error) {
	text, err := p.Info(context.Background(), "replication").Result()
	if err != nil {
		return 0, err
	}
	var master int64
	var replicas []int64
	for line := range strings.Lines(text) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch {
		case k == "master_repl_offset":
			master, _ = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(k, "slave") && strings.Contains(v, "state=online"):
			for f := range strings.SplitSeq(v, ",") {
				if off, ok := strings.CutPrefix(f, "offset="); ok {
					n, _ := strconv.ParseInt(off, 10, 64)
					replicas = append(replicas, n)
				}
			}
		}
	}
	if len(replicas) == 0 {
		return 0, errors.New("no online replica")
	}
	return master - slices.Min(replicas), nil
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)*p/100, len(sorted)-1)]
}

// ---- The core invariant tests, for any topology ----

// scaleCore runs the core invariant tests on topo, each subtest on an env
// of its own: lookups through every tier, revocations reaching three
// replicas, the fill race 200 times per way of revoking, a hand-typed
// message, killed subscribers that replay, and hand edits.
func scaleCore(t *testing.T, topo *topology) {
	t.Run("LookupsThroughAllTiers", func(t *testing.T) {
		scaleLookupsThroughAllTiers(t, newScaleEnv(t, topo))
	})
	t.Run("RevocationReachesEveryReplica", func(t *testing.T) {
		lat := scaleRevocationReachesEveryReplica(t, newScaleEnv(t, topo), 200)
		t.Logf("revoke -> L1 flipped on all 3 replicas, %d revocations: p50 %v, p99 %v, max %v",
			len(lat), percentile(lat, 50), percentile(lat, 99), lat[len(lat)-1])
	})
	t.Run("FillRacingRevocation", func(t *testing.T) {
		scaleFillRace(t, newScaleEnv(t, topo), 200)
	})
	t.Run("HandTypedMessage", func(t *testing.T) {
		scaleHandTypedMessage(t, newScaleEnv(t, topo))
	})
	t.Run("KilledSubscriberReplays", func(t *testing.T) {
		scaleKilledSubscriber(t, newScaleEnv(t, topo), 5)
	})
	t.Run("HandEdits", func(t *testing.T) {
		scaleHandEdits(t, newScaleEnv(t, topo))
	})
}

// scaleLookupsThroughAllTiers: a lookup misses L1 and L2 and asks the
// backend, a second one hits L1, another replica reads L2, and an unknown
// id is cached as unknown.
func scaleLookupsThroughAllTiers(t *testing.T, e *scaleEnv) {
	a := e.replica(t, "a", testHooks{})
	b := e.replica(t, "b", testHooks{})
	rec, _ := e.backend.NewSession("user-tiers")
	id := rec.DeviceSessionID
	for i, want := range []Tier{TierBackend, TierL1} {
		got, tier, err := a.LookupTier(ctx, id)
		if err != nil || got != rec || tier != want {
			t.Fatalf("lookup %d: LookupTier(%q) = %+v, %v, %v; want %+v, %v", i, id, got, tier, err, rec, want)
		}
	}
	if s := e.redisStatus(t, id); s != "active" {
		t.Fatalf("Redis status after a backend fill = %q, want active", s)
	}
	if got, tier, err := b.LookupTier(ctx, id); err != nil || got != rec || tier != TierL2 {
		t.Fatalf("replica b: LookupTier(%q) = %+v, %v, %v; want %+v, l2", id, got, tier, err, rec)
	}
	for i, want := range []Tier{TierNone, TierNegative} {
		if _, tier, err := a.LookupTier(ctx, "no-such-session"); !errors.Is(err, session.ErrNotFound) || tier != want {
			t.Fatalf("lookup %d of an unknown id = %v, %v; want ErrNotFound from %v", i, tier, err, want)
		}
	}
	if n := e.backend.Calls(); n != 2 {
		t.Fatalf("backend calls = %d, want 2 (one per id)", n)
	}
}

// scaleRevocationReachesEveryReplica revokes n sessions, each from one of
// three replicas in turn, and checks that each reaches all three. It
// returns, per revocation, the delay from the call until the L1 of all
// three replicas was flipped, sorted.
func scaleRevocationReachesEveryReplica(t *testing.T, e *scaleEnv, n int) []time.Duration {
	rs := e.replicas(t, "r", 3)
	lat := make([]time.Duration, 0, n)
	for i := range n {
		rec, _ := e.backend.NewSession(fmt.Sprintf("user-fan%d", i))
		id := rec.DeviceSessionID
		for _, r := range rs {
			if _, err := r.Lookup(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		if err := rs[i%3].Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
		var last time.Duration
		for _, r := range rs {
			last = max(last, r.obs.wait(t, id, 5*time.Second).Sub(start))
			if got, err := r.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
				t.Fatalf("revocation %d: replica %s: Lookup(%q) = %+v, %v; want revoked", i, r.name, id, got, err)
			}
		}
		lat = append(lat, last)
	}
	slices.Sort(lat)
	return lat
}

// scaleFillRace revokes a session while the backend is answering "active"
// for it, inside the backend's hook: after the record was read, before the
// response is written, so the fill happens after the revocation. It does so
// runs times per way of revoking, and checks that Redis and L1 end revoked
// and both replicas answer revoked. Each way of revoking has users of its
// own, so no earlier user-wide revocation refuses its fills.
func scaleFillRace(t *testing.T, e *scaleEnv, runs int) {
	cases := []struct {
		name     string
		waitUser bool
		revoke   func(t *testing.T, a, b *scaleReplica, e *scaleEnv, rec session.Record)
	}{
		{name: "MarkRevoked", revoke: func(t *testing.T, a, _ *scaleReplica, e *scaleEnv, rec session.Record) {
			e.backend.Revoke(rec.DeviceSessionID)
			a.MarkRevoked(rec.DeviceSessionID)
		}},
		{name: "MarkAllRevokedForUser", waitUser: true, revoke: func(t *testing.T, a, _ *scaleReplica, e *scaleEnv, rec session.Record) {
			e.backend.RevokeUser(rec.UserID)
			a.MarkAllRevokedForUser(rec.UserID)
		}},
		{name: "Revoke on another replica", revoke: func(t *testing.T, _, b *scaleReplica, e *scaleEnv, rec session.Record) {
			e.backend.Revoke(rec.DeviceSessionID)
			if err := b.Revoke(ctx, rec.DeviceSessionID); err != nil {
				t.Errorf("Revoke: %v", err)
			}
		}},
		{name: "RevokeUser on another replica", waitUser: true, revoke: func(t *testing.T, _, b *scaleReplica, e *scaleEnv, rec session.Record) {
			e.backend.RevokeUser(rec.UserID)
			if err := b.RevokeUser(ctx, rec.UserID); err != nil {
				t.Errorf("RevokeUser: %v", err)
			}
		}},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newScaleEnv(t, e.topo)
			a := e.replica(t, "a", testHooks{})
			b := e.replica(t, "b", testHooks{})
			crossSlot := 0
			for i := range runs {
				rec, _ := e.backend.NewSession(fmt.Sprintf("user-race%d-%d", ci, i))
				id := rec.DeviceSessionID
				if e.layout.Stripe(id) != e.layout.Stripe(rec.UserID) {
					crossSlot++
				}
				var fired atomic.Bool
				e.backend.SetBeforeRespond(func(got string, _ session.Record, _ bool) {
					if got == id && fired.CompareAndSwap(false, true) {
						tc.revoke(t, a, b, e, rec)
					}
				})
				if _, err := a.Lookup(ctx, id); err != nil {
					t.Fatalf("run %d: Lookup: %v", i, err)
				}
				if !fired.Load() {
					t.Fatalf("run %d: the backend hook did not run", i)
				}
				key := id
				if tc.waitUser {
					key = rec.UserID
				}
				a.obs.wait(t, key, 5*time.Second) // the revocation is written and published
				if s := e.redisStatus(t, id); s != "revoked" {
					t.Fatalf("run %d: Redis status of %s = %q, want revoked", i, e.layout.SessionKey(id), s)
				}
				if got, ok := a.l1.Get(id); !ok || got.Status != session.StatusRevoked {
					t.Fatalf("run %d: L1 Get(%q) = %+v, %v; want revoked", i, id, got, ok)
				}
				for _, r := range []*scaleReplica{a, b} {
					if got, err := r.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
						t.Fatalf("run %d: replica %s: Lookup(%q) after the race = %+v, %v; want revoked", i, r.name, id, got, err)
					}
				}
			}
			e.backend.SetBeforeRespond(nil)
			if e.topo.stripes > 1 && crossSlot == 0 {
				t.Fatalf("no run had the session and its user on different stripes")
			}
		})
	}
}

// scaleHandTypedMessage publishes with redis-cli: malformed messages are
// counted and dropped, a hand-typed revocation reaches every replica, and
// nothing published makes a session active again.
func scaleHandTypedMessage(t *testing.T, e *scaleEnv) {
	rs := e.replicas(t, "r", 3)
	rec, _ := e.backend.NewSession("user-typed")
	other, _ := e.backend.NewSession("user-other")
	for _, r := range rs {
		for _, id := range []string{rec.DeviceSessionID, other.DeviceSessionID} {
			if _, err := r.Lookup(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	malformed := []string{`{"session":"*"}`, `not json`, `{"session":"{x}"}`, `{"session":"` + rec.DeviceSessionID + `","user":"u"}`, `{}`, ``}
	for _, m := range malformed {
		e.redisCLI(t, "PUBLISH", "session_invalidation", m)
	}
	e.redisCLI(t, "PUBLISH", "session_invalidation", `{"session":"`+rec.DeviceSessionID+`"}`)
	for _, r := range rs {
		r.obs.wait(t, rec.DeviceSessionID, 5*time.Second)
		if got, err := r.Lookup(ctx, rec.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("replica %s: Lookup after a hand-typed revocation = %+v, %v; want revoked", r.name, got, err)
		}
		if got, err := r.Lookup(ctx, other.DeviceSessionID); err != nil || got.Status != session.StatusActive {
			t.Fatalf("replica %s: an unrelated session = %+v, %v; want active", r.name, got, err)
		}
		if n := r.sub.Stats().Malformed; n != uint64(len(malformed)) {
			t.Fatalf("replica %s: malformed count = %d, want %d", r.name, n, len(malformed))
		}
	}
	e.redisCLI(t, "PUBLISH", "session_invalidation", `{"session":"`+rec.DeviceSessionID+`","status":"active"}`)
	e.redisCLI(t, "PUBLISH", "session_invalidation", `{"user":"user-typed"}`)
	for _, r := range rs {
		r.obs.wait(t, "user-typed", 5*time.Second)
		if got, _ := r.Lookup(ctx, rec.DeviceSessionID); got.Status != session.StatusRevoked {
			t.Fatalf("replica %s: the session became %v after more messages, want revoked", r.name, got.Status)
		}
	}
}

// scaleKilledSubscriber kills every pub/sub connection, revokes during the
// gap, and checks the victim replays (or drops) before it answers again.
func scaleKilledSubscriber(t *testing.T, e *scaleEnv, runs int) {
	a := e.replica(t, "a", testHooks{})
	b := e.replica(t, "victim", testHooks{})
	for i := range runs {
		rec, _ := e.backend.NewSession(fmt.Sprintf("user-kill%d", i))
		id := rec.DeviceSessionID
		if got, err := b.Lookup(ctx, id); err != nil || got.Status != session.StatusActive {
			t.Fatalf("run %d: warm-up Lookup = %+v, %v", i, got, err)
		}
		before := b.obs.syncCount()
		e.killSubscribers(t)
		e.backend.Revoke(id)
		if err := a.Revoke(ctx, id); err != nil { // during the gap, or just after
			t.Fatal(err)
		}
		b.obs.waitSync(t, before, 5*time.Second)
		b.obs.wait(t, id, 5*time.Second)
		if got, err := b.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("run %d: after resubscribing, Lookup(%q) = %+v, %v; want revoked", i, id, got, err)
		}
	}
	st := b.sub.Stats()
	if st.Resyncs < uint64(runs) {
		t.Fatalf("victim resynced %d times after %d kills, want at least %d", st.Resyncs, runs, runs)
	}
	t.Logf("%d kills: %d resyncs, %d revocations reached the victim by replay", runs, st.Resyncs, st.Replayed)
}

// failoverResult is what scaleFailover measured.
type failoverResult struct {
	// recovery is the time from the kill until a lookup that misses L1
	// was answered by Redis again (the backend is down meanwhile).
	recovery time.Duration
	// revoked is the time from the kill until every revocation made
	// during the failover had reached every replica.
	revoked time.Duration
	// healthy is the time from the kill until the deployment reported
	// healthy (WaitHealthy or WaitFailover returned).
	healthy time.Duration
}

// scaleFailover kills the primary the subscribers are on and checks that no
// revoked session is answered active, during or after the failover, and
// that revocations made during it reach every replica. onVictim tells
// whether a key lives on the primary that kill kills. The backend is down
// from just before the kill until the end, so only Redis can answer a
// lookup that misses L1.
func scaleFailover(t *testing.T, e *scaleEnv, onVictim func(key string) bool, kill func(), healthy func() error) failoverResult {
	// r1 revokes during the failover through MarkRevoked; its worker
	// retries for RevokeRetryFor (2 minutes by default), which outlasts the
	// failover.
	rs := []*scaleReplica{
		e.replica(t, "r1", testHooks{}),
		e.replica(t, "r2", testHooks{}),
		e.replica(t, "r3", testHooks{}),
	}
	a := rs[0]
	probe := e.replica(t, "probe", testHooks{})
	// The sessions reach Redis through a replica closed before the kill: a
	// live replica takes back what it filled shortly before it noticed a
	// loss (tiered's recent fills), and the probes below stand for records
	// filled well before the failover.
	filler := e.replica(t, "filler", testHooks{})

	// Sessions known to every replica (L1 and L2).
	const n = 60
	recs := make([]session.Record, n)
	for i := range recs {
		recs[i], _ = e.backend.NewSession(fmt.Sprintf("user-fo%d", i))
		for _, r := range append([]*scaleReplica{filler}, rs...) {
			if _, err := r.Lookup(ctx, recs[i].DeviceSessionID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := filler.Close(); err != nil {
		t.Fatal(err)
	}
	before, during, rest := recs[:20], recs[20:40], recs[40:]
	for _, rec := range before {
		e.backend.Revoke(rec.DeviceSessionID)
		syncs := make([]int, len(rs))
		for i, r := range rs {
			syncs[i] = r.obs.syncCount()
		}
		if err := a.Revoke(ctx, rec.DeviceSessionID); err != nil {
			t.Fatal(err)
		}
		// The message, or a resync (which drops L1's actives) when a
		// loaded machine made the replica miss it.
		for i, r := range rs {
			if err := r.obs.waitAppliedOrSync(rec.DeviceSessionID, syncs[i], r.StaleBound()+5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Probes: active sessions in L2 on the primary that dies.
	var probes []string
	for _, rec := range rest {
		if onVictim(e.layout.SessionKey(rec.DeviceSessionID)) {
			probes = append(probes, rec.DeviceSessionID)
		}
	}
	if len(probes) == 0 {
		t.Fatal("no session lives on the primary to be killed")
	}
	// A failover keeps only what the replica has: wait until it has all.
	e.waitReplicated(t, 5*time.Second)

	// Watch the revoked sessions on two replicas and a cold one, all along.
	var breaches atomic.Int64
	var breachMsg atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopCheckers := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopCheckers()
	for _, r := range []*scaleReplica{rs[1], rs[2], probe} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := before[i%len(before)].DeviceSessionID
				lctx, cancel := context.WithTimeout(ctx, time.Second)
				got, tier, err := r.LookupTier(lctx, id)
				cancel()
				if err == nil && got.Status != session.StatusRevoked {
					breaches.Add(1)
					breachMsg.Store(fmt.Sprintf("replica %s: LookupTier(%q) = %v from %v, want revoked", r.name, id, got.Status, tier))
				}
			}
		}()
	}

	e.backend.SetFault(backendtest.Fault{Status: 503})
	start := time.Now()
	kill()

	// Revocations during the failover, through the background worker.
	for _, rec := range during {
		e.backend.Revoke(rec.DeviceSessionID)
		a.MarkRevoked(rec.DeviceSessionID)
	}

	// Recovery: a lookup that misses L1 and can only be answered by the
	// primary that died.
	var res failoverResult
	deadline := start.Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	failures := 0
	for i := 0; res.recovery == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("lookups of sessions on the killed primary did not recover within 30s (%d failures)", failures)
		}
		probe.l1.DropActive()
		id := probes[i%len(probes)]
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		got, tier, err := probe.LookupTier(lctx, id)
		cancel()
		switch {
		case err == nil && tier == TierL2 && got.Status == session.StatusActive:
			res.recovery = time.Since(start)
		case err == nil:
			t.Fatalf("probe LookupTier(%q) = %v from %v, want active from l2 or an error", id, got.Status, tier)
		default:
			failures++
		}
		<-tick.C // polling an external event: the promotion of a replica
	}
	if err := healthy(); err != nil {
		t.Fatal(err)
	}
	res.healthy = time.Since(start)
	for _, rec := range during {
		for _, r := range slices.Concat(rs, []*scaleReplica{probe}) {
			at := r.obs.wait(t, rec.DeviceSessionID, 30*time.Second)
			res.revoked = max(res.revoked, at.Sub(start))
		}
	}
	stopCheckers()

	if n := breaches.Load(); n > 0 {
		t.Fatalf("%d lookups answered a revoked session active during the failover; last: %v", n, breachMsg.Load())
	}
	// After the failover, every replica and a cold one (which reads Redis,
	// the backend being down) answer every revoked session as revoked. An
	// error is a safe answer (deny), so a lookup is retried on error for a
	// while: a cold cluster client's first commands also load the command
	// table, which may not fit in one CallTimeout on a busy machine.
	cold := e.replica(t, "cold", testHooks{})
	retried := 0
	for _, rec := range append(slices.Clone(before), during...) {
		id := rec.DeviceSessionID
		for _, r := range slices.Concat(rs, []*scaleReplica{probe, cold}) {
			for try := 1; ; try++ {
				got, tier, err := r.LookupTier(ctx, id)
				if err == nil && got.Status == session.StatusRevoked {
					break
				}
				if err == nil || try == 20 {
					t.Fatalf("after the failover: replica %s: LookupTier(%q) = %+v, %v, %v (try %d); want revoked", r.name, id, got, tier, err, try)
				}
				retried++
				t.Logf("after the failover: replica %s: LookupTier(%q) try %d: %v", r.name, id, try, err)
				time.Sleep(50 * time.Millisecond) // polling Redis back to health
			}
		}
		if s := e.redisStatus(t, id); s != "revoked" {
			t.Fatalf("after the failover: Redis status of %s = %q, want revoked", e.layout.SessionKey(id), s)
		}
	}
	st := a.Stats()
	t.Logf("%s failover: lookups missing L1 recovered %v after the kill (%d failed probes, %d failed checks after), deployment healthy after %v, "+
		"revocations made during it on every replica after %v; revoker: %d retries, %d failed attempts; victim subscriber: %d resyncs, %d replayed, %d drops",
		e.topo.name, res.recovery.Round(time.Millisecond), failures, retried, res.healthy.Round(time.Millisecond), res.revoked.Round(time.Millisecond),
		st.RevokeRetries, st.RevokeFailures, rs[1].sub.Stats().Resyncs, rs[1].sub.Stats().Replayed, rs[1].sub.Stats().DropActive)
	e.backend.SetFault(backendtest.Fault{})
	return res
}

// scaleHandEdits checks that hand edits made with redis-cli (-c on a
// cluster) reach the L1 of every replica through tracking, wherever the
// session's key lives: a hand HSET status revoked flips L1 to revoked, a
// DEL drops an active entry. Twelve sessions spread the keys over the
// stripes, and so over every master of a cluster.
func scaleHandEdits(t *testing.T, e *scaleEnv) {
	rs := e.replicas(t, "r", 3)
	for _, r := range rs {
		if !r.Stats().Channel.Tracking {
			t.Fatalf("replica %s: Stats().Channel.Tracking = false, want true", r.name)
		}
	}
	var revoked, deleted []string
	for i := range 12 {
		rec, _ := e.backend.NewSession("user-hand")
		for _, r := range rs {
			if got, err := r.Lookup(ctx, rec.DeviceSessionID); err != nil || got.Status != session.StatusActive {
				t.Fatalf("replica %s: Lookup = %+v, %v; want active", r.name, got, err)
			}
		}
		key := e.layout.SessionKey(rec.DeviceSessionID)
		if i%2 == 0 {
			e.redisCLI(t, "HSET", key, "status", "revoked")
			revoked = append(revoked, rec.DeviceSessionID)
		} else {
			e.redisCLI(t, "DEL", key)
			deleted = append(deleted, rec.DeviceSessionID)
		}
	}
	// Within StaleBound a replica either has the change from Redis or has
	// stopped trusting L1's actives (its channel found unhealthy, as a
	// loaded machine can make it): either way it serves no active entry.
	// The margin covers the redis-cli processes themselves.
	deadline := time.Now().Add(rs[0].StaleBound() + 2*time.Second)
	servesActive := func(r *scaleReplica, id string) (session.Record, bool) {
		rec, held, served := r.Peek(id)
		return rec, held && served && rec.Status == session.StatusActive
	}
	for _, r := range rs {
		for _, id := range append(revoked, deleted...) {
			for rec, bad := servesActive(r, id); bad; rec, bad = servesActive(r, id) {
				if time.Now().After(deadline) {
					t.Fatalf("replica %s: L1 serves %+v after a hand edit (HSET status revoked or DEL), want no active entry", r.name, rec)
				}
				time.Sleep(time.Millisecond) // polling L1, whose change has no hook
			}
		}
		for _, id := range revoked {
			if rec, held, _ := r.Peek(id); held && rec.Status != session.StatusRevoked {
				t.Errorf("replica %s: L1 holds %+v after a hand HSET status revoked, want revoked or nothing", r.name, rec)
			}
		}
	}
}
