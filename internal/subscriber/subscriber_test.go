package subscriber

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/galaxy-game/sessioncache/internal/fakeclock"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/toxitest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// subWait bounds every wait for something a Subscriber is expected to do.
const subWait = 5 * time.Second

// subItem is one call of a Subscriber's callbacks: an invalidation or an
// event.
type subItem struct {
	inv     session.Invalidation
	ev      Event
	isEvent bool
}

func (it subItem) String() string {
	if it.isEvent {
		return fmt.Sprintf("Event{%v %q replayed=%d drop=%v}", it.ev.Kind, it.ev.Reason, it.ev.Replayed, it.ev.DropActive)
	}
	return fmt.Sprintf("Invalidation%+v", it.inv)
}

// subHarness runs a Subscriber and records its callbacks in call order.
type subHarness struct {
	sub   *Subscriber
	items chan subItem
}

// startSubscriber runs a Subscriber of c with opts (its callbacks replaced
// by recorders) and hook as testHookLost. Run is cancelled at cleanup and
// must then return context.Canceled.
func startSubscriber(t *testing.T, c *rediscache.Cache, opts Options, hook func(reason string)) *subHarness {
	t.Helper()
	h := &subHarness{items: make(chan subItem, 4096)}
	opts.OnInvalidation = func(m session.Invalidation) { h.items <- subItem{inv: m} }
	opts.OnEvent = func(ev Event) { h.items <- subItem{ev: ev, isEvent: true} }
	sub, err := newSubscriber(c, opts)
	if err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
	sub.testHookLost = hook
	h.sub = sub
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want %v", err, context.Canceled)
			}
		case <-time.After(subWait):
			t.Errorf("Run did not return within %v of cancel", subWait)
		}
	})
	return h
}

// next returns the next callback, failing the test after subWait.
func (h *subHarness) next(t *testing.T) subItem {
	t.Helper()
	select {
	case it := <-h.items:
		return it
	case <-time.After(subWait):
		t.Fatalf("no callback within %v", subWait)
		return subItem{}
	}
}

// expectEvent fails unless the next callback is an event of kind and
// reason, and returns it.
func (h *subHarness) expectEvent(t *testing.T, kind EventKind, reason string) Event {
	t.Helper()
	it := h.next(t)
	if !it.isEvent || it.ev.Kind != kind || it.ev.Reason != reason {
		t.Fatalf("next callback = %v, want Event{%v %q}", it, kind, reason)
	}
	return it.ev
}

// expectInvalidation fails unless the next callback is the invalidation
// want.
func (h *subHarness) expectInvalidation(t *testing.T, want session.Invalidation) {
	t.Helper()
	if it := h.next(t); it.isEvent || it.inv != want {
		t.Fatalf("next callback = %v, want Invalidation%+v", it, want)
	}
}

// expectQuiet fails if there is any callback within d.
func (h *subHarness) expectQuiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case it := <-h.items:
		t.Fatalf("callback %v, want none within %v", it, d)
	case <-time.After(d):
	}
}

// untilSynced reads callbacks up to the next EventSynced, which it returns
// with the invalidations before it. It fails on anything other than
// EventLost and invalidations on the way.
func (h *subHarness) untilSynced(t *testing.T) (Event, []session.Invalidation) {
	t.Helper()
	var invs []session.Invalidation
	for {
		it := h.next(t)
		switch {
		case !it.isEvent:
			invs = append(invs, it.inv)
		case it.ev.Kind == EventSynced:
			return it.ev, invs
		case it.ev.Kind != EventLost:
			t.Fatalf("callback %v, want EventLost or EventSynced", it)
		}
	}
}

// revokeRaw writes one revocation the way the revocation scripts do, without
// Lua: under WATCH of the stripe's counter, one MULTI increments the
// counter, appends the log entry and, if publish is set, publishes the
// message. A zero m.AtMS becomes the current time. It returns the message
// with its Seq, Stripe and AtMS. It may run on any goroutine.
func revokeRaw(rdb *redis.Client, l rediscache.Layout, m session.Invalidation, publish bool) (session.Invalidation, error) {
	ctx := context.Background()
	field, id := "session", m.SessionID
	if id == "" {
		field, id = "user", m.UserID
	}
	k := l.Stripe(id)
	if m.AtMS == 0 {
		m.AtMS = time.Now().UnixMilli()
	}
	err := rdb.Watch(ctx, func(tx *redis.Tx) error {
		cur, err := tx.Get(ctx, l.SeqKey(k)).Uint64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		m.Seq, m.Stripe = cur+1, k
		payload, err := m.MarshalJSON()
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, l.SeqKey(k))
			p.XAdd(ctx, &redis.XAddArgs{
				Stream: l.LogKey(k), MaxLen: rediscache.DefaultLogMaxLen, Approx: true,
				Values: []any{field, id, "seq", strconv.FormatUint(m.Seq, 10), "at_ms", strconv.FormatInt(m.AtMS, 10)},
			})
			if publish {
				p.Publish(ctx, l.Channel(), payload)
			}
			return nil
		})
		return err
	}, l.SeqKey(k))
	return m, err
}

// mustRevoke is revokeRaw for the test's goroutine.
func mustRevoke(t *testing.T, rdb *redis.Client, l rediscache.Layout, m session.Invalidation, publish bool) session.Invalidation {
	t.Helper()
	m, err := revokeRaw(rdb, l, m, publish)
	if err != nil {
		t.Fatalf("revoke %+v: %v", m, err)
	}
	return m
}

