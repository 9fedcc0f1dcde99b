package rediscache

import (
	"context"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/session"
)

// TestFillIndexesWhatItWrites checks that the fill script indexes an
// active record of a user in the index of the session's stripe, with the
// record's TTL, and a record it does not write active not at all, so that
// a user-wide revocation finds every active record Fill wrote. The index
// and the record are written by one script: a data loss (a restart, a
// failover) takes both or neither.
func TestFillIndexesWhatItWrites(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()
		if _, err := c.Fill(ctx, activeRecord("dev-i1", "user-i")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RevokeSession(ctx, "dev-i2"); err != nil {
			t.Fatal(err)
		}
		if rec, err := c.Fill(ctx, activeRecord("dev-i2", "user-i")); err != nil || rec.Status != session.StatusRevoked {
			t.Fatalf("Fill over a revoked record = %s, %v; want revoked", fmtRecord(rec), err)
		}
		members := r.rdb.SMembers(ctx, "user:user-i:sessions").Val()
		if len(members) != 1 || members[0] != "dev-i1" {
			t.Errorf("user:user-i:sessions = %v, want [dev-i1]", members)
		}
		if ttl := r.rdb.PTTL(ctx, "user:user-i:sessions").Val(); ttl < DefaultSessionTTL-time.Minute {
			t.Errorf("PTTL of the index = %v, want about %v", ttl, DefaultSessionTTL)
		}
		_, ids, err := c.RevokeUser(ctx, "user-i")
		if err != nil || len(ids) != 1 || ids[0] != "dev-i1" {
			t.Fatalf("RevokeUser = %v, %v; want [dev-i1]", ids, err)
		}
		if got, err := c.Get(ctx, "dev-i1"); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("Get after RevokeUser = %s, %v; want revoked", fmtRecord(got), err)
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
