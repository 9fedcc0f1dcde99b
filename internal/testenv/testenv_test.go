package testenv_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/testenv"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// TestMain fails the package's tests if a goroutine outlives them.
func TestMain(m *testing.M) {
	redistest.VerifyTestMain(m)
}

// Two replicas share the server and the backend: the first fills Redis
// from the backend, the second reads it from Redis, a revocation on one
// reaches the other, and each replica's connections carry its name.
func TestReplicas(t *testing.T) {
	ctx := context.Background()
	e := testenv.New(t, testenv.Options{})
	a := testenv.Start(t, e.Replica("a"), newTiered("a"))
	b := testenv.Start(t, e.Replica("b"), newTiered("b"))
	rec, _ := e.Backend.NewSession("user-1")
	id := rec.DeviceSessionID
	for _, tc := range []struct {
		name string
		c    *tiered.Cache
		want tiered.Tier
	}{{"a", a, tiered.TierBackend}, {"a", a, tiered.TierL1}, {"b", b, tiered.TierL2}} {
		if got, tier, err := tc.c.LookupTier(ctx, id); err != nil || got != rec || tier != tc.want {
			t.Fatalf("replica %s: LookupTier(%q) = %+v, %v, %v; want %+v, %v", tc.name, id, got, tier, err, rec, tc.want)
		}
	}
	if n := e.Backend.Calls(); n != 1 {
		t.Fatalf("backend calls = %d, want 1", n)
	}
	e.Backend.Revoke(id)
	if err := a.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, tier, err := b.LookupTier(ctx, id)
		if err == nil && got.Status == session.StatusRevoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica b: LookupTier(%q) = %v from %v, %v; want revoked within 5s", id, got.Status, tier, err)
		}
		time.Sleep(time.Millisecond) // polling b's answer, which has no hook
	}
	list, err := e.Redis.Client(t).ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if !strings.Contains(list, " name="+name+" ") {
			t.Errorf("CLIENT LIST has no connection named %s:\n%s", name, list)
		}
	}
}

// newTiered returns a build function for Start: tiered.New with the
// subscriber named name.
func newTiered(name string) func(*rediscache.Cache, *backend.Client) (*tiered.Cache, error) {
	return func(l2 *rediscache.Cache, be *backend.Client) (*tiered.Cache, error) {
		return tiered.New(tiered.Options{Redis: l2, Backend: be, SubscriberName: name})
	}
}

// fatalT records a fatal failure instead of failing the test; like
// testing.T's, its Fatalf ends the calling goroutine.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Start fails the test, naming the replica and the cause, when the
// replica cannot be built.
func TestStartFailsWithoutBackendURL(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	ft := &fatalT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		testenv.Start(ft, testenv.Replica{Name: "x", Client: e.Client("x")}, newTiered("x"))
		t.Error("Start without a backend URL returned")
	}()
	<-done
	if want := "replica x: backend: Options.BaseURL is required"; ft.msg != want {
		t.Fatalf("Start without a backend URL failed with %q, want %q", ft.msg, want)
	}
}

// NoWait returns a replica whose channel cannot sync (its Redis is
// unreachable) instead of failing the test at the sync deadline.
func TestStartNoWaitReturnsBeforeTheSync(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	r := testenv.Replica{
		Name:    "down",
		Client:  redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true, MaxRetries: -1}),
		Backend: backend.Options{BaseURL: e.Backend.URL()},
		NoWait:  true,
	}
	c := testenv.Start(t, r, newTiered("down"))
	if c.Stats().Channel.Subscribed {
		t.Fatal("a replica on an unreachable Redis reports its channel subscribed")
	}
}