// subCache returns a rediscache.Cache on rdb, failing the test on error.
func subCache(t *testing.T, rdb redis.UniversalClient, opts rediscache.Options) *rediscache.Cache {
	t.Helper()
	c, err := rediscache.New(rdb, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// anchor writes one revocation in every stripe of c, so that a subscriber
// started afterwards holds a position whose log entry a resync can verify
// (from position 0 it cannot, and drops).
func anchor(t *testing.T, c *rediscache.Cache) []session.Invalidation {
	t.Helper()
	l := c.Layout()
	var out []session.Invalidation
	for k, i := 0, 0; k < l.Stripes(); i++ {
		id := fmt.Sprintf("anchor-%d", i)
		if l.Stripe(id) != k {
			continue
		}
		m, err := c.RevokeSession(context.Background(), id)
		if err != nil {
			t.Fatalf("anchor: RevokeSession: %v", err)
		}
		out = append(out, m)
		k++
	}
	return out
}

// oneShot wraps a hook so that it runs on the first loss only.
func oneShot(f func(reason string)) func(string) {
	done := false
	return func(reason string) {
		if !done {
			done = true
			f(reason)
		}
	}
}

func TestSubscriberStart(t *testing.T) {
	tests := []struct {
		stripes  int
		protocol int
		channel  string // "s" is short enough for frames under 36 bytes
	}{
		{1, 3, ""},
		{4, 3, ""},
		{1, 2, ""},
		{4, 2, "s"},
		{1, 3, "s"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("stripes=%d,resp%d,channel=%q", tc.stripes, tc.protocol, tc.channel), func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: tc.protocol})
			t.Cleanup(func() { _ = rdb.Close() })
			c := subCache(t, rdb, rediscache.Options{Stripes: tc.stripes, Channel: tc.channel})
			l := c.Layout()
			// Revocations before the start set the counters: they are
			// not replayed, the first sync asks to drop instead.
			mustRevoke(t, rdb, l, session.Invalidation{SessionID: "before-1"}, true)
			mustRevoke(t, rdb, l, session.Invalidation{UserID: "before-u"}, true)

			h := startSubscriber(t, c, Options{HeartbeatInterval: 20 * time.Millisecond, HeartbeatTimeout: time.Second}, nil)
			if ev := h.expectEvent(t, EventSynced, ReasonStart); !ev.DropActive || ev.Replayed != 0 {
				t.Fatalf("first sync = %+v, want DropActive and nothing replayed", ev)
			}
			for _, m := range []session.Invalidation{{SessionID: "dev-1"}, {UserID: "user-7"}, {SessionID: "dev-2"}} {
				h.expectInvalidation(t, mustRevoke(t, rdb, l, m, true))
			}
			// A hand-typed message, as on-call engineers type it.
			if err := rdb.Publish(context.Background(), l.Channel(), `{"session":"dev-123"}`).Err(); err != nil {
				t.Fatalf("PUBLISH: %v", err)
			}
			h.expectInvalidation(t, session.Invalidation{SessionID: "dev-123"})
			// Probes keep being answered: a probe goes out only after the
			// previous one came back.
			h.expectQuiet(t, 150*time.Millisecond)

			st := h.sub.Stats()
			if st.Received != 4 || st.Malformed != 0 || st.Gaps != 0 || st.Resyncs != 0 || st.DropActive != 1 || !st.Subscribed {
				t.Errorf("Stats() = %+v, want Received 4, DropActive 1, Subscribed, the rest 0", st)
			}
			if st.HeartbeatsSent < 2 || st.HeartbeatFailures != 0 {
				t.Errorf("Stats() = %+v, want at least 2 probes sent and no failure", st)
			}
			if st.LastMessageUnixMs == 0 {
				t.Errorf("Stats().LastMessageUnixMs = 0, want the time of the last message")
			}
		})
	}
}

// clientsNamed returns the ids of the pub/sub clients called name.
func clientsNamed(t *testing.T, rdb *redis.Client, name string) []string {
	t.Helper()
	out, err := rdb.Do(context.Background(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		t.Fatalf("CLIENT LIST TYPE pubsub: %v", err)
	}
	var ids []string
	for line := range strings.Lines(out) {
		fields := map[string]string{}
		for f := range strings.FieldsSeq(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		if fields["name"] == name {
			ids = append(ids, fields["id"])
		}
	}
	return ids
}

func TestSubscriberReconnectReplaysMissed(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t)
	c := subCache(t, rdb, rediscache.Options{})
	l := c.Layout()
	const name = "gateway-7-invalidations"

	// The hook runs when the subscriber knows it is disconnected and
	// before it subscribes again: what it publishes can only arrive by
	// replay.
	missed := make(chan session.Invalidation, 1)
	hook := oneShot(func(reason string) {
		m, err := revokeRaw(rdb, l, session.Invalidation{SessionID: "dev-missed"}, true)
		if err != nil {
			t.Errorf("revoke in hook: %v", err)
		}
		missed <- m
	})
	h := startSubscriber(t, c, Options{Name: name}, hook)
	h.expectEvent(t, EventSynced, ReasonStart)
	before := clientsNamed(t, rdb, name)
	if len(before) != 1 {
		t.Fatalf("pub/sub clients named %q = %v, want one", name, before)
	}
	h.expectInvalidation(t, mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-live"}, true))

	killed := time.Now()
	if err := rdb.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
	}
	h.expectEvent(t, EventLost, ReasonReconnect)
	h.expectInvalidation(t, <-missed)
	ev := h.expectEvent(t, EventSynced, ReasonReconnect)
	if ev.Replayed != 1 || ev.DropActive {
		t.Fatalf("resync = %+v, want Replayed 1 and no DropActive", ev)
	}
	t.Logf("resynced %v after CLIENT KILL", ev.At.Sub(killed))
	if took := ev.At.Sub(killed); took > time.Second {
		t.Errorf("resynced %v after CLIENT KILL, want at most 1s", took)
	}
	// Live messages flow again, in sequence.
	h.expectInvalidation(t, mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-after"}, true))

	after := clientsNamed(t, rdb, name)
	if len(after) != 1 || after[0] == before[0] {
		t.Errorf("pub/sub clients named %q after the reconnect = %v, want one other than %v", name, after, before)
	}
	if st := h.sub.Stats(); st.Replayed != 1 || st.Resyncs != 1 || st.DropActive != 1 || st.Gaps != 0 {
		t.Errorf("Stats() = %+v, want Replayed 1, Resyncs 1, DropActive 1 (the start), Gaps 0", st)
	}
}

// TestSubscriberReplaysScriptRevocations checks the subscriber against the
// revocation scripts themselves: their messages arrive unchanged, and the
// log entries they write replay to the same invalidations.
func TestSubscriberReplaysScriptRevocations(t *testing.T) {
	for _, stripes := range []int{1, 4} {
		t.Run(fmt.Sprintf("stripes=%d", stripes), func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.Client(t)
			c := subCache(t, rdb, rediscache.Options{Stripes: stripes})
			anchor(t, c)
			ctx := context.Background()
			var missed []session.Invalidation
			hook := oneShot(func(string) {
				for _, id := range []string{"dev-x", "dev-y", "dev-z"} {
					m, err := c.RevokeSession(ctx, id)
					if err != nil {
						t.Errorf("RevokeSession: %v", err)
					}
					missed = append(missed, m)
				}
				m, _, err := c.RevokeUser(ctx, "user-w")
				if err != nil {
					t.Errorf("RevokeUser: %v", err)
				}
				missed = append(missed, m)
			})
			h := startSubscriber(t, c, Options{}, hook)
			h.expectEvent(t, EventSynced, ReasonStart)
			live, err := c.RevokeSession(ctx, "dev-live")
			if err != nil {
				t.Fatalf("RevokeSession: %v", err)
			}
			h.expectInvalidation(t, live)

			if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
			}
			h.expectEvent(t, EventLost, ReasonReconnect)
			ev, invs := h.untilSynced(t)
			if ev.DropActive || ev.Replayed != len(missed) {
				t.Fatalf("resync = %+v, want %d replayed and no DropActive", ev, len(missed))
			}
			// Replay goes stripe by stripe, each in sequence order.
			byOrder := func(a, b session.Invalidation) int {
				return cmp.Or(cmp.Compare(a.Stripe, b.Stripe), cmp.Compare(a.Seq, b.Seq))
			}
			slices.SortFunc(missed, byOrder)
			if !slices.Equal(invs, missed) {
				t.Errorf("replayed %+v, want %+v", invs, missed)
			}
		})
	}
}

