package tiered

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/subscriber"
	"github.com/galaxy-game/sessioncache/internal/testenv"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

func TestMain(m *testing.M) {
	redistest.VerifyTestMain(m)
}

// env is one redis-server and one backend shared by several replicas.
type env struct {
	t       *testing.T
	te      *testenv.Env
	srv     *redistest.Server
	rdb     *redis.Client // a plain client, for assertions
	backend *backendtest.Server
	layout  rediscache.Layout
}

func newEnv(t *testing.T) *env {
	t.Helper()
	te := testenv.New(t, testenv.Options{})
	layout, err := rediscache.NewLayout("", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, te: te, srv: te.Redis, rdb: te.Redis.Client(t), backend: te.Backend, layout: layout}
}

// observer collects the invalidations a replica applied, so tests can wait
// for one without sleeping.
type observer struct {
	mu      sync.Mutex
	syncs   int                  // EventSynced seen
	synced  chan struct{}        // closed and replaced at every EventSynced
	lost    chan struct{}        // closed at the next EventLost, if armed
	seen    map[string]time.Time // session or user id -> first application
	waiters map[string][]chan struct{}
}

func newObserver() *observer {
	return &observer{seen: map[string]time.Time{}, waiters: map[string][]chan struct{}{}, synced: make(chan struct{})}
}

func (o *observer) event(e subscriber.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e.Kind == subscriber.EventLost {
		if o.lost != nil {
			close(o.lost)
			o.lost = nil
		}
		return
	}
	o.syncs++
	close(o.synced)
	o.synced = make(chan struct{})
}

// armLost returns a channel closed at the next EventLost.
func (o *observer) armLost() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lost == nil {
		o.lost = make(chan struct{})
	}
	return o.lost
}

// syncCount returns how many syncs the replica has done.
func (o *observer) syncCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.syncs
}

// waitSync blocks until the replica has done more than n syncs.
func (o *observer) waitSync(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		o.mu.Lock()
		done, ch := o.syncs > n, o.synced
		o.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no sync after %d within %v", n, timeout)
		}
	}
}

func (o *observer) applied(m session.Invalidation) {
	key := m.SessionID + m.UserID
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.seen[key]; !ok {
		o.seen[key] = time.Now()
	}
	for _, ch := range o.waiters[key] {
		close(ch)
	}
	delete(o.waiters, key)
}

// wait blocks until an invalidation for key (a session or user id) was
// applied, failing the test after timeout.
func (o *observer) wait(t *testing.T, key string, timeout time.Duration) time.Time {
	t.Helper()
	at, err := o.waitFor(key, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// waitAppliedOrSync waits until an invalidation for key was applied or
// the replica has done more than syncs syncs (a resync after a loss drops
// every L1 active entry, so a missed message needs no replay).
func (o *observer) waitAppliedOrSync(key string, syncs int, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		o.mu.Lock()
		_, applied := o.seen[key]
		done, synced := applied || o.syncs > syncs, o.synced
		ch := make(chan struct{})
		if !done {
			o.waiters[key] = append(o.waiters[key], ch)
		}
		o.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-synced:
		case <-deadline:
			return fmt.Errorf("invalidation for %s neither applied nor followed by a resync within %v", key, timeout)
		}
	}
}

// waitFor is wait for goroutines other than the test's: it returns an
// error instead of failing the test.
func (o *observer) waitFor(key string, timeout time.Duration) (time.Time, error) {
	o.mu.Lock()
	if at, ok := o.seen[key]; ok {
		o.mu.Unlock()
		return at, nil
	}
	ch := make(chan struct{})
	o.waiters[key] = append(o.waiters[key], ch)
	o.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("invalidation for %s not applied within %v", key, timeout)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[key], nil
}

type replica struct {
	*Cache
	obs *observer
	rdb *redis.Client
}

// replica starts a tiered cache on the env with its own Redis client, its
// connections and its subscriber named name, and waits until its
// subscription is synced.
func (e *env) replica(t *testing.T, name string, hooks testHooks, edit ...func(*Options)) *replica {
	t.Helper()
	hooks, obs := observed(hooks)
	rdb := e.te.Client(name)
	named := func(o *Options) { o.SubscriberName = name }
	c := startReplica(t, name, rdb, 1, e.backend.URL(), hooks, append([]func(*Options){named}, edit...)...)
	return &replica{Cache: c, obs: obs, rdb: rdb}
}

// observed returns hooks that also report to a new observer, and the
// observer.
func observed(hooks testHooks) (testHooks, *observer) {
	obs := newObserver()
	userApplied, userEvent := hooks.applied, hooks.event
	hooks.applied = func(m session.Invalidation) {
		obs.applied(m)
		if userApplied != nil {
			userApplied(m)
		}
	}
	hooks.event = func(ev subscriber.Event) {
		obs.event(ev)
		if userEvent != nil {
			userEvent(ev)
		}
	}
	return hooks, obs
}

// startReplica is the package's one replica constructor: testenv.Start
// with newCache, so that hooks reach the cache, and edit applied, in
// order, to the options. rdb is the replica's own client, closed at
// cleanup; the L2 on it has stripes stripes; the replica's backend client
// asks backendURL.
func startReplica(tb testing.TB, name string, rdb redis.UniversalClient, stripes int, backendURL string, hooks testHooks, edit ...func(*Options)) *Cache {
	tb.Helper()
	r := testenv.Replica{
		Name:    name,
		Client:  rdb,
		Redis:   rediscache.Options{Stripes: stripes},
		Backend: backend.Options{BaseURL: backendURL},
	}
	return testenv.Start(tb, r, func(l2 *rediscache.Cache, be *backend.Client) (*Cache, error) {
		opts := Options{Redis: l2, Backend: be}
		for _, f := range edit {
			f(&opts)
		}
		return newCache(opts, hooks)
	})
}

// redisStatus returns the status field of a session's hash ("" if none).
func (e *env) redisStatus(t *testing.T, id string) string {
	t.Helper()
	s, err := e.rdb.HGet(context.Background(), e.layout.SessionKey(id), "status").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatalf("HGET status: %v", err)
	}
	return s
}
