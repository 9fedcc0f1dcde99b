package rediscache

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/galaxy-game/sessioncache/session"
)

// TestFillAfterIndexLossNeverStaysActive loses Redis' data between Fill's
// index step and its write (a restart that empties Redis, as found by the
// chaos histories): the active record would be unindexed, and a later
// user-wide revocation would not revoke it. Fill must take it back out and
// return ErrFillRefused, so that after RevokeUser the session is never
// active in Redis.
func TestFillAfterIndexLossNeverStaysActive(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()
		lose := func() {
			if r.real() {
				r.srv.Restart()
			} else {
				r.mr.FlushAll()
			}
		}
		for i := range 3 {
			id, uid := fmt.Sprintf("dev-lost%d", i), fmt.Sprintf("user-lost%d", i)
			c.store.hookAfterIndex = lose
			rec, err := c.Fill(ctx, activeRecord(id, uid))
			c.store.hookAfterIndex = nil
			if !errors.Is(err, ErrFillRefused) {
				t.Fatalf("Fill across a data loss = %s, %v; want ErrFillRefused", fmtRecord(rec), err)
			}
			if h := r.rdb.HGetAll(ctx, "session:"+id).Val(); len(h) != 0 {
				t.Fatalf("session hash after the refused fill = %v, want none", h)
			}
			if _, _, err := c.RevokeUser(ctx, uid); err != nil {
				t.Fatalf("RevokeUser: %v", err)
			}
			if got, err := c.Get(ctx, id); err == nil && got.Status == session.StatusActive {
				t.Fatalf("Get after RevokeUser = %s, want not active", fmtRecord(got))
			}
		}
		// An ordinary fill keeps its record.
		if rec, err := c.Fill(ctx, activeRecord("dev-kept", "user-kept")); err != nil || rec.Status != session.StatusActive {
			t.Fatalf("Fill without a loss = %s, %v; want active", fmtRecord(rec), err)
		}
	})
}

// TestUnfillKeepsRevoked checks the take-back script alone: it removes an
// active record and leaves a revoked one.
func TestUnfillKeepsRevoked(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()
		if _, err := c.Fill(ctx, activeRecord("dev-u1", "user-u")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RevokeSession(ctx, "dev-u2"); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			id      string
			removed int
		}{{"dev-u1", 1}, {"dev-u2", 0}} {
			n, err := unfillScript.Run(ctx, r.rdb, []string{"session:" + tc.id}).Int()
			if err != nil || n != tc.removed {
				t.Errorf("unfill(%s) = %d, %v; want %d", tc.id, n, err, tc.removed)
			}
		}
		if s := r.rdb.HGet(ctx, "session:dev-u2", "status").Val(); s != "revoked" {
			t.Errorf("status of the revoked session after unfill = %q, want revoked", s)
		}
		if n := r.rdb.Exists(ctx, "session:dev-u1").Val(); n != 0 {
			t.Errorf("EXISTS of the active session after unfill = %d, want 0", n)
		}
	})
}

// TestUnfill checks Unfill over several records at once: active ones are
// taken back, revoked ones stay, an invalid id is skipped, and it works on
// a Redis that has just lost its script cache (a restart).
func TestUnfill(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()
		for _, id := range []string{"dev-x1", "dev-x2", "dev-x3"} {
			if _, err := c.Fill(ctx, activeRecord(id, "user-x")); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.RevokeSession(ctx, "dev-x3"); err != nil {
			t.Fatal(err)
		}
		if err := r.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		n, err := c.Unfill(ctx, []string{"dev-x1", "dev-x3", "not valid!", "dev-missing"})
		if err != nil || n != 1 {
			t.Fatalf("Unfill = %d, %v; want 1, nil", n, err)
		}
		for id, want := range map[string]string{"dev-x1": "", "dev-x2": "active", "dev-x3": "revoked"} {
			if got := r.rdb.HGet(ctx, "session:"+id, "status").Val(); got != want {
				t.Errorf("status of %s after Unfill = %q, want %q", id, got, want)
			}
		}
	})
}