// TestSubscriberOnCluster runs the subscriber on a real three-master Redis
// Cluster with a stripe per few slots: a reconnect replays what was missed
// on every master, sequence numbers and gaps are per stripe, and a slot
// migration moves a stripe without disturbing the subscriber. One cluster
// serves every subtest; each uses a channel (and so counters and logs) of
// its own, since messages of earlier subtests may still be on their way over
// the cluster bus, which can hold one back about 40 ms.
func TestSubscriberOnCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{})
	rdb := cluster.FollowingClient(t)
	ctx := context.Background()

	t.Run("ReconnectReplaysEveryMaster", func(t *testing.T) {
		c := subCache(t, rdb, rediscache.Options{Stripes: 12})
		ctx := context.Background()
		ids := []string{"dev-a", "dev-b", "dev-c", "dev-d", "dev-e", "dev-f"}
		var missed []session.Invalidation
		hook := oneShot(func(string) {
			for _, id := range ids {
				m, err := c.RevokeSession(ctx, id)
				if err != nil {
					t.Errorf("RevokeSession: %v", err)
				}
				missed = append(missed, m)
			}
		})
		h := startSubscriber(t, c, Options{Name: "gw-cluster"}, hook)
		h.expectEvent(t, EventSynced, ReasonStart)
		// On a cluster a message crosses the bus after PUBLISH returns, so
		// the anchors are written once the subscriber listens, and received:
		// each stripe then has a position with a log entry.
		anchors := anchor(t, c)
		for range anchors {
			if it := h.next(t); it.isEvent || !slices.Contains(anchors, it.inv) {
				t.Fatalf("next callback = %v, want one of the anchors %+v", it, anchors)
			}
		}
		live, err := c.RevokeSession(ctx, "dev-live")
		if err != nil {
			t.Fatalf("RevokeSession: %v", err)
		}
		h.expectInvalidation(t, live)

		// The subscriber is connected to one of the nodes.
		if err := rdb.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			return node.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err()
		}); err != nil {
			t.Fatalf("CLIENT KILL TYPE pubsub on every node: %v", err)
		}
		h.expectEvent(t, EventLost, ReasonReconnect)
		ev, invs := h.untilSynced(t)
		slices.SortFunc(missed, func(a, b session.Invalidation) int {
			return cmp.Or(cmp.Compare(a.Stripe, b.Stripe), cmp.Compare(a.Seq, b.Seq))
		})
		if ev.DropActive || ev.Replayed != len(missed) || !slices.Equal(invs, missed) {
			t.Fatalf("resync = %+v after %+v, want %+v replayed and no DropActive", ev, invs, missed)
		}
		stripes := map[int]bool{}
		for _, m := range missed {
			stripes[m.Stripe] = true
		}
		t.Logf("replayed %d invalidations from %d stripes", len(missed), len(stripes))
	})

	t.Run("SequenceAndGapPerStripe", func(t *testing.T) {
		c := subCache(t, rdb, rediscache.Options{Stripes: clusterStripes, Channel: "gap_invalidation"})
		l := c.Layout()
		h := startSubscriber(t, c, Options{}, nil)
		h.expectEvent(t, EventSynced, ReasonStart)
		const k, j = 5, 11
		if masterOf(t, cluster, rdb, l.SeqKey(k)) == masterOf(t, cluster, rdb, l.SeqKey(j)) {
			t.Logf("stripes %d and %d share a master", k, j)
		}
		base := map[int]uint64{}
		for _, s := range []int{k, j} {
			v, err := rdb.Get(ctx, l.SeqKey(s)).Uint64()
			if err != nil && !errors.Is(err, redis.Nil) {
				t.Fatal(err)
			}
			base[s] = v
		}
		first, err := c.RevokeSession(ctx, idOnStripe(l, "dev-seq-a", k))
		if err != nil {
			t.Fatal(err)
		}
		if first.Stripe != k || first.Seq != base[k]+1 {
			t.Fatalf("RevokeSession on stripe %d = %+v, want seq %d", k, first, base[k]+1)
		}
		h.expectInvalidation(t, first)

		// A revocation of stripe k that is logged but never published: the
		// next message of stripe k skips a number.
		silent := revokeUnpublished(t, rdb, l, idOnStripe(l, "dev-seq-b", k))
		other, err := c.RevokeSession(ctx, idOnStripe(l, "dev-seq-c", j))
		if err != nil {
			t.Fatal(err)
		}
		h.expectInvalidation(t, other) // stripe j has no gap
		next, err := c.RevokeSession(ctx, idOnStripe(l, "dev-seq-d", k))
		if err != nil {
			t.Fatal(err)
		}
		if next.Seq != silent.Seq+1 {
			t.Fatalf("seq after the unpublished one = %d, want %d", next.Seq, silent.Seq+1)
		}
		h.expectEvent(t, EventLost, ReasonGap)
		h.expectInvalidation(t, silent)
		if ev := h.expectEvent(t, EventSynced, ReasonGap); ev.Replayed != 1 || ev.DropActive {
			t.Fatalf("sync after the gap = %+v, want 1 replayed and no DropActive", ev)
		}
		h.expectInvalidation(t, next)
		if got := h.sub.Stats().Gaps; got != 1 {
			t.Fatalf("Stats().Gaps = %d, want 1", got)
		}
	})

	t.Run("SlotMigrationOfAStripe", func(t *testing.T) {
		c := subCache(t, rdb, rediscache.Options{Stripes: clusterStripes, Channel: "migration_invalidation"})
		l := c.Layout()
		h := startSubscriber(t, c, Options{Name: "gw-migrate"}, nil)
		h.expectEvent(t, EventSynced, ReasonStart)
		const k = 3
		slot := keySlot(t, rdb, l.SeqKey(k))
		from := cluster.MasterForSlot(slot)
		var to *redistest.Server
		for _, n := range cluster.Nodes() {
			if n.Master && n.Server != from {
				to = n.Server
				break
			}
		}
		var before []session.Invalidation
		for n := range 3 {
			id := idOnStripe(l, fmt.Sprintf("dev-mig-a%d", n), k)
			if _, err := c.Fill(ctx, activeRecord(id, "user-mig")); err != nil {
				t.Fatal(err)
			}
			m, err := c.RevokeSession(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			h.expectInvalidation(t, m)
			before = append(before, m)
		}
		migrateSlot(t, cluster, slot, to)
		if got := cluster.MasterForSlot(slot); got != to {
			t.Fatalf("slot %d served by %s after the migration, want %s", slot, got.Addr, to.Addr)
		}
		// The stripe's keys moved with its slot: the counter goes on, the
		// subscriber (on whichever node it is) keeps receiving, in order.
		id := idOnStripe(l, "dev-mig-b", k)
		m, err := c.RevokeSession(ctx, id)
		if err != nil {
			t.Fatalf("RevokeSession after the migration: %v", err)
		}
		if last := before[len(before)-1]; m.Seq != last.Seq+1 {
			t.Fatalf("seq after the migration = %d, want %d", m.Seq, last.Seq+1)
		}
		h.expectInvalidation(t, m)
		if got, err := c.Get(ctx, before[0].SessionID); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("Get(%q) after the migration = %q, %v; want revoked", before[0].SessionID, got.Status, err)
		}
		// A reconnect syncs through the moved stripe: nothing missed, nothing
		// dropped.
		if err := rdb.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			return node.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err()
		}); err != nil {
			t.Fatal(err)
		}
		h.expectEvent(t, EventLost, ReasonReconnect)
		if ev, invs := h.untilSynced(t); ev.DropActive || len(invs) != 0 {
			t.Fatalf("resync after the migration = %+v with %v, want nothing replayed and no DropActive", ev, invs)
		}
		if got := h.sub.Stats().Gaps; got != 0 {
			t.Fatalf("Stats().Gaps = %d, want 0", got)
		}
	})
}

