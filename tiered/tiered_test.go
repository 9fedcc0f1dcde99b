package tiered

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/toxitest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

var ctx = context.Background()

func TestLookupFillsTiers(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	b := e.replica(t, "b", testHooks{})
	rec, _ := e.backend.NewSession("user-1")
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
	if n := e.backend.Calls(); n != 1 {
		t.Fatalf("backend calls = %d, want 1", n)
	}
}

func TestUnknownIDIsNegativelyCached(t *testing.T) {
	e := newEnv(t)
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a := e.replica(t, "a", testHooks{}, func(o *Options) { o.Now = clock; o.NegativeTTL = 5 * time.Second })
	for i, want := range []Tier{TierNone, TierNegative, TierNegative} {
		_, tier, err := a.LookupTier(ctx, "no-such-session")
		if !errors.Is(err, session.ErrNotFound) || tier != want {
			t.Fatalf("lookup %d of an unknown id = %v, %v; want ErrNotFound from %v", i, tier, err, want)
		}
	}
	if n := e.backend.Calls(); n != 1 {
		t.Fatalf("backend calls for 3 lookups of one unknown id = %d, want 1", n)
	}
	mu.Lock()
	now = now.Add(6 * time.Second)
	mu.Unlock()
	if _, _, err := a.LookupTier(ctx, "no-such-session"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("lookup after the negative TTL = %v, want ErrNotFound", err)
	}
	if n := e.backend.Calls(); n != 2 {
		t.Fatalf("backend calls after the negative TTL = %d, want 2", n)
	}
}

func TestBackendErrorsAreNotCached(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	rec, _ := e.backend.NewSession("user-1")
	e.backend.SetFault(backendtest.Fault{Status: 503})
	if _, err := a.Lookup(ctx, rec.DeviceSessionID); err == nil || errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Lookup with the backend failing = %v, want a non-NotFound error", err)
	}
	e.backend.SetFault(backendtest.Fault{})
	if got, err := a.Lookup(ctx, rec.DeviceSessionID); err != nil || got != rec {
		t.Fatalf("Lookup after the backend recovered = %+v, %v; want %+v", got, err, rec)
	}
}

// TestFillRacingRevocation runs the fill race (scaleFillRace) 1000 times
// per way of revoking on a single redis-server.
func TestFillRacingRevocation(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	scaleFillRace(t, newScaleEnv(t, singleTopology(t, srv)), 1000)
}

func TestL2FillRacingInvalidation(t *testing.T) {
	e := newEnv(t)
	var a *replica
	var target atomic.Value
	b := e.replica(t, "b", testHooks{})
	a = e.replica(t, "a", testHooks{afterL2Read: func(id string) {
		if id == target.Load() {
			// the revocation lands between A's L2 read and its L1 store
			if err := b.Revoke(ctx, id); err != nil {
				t.Errorf("Revoke: %v", err)
			}
			a.obs.wait(t, id, 5*time.Second)
		}
	}})
	for i := range 200 {
		rec, _ := e.backend.NewSession(fmt.Sprintf("user-%d", i))
		id := rec.DeviceSessionID
		if _, err := b.Lookup(ctx, id); err != nil { // fills L2
			t.Fatal(err)
		}
		target.Store(id)
		got, tier, err := a.LookupTier(ctx, id)
		if err != nil || tier != TierL2 {
			t.Fatalf("run %d: LookupTier = %v, %v; want an L2 answer", i, tier, err)
		}
		if got.Status != session.StatusRevoked {
			t.Fatalf("run %d: an L2 read overtaken by a revocation answered %v, want revoked", i, got.Status)
		}
		if got, _ := a.l1.Get(id); got.Status != session.StatusRevoked {
			t.Fatalf("run %d: L1 holds %v after the race, want revoked", i, got.Status)
		}
	}
}

func TestConcurrentColdLookupsShareOneBackendCall(t *testing.T) {
	const n = 1000
	e := newEnv(t)
	var joined atomic.Int64
	allJoined := make(chan struct{})
	a := e.replica(t, "a", testHooks{beforeFlight: func(string) {
		if joined.Add(1) == n {
			close(allJoined)
		}
	}})
	rec, _ := e.backend.NewSession("user-1")
	// The backend answers only once every lookup has reached the shared
	// call, so none can come late and start a second one.
	e.backend.SetBeforeRespond(func(string, session.Record, bool) { <-allJoined })
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := a.Lookup(ctx, rec.DeviceSessionID)
			if err == nil && got != rec {
				err = fmt.Errorf("got %+v", got)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
	}
	if got := e.backend.CallsFor(rec.DeviceSessionID); got != 1 {
		t.Fatalf("backend calls for %d concurrent cold lookups = %d, want 1", n, got)
	}
}

