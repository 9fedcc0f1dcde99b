package tiered

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/subscriber"
	"github.com/galaxy-game/sessioncache/session"
)

// TestStaleFillAfterRedisLostDataIsTakenBack plays the order chaos seed
// 527863804 found: a lookup's backend call reads a session active; the
// backend revokes it and Redis holds the revocation; Redis restarts empty;
// the stale answer then arrives and its fill writes "active" into the empty
// Redis, where nothing says revoked any more. Once the replica has resynced
// after the loss, Redis must not hold the session active, and every lookup
// must answer revoked.
func TestStaleFillAfterRedisLostDataIsTakenBack(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	rec, _ := e.backend.NewSession("user-lost")
	id := rec.DeviceSessionID

	read, release := make(chan struct{}), make(chan struct{})
	e.backend.SetBeforeRespond(func(got string, _ session.Record, _ bool) {
		if got == id {
			close(read)
			<-release // the answer, read active, is held on its way
		}
	})
	defer e.backend.SetBeforeRespond(nil)
	syncs := a.obs.syncCount()
	done := make(chan error, 1)
	go func() {
		_, err := a.Lookup(context.Background(), id)
		done <- err
	}()
	<-read
	e.backend.SetBeforeRespond(nil)
	e.backend.Revoke(id)
	if err := e.rdb.HSet(ctx, e.layout.SessionKey(id), "status", "revoked").Err(); err != nil {
		t.Fatal(err)
	}
	e.srv.Restart() // empty: the revocation is gone from Redis
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	a.obs.waitSync(t, syncs, a.StaleBound()+5*time.Second) // the replica noticed the loss
	deadline := time.Now().Add(5 * time.Second)
	for e.redisStatus(t, id) == "active" {
		if time.Now().After(deadline) {
			t.Fatalf("Redis still holds the session active 5s after the resync (LossUnfills %d)", a.Stats().LossUnfills)
		}
		time.Sleep(time.Millisecond) // the take-back runs in the background
	}
	for i := range 2 {
		got, err := a.Lookup(ctx, id)
		if err != nil && !errors.Is(err, session.ErrNotFound) || err == nil && got.Status != session.StatusRevoked {
			t.Fatalf("lookup %d after the resync = %+v, %v; want revoked", i, got, err)
		}
	}
	t.Logf("stats: LossUnfills %d, FillsSkipped %d", a.Stats().LossUnfills, a.Stats().FillsSkipped)
}

// TestRecentFillsCountBackFromTheLostChannel checks the journal's window
// as chaos seed 800190210 needed it: a replica's subscriber was cut off
// (found unhealthy at U) before Redis lost a revocation, its stale fill
// landed, and the channel resynced long after U. The take-back must count
// back from U, not from the resync, and keep what it needs meanwhile;
// with the channel healthy the window counts back from now.
func TestRecentFillsCountBackFromTheLostChannel(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	r := recentFills{keepFor: time.Second}
	r.add("before", at(500*time.Millisecond), at(500*time.Millisecond)) // healthy: counts back from now
	u := at(2 * time.Second)                                            // the channel is found unhealthy
	r.add("just-before-u", at(1500*time.Millisecond), u)
	r.add("during", at(5*time.Second), u)
	r.add("late", at(9*time.Second), u)
	got := r.lost(at(10*time.Second), u)
	want := []string{"just-before-u", "during", "late"}
	if !slices.Equal(got, want) {
		t.Fatalf("lost after the resync = %v, want %v (the fills since 1s before the channel was lost)", got, want)
	}
	if !r.add("after", at(9*time.Second), at(11*time.Second)) {
		t.Errorf("add of a fill begun before the loss's resync = not lost, want lost")
	}

	full := recentFills{keepFor: time.Second}
	for i := range maxRecentFills {
		if !full.room(u) {
			t.Fatalf("room after %d fills = false, want true", i)
		}
		full.add("x", at(3*time.Second), u)
	}
	if full.room(u) {
		t.Errorf("room with %d fills while the channel is unhealthy = true, want false", maxRecentFills)
	}
	if !full.room(at(time.Hour)) {
		t.Errorf("room once the channel is healthy and the fills are old = false, want true")
	}
}

// TestNoFillWhileChannelUnhealthy plays the order chaos seed 334797358
// found: a replica's subscriber is cut off, Redis loses a revocation, and
// the replica's stale backend answer lands in the empty Redis, where every
// replica then reads it active until the cut-off replica resyncs and takes
// it back, which may be long after. While its channel is unhealthy a
// replica cannot notice such a loss, so it serves backend answers without
// writing them to Redis; once the channel is synced again it fills as
// before.
func TestNoFillWhileChannelUnhealthy(t *testing.T) {
	e := newEnv(t)
	a := e.replica(t, "a", testHooks{})
	rec, _ := e.backend.NewSession("user-cut-off")
	id := rec.DeviceSessionID

	a.event(subscriber.Event{Kind: subscriber.EventLost, Reason: subscriber.ReasonHeartbeat}) // as the subscriber reports it
	skipped := a.Stats().FillsSkipped
	for i := range 2 {
		got, tier, err := a.LookupTier(ctx, id)
		if err != nil || got.Status != session.StatusActive || tier != TierBackend {
			t.Fatalf("lookup %d with the channel unhealthy = %+v, %v, %v; want active from the backend", i, got, tier, err)
		}
	}
	if s := e.redisStatus(t, id); s != "" {
		t.Fatalf("Redis holds status %q after lookups with the channel unhealthy, want nothing", s)
	}
	if n := a.Stats().FillsSkipped - skipped; n != 2 {
		t.Errorf("FillsSkipped grew by %d, want 2", n)
	}

	a.event(subscriber.Event{Kind: subscriber.EventSynced, Reason: subscriber.ReasonHeartbeat})
	if got, tier, err := a.LookupTier(ctx, id); err != nil || got.Status != session.StatusActive || tier != TierBackend {
		t.Fatalf("lookup after the resync = %+v, %v, %v; want active from the backend", got, tier, err)
	}
	if s := e.redisStatus(t, id); s != "active" {
		t.Fatalf("Redis holds status %q after a lookup with the channel synced, want active", s)
	}
}