// syncBuffer is a bytes.Buffer safe for a logger on another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func TestSubscriberNameRefusedAndLogsRedacted(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	admin := srv.Client(t)
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "gw", "on", ">gw-password", "~*", "&*", "+@all", "-client").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "gw", Password: "gw-password"})
	t.Cleanup(func() { _ = rdb.Close() })
	c := subCache(t, rdb, rediscache.Options{})
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	h := startSubscriber(t, c, Options{Name: "gw-1", Logger: logger}, nil)
	h.expectEvent(t, EventSynced, ReasonStart)
	const secret = "dev-5ecret-5e55ion-id"
	// Malformed, with a secret-looking id inside.
	if err := admin.Publish(ctx, c.Layout().Channel(), `{"session":"`+secret+`","user":"u-1"}`).Err(); err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
	// A gap, then a live message, both carrying the id.
	mustRevoke(t, admin, c.Layout(), session.Invalidation{SessionID: secret}, false)
	next := mustRevoke(t, admin, c.Layout(), session.Invalidation{SessionID: secret}, true)
	h.expectEvent(t, EventLost, ReasonGap)
	h.untilSynced(t)
	h.expectInvalidation(t, next)

	if got := clientsNamed(t, admin, "gw-1"); len(got) != 0 {
		t.Errorf("pub/sub clients named gw-1 = %v, want none: CLIENT is not allowed", got)
	}
	out := logs.String()
	if !strings.Contains(out, "CLIENT SETNAME refused") {
		t.Errorf("log = %q, want the refused CLIENT SETNAME", out)
	}
	if strings.Contains(out, secret) || strings.Contains(out, "5ecret") {
		t.Errorf("log = %q, contains the session id", out)
	}
	if st := h.sub.Stats(); st.Malformed != 1 {
		t.Errorf("Stats().Malformed = %d, want 1", st.Malformed)
	}
}

func TestSubscriberReplayNeedsTheWholeRange(t *testing.T) {
	tests := []struct {
		name      string
		keep      int64 // XTRIM MAXLEN keep after the 3 revocations; -1: no trim
		wantDrop  bool
		wantCount int
	}{
		{"log intact", -1, false, 3},
		{"log trimmed to the last entry", 1, true, 0},
		{"log emptied", 0, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.Client(t)
			c := subCache(t, rdb, rediscache.Options{})
			anchor(t, c)
			l := c.Layout()
			var missed []session.Invalidation
			hook := oneShot(func(string) {
				for _, id := range []string{"dev-a", "dev-b", "dev-c"} {
					m, err := revokeRaw(rdb, l, session.Invalidation{SessionID: id}, true)
					if err != nil {
						t.Errorf("revoke in hook: %v", err)
					}
					missed = append(missed, m)
				}
				if tc.keep >= 0 {
					if err := rdb.XTrimMaxLen(context.Background(), l.LogKey(0), tc.keep).Err(); err != nil {
						t.Errorf("XTRIM: %v", err)
					}
				}
			})
			h := startSubscriber(t, c, Options{}, hook)
			h.expectEvent(t, EventSynced, ReasonStart)
			if err := rdb.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
			}
			h.expectEvent(t, EventLost, ReasonReconnect)
			ev, invs := h.untilSynced(t)
			if ev.DropActive != tc.wantDrop || ev.Replayed != tc.wantCount || len(invs) != tc.wantCount {
				t.Fatalf("resync = %+v after %v, want DropActive %v and %d replayed", ev, invs, tc.wantDrop, tc.wantCount)
			}
			for i, m := range invs {
				if m != missed[i] {
					t.Errorf("replayed[%d] = %+v, want %+v", i, m, missed[i])
				}
			}
		})
	}
}