func TestLookupAfterRevocationNeverGetsEarlierFetch(t *testing.T) {
	for _, userWide := range []bool{false, true} {
		t.Run(fmt.Sprintf("userWide=%v", userWide), func(t *testing.T) {
			e := newEnv(t)
			a := e.replica(t, "a", testHooks{})
			for i := range 50 {
				rec, _ := e.backend.NewSession(fmt.Sprintf("user-%d", i))
				id := rec.DeviceSessionID
				inBackend := make(chan struct{})
				release := make(chan struct{})
				var once sync.Once
				e.backend.SetBeforeRespond(func(got string, _ session.Record, _ bool) {
					if got == id {
						once.Do(func() { close(inBackend); <-release })
					}
				})
				early := make(chan error, 1)
				go func() { _, err := a.Lookup(ctx, id); early <- err }()
				<-inBackend // the first fetch has read "active"
				var err error
				if userWide {
					e.backend.RevokeUser(rec.UserID)
					err = a.RevokeUser(ctx, rec.UserID)
				} else {
					e.backend.Revoke(id)
					err = a.Revoke(ctx, id)
				}
				if err != nil {
					t.Fatal(err)
				}
				// Started after the revocation returned: it may join the
				// in-flight call, but must not receive its "active".
				late := make(chan session.Record, 1)
				go func() { r, _ := a.Lookup(ctx, id); late <- r }()
				close(release)
				if err := <-early; err != nil {
					t.Fatalf("run %d: early Lookup: %v", i, err)
				}
				if got := <-late; got.Status != session.StatusRevoked {
					t.Fatalf("run %d: a lookup started after the revocation returned got %v, want revoked", i, got.Status)
				}
			}
			e.backend.SetBeforeRespond(nil)
		})
	}
}

