package rediscache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
)

// clusterStripes is the stripe count of the cluster tests: at least 4 × the
// three masters, as Options.Stripes advises.
const clusterStripes = 16

// idOnStripe returns the first id prefix-<n> that lands on stripe k.
func idOnStripe(l Layout, prefix string, k int) string {
	for n := 0; ; n++ {
		if id := prefix + "-" + strconv.Itoa(n); l.Stripe(id) == k {
			return id
		}
	}
}

// masterOf returns the address of the master serving key.
func masterOf(t *testing.T, c *redistest.Cluster, key string) string {
	t.Helper()
	return c.MasterForSlot(keySlot(key)).Addr
}

// scriptRecorder records every script call a client makes, with its
// outcome.
type scriptRecorder struct{ commandCounter }

// scripts returns the EVAL and EVALSHA commands recorded since the last
// call, except EVALSHA answered NOSCRIPT (go-redis then retries with EVAL).
func (r *scriptRecorder) scripts() []redis.Cmder {
	var out []redis.Cmder
	for _, cmd := range r.take() {
		name := strings.ToLower(fmt.Sprint(cmd.Args()[0]))
		if (name == "eval" || name == "evalsha") && !redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			out = append(out, cmd)
		}
	}
	return out
}

// scriptKeys returns the KEYS of an EVAL or EVALSHA command.
func scriptKeys(cmd redis.Cmder) []string {
	args := cmd.Args()
	n, _ := strconv.Atoi(fmt.Sprint(args[2]))
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint(args[3+i])
	}
	return keys
}