func TestSubscriberGap(t *testing.T) {
	for _, trimmed := range []bool{false, true} {
		t.Run(fmt.Sprintf("trimmed=%v", trimmed), func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.Client(t)
			c := subCache(t, rdb, rediscache.Options{})
			l := c.Layout()
			h := startSubscriber(t, c, Options{}, nil)
			h.expectEvent(t, EventSynced, ReasonStart)
			h.expectInvalidation(t, mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-1"}, true))

			// L+1 goes to the log only; L+2 is published.
			skipped := mustRevoke(t, rdb, l, session.Invalidation{UserID: "user-2"}, false)
			if trimmed {
				if err := rdb.XTrimMaxLen(context.Background(), l.LogKey(0), 0).Err(); err != nil {
					t.Fatalf("XTRIM: %v", err)
				}
			}
			next := mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-3"}, true)

			h.expectEvent(t, EventLost, ReasonGap)
			if !trimmed {
				h.expectInvalidation(t, skipped)
			}
			if ev := h.expectEvent(t, EventSynced, ReasonGap); ev.DropActive != trimmed || ev.Replayed != btoi(!trimmed) {
				t.Fatalf("gap sync = %+v, want DropActive %v, Replayed %d", ev, trimmed, btoi(!trimmed))
			}
			h.expectInvalidation(t, next)
			// The position moved on: the next message is in sequence.
			h.expectInvalidation(t, mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-4"}, true))
			if st := h.sub.Stats(); st.Gaps != 1 || st.Resyncs != 1 {
				t.Errorf("Stats() = %+v, want Gaps 1, Resyncs 1", st)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestSubscriberCounterReset(t *testing.T) {
	// restartWhileAway deletes the counter (the log stays) and drops the
	// subscriber's connection; the hook then revokes n times, numbered 1 to
	// n again, before the subscriber is back.
	restartWhileAway := func(t *testing.T, _ *redistest.Server, rdb *redis.Client, l rediscache.Layout) {
		ctx := context.Background()
		if err := rdb.Del(ctx, l.SeqKey(0)).Err(); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatalf("CLIENT KILL: %v", err)
		}
	}
	revokeN := func(n int) func(rdb *redis.Client, l rediscache.Layout) error {
		return func(rdb *redis.Client, l rediscache.Layout) error {
			for i := range n {
				m := session.Invalidation{SessionID: "dev-new-" + strconv.Itoa(i), AtMS: int64(3000 + i)}
				if _, err := revokeRaw(rdb, l, m, true); err != nil {
					return err
				}
			}
			return nil
		}
	}
	tests := []struct {
		name       string
		reset      func(t *testing.T, srv *redistest.Server, rdb *redis.Client, l rediscache.Layout)
		hook       func(rdb *redis.Client, l rediscache.Layout) error // on the first loss
		lostReason string
	}{
		{
			// Numbers 1 and 2 of the new counter are not in the range
			// (2, 3], but the entry numbered 2 is not the one seen.
			name:       "counter restarted past the position while away",
			reset:      restartWhileAway,
			hook:       revokeN(3),
			lostReason: ReasonReconnect,
		},
		{
			name:       "counter restarted up to the position while away",
			reset:      restartWhileAway,
			hook:       revokeN(2),
			lostReason: ReasonReconnect,
		},
		{
			name: "counter and log deleted, then reconnect",
			reset: func(t *testing.T, _ *redistest.Server, rdb *redis.Client, l rediscache.Layout) {
				ctx := context.Background()
				if err := rdb.Del(ctx, l.SeqKey(0), l.LogKey(0)).Err(); err != nil {
					t.Fatalf("DEL: %v", err)
				}
				if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
					t.Fatalf("CLIENT KILL: %v", err)
				}
			},
			lostReason: ReasonReconnect,
		},
		{
			name: "redis restarted empty",
			reset: func(t *testing.T, srv *redistest.Server, _ *redis.Client, _ rediscache.Layout) {
				srv.Restart()
			},
			lostReason: ReasonReconnect,
		},
		{
			name: "counter deleted, next message while connected",
			reset: func(t *testing.T, _ *redistest.Server, rdb *redis.Client, l rediscache.Layout) {
				if err := rdb.Del(context.Background(), l.SeqKey(0)).Err(); err != nil {
					t.Fatalf("DEL: %v", err)
				}
				// Number 1 again, but newer than number 2 was.
				mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-new", AtMS: 3000}, true)
			},
			lostReason: ReasonGap,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.Client(t)
			c := subCache(t, rdb, rediscache.Options{})
			l := c.Layout()
			var hook func(string)
			if tc.hook != nil {
				hook = oneShot(func(string) {
					if err := tc.hook(rdb, l); err != nil {
						t.Errorf("hook: %v", err)
					}
				})
			}
			h := startSubscriber(t, c, Options{}, hook)
			h.expectEvent(t, EventSynced, ReasonStart)
			h.expectInvalidation(t, mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-1", AtMS: 1000}, true))
			h.expectInvalidation(t, mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-2", AtMS: 2000}, true))

			tc.reset(t, srv, rdb, l)
			h.expectEvent(t, EventLost, tc.lostReason)
			if ev, invs := h.untilSynced(t); !ev.DropActive || len(invs) != 0 {
				t.Fatalf("sync after the reset = %+v after %v, want DropActive and nothing replayed", ev, invs)
			}
			if st := h.sub.Stats(); st.DropActive != 2 {
				t.Errorf("Stats().DropActive = %d, want 2", st.DropActive)
			}
		})
	}
}

func TestSubscriberHeartbeatDetectsBlackhole(t *testing.T) {
	const interval, timeout = 100 * time.Millisecond, 300 * time.Millisecond
	tests := []struct {
		name string
		// clearInHook lifts the blackhole as soon as the loss is
		// detected; otherwise it lasts until a new connection has failed
		// through it.
		clearInHook bool
	}{
		{"lifted on detection", true},
		{"lasting past a failed reconnect", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			direct := srv.Client(t)
			px := toxitest.Start(t, srv.Addr)
			viaProxy := redis.NewClient(&redis.Options{Addr: px.Addr(), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = viaProxy.Close() })
			c := subCache(t, viaProxy, rediscache.Options{})
			anchor(t, c)
			l := c.Layout()

			var hook func(string)
			if tc.clearInHook {
				hook = oneShot(func(string) { px.Clear() })
			}
			h := startSubscriber(t, c, Options{HeartbeatInterval: interval, HeartbeatTimeout: timeout}, hook)
			h.expectEvent(t, EventSynced, ReasonStart)
			// A healthy connection answers every probe. Waiting 6.5
			// intervals starts the blackhole half-way between two probes,
			// so detection takes about interval/2 + timeout (at most
			// interval + timeout).
			h.expectQuiet(t, 6*interval+interval/2)
			if st := h.sub.Stats(); st.HeartbeatsSent < 3 || st.HeartbeatFailures != 0 {
				t.Fatalf("Stats() on a healthy connection = %+v, want ≥ 3 probes sent and no failure", st)
			}

			px.Blackhole()
			start := time.Now()
			// Redis counts the subscriber as a receiver, but the bytes are
			// dropped.
			missed := mustRevoke(t, direct, l, session.Invalidation{SessionID: "dev-during-blackhole"}, true)
			lost := h.expectEvent(t, EventLost, ReasonHeartbeat)
			detected := lost.At.Sub(start)
			t.Logf("blackhole detected after %v (interval %v, timeout %v)", detected, interval, timeout)
			if limit := timeout + 500*time.Millisecond; detected > limit {
				t.Errorf("blackhole detected after %v, want at most %v", detected, limit)
			}
			lifted := time.Now()
			if !tc.clearInHook {
				// A new connection through the blackhole is never
				// confirmed.
				failed := h.expectEvent(t, EventLost, ReasonError)
				t.Logf("reconnect through the blackhole failed after %v", failed.At.Sub(lost.At))
				px.Clear()
				lifted = time.Now()
			}
			ev, invs := h.untilSynced(t)
			t.Logf("synced %v after the blackhole was lifted", ev.At.Sub(lifted))
			if ev.DropActive || ev.Replayed != 1 || len(invs) != 1 || invs[0] != missed {
				t.Fatalf("sync after the blackhole = %+v after %v, want %+v replayed and no DropActive", ev, invs, missed)
			}
			if st := h.sub.Stats(); st.HeartbeatFailures != 1 {
				t.Errorf("Stats().HeartbeatFailures = %d, want 1", st.HeartbeatFailures)
			}
		})
	}
}

// TestSubscriberHeartbeatFollowsClock runs a subscriber on a clock that
// moves only when the test moves it: a probe goes out only when that clock
// says one is due, and the times the subscriber reports are that clock's.
func TestSubscriberHeartbeatFollowsClock(t *testing.T) {
	const interval = 20 * time.Millisecond
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t)
	c := subCache(t, rdb, rediscache.Options{})
	clock := fakeclock.New()
	h := startSubscriber(t, c, Options{HeartbeatInterval: interval, HeartbeatTimeout: time.Second, Now: clock.Now}, nil)
	if ev := h.expectEvent(t, EventSynced, ReasonStart); !ev.At.Equal(clock.Now()) {
		t.Errorf("EventSynced.At = %v, want the clock's %v", ev.At, clock.Now())
	}

	// While the clock stands still no probe is due, however many
	// intervals pass on the system clock.
	h.expectQuiet(t, 5*interval)
	if st := h.sub.Stats(); st.HeartbeatsSent != 0 || st.LastHeartbeatUnixMs != 0 {
		t.Fatalf("Stats() with the clock standing still = %+v, want no probe", st)
	}

	// One interval on the clock: one probe, answered at the clock's time.
	clock.Advance(interval)
	poll := time.NewTicker(time.Millisecond) // no callback tells of an answer
	defer poll.Stop()
	timeout := time.After(subWait)
	for h.sub.Stats().LastHeartbeatUnixMs == 0 {
		select {
		case <-poll.C:
		case <-timeout:
			t.Fatalf("no probe answered within %v of the clock reaching the next probe", subWait)
		}
	}
	if st := h.sub.Stats(); st.HeartbeatsSent != 1 || st.LastHeartbeatUnixMs != clock.Now().UnixMilli() || st.HeartbeatFailures != 0 {
		t.Errorf("Stats() = %+v, want 1 probe sent, answered at %d, no failure", st, clock.Now().UnixMilli())
	}

	clock.Advance(time.Minute)
	h.expectInvalidation(t, mustRevoke(t, rdb, c.Layout(), session.Invalidation{SessionID: "dev-1"}, true))
	if st := h.sub.Stats(); st.LastMessageUnixMs != clock.Now().UnixMilli() {
		t.Errorf("Stats().LastMessageUnixMs = %d, want the clock's %d", st.LastMessageUnixMs, clock.Now().UnixMilli())
	}
}

// TestSubscriberWithoutHeartbeatMissesBlackhole is the control: without the
// heartbeat, neither go-redis nor the Subscriber notices a blackhole, and the
// revocation sent during it is silently lost.
func TestSubscriberWithoutHeartbeatMissesBlackhole(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	direct := srv.Client(t)
	px := toxitest.Start(t, srv.Addr)
	viaProxy := redis.NewClient(&redis.Options{Addr: px.Addr()})
	t.Cleanup(func() { _ = viaProxy.Close() })
	c := subCache(t, viaProxy, rediscache.Options{})

	h := startSubscriber(t, c, Options{HeartbeatInterval: -1}, nil)
	h.expectEvent(t, EventSynced, ReasonStart)
	px.Blackhole()
	mustRevoke(t, direct, c.Layout(), session.Invalidation{SessionID: "dev-lost"}, true)
	h.expectQuiet(t, 3*time.Second)
	if st := h.sub.Stats(); !st.Subscribed || st.HeartbeatsSent != 0 {
		t.Errorf("Stats() = %+v, want Subscribed and no probe", st)
	}
}

// malformedCorpus holds hostile and near-miss payloads, none of which
// ParseInvalidation accepts on a one-stripe layout.
func malformedCorpus() []string {
	return []string{
		"", "*", "?", "[a]", "{x}", "\x00", "\r\n", "\xff\xfe", "null", "{}", "[]", `"dev-1"`,
		strings.Repeat("a", 10_000),
		`{"session":"` + strings.Repeat("a", 10_000) + `"}`,
		`{"session":"*"}`, `{"session":"dev?"}`, `{"session":"[a]"}`, `{"session":"{x}"}`,
		`{"session":"a\u0000b"}`, `{"session":"a\r\nb"}`, "{\"session\":\"\xff\"}", `{"session":"a b"}`,
		`{"session":""}`, `{"user":""}`, `{"session":"dev-1","user":"u-1"}`, `{"session":1}`,
		`{"session":"dev-1","seq":0}`, `{"session":"dev-1","seq":-1}`, `{"session":"dev-1","seq":1.5}`,
		`{"session":"dev-1","seq":18446744073709551616}`, `{"session":"dev-1","stripe":1}`,
		`{"session":"dev-1","stripe":-1}`, `{"session":"dev-1","at_ms":-5}`,
		`{"session":"dev-1"} {"session":"dev-2"}`, `{"session":"dev-1"`, `{"session":"dev-1","status":"active"`,
		`{"status":"active","session_id":"dev-1"}`, `{"active":"dev-1"}`,
	}
}

// randomPayload returns random bytes, a soup of JSON tokens, or a mutated
// valid message.
func randomPayload(rng *rand.Rand) string {
	switch rng.IntN(3) {
	case 0:
		b := make([]byte, rng.IntN(1100))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return string(b)
	case 1:
		tokens := []string{"{", "}", "[", "]", `"`, ":", ",", "session", "user", "seq", "stripe", "at_ms", "dev-1", "1", "-1", "0", "null", " ", "\x00", "*"}
		var b strings.Builder
		for range rng.IntN(40) {
			b.WriteString(tokens[rng.IntN(len(tokens))])
		}
		return b.String()
	default:
		b := []byte(`{"session":"dev-1","seq":7,"stripe":0,"at_ms":1764415200000}`)
		for range 1 + rng.IntN(4) {
			i := rng.IntN(len(b))
			switch rng.IntN(3) {
			case 0:
				b[i] = byte(rng.UintN(256))
			case 1:
				b = append(b[:i], b[i+1:]...)
			default:
				b = append(b[:i], append([]byte{byte(rng.UintN(256))}, b[i:]...)...)
			}
		}
		return string(b)
	}
}

// accepted mirrors the Subscriber's rule for a one-stripe layout.
func accepted(payload string) (session.Invalidation, bool) {
	m, err := session.ParseInvalidation([]byte(payload))
	return m, err == nil && m.Stripe == 0
}

func TestSubscriberDropsMalformed(t *testing.T) {
	const seed = 20251129
	t.Logf("random payloads from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	payloads := malformedCorpus()
	for _, p := range payloads {
		if _, ok := accepted(p); ok {
			t.Fatalf("corpus entry %q is well-formed", p)
		}
	}
	for range 1000 {
		payloads = append(payloads, randomPayload(rng))
	}
	var want []session.Invalidation
	malformed := uint64(0)
	for _, p := range payloads {
		if m, ok := accepted(p); ok {
			want = append(want, m)
		} else {
			malformed++
		}
	}
	t.Logf("%d payloads, %d malformed", len(payloads), malformed)

	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t)
	c := subCache(t, rdb, rediscache.Options{})
	h := startSubscriber(t, c, Options{}, nil)
	h.expectEvent(t, EventSynced, ReasonStart)
	ctx := context.Background()
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, pl := range payloads {
			p.Publish(ctx, c.Layout().Channel(), pl)
		}
		return nil
	}); err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
	// A last, valid message marks the end.
	end := mustRevoke(t, rdb, c.Layout(), session.Invalidation{SessionID: "dev-end"}, true)
	want = append(want, end)

	var got []session.Invalidation
	for len(got) < len(want) {
		if it := h.next(t); !it.isEvent {
			got = append(got, it.inv)
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("invalidation %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if st := h.sub.Stats(); st.Malformed != malformed || st.Received != uint64(len(payloads))+1 {
		t.Errorf("Stats() = %+v, want Malformed %d, Received %d", st, malformed, len(payloads)+1)
	}
}

// FuzzSubscriberMessage feeds payloads to the message handler of a
// subscriber at position 0 whose log is empty: a well-formed message must
// reach OnInvalidation exactly once and unchanged, anything else never.
func FuzzSubscriberMessage(f *testing.F) {
	for _, p := range malformedCorpus() {
		f.Add(p)
	}
	for _, p := range []string{`{"session":"dev-123"}`, `{"user":"user-7","seq":1,"stripe":0,"at_ms":5}`, `{"session":"dev-1","seq":9}`} {
		f.Add(p)
	}
	mr := miniredis.RunT(f)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	f.Cleanup(func() { _ = rdb.Close() })
	c, err := rediscache.New(rdb, rediscache.Options{})
	if err != nil {
		f.Fatalf("New: %v", err)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		var got []session.Invalidation
		s, err := newSubscriber(c, Options{OnInvalidation: func(m session.Invalidation) { got = append(got, m) }})
		if err != nil {
			t.Fatalf("NewSubscriber: %v", err)
		}
		r := &runState{s: s, based: true, last: make([]uint64, 1), lastAt: make([]int64, 1)}
		if err := r.handle(context.Background(), payload); err != nil {
			t.Fatalf("handle(%q) = %v", payload, err)
		}
		m, ok := accepted(payload)
		switch {
		case ok && (len(got) != 1 || got[0] != m):
			t.Errorf("handle(%q) passed on %+v, want [%+v]", payload, got, m)
		case !ok && (len(got) != 0 || s.Stats().Malformed != 1):
			t.Errorf("handle(%q) passed on %+v, Malformed %d; want nothing, Malformed 1", payload, got, s.Stats().Malformed)
		}
	})
}

func TestSubscriberRunEndsPromptly(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := subCache(t, srv.Client(t), rediscache.Options{})
	ignore := goleak.IgnoreCurrent()

	items := make(chan Event, 16)
	// Without heartbeats a receive waits a minute: only closing the
	// connection on cancel can end Run promptly.
	s, err := newSubscriber(c, Options{
		OnInvalidation:    func(session.Invalidation) {},
		OnEvent:           func(ev Event) { items <- ev },
		HeartbeatInterval: -1,
	})
	if err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case ev := <-items:
		if ev.Kind != EventSynced {
			t.Fatalf("first event = %+v, want EventSynced", ev)
		}
	case <-time.After(subWait):
		t.Fatalf("no event within %v", subWait)
	}
	if err := s.Run(ctx); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("second concurrent Run() = %v, want an error", err)
	}

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want %v", err, context.Canceled)
		}
	case <-time.After(subWait):
		t.Fatalf("Run did not return within %v of cancel", subWait)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("Run returned %v after cancel, want at most 500ms", took)
	}
	if s.Stats().Subscribed {
		t.Errorf("Stats().Subscribed = true after Run returned")
	}
	goleak.VerifyNone(t, ignore)
}