func TestRevocationReachesEveryReplica(t *testing.T) {
	const revocations = 1000
	e := newEnv(t)
	replicas := []*replica{e.replica(t, "r1", testHooks{}), e.replica(t, "r2", testHooks{}), e.replica(t, "r3", testHooks{})}
	var lat []time.Duration
	for i := range revocations {
		rec, _ := e.backend.NewSession(fmt.Sprintf("user-%d", i))
		id := rec.DeviceSessionID
		for _, r := range replicas {
			if _, err := r.Lookup(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		if err := replicas[i%3].Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
		for _, r := range replicas {
			lat = append(lat, r.obs.wait(t, id, 5*time.Second).Sub(start))
			if got, err := r.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
				t.Fatalf("revocation %d: Lookup = %+v, %v; want revoked on every replica", i, got, err)
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("revoke -> L1 flipped on 3 replicas, %d observations: p50 %v, p99 %v, max %v",
		len(lat), lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
}

func TestKilledSubscriberNeverServesRevokedAsActive(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	b := e.replica(t, "victim", testHooks{})
	// Reconnects within a second of the previous sync back off (up to 1 s),
	// so each run costs about a second.
	const runs = 10
	replayed := 0
	for i := range runs {
		rec, _ := e.backend.NewSession(fmt.Sprintf("user-%d", i))
		id := rec.DeviceSessionID
		if got, err := b.Lookup(ctx, id); err != nil || got.Status != session.StatusActive {
			t.Fatalf("run %d: warm-up Lookup = %+v, %v", i, got, err)
		}
		before := b.obs.syncCount()
		if err := e.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		e.backend.Revoke(id)
		if err := a.Revoke(ctx, id); err != nil { // during the gap, or just after
			t.Fatal(err)
		}
		b.obs.waitSync(t, before, 5*time.Second)
		b.obs.wait(t, id, 5*time.Second)
		if got, err := b.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("run %d: after resubscribing, Lookup = %+v, %v; want revoked", i, got, err)
		}
	}
	replayed = int(b.sub.Stats().Replayed)
	t.Logf("%d kills: %d revocations reached the victim by replay", runs, replayed)
}

func TestHandTypedMessageRevokes(t *testing.T) {
	e := newEnv(t)
	replicas := []*replica{e.replica(t, "r1", testHooks{}), e.replica(t, "r2", testHooks{}), e.replica(t, "r3", testHooks{})}
	rec, _ := e.backend.NewSession("user-1")
	other, _ := e.backend.NewSession("user-2")
	for _, r := range replicas {
		for _, id := range []string{rec.DeviceSessionID, other.DeviceSessionID} {
			if _, err := r.Lookup(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	cli := redistest.Binary(t, "redis-cli")
	port := fmt.Sprint(e.srv.Port)
	publish := func(payload string) {
		t.Helper()
		out, err := exec.Command(cli, "-p", port, "PUBLISH", "session_invalidation", payload).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli PUBLISH: %v: %s", err, out)
		}
	}
	malformed := []string{`{"session":"*"}`, `not json`, `{"status":"active","session":"x"}x`, `{"session":"` + rec.DeviceSessionID + `","user":"u"}`, `{}`, ``}
	for _, m := range malformed {
		publish(m)
	}
	publish(`{"session":"` + rec.DeviceSessionID + `"}`)
	for i, r := range replicas {
		r.obs.wait(t, rec.DeviceSessionID, 5*time.Second)
		if got, err := r.Lookup(ctx, rec.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("replica %d: Lookup after a hand-typed revocation = %+v, %v; want revoked", i, got, err)
		}
		if got, err := r.Lookup(ctx, other.DeviceSessionID); err != nil || got.Status != session.StatusActive {
			t.Fatalf("replica %d: an unrelated session = %+v, %v; want active", i, got, err)
		}
		if n := r.sub.Stats().Malformed; n != uint64(len(malformed)) {
			t.Fatalf("replica %d: malformed count = %d, want %d", i, n, len(malformed))
		}
	}
	// Nothing on the channel makes a revoked session active again.
	publish(`{"session":"` + rec.DeviceSessionID + `","status":"active"}`)
	publish(`{"user":"user-1"}`)
	for i, r := range replicas {
		r.obs.wait(t, "user-1", 5*time.Second)
		if got, _ := r.Lookup(ctx, rec.DeviceSessionID); got.Status != session.StatusRevoked {
			t.Fatalf("replica %d: a session became %v after more messages, want revoked", i, got.Status)
		}
	}
}

// countingHook counts the commands a go-redis client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

func TestInvalidIDsCostNothing(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	hook := &countingHook{}
	a.rdb.AddHook(hook)
	bad := []string{"", string(make([]byte, 129)), "*", "a?", "[a]", "{x}", "a b", "a\x00b", "a\r\nb", "\xff\xfe", "a:b", "..", "x*"}
	for _, id := range bad {
		_, err := a.Lookup(ctx, id)
		if !errors.Is(err, session.ErrInvalidID) {
			t.Errorf("Lookup(%q) = %v, want ErrInvalidID", id, err)
		}
		if err := a.Revoke(ctx, id); !errors.Is(err, session.ErrInvalidID) {
			t.Errorf("Revoke(%q) = %v, want ErrInvalidID", id, err)
		}
		a.MarkRevoked(id)
		a.MarkAllRevokedForUser(id)
	}
	if n := hook.n.Load(); n != 0 {
		t.Fatalf("Redis commands for invalid ids = %d, want 0", n)
	}
	if n := e.backend.Calls(); n != 0 {
		t.Fatalf("backend calls for invalid ids = %d, want 0", n)
	}
}

func TestCorruptRedisRecordNeverServedActive(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	rec, _ := e.backend.NewSession("user-1")
	id := rec.DeviceSessionID
	key := e.layout.SessionKey(id)
	// A status other than exactly "active" is a revocation (fail
	// closed), whatever the backend says, and a fill keeps it.
	typo, _ := e.backend.NewSession("user-1")
	e.rdb.HSet(ctx, e.layout.SessionKey(typo.DeviceSessionID), "user_id", "user-1", "client_public_key", typo.ClientPublicKey, "status", "ACTIVE")
	for _, fault := range []backendtest.Fault{{Status: 503}, {}} {
		e.backend.SetFault(fault)
		if got, err := a.Lookup(ctx, typo.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("Lookup of status ACTIVE (backend fault %+v) = %+v, %v; want revoked", fault, got, err)
		}
	}
	corrupt := []map[string]any{
		{"user_id": "user-1", "client_public_key": "short", "status": "active"},
		{"user_id": "user-1", "status": "active"},
	}
	for i, h := range corrupt {
		e.rdb.Del(ctx, key)
		a.l1.DropActive()

		e.rdb.HSet(ctx, key, h)
		e.backend.SetFault(backendtest.Fault{Status: 503})
		if got, err := a.Lookup(ctx, id); err == nil {
			t.Fatalf("case %d: Lookup of a corrupt hash with the backend down = %+v, nil; want an error", i, got)
		}
		e.backend.SetFault(backendtest.Fault{})
		if got, err := a.Lookup(ctx, id); err != nil || got != rec {
			t.Fatalf("case %d: Lookup with the backend up = %+v, %v; want the backend's record", i, got, err)
		}
		if s := e.redisStatus(t, id); s != "active" {
			t.Fatalf("case %d: Redis status after the repair = %q, want active", i, s)
		}
	}
	e.backend.SetFault(backendtest.Fault{BadJSON: true})
	other, _ := e.backend.NewSession("user-2")
	if got, err := a.Lookup(ctx, other.DeviceSessionID); err == nil {
		t.Fatalf("Lookup with bad backend JSON = %+v, nil; want an error", got)
	}
}

func TestRedisDownFallsThroughAndFailsClosed(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{}, func(o *Options) { o.StaleBound = time.Nanosecond })
	cached, _ := e.backend.NewSession("user-1")
	if _, err := a.Lookup(ctx, cached.DeviceSessionID); err != nil {
		t.Fatal(err)
	}
	revoked, _ := e.backend.NewSession("user-2")
	if _, err := a.Lookup(ctx, revoked.DeviceSessionID); err != nil {
		t.Fatal(err)
	}
	e.backend.Revoke(revoked.DeviceSessionID)
	if err := a.Revoke(ctx, revoked.DeviceSessionID); err != nil {
		t.Fatal(err)
	}
	fresh, _ := e.backend.NewSession("user-3")
	lost := a.obs.armLost()
	e.srv.Kill()
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber did not report the loss of Redis")
	}

	lookupCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if got, err := a.Lookup(lookupCtx, fresh.DeviceSessionID); err != nil || got != fresh {
		t.Fatalf("Redis down, backend up: Lookup = %+v, %v; want the backend's record", got, err)
	}
	if got, err := a.Lookup(lookupCtx, revoked.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
		t.Fatalf("Redis down: a revoked L1 entry = %+v, %v; want revoked", got, err)
	}
	e.backend.SetFault(backendtest.Fault{Status: 503})
	for _, id := range []string{cached.DeviceSessionID, "never-seen-session"} {
		if got, err := a.Lookup(lookupCtx, id); err == nil {
			t.Fatalf("Redis and backend down: Lookup(%q) = %+v, nil; want an error", id, got)
		}
	}
	if got, err := a.Lookup(lookupCtx, revoked.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
		t.Fatalf("both down: a revoked L1 entry = %+v, %v; want revoked", got, err)
	}
}

// A user-wide revocation names a user, not sessions: a session the user
// opened after it stays active. When the revocation's message reaches a
// replica while the backend is answering for such a session, the replica
// cannot tell from the message alone; it must not store the session as
// revoked in Redis, where every replica would reject it.
func TestSessionOpenedAfterUserRevocationStaysActive(t *testing.T) {
	const runs = 50
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	b := e.replica(t, "b", testHooks{})
	for i := range runs {
		user := fmt.Sprintf("user-%d", i)
		old, _ := e.backend.NewSession(user)
		e.backend.RevokeUser(user) // the backend revokes, then pushes (below)
		rec, _ := e.backend.NewSession(user)
		id := rec.DeviceSessionID
		var fired atomic.Bool
		e.backend.SetBeforeRespond(func(got string, _ session.Record, _ bool) {
			if got == id && fired.CompareAndSwap(false, true) {
				// the push arrives while the backend answers for the new session
				if err := b.RevokeUser(ctx, user); err != nil {
					t.Errorf("RevokeUser: %v", err)
				}
				if _, err := a.obs.waitFor(user, 5*time.Second); err != nil {
					t.Error(err) // on the backend's goroutine: no Fatal
				}
			}
		})
		got, err := a.Lookup(ctx, id)
		if err != nil {
			t.Fatalf("run %d: Lookup: %v", i, err)
		}
		if !fired.Load() {
			t.Fatalf("run %d: the backend hook did not run", i)
		}
		if got.Status != session.StatusActive {
			t.Errorf("run %d: a session opened after its user's revocation answered %v, want active", i, got.Status)
		}
		if s := e.redisStatus(t, id); s == "revoked" {
			t.Fatalf("run %d: Redis holds the new session as revoked", i)
		}
		for _, r := range []*replica{a, b} {
			if got, err := r.Lookup(ctx, id); err != nil || got.Status != session.StatusActive {
				t.Fatalf("run %d: later Lookup = %v, %v; want active", i, got.Status, err)
			}
			if got, err := r.Lookup(ctx, old.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
				t.Fatalf("run %d: the user's earlier session = %v, %v; want revoked", i, got.Status, err)
			}
		}
	}
	e.backend.SetBeforeRespond(nil)
}

// TestSessionOpenedAfterUserRevocationIsCached checks that a session its
// user opened after a user-wide revocation is cached in Redis by its first
// lookup (two backend calls: the first answer's fill is refused), so that
// the next lookup, on another replica, is answered by Redis, not after the
// fill window.
func TestSessionOpenedAfterUserRevocationIsCached(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	b := e.replica(t, "b", testHooks{})
	old, _ := e.backend.NewSession("user-again")
	e.backend.RevokeUser("user-again")
	if err := b.RevokeUser(ctx, "user-again"); err != nil { // the push
		t.Fatal(err)
	}
	a.obs.wait(t, "user-again", 5*time.Second)
	rec, _ := e.backend.NewSession("user-again")
	id := rec.DeviceSessionID

	calls := a.Stats().BackendCalls
	if got, tier, err := a.LookupTier(ctx, id); err != nil || got.Status != session.StatusActive || tier != TierBackend {
		t.Fatalf("first LookupTier = %+v, %v, %v; want active from the backend", got, tier, err)
	}
	if n := a.Stats().BackendCalls - calls; n != 2 {
		t.Errorf("first lookup made %d backend calls, want 2 (the refused fill's, and the one cached)", n)
	}
	if s := e.redisStatus(t, id); s != "active" {
		t.Fatalf("Redis holds status %q after the first lookup, want active", s)
	}
	calls = b.Stats().BackendCalls
	if got, tier, err := b.LookupTier(ctx, id); err != nil || got.Status != session.StatusActive || tier != TierL2 {
		t.Errorf("LookupTier on the other replica = %+v, %v, %v; want active from Redis", got, tier, err)
	}
	if n := b.Stats().BackendCalls - calls; n != 0 {
		t.Errorf("the other replica made %d backend calls, want 0", n)
	}
	for _, r := range []*replica{a, b} {
		if got, err := r.Lookup(ctx, old.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
			t.Errorf("the user's earlier session = %+v, %v; want revoked", got, err)
		}
	}
}

// revokeBlocker holds back the revocation scripts (the only commands that
// name the channel) a client sends while it is armed.
type revokeBlocker struct {
	armed   atomic.Bool
	held    chan struct{} // closed when a revocation is held
	release chan struct{} // closed to let it through
	once    sync.Once
	letOnce sync.Once
}

// waitHeld waits until a revocation is held.
func (h *revokeBlocker) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-h.held:
	case <-time.After(5 * time.Second):
		t.Fatal("no revocation write within 5s")
	}
}

// let lets held revocations through.
func (h *revokeBlocker) let() { h.letOnce.Do(func() { close(h.release) }) }

func (h *revokeBlocker) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *revokeBlocker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && slices.Contains(cmd.Args(), any(session.DefaultChannel)) {
			h.once.Do(func() { close(h.held) })
			<-h.release
		}
		return next(ctx, cmd)
	}
}
func (h *revokeBlocker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// blockedReplica starts a replica whose revocation writes blocker holds,
// with edit applied to its options after that.
func (e *env) blockedReplica(t *testing.T, name string, blocker *revokeBlocker, edit ...func(*Options)) *replica {
	t.Helper()
	blocked := func(o *Options) {
		rdb := redis.NewClient(&redis.Options{Addr: e.srv.Addr, ContextTimeoutEnabled: true})
		rdb.AddHook(blocker)
		t.Cleanup(func() { rdb.Close() })
		l2, err := rediscache.New(rdb, rediscache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		o.Redis = l2
	}
	return e.replica(t, name, testHooks{}, append([]func(*Options){blocked}, edit...)...)
}

// A replica's own revocation of a session holds while its Redis write is
// outstanding, even against a backend that still answers "active" (a
// lagging read, or a revocation the backend was not told of).
func TestOwnPendingRevocationHoldsAgainstActiveBackend(t *testing.T) {
	e := newEnv(t)
	blocker := &revokeBlocker{held: make(chan struct{}), release: make(chan struct{})}
	defer blocker.let()
	a := e.blockedReplica(t, "a", blocker)
	rec, _ := e.backend.NewSession("user-1")
	blocker.armed.Store(true)
	a.MarkRevoked(rec.DeviceSessionID) // the backend is not told
	blocker.waitHeld(t)
	for i := range 2 {
		if got, err := a.Lookup(ctx, rec.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("lookup %d = %v, %v; want revoked", i, got.Status, err)
		}
	}
	if got, ok := a.l1.Get(rec.DeviceSessionID); ok && got.Status != session.StatusRevoked {
		t.Errorf("L1 holds the session as %v", got.Status)
	}
	blocker.let()
	a.obs.wait(t, rec.DeviceSessionID, 5*time.Second)
}

// A lookup that began after this replica's own revocation, but read the
// tiers before the revocation's Redis write, must not cache "active" once
// the write has cleared the debt and before the revocation's message comes
// back: the subscriber is cut off (its connection goes through a
// blackholed proxy), so only what the write itself leaves in L1 can turn
// the fill into revoked.
func TestOwnRevocationHoldsBetweenWriteAndMessage(t *testing.T) {
	for _, userWide := range []bool{false, true} {
		t.Run(fmt.Sprintf("userWide=%v", userWide), func(t *testing.T) {
			e := newEnv(t)
			blocker := &revokeBlocker{held: make(chan struct{}), release: make(chan struct{})}
			defer blocker.let()
			proxy := toxitest.Start(t, e.srv.Addr)
			a := e.blockedReplica(t, "a", blocker, func(o *Options) {
				sub := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ContextTimeoutEnabled: true})
				t.Cleanup(func() { sub.Close() })
				o.SubscriberClient = sub
			})
			rec, _ := e.backend.NewSession("user-1")
			applied := a.Stats().InvalidationsApplied
			proxy.Blackhole()
			defer proxy.Clear() // frees the connections it holds before the replica closes
			blocker.armed.Store(true)
			if userWide {
				a.MarkAllRevokedForUser(rec.UserID)
			} else {
				a.MarkRevoked(rec.DeviceSessionID)
			}
			blocker.waitHeld(t)
			tok := a.l1.Begin() // a lookup starts, and reads "active"
			blocker.let()
			deadline := time.Now().Add(5 * time.Second)
			for a.Stats().RevocationsPending > 0 {
				if time.Now().After(deadline) {
					t.Fatal("the revocation was not written within 5s")
				}
				time.Sleep(time.Millisecond) // the worker has no hook
			}
			if n := a.Stats().InvalidationsApplied; n != applied {
				t.Fatalf("%d messages applied through the blackholed channel, want none", n-applied)
			}
			if got := a.fillL1(ctx, tok, rec, false); got.Status != session.StatusRevoked {
				t.Errorf("fill after the write, before the message = %v, want revoked", got.Status)
			}
		})
	}
}