// TestCluster runs the layout's promises on a real three-master Redis
// Cluster with 16 stripes: the stripes spread over every master, every
// script runs (no CROSSSLOT), a user-wide revocation whose user and sessions
// live on different masters keeps the fill race closed, sequence numbers
// and gap detection work per stripe, and a slot migration moves a stripe
// without disturbing the subscriber. One cluster serves every subtest.
func TestCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{})
	rdb := cluster.FollowingClient(t)
	rec := &scriptRecorder{}
	rdb.AddHook(rec)
	c := newCache(t, rdb, Options{Stripes: clusterStripes})
	l := c.Layout()
	ctx := context.Background()

	t.Run("StripesSpreadOverEveryMaster", func(t *testing.T) {
		masters := map[string][]int{}
		for k := range clusterStripes {
			if keySlot(l.SeqKey(k)) != keySlot(l.LogKey(k)) {
				t.Fatalf("stripe %d: %s and %s are in different slots", k, l.SeqKey(k), l.LogKey(k))
			}
			a := masterOf(t, cluster, l.SeqKey(k))
			masters[a] = append(masters[a], k)
		}
		if len(masters) != 3 {
			t.Fatalf("16 stripes land on %d masters (%v), want 3", len(masters), masters)
		}
		for a, ks := range masters {
			t.Logf("master %s serves stripes %v", a, ks)
		}
	})

	t.Run("EveryScriptTouchesOneSlot", func(t *testing.T) {
		// A raw subscriber on a node other than the one that numbers the
		// user's message: PUBLISH from a script on any master reaches it
		// over the bus.
		const uid = "user-cross"
		var far string
		for _, a := range cluster.Addrs() {
			if a != masterOf(t, cluster, l.SeqKey(l.Stripe(uid))) {
				far = a
				break
			}
		}
		ps := subscribe(t, newClient(t, far), l.Channel())
		rec.take()

		var ids []string
		for k := range clusterStripes {
			for j := range 2 {
				ids = append(ids, idOnStripe(l, fmt.Sprintf("dev-x%d", j), k))
			}
		}
		for _, id := range ids {
			if _, err := c.Fill(ctx, activeRecord(id, uid)); err != nil {
				t.Fatalf("Fill(%s): %v", id, err)
			}
			if got, err := c.Get(ctx, id); err != nil || got.Status != session.StatusActive {
				t.Fatalf("Get(%q) = %s, %v; want active", id, fmtRecord(got), err)
			}
		}
		perStripe := map[int]uint64{}
		for _, id := range ids[:clusterStripes] {
			m, err := c.RevokeSession(ctx, id)
			if err != nil {
				t.Fatalf("RevokeSession(%q): %v", id, err)
			}
			perStripe[m.Stripe]++
			if m.Seq != perStripe[m.Stripe] {
				t.Errorf("RevokeSession(%q) = seq %d on stripe %d, want %d", id, m.Seq, m.Stripe, perStripe[m.Stripe])
			}
			if got, want := receive(t, ps), marshal(t, m); got != want {
				t.Fatalf("subscriber on %s received %s, want %s", far, got, want)
			}
		}
		um, revoked, err := c.RevokeUser(ctx, uid)
		if err != nil {
			t.Fatalf("RevokeUser(%q): %v", uid, err)
		}
		slices.Sort(revoked)
		if want := slices.Sorted(slices.Values(ids)); !slices.Equal(revoked, want) {
			t.Fatalf("RevokeUser(%q) revoked %v, want %v", uid, revoked, want)
		}
		// The user message alone: the sessions, on every master, are
		// marked revoked without a message each.
		if got, want := receive(t, ps), marshal(t, um); got != want {
			t.Fatalf("RevokeUser published %s, want %s", got, want)
		}
		if msg, err := ps.ReceiveTimeout(ctx, 100*time.Millisecond); err == nil {
			t.Fatalf("RevokeUser published %v after the user message, want nothing", msg)
		}
		for _, id := range ids {
			if got, err := c.Get(ctx, id); err != nil || got.Status != session.StatusRevoked {
				t.Fatalf("Get(%q) after RevokeUser = %s, %v; want revoked", id, fmtRecord(got), err)
			}
		}

		scripts := rec.scripts()
		// 1 per fill, 16 revocations, and for the user revocation the
		// marker and one marking its sessions per stripe, and the message.
		if want := len(ids) + clusterStripes + 2*clusterStripes + 1; len(scripts) != want {
			t.Errorf("recorded %d script calls, want %d", len(scripts), want)
		}
		slotsUsed := map[int]bool{}
		for _, cmd := range scripts {
			keys := scriptKeys(cmd)
			if err := cmd.Err(); err != nil {
				t.Errorf("script on keys %v: %v", keys, err)
			}
			for _, k := range keys[1:] {
				if keySlot(k) != keySlot(keys[0]) {
					t.Errorf("script keys %v span slots %d and %d", keys, keySlot(keys[0]), keySlot(k))
				}
			}
			slotsUsed[keySlot(keys[0])] = true
		}
		if len(slotsUsed) != clusterStripes {
			t.Errorf("scripts used %d slots, want %d (one per stripe)", len(slotsUsed), clusterStripes)
		}

		// The control: the cluster does refuse a script whose keys span
		// two stripes, so the absence of errors above means something.
		a, b := idOnStripe(l, "dev-c", 0), idOnStripe(l, "dev-c", 1)
		err = rdb.Eval(ctx, "return redis.call('EXISTS', KEYS[1], KEYS[2])", []string{l.SessionKey(a), l.SessionKey(b)}).Err()
		if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
			t.Fatalf("a script over %s and %s = %v, want CROSSSLOT", l.SessionKey(a), l.SessionKey(b), err)
		}
	})

	t.Run("UserRevocationKeepsFillRaceClosedOnEveryStripe", func(t *testing.T) {
		const runs = 100
		for i := range runs {
			uid := fmt.Sprintf("user-race%d", i)
			id := idOnStripe(l, fmt.Sprintf("dev-race%d", i), i%clusterStripes)
			// The fill and the user-wide revocation at once: whichever of
			// the fill script and the revocation's step on the session's
			// stripe runs first, Redis must not end with the session active.
			start := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				<-start
				_, err := c.Fill(ctx, activeRecord(id, uid))
				done <- err
			}()
			close(start)
			if _, _, err := c.RevokeUser(ctx, uid); err != nil {
				t.Fatalf("run %d: RevokeUser(%q): %v", i, uid, err)
			}
			if err := <-done; err != nil && !errors.Is(err, ErrFillRefused) {
				t.Fatalf("run %d: Fill: %v", i, err)
			}
			if got, err := c.Get(ctx, id); err == nil && got.Status == session.StatusActive {
				t.Fatalf("run %d: Get(%q) after Fill racing RevokeUser = %s, want revoked or not found", i, id, fmtRecord(got))
			}
			// A fill after the user-wide revocation is refused on every
			// stripe, and writes nothing.
			late := idOnStripe(l, fmt.Sprintf("dev-late%d", i), (i+1)%clusterStripes)
			if r, err := c.Fill(ctx, activeRecord(late, uid)); !errors.Is(err, ErrFillRefused) {
				t.Fatalf("run %d: Fill after RevokeUser = %s, %v; want ErrFillRefused", i, fmtRecord(r), err)
			}
			if _, err := c.Get(ctx, late); !errors.Is(err, session.ErrNotFound) {
				t.Fatalf("run %d: Get(%q) after a refused fill = %v, want not found", i, late, err)
			}
		}
	})
}