func TestNewOptions(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	c := subCache(t, rdb, rediscache.Options{})
	noop := func(session.Invalidation) {}
	tests := []struct {
		name         string
		opts         Options
		wantErr      bool
		wantInterval time.Duration
		wantTimeout  time.Duration
	}{
		{"defaults", Options{OnInvalidation: noop}, false, DefaultHeartbeatInterval, 3 * DefaultHeartbeatInterval},
		{"timeout from interval", Options{OnInvalidation: noop, HeartbeatInterval: time.Second}, false, time.Second, 3 * time.Second},
		{"explicit", Options{OnInvalidation: noop, HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond}, false, 100 * time.Millisecond, 300 * time.Millisecond},
		{"heartbeat off", Options{OnInvalidation: noop, HeartbeatInterval: -1}, false, -1, 0},
		{"name", Options{OnInvalidation: noop, Name: "gw-1:invalidations"}, false, DefaultHeartbeatInterval, 3 * DefaultHeartbeatInterval},
		{"no OnInvalidation", Options{}, true, 0, 0},
		{"negative timeout", Options{OnInvalidation: noop, HeartbeatTimeout: -1}, true, 0, 0},
		{"timeout without heartbeat", Options{OnInvalidation: noop, HeartbeatInterval: -1, HeartbeatTimeout: time.Second}, true, 0, 0},
		{"name with a space", Options{OnInvalidation: noop, Name: "gw 1"}, true, 0, 0},
		{"name with a newline", Options{OnInvalidation: noop, Name: "gw\n1"}, true, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSubscriber(c, tc.opts)
			if tc.wantErr {
				if err == nil || !strings.HasPrefix(err.Error(), "subscriber: ") {
					t.Fatalf("New(%+v) error = %v, want a subscriber error", tc.opts, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%+v) = %v", tc.opts, err)
			}
			if s.opts.HeartbeatInterval != tc.wantInterval || s.opts.HeartbeatTimeout != tc.wantTimeout {
				t.Errorf("heartbeat = %v/%v, want %v/%v", s.opts.HeartbeatInterval, s.opts.HeartbeatTimeout, tc.wantInterval, tc.wantTimeout)
			}
		})
	}
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[EventKind]string{EventLost: "lost", EventSynced: "synced", 0: "EventKind(0)"} {
		if got := k.String(); got != want {
			t.Errorf("EventKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func ExampleSubscriber() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	c, err := rediscache.New(rdb, rediscache.Options{})
	if err != nil {
		panic(err)
	}

	synced := make(chan struct{})
	revoked := make(chan struct{})
	sub, err := newSubscriber(c, Options{
		Name: "gateway-1",
		OnInvalidation: func(m session.Invalidation) {
			fmt.Println("revoke session", m.SessionID)
			close(revoked)
		},
		OnEvent: func(ev Event) {
			fmt.Println(ev.Kind, ev.Reason, "drop_active:", ev.DropActive)
			if ev.Kind == EventSynced {
				close(synced)
			}
		},
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- sub.Run(ctx) }()

	<-synced
	// What an on-call engineer types into redis-cli.
	rdb.Publish(ctx, "session_invalidation", `{"session":"dev-123"}`)
	<-revoked
	cancel()
	fmt.Println(<-done)
	// Output:
	// synced start drop_active: true
	// revoke session dev-123
	// context canceled
}

// BenchmarkSubscriberHandle measures the per-message path for an
// in-sequence message; allocs/op is the figure that matters.
func BenchmarkSubscriberHandle(b *testing.B) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	b.Cleanup(func() { _ = rdb.Close() })
	c, err := rediscache.New(rdb, rediscache.Options{})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	s, err := newSubscriber(c, Options{OnInvalidation: func(session.Invalidation) {}})
	if err != nil {
		b.Fatalf("NewSubscriber: %v", err)
	}
	r := &runState{s: s, based: true, last: make([]uint64, 1), lastAt: make([]int64, 1)}
	payloads := make([]string, 1024)
	for i := range payloads {
		payloads[i] = fmt.Sprintf(`{"session":"dev-%d","seq":%d,"stripe":0,"at_ms":1764415200000}`, i, i+1)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%len(payloads) == 0 {
			r.last[0] = 0
		}
		if err := r.handle(ctx, payloads[i%len(payloads)]); err != nil {
			b.Fatal(err)
		}
	}
	if s.Stats().Gaps != 0 {
		b.Fatalf("Gaps = %d, want 0", s.Stats().Gaps)
	}
}

func TestSubscriberForgedSequenceIsNotAResync(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t)
	c := subCache(t, rdb, rediscache.Options{})
	l := c.Layout()
	h := startSubscriber(t, c, Options{}, nil)
	h.expectEvent(t, EventSynced, ReasonStart)
	h.expectInvalidation(t, mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-1"}, true))

	ctx := context.Background()
	forged := []session.Invalidation{
		{SessionID: "dev-x", Seq: 1000, Stripe: 0},                                           // a number never assigned
		{SessionID: "dev-y", Seq: 1, Stripe: 0, AtMS: time.Now().Add(time.Hour).UnixMilli()}, // "the counter started again"
	}
	for i, m := range forged {
		b, _ := m.MarshalJSON()
		if err := rdb.Publish(ctx, l.Channel(), b).Err(); err != nil {
			t.Fatal(err)
		}
		// Applied as a revocation at once: no EventLost, no resync.
		h.expectInvalidation(t, m)
		if st := h.sub.Stats(); st.Forged != uint64(i+1) || st.Gaps != 0 || st.DropActive != 1 {
			t.Fatalf("after forged message %d: Stats() = %+v, want Forged %d, Gaps 0, DropActive 1 (the start)", i, st, i+1)
		}
	}
	// The position did not move: the next real revocation is in sequence.
	h.expectInvalidation(t, mustRevoke(t, rdb, l, session.Invalidation{SessionID: "dev-2"}, true))
}

func TestSubscriberBacklogIsNotAHeartbeatFailure(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t)
	c := subCache(t, rdb, rediscache.Options{})
	l := c.Layout()
	const n = 20
	var got atomic.Int64
	done := make(chan struct{})
	synced := make(chan struct{}, 1)
	var lost atomic.Int64
	sub, err := newSubscriber(c, Options{
		HeartbeatInterval: 50 * time.Millisecond,
		HeartbeatTimeout:  150 * time.Millisecond,
		OnInvalidation: func(session.Invalidation) {
			time.Sleep(40 * time.Millisecond) // a slow consumer: the backlog outlasts HeartbeatTimeout
			if got.Add(1) == n {
				close(done)
			}
		},
		OnEvent: func(e Event) {
			switch e.Kind {
			case EventLost:
				lost.Add(1)
			case EventSynced:
				select {
				case synced <- struct{}{}:
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- sub.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	<-synced
	for i := range n {
		mustRevoke(t, rdb, l, session.Invalidation{SessionID: fmt.Sprintf("dev-%d", i)}, true)
	}
	select {
	case <-done:
	case <-time.After(subWait):
		t.Fatalf("%d of %d invalidations delivered within %v", got.Load(), n, subWait)
	}
	if st := sub.Stats(); lost.Load() != 0 || st.HeartbeatFailures != 0 {
		t.Fatalf("a backlog of %d × 40 ms: %d losses, Stats() = %+v; want no heartbeat failure while messages keep arriving", n, lost.Load(), st)
	}
}

// A subscriber that has seen no invalidation holds position 0, which no log
// entry anchors: after a loss during which Redis lost its data and numbered
// new invalidations from 1 again, the log looks intact from there. The
// resync must drop L1's active entries rather than replay.
func TestSubscriberDropsFromUnanchoredPosition(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t)
	c := subCache(t, rdb, rediscache.Options{})
	ctx := context.Background()
	hook := oneShot(func(string) {
		if _, err := c.RevokeSession(ctx, "dev-lost"); err != nil {
			t.Errorf("RevokeSession: %v", err)
		}
		if err := rdb.FlushAll(ctx).Err(); err != nil { // Redis restarted empty
			t.Errorf("FLUSHALL: %v", err)
		}
		if _, err := c.RevokeSession(ctx, "dev-after"); err != nil {
			t.Errorf("RevokeSession: %v", err)
		}
	})
	h := startSubscriber(t, c, Options{}, hook)
	h.expectEvent(t, EventSynced, ReasonStart)
	if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
	}
	h.expectEvent(t, EventLost, ReasonReconnect)
	if ev, _ := h.untilSynced(t); !ev.DropActive {
		t.Fatalf("resync from position 0 = %+v, want DropActive", ev)
	}
}

// newSubscriber returns a Subscriber of c's channel on c's client, with c's
// call timeout and log length.
func newSubscriber(c *rediscache.Cache, opts Options) (*Subscriber, error) {
	o := c.Options()
	opts.CallTimeout, opts.LogMaxLen = o.CallTimeout, o.LogMaxLen
	return New(c.Client(), c.Layout(), opts)
}
