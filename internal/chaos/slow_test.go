package chaos

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/session"
)

// TestSlowSubscriberCut stalls one replica's subscriber (its connection
// stops reading), revokes sessions it holds in L1, and publishes well past
// `client-output-buffer-limit pubsub 256kb 128kb 5` and the socket buffers
// on the way, until Redis closes the connection. Released, the replica must
// see exactly one loss and one resync, apply each revocation once (replayed
// from the log when the cut discarded its message), and never answer a
// revoked session active after it answered it revoked.
func TestSlowSubscriberCut(t *testing.T) {
	const maxJunk = 256 << 20
	env := NewEnv(t, Config{
		Replicas: 2,
		// The stall must end by the output-buffer limit, not by the
		// heartbeat: give the probe 8 s.
		Heartbeat: time.Second, HeartbeatTimeout: 8 * time.Second,
		RedisConfig: []string{"client-output-buffer-limit pubsub 256kb 128kb 5"},
		// The count of replayed revocations is the figure: with tracking
		// the resync would drop L1's actives as well.
		Untracked: true,
	})
	a, b := env.Replicas[0], env.Replicas[1]
	list := ids(env.NewSessions(10, 2))
	warm(t, b, list)
	ctx := context.Background()
	before, err := env.SubscriberID(ctx, b)
	if err != nil || before == 0 {
		t.Fatalf("SubscriberID = %d, %v; want the replica's subscriber", before, err)
	}
	p := startProbe(t, b, 1, list, 20*time.Millisecond)

	appliedBefore := b.Cache.Stats().InvalidationsApplied
	stalled := time.Now()
	b.Sub.Stall()
	published := 0
	// publishUntil publishes junk, batch messages of size bytes at a time,
	// until done reports true.
	publishUntil := func(what string, size, batch int, done func(fields map[string]string) bool) {
		t.Helper()
		junk := strings.Repeat("x", size)
		for {
			pipe := env.Admin.Pipeline()
			for range batch {
				pipe.Publish(ctx, env.Layout.Channel(), junk)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatalf("PUBLISH: %v", err)
			}
			published += batch * size
			fields, err := env.SubscriberClient(ctx, b)
			if err != nil {
				t.Fatalf("CLIENT LIST: %v", err)
			}
			if done(fields) {
				return
			}
			if published >= maxJunk {
				t.Fatalf("published %d MB and the stalled subscriber is not %s", published>>20, what)
			}
		}
	}
	// Fill the socket buffers until Redis holds output for the client, so
	// that the revocations' messages are in Redis' output buffer, which a
	// cut discards.
	// Small steps (32 kB), well under the 256 kB limit.
	publishUntil("buffered in Redis", 4<<10, 8, func(f map[string]string) bool {
		if f == nil {
			t.Fatal("the subscriber was closed before Redis was seen buffering its output")
		}
		return f["omem"] != "0"
	})
	buffered := published
	revoked := map[string]time.Time{}
	for _, id := range list[:5] {
		revoked[id] = revokeVia(t, env, a, id)
	}
	publishUntil("closed", 64<<10, 16, func(f map[string]string) bool { return f == nil || f["id"] != strconv.FormatInt(before, 10) })
	cut := time.Now()
	if !strings.Contains(env.Redis.Log(), "for overcoming of output buffer limits") {
		t.Errorf("the server log does not show a client closed for its output buffer limit")
	}
	t.Logf("Redis buffered output for the stalled subscriber after %.1f MB published, and closed it after %.1f MB, %v after the stall",
		float64(buffered)/(1<<20), float64(published)/(1<<20), cut.Sub(stalled).Round(time.Millisecond))
	b.Sub.Release()

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lost, ok := b.Events.Wait(wctx, "lost", stalled)
	if !ok {
		t.Fatal("the replica did not notice the closed connection")
	}
	synced, ok := b.Events.Wait(wctx, "synced", lost.At)
	if !ok {
		t.Fatal("no resync after the loss")
	}
	// Let any second loss or sync show up before counting.
	waitUntil(synced.At, time.Second)
	lookups := p.results()
	nLost, nSynced := b.Events.Count("lost", stalled), b.Events.Count("synced", stalled)
	t.Logf("after the cut: %d loss (%s, %v after release), %d resync (replayed %d, drop active %v); malformed messages dropped: %d",
		nLost, lost.Reason, lost.At.Sub(cut).Round(time.Millisecond), nSynced, synced.Replayed, synced.DropActive,
		b.Cache.Stats().Channel.Malformed)
	if nLost != 1 || nSynced != 1 {
		t.Errorf("%d losses and %d resyncs for one disconnect, want exactly 1 and 1", nLost, nSynced)
	}
	// The revocations' messages are behind Redis' output buffer, which the
	// cut discards, or (when the kernel's socket buffers grew meanwhile)
	// in the socket, read on release: each is applied once, from the
	// message or from the log, and none needs a drop.
	applied := b.Cache.Stats().InvalidationsApplied - appliedBefore
	t.Logf("revocations applied: %d, of which replayed: %d", applied, synced.Replayed)
	if applied != int64(len(revoked)) || synced.DropActive {
		t.Errorf("%d invalidations applied (resync %+v), want the %d revocations each applied once, no DropActive", applied, synced, len(revoked))
	}

	// 0 resurrections: no active answer after a revoked one, and every
	// revoked session revoked once resynced.
	seenRevoked := map[string]time.Time{}
	resurrections := 0
	for _, l := range lookups {
		switch {
		case l.Answer == AnswerRevoked:
			if _, ok := seenRevoked[l.Session]; !ok {
				seenRevoked[l.Session] = l.Return
			}
		case l.Answer == AnswerActive:
			if at, ok := seenRevoked[l.Session]; ok && l.Call.After(at) {
				resurrections++
			}
		}
	}
	if resurrections != 0 {
		t.Errorf("%d active answers after the same replica answered revoked, want 0", resurrections)
	}
	for id := range revoked {
		if got, err := b.Cache.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
			t.Errorf("after the resync: Lookup(%s) = %v, %v; want revoked", session.Redact(id), got.Status, err)
		}
	}
}
