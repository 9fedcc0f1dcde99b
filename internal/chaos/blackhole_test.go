package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/subscriber"
	"github.com/galaxy-game/sessioncache/session"
)

// revokeVia revokes a session in the backend and then through replica r,
// retrying until Revoke returns nil, and returns when that happened.
func revokeVia(t *testing.T, env *Env, r *Replica, id string) time.Time {
	t.Helper()
	env.Backend.Revoke(id)
	rv := revoke(Revocation{}, func(ctx context.Context) error { return r.Cache.Revoke(ctx, id) })
	if !rv.OK {
		t.Fatalf("Revoke(%s) through %s failed for 5s", session.Redact(id), r.Name)
	}
	return rv.Return
}

// ids returns the session ids of recs.
func ids(recs []session.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.DeviceSessionID
	}
	return out
}

// warm looks up every id on r and fails unless each is active.
func warm(t *testing.T, r *Replica, list []string) {
	t.Helper()
	for _, id := range list {
		if got, err := r.Cache.Lookup(context.Background(), id); err != nil || got.Status != session.StatusActive {
			t.Fatalf("%s: Lookup(%s) = %v, %v; want active", r.Name, session.Redact(id), got.Status, err)
		}
	}
}

// staleAnswers counts the active answers to lookups of a revoked session
// that began more than bound after its revocation returned, and returns
// the latest active answer after a revocation returned.
func staleAnswers(lookups []Lookup, revoked map[string]time.Time, bound time.Duration) (stale int, latest time.Duration) {
	for _, l := range lookups {
		ret, ok := revoked[l.Session]
		if !ok || l.Answer != AnswerActive || !l.Call.After(ret) {
			continue
		}
		latest = max(latest, l.Call.Sub(ret))
		if l.Call.Sub(ret) > bound {
			stale++
		}
	}
	return stale, latest
}