// While a replica's own user-wide revocation waits for Redis, a session
// the user opened after it (the backend says so when asked after the
// revocation was applied) is answered active and not cached as revoked in
// L1. (Once written, the revocation covers every session Redis indexed
// for the user by then, this one included: see README, "Guarantees".)
func TestSessionOpenedDuringOwnUserRevocationStaysActive(t *testing.T) {
	e := newEnv(t)
	blocker := &revokeBlocker{held: make(chan struct{}), release: make(chan struct{})}
	defer blocker.let() // before the replica closes, even if the test fails
	a := e.blockedReplica(t, "a", blocker)
	old, _ := e.backend.NewSession("user-1")
	if got, err := a.Lookup(ctx, old.DeviceSessionID); err != nil || got.Status != session.StatusActive {
		t.Fatalf("Lookup(old) = %v, %v; want active", got.Status, err)
	}
	e.backend.RevokeUser("user-1")
	blocker.armed.Store(true)
	a.MarkAllRevokedForUser("user-1") // the push; its Redis write is held
	blocker.waitHeld(t)
	rec, _ := e.backend.NewSession("user-1")
	for i := range 2 {
		got, err := a.Lookup(ctx, rec.DeviceSessionID)
		if err != nil || got.Status != session.StatusActive {
			t.Fatalf("lookup %d of the new session = %v, %v; want active", i, got.Status, err)
		}
	}
	if got, ok := a.l1.Get(rec.DeviceSessionID); ok && got.Status != session.StatusActive {
		t.Errorf("L1 holds the new session as %v", got.Status)
	}
	if got, err := a.Lookup(ctx, old.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
		t.Errorf("Lookup(old) = %v, %v; want revoked", got.Status, err)
	}
	blocker.let()
	a.obs.wait(t, "user-1", 5*time.Second) // the revocation is written and published
}