// TestSilentBlackhole blackholes one replica's subscriber connection (the
// connection stays open and carries nothing) while another replica revokes
// sessions the first one holds in L1. The heartbeat must notice within
// HeartbeatInterval + HeartbeatTimeout (+ 0.5 s of slack), the replica
// must resync by replay once the blackhole lifts, and no lookup beginning
// more than the staleness bound after a revocation may be answered active.
func TestSilentBlackhole(t *testing.T) {
	// Untracked: the resync must replay; with tracking it also drops.
	cfg := Config{Replicas: 2, Heartbeat: 250 * time.Millisecond, Untracked: true} // timeout 750 ms
	env := NewEnv(t, cfg)
	cfg = env.Config
	a, b := env.Replicas[0], env.Replicas[1]
	recs := ids(env.NewSessions(20, 4))
	warm(t, b, recs)
	p := startProbe(t, b, 1, recs, 10*time.Millisecond)

	start := time.Now()
	b.SubProxy.Blackhole()
	revoked := map[string]time.Time{}
	for _, id := range recs[:10] {
		revoked[id] = revokeVia(t, env, a, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lost, ok := b.Events.Wait(ctx, "lost", start)
	if !ok {
		t.Fatal("the blackhole was not detected within 5s")
	}
	detected := lost.At.Sub(start)
	limit := cfg.Heartbeat + cfg.HeartbeatTimeout + 500*time.Millisecond
	t.Logf("blackhole detected after %v (reason %s; interval %v, timeout %v, limit %v)",
		detected.Round(time.Millisecond), lost.Reason, cfg.Heartbeat, cfg.HeartbeatTimeout, limit)
	if lost.Reason != subscriber.ReasonHeartbeat || detected > limit {
		t.Errorf("blackhole detected after %v by %q, want within %v by %q", detected, lost.Reason, limit, subscriber.ReasonHeartbeat)
	}

	// The blackhole lasts 2 s; lifting it closes the connections it held.
	waitUntil(start, 2*time.Second)
	b.SubProxy.Clear()
	lifted := time.Now()
	synced, ok := b.Events.Wait(ctx, "synced", lifted)
	if !ok {
		t.Fatal("no resync within 5s of lifting the blackhole")
	}
	t.Logf("resynced %v after the blackhole was lifted: replayed %d, drop active %v",
		synced.At.Sub(lifted).Round(time.Millisecond), synced.Replayed, synced.DropActive)
	if synced.Replayed < int64(len(revoked)) || synced.DropActive {
		t.Errorf("resync = %+v, want at least %d replayed and no DropActive", synced, len(revoked))
	}
	waitUntil(synced.At, 200*time.Millisecond)
	lookups := p.results()

	bound := cfg.Bound() + margin
	stale, latest := staleAnswers(lookups, revoked, bound)
	t.Logf("%d lookups on the blackholed replica; latest active answer %v after a revocation returned (bound %v); %d stale",
		len(lookups), latest.Round(time.Millisecond), bound, stale)
	if stale != 0 {
		t.Errorf("%d active answers more than %v after the revocation returned, want 0", stale, bound)
	}
	for id := range revoked {
		if got, tier, err := b.Cache.LookupTier(context.Background(), id); err != nil || got.Status != session.StatusRevoked {
			t.Errorf("after the resync: LookupTier(%s) = %v, %v, %v; want revoked", session.Redact(id), got.Status, tier, err)
		}
	}
}

// TestBlackholeUnnoticedWithoutHeartbeat is the control: with the heartbeat
// off, neither go-redis nor the subscriber notices the blackhole for 5 s,
// and the replica keeps serving a revoked session as active from L1.
func TestBlackholeUnnoticedWithoutHeartbeat(t *testing.T) {
	env := NewEnv(t, Config{Replicas: 2, Heartbeat: -1})
	a, b := env.Replicas[0], env.Replicas[1]
	id := env.NewSessions(1, 1)[0].DeviceSessionID
	warm(t, b, []string{id})

	start := time.Now()
	b.SubProxy.Blackhole()
	revokeVia(t, env, a, id)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e, ok := b.Events.Wait(ctx, "lost", start); ok {
		t.Fatalf("heartbeat off: loss reported after %v (%s), want none within 5s", e.At.Sub(start), e.Reason)
	}
	got, tier, err := b.Cache.LookupTier(context.Background(), id)
	t.Logf("5s into the blackhole without heartbeat: no loss reported; the revoked session is answered %v from %v", got.Status, tier)
	if err != nil || got.Status != session.StatusActive || tier.String() != "l1" {
		t.Errorf("LookupTier = %v, %v, %v; want active from l1 (the control shows the loss goes unnoticed)", got.Status, tier, err)
	}
	if st := b.Cache.Stats().Channel; !st.Subscribed {
		t.Errorf("Subscriber().Stats().Subscribed = false during an unnoticed blackhole, want true")
	}
}

// TestResetDuringBlackhole closes a replica's subscriber connection on the
// server side (CLIENT KILL) just after its network went black: the replica
// sees the connection end, go-redis reconnects by itself inside the
// receive call, and that new connection's handshake hangs in the black
// hole. The loss must still be reported within the heartbeat bound
// (HeartbeatInterval + HeartbeatTimeout + 0.5 s), not after go-redis' own
// dial and read timeouts. Found by TestHistories (seed 138418472): the
// replica kept serving L1 for the 3 s the blackhole lasted.
func TestResetDuringBlackhole(t *testing.T) {
	env := NewEnv(t, Config{Replicas: 1})
	cfg := env.Config
	r := env.Replicas[0]
	start := time.Now()
	r.SubProxy.Blackhole()
	waitUntil(start, 25*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if killed, err := env.KillSubscriber(ctx, r); err != nil || !killed {
		t.Fatalf("KillSubscriber = %v, %v; want the subscriber killed", killed, err)
	}
	lost, ok := r.Events.Wait(ctx, "lost", start)
	limit := cfg.Heartbeat + cfg.HeartbeatTimeout + 500*time.Millisecond
	if !ok {
		t.Fatalf("no loss reported within 5s of a reset during a blackhole, want within %v", limit)
	}
	took := lost.At.Sub(start)
	t.Logf("loss reported %v after the blackhole began (reason %s; limit %v)", took.Round(time.Millisecond), lost.Reason, limit)
	if took > limit {
		t.Errorf("loss reported after %v, want within %v", took, limit)
	}
}
