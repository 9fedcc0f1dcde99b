package rediscache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
)

// testRedis is one Redis a test runs against: miniredis or a real
// redis-server.
type testRedis struct {
	rdb *redis.Client
	mr  *miniredis.Miniredis // nil on redis-server
	srv *redistest.Server    // nil on miniredis
}

func (r testRedis) real() bool { return r.srv != nil }

// eachRedis runs f in one subtest on a fresh miniredis and in one on a fresh
// redis-server.
func eachRedis(t *testing.T, f func(t *testing.T, r testRedis)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		f(t, testRedis{rdb: newClient(t, mr.Addr()), mr: mr})
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		f(t, testRedis{rdb: newClient(t, srv.Addr), srv: srv})
	})
}

func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testCallTimeout is newCache's CallTimeout when opts leaves it zero: a
// loaded machine running -race can hold a call past the 250 ms default, and
// a test not about timeouts must not fail on one. Tests of timeouts set
// their own.
const testCallTimeout = 2 * time.Second

func newCache(t testing.TB, rdb redis.UniversalClient, opts Options) *Cache {
	t.Helper()
	if opts.CallTimeout == 0 {
		opts.CallTimeout = testCallTimeout
	}
	c, err := New(rdb, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// keyOf returns a valid public key derived from seed.
func keyOf(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func activeRecord(id, userID string) session.Record {
	return session.Record{DeviceSessionID: id, UserID: userID, ClientPublicKey: keyOf(id), Status: session.StatusActive}
}

func ptr(v int64) *int64 { return &v }

func sameRecord(a, b session.Record) bool {
	if a.DeviceSessionID != b.DeviceSessionID || a.UserID != b.UserID ||
		a.ClientPublicKey != b.ClientPublicKey || a.Status != b.Status {
		return false
	}
	if (a.RevokedAtMS == nil) != (b.RevokedAtMS == nil) {
		return false
	}
	return a.RevokedAtMS == nil || *a.RevokedAtMS == *b.RevokedAtMS
}

func fmtRecord(r session.Record) string {
	at := "nil"
	if r.RevokedAtMS != nil {
		at = strconv.FormatInt(*r.RevokedAtMS, 10)
	}
	return fmt.Sprintf("{%s %s %s %s at=%s}", r.DeviceSessionID, r.UserID, r.ClientPublicKey, r.Status, at)
}

func TestFillGetRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  session.Record
	}{
		{"active", activeRecord("dev-1", "user-1")},
		{"revoked with time", session.Record{DeviceSessionID: "dev-2", UserID: "user-1", ClientPublicKey: keyOf("dev-2"),
			Status: session.StatusRevoked, RevokedAtMS: ptr(1764415200000)}},
		{"revoked without time", session.Record{DeviceSessionID: "dev-3", UserID: "user-1", ClientPublicKey: keyOf("dev-3"),
			Status: session.StatusRevoked}},
		{"tombstone", session.Record{DeviceSessionID: "dev-4", Status: session.StatusRevoked, RevokedAtMS: ptr(5)}},
	}
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := c.Fill(ctx, tt.rec)
				if err != nil || !sameRecord(got, tt.rec) {
					t.Fatalf("Fill(%s) = %s, %v; want %s, nil", fmtRecord(tt.rec), fmtRecord(got), err, fmtRecord(tt.rec))
				}
				got, err = c.Get(ctx, tt.rec.DeviceSessionID)
				if err != nil || !sameRecord(got, tt.rec) {
					t.Fatalf("Get(%q) = %s, %v; want %s, nil", tt.rec.DeviceSessionID, fmtRecord(got), err, fmtRecord(tt.rec))
				}
			})
		}
		if _, err := c.Get(ctx, "dev-missing"); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("Get(%q) error = %v, want ErrNotFound", "dev-missing", err)
		}
		if _, err := c.Lookup(ctx, "dev-1"); err != nil {
			t.Errorf("Lookup(%q) = %v, want nil error", "dev-1", err)
		}
		// A key of the wrong type is an error, never a record and never
		// "not found"; a hash with a hand-typed status is revoked.
		r.rdb.Set(ctx, "session:dev-string", "active", 0)
		if got, err := c.Get(ctx, "dev-string"); err == nil || errors.Is(err, session.ErrNotFound) || got != (session.Record{}) {
			t.Errorf("Get(%q) = %s, %v; want an error other than ErrNotFound", "dev-string", fmtRecord(got), err)
		}
		r.rdb.HSet(ctx, "session:dev-corrupt", "status", "actve", "user_id", "user-1")
		if got, err := c.Get(ctx, "dev-corrupt"); err != nil || got.Status != session.StatusRevoked {
			t.Errorf("Get(%q) = %s, %v; want revoked, nil", "dev-corrupt", fmtRecord(got), err)
		}
		if got, err := c.Fill(ctx, activeRecord("dev-string", "user-1")); err == nil {
			t.Errorf("Fill over a string key = %s, nil; want an error", fmtRecord(got))
		}
	})
}

func TestFillActiveRenewsOnlyWhenActive(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{SessionTTL: time.Hour})
		ctx := context.Background()
		rec := activeRecord("dev-1", "user-1")
		r.rdb.HSet(ctx, "session:dev-1", "status", "active", "user_id", "user-1", "client_public_key", rec.ClientPublicKey)
		if _, err := c.Fill(ctx, rec); err != nil {
			t.Fatalf("Fill: %v", err)
		}
		if p := r.rdb.PTTL(ctx, "session:dev-1").Val(); p <= 59*time.Minute || p > time.Hour {
			t.Errorf("PTTL session:dev-1 = %v, want about 1h", p)
		}
		// A revoked_at_ms beside "active" (hand-written) reads as revoked,
		// so an active fill keeps it revoked and writes the status so.
		r.rdb.HSet(ctx, "session:dev-2", "status", "active", "revoked_at_ms", "7")
		got, err := c.Fill(ctx, activeRecord("dev-2", "user-1"))
		if err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("Fill over active with revoked_at_ms = %s, %v; want revoked", fmtRecord(got), err)
		}
		if h := r.rdb.HGetAll(ctx, "session:dev-2").Val(); h["status"] != "revoked" || h["revoked_at_ms"] != "7" {
			t.Errorf("HGETALL session:dev-2 = %v, want status revoked, revoked_at_ms 7", h)
		}
	})
}

// TestFillKeepsHandTypedRevocations checks that a fill never writes
// "active" over a hash whose status is anything but exactly "active", as
// an operator's typo leaves it, and that Get serves such a hash revoked.
func TestFillKeepsHandTypedRevocations(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{SessionTTL: time.Hour})
		ctx := context.Background()
		for i, edit := range [][]any{
			{"status", "Revoked"}, {"status", "REVOKED"}, {"status", "revokd"}, {"status", ""},
			{"status", "revoked", "revoked_at_ms", "notanumber"}, {"user_id", "user-1"},
		} {
			id := fmt.Sprintf("dev-typo-%d", i)
			r.rdb.HSet(ctx, "session:"+id, edit...)
			got, err := c.Get(ctx, id)
			if err != nil || got.Status != session.StatusRevoked {
				t.Errorf("Get(%q) after HSET %v = %s, %v; want revoked", id, edit, fmtRecord(got), err)
			}
			got, err = c.Fill(ctx, activeRecord(id, "user-1"))
			if err != nil || got.Status != session.StatusRevoked {
				t.Errorf("Fill(%q) after HSET %v = %s, %v; want revoked", id, edit, fmtRecord(got), err)
			}
			if st := r.rdb.HGet(ctx, "session:"+id, "status").Val(); st != "revoked" {
				t.Errorf("HGET session:%s status after the fill = %q, want revoked", id, st)
			}
		}
		if n := c.Stats().Irregular; n != 6 {
			t.Errorf("Stats().Irregular = %d, want 6", n)
		}
	})
}

// TestKeyLayout checks the documented key names, hash fields and a TTL on
// every key written.
func TestKeyLayout(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{Prefix: "env1:"})
		ctx := context.Background()
		rec := activeRecord("dev-1", "user-7")
		if _, err := c.Fill(ctx, rec); err != nil {
			t.Fatalf("Fill: %v", err)
		}
		h, err := r.rdb.HGetAll(ctx, "env1:session:dev-1").Result()
		want := map[string]string{"user_id": "user-7", "client_public_key": rec.ClientPublicKey, "status": "active"}
		if err != nil || fmt.Sprint(h) != fmt.Sprint(want) {
			t.Fatalf("HGETALL env1:session:dev-1 = %v, %v; want %v", h, err, want)
		}
		if m := r.rdb.SMembers(ctx, "env1:user:user-7:sessions").Val(); len(m) != 1 || m[0] != "dev-1" {
			t.Errorf("SMEMBERS env1:user:user-7:sessions = %v, want [dev-1]", m)
		}
		msg, err := c.RevokeSession(ctx, "dev-1")
		if err != nil {
			t.Fatalf("RevokeSession: %v", err)
		}
		h = r.rdb.HGetAll(ctx, "env1:session:dev-1").Val()
		want = map[string]string{"user_id": "user-7", "client_public_key": rec.ClientPublicKey, "status": "revoked",
			"revoked_at_ms": strconv.FormatInt(msg.AtMS, 10), "seq": strconv.FormatUint(msg.Seq, 10)}
		if fmt.Sprint(h) != fmt.Sprint(want) {
			t.Errorf("HGETALL env1:session:dev-1 after revoke = %v, want %v", h, want)
		}
		if _, _, err := c.RevokeUser(ctx, "user-7"); err != nil {
			t.Fatalf("RevokeUser: %v", err)
		}
		if v := r.rdb.Get(ctx, "env1:user:user-7:revoked_at_ms").Val(); len(v) < 13 || strings.ContainsAny(v, ".e+") {
			t.Errorf("GET env1:user:user-7:revoked_at_ms = %q, want decimal ms", v)
		}
		if v := r.rdb.Get(ctx, "env1:session_invalidation:seq").Val(); v != "2" {
			t.Errorf("GET env1:session_invalidation:seq = %q, want 2 (session, user)", v)
		}
		for _, key := range []string{
			"env1:session:dev-1",
			"env1:user:user-7:sessions",
			"env1:user:user-7:revoked_at_ms",
			"env1:session_invalidation:seq",
			"env1:session_invalidation:log",
		} {
			if p, err := r.rdb.PTTL(ctx, key).Result(); err != nil || p <= 0 {
				t.Errorf("PTTL %s = %v, %v; want > 0", key, p, err)
			}
		}
		if keys := r.rdb.Keys(ctx, "*").Val(); len(keys) != 5 {
			t.Errorf("KEYS * = %v, want the 5 keys above", keys)
		}
	})
}

// TestFillNeverOverwritesRevoked is invariant 1 in Redis: an active fill
// leaves a revoked record revoked.
func TestFillNeverOverwritesRevoked(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()

		t.Run("revoked record", func(t *testing.T) {
			rec := activeRecord("dev-1", "user-1")
			if _, err := c.Fill(ctx, rec); err != nil {
				t.Fatalf("Fill: %v", err)
			}
			msg, err := c.RevokeSession(ctx, "dev-1")
			if err != nil {
				t.Fatalf("RevokeSession: %v", err)
			}
			got, err := c.Fill(ctx, rec)
			want := rec.Revoked(msg.AtMS)
			if err != nil || !sameRecord(got, want) {
				t.Fatalf("Fill(active over revoked) = %s, %v; want %s, nil", fmtRecord(got), err, fmtRecord(want))
			}
			if s := r.rdb.HGet(ctx, "session:dev-1", "status").Val(); s != "revoked" {
				t.Errorf("HGET session:dev-1 status = %q, want revoked", s)
			}
		})

		t.Run("tombstone is completed", func(t *testing.T) {
			msg, err := c.RevokeSession(ctx, "dev-2")
			if err != nil {
				t.Fatalf("RevokeSession: %v", err)
			}
			tomb, err := c.Get(ctx, "dev-2")
			wantTomb := session.Record{DeviceSessionID: "dev-2", Status: session.StatusRevoked, RevokedAtMS: ptr(msg.AtMS)}
			if err != nil || !sameRecord(tomb, wantTomb) {
				t.Fatalf("Get(tombstone) = %s, %v; want %s", fmtRecord(tomb), err, fmtRecord(wantTomb))
			}
			rec := activeRecord("dev-2", "user-2")
			got, err := c.Fill(ctx, rec)
			want := rec.Revoked(msg.AtMS)
			if err != nil || !sameRecord(got, want) {
				t.Fatalf("Fill(active over tombstone) = %s, %v; want %s, nil", fmtRecord(got), err, fmtRecord(want))
			}
			h := r.rdb.HGetAll(ctx, "session:dev-2").Val()
			if h["status"] != "revoked" || h["user_id"] != "user-2" || h["client_public_key"] != rec.ClientPublicKey {
				t.Errorf("HGETALL session:dev-2 = %v, want revoked with user_id and key", h)
			}
		})

		t.Run("revoked fill keeps earliest time and longest ttl", func(t *testing.T) {
			rec := session.Record{DeviceSessionID: "dev-3", UserID: "user-3", ClientPublicKey: keyOf("dev-3"),
				Status: session.StatusRevoked, RevokedAtMS: ptr(2000)}
			if _, err := c.Fill(ctx, rec); err != nil {
				t.Fatalf("Fill: %v", err)
			}
			r.rdb.PExpire(ctx, "session:dev-3", 100*time.Hour)
			later := rec
			later.RevokedAtMS = ptr(3000)
			got, err := c.Fill(ctx, later)
			if err != nil || got.RevokedAtMS == nil || *got.RevokedAtMS != 2000 {
				t.Fatalf("Fill(later revoked) = %s, %v; want revoked_at_ms 2000", fmtRecord(got), err)
			}
			earlier := rec
			earlier.RevokedAtMS = ptr(1000)
			if got, err := c.Fill(ctx, earlier); err != nil || *got.RevokedAtMS != 1000 {
				t.Fatalf("Fill(earlier revoked) = %s, %v; want revoked_at_ms 1000", fmtRecord(got), err)
			}
			if p := r.rdb.PTTL(ctx, "session:dev-3").Val(); p < 99*time.Hour {
				t.Errorf("PTTL session:dev-3 = %v, want the longer 100h kept", p)
			}
		})

		t.Run("revoke keeps revoked_at_ms", func(t *testing.T) {
			first, err := c.RevokeSession(ctx, "dev-4")
			if err != nil {
				t.Fatalf("RevokeSession: %v", err)
			}
			r.rdb.HSet(ctx, "session:dev-4", "revoked_at_ms", "42")
			if _, err := c.RevokeSession(ctx, "dev-4"); err != nil {
				t.Fatalf("RevokeSession again: %v", err)
			}
			if v := r.rdb.HGet(ctx, "session:dev-4", "revoked_at_ms").Val(); v != "42" {
				t.Errorf("revoked_at_ms after second revoke = %q, want 42 kept (first at %d)", v, first.AtMS)
			}
		})
	})
}

// TestFillRaceWithRevokeUser runs Fill and RevokeUser of its user at once,
// many times: whichever runs first in Redis, the session must not end up
// active. A fill after the revocation is refused and writes nothing.
func TestFillRaceWithRevokeUser(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		runs := 1000
		if !r.real() {
			runs = 100
		}
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()

		t.Run("at once", func(t *testing.T) {
			var filledFirst, refused int
			for i := range runs {
				id, uid := fmt.Sprintf("dev-a%d", i), fmt.Sprintf("user-a%d", i)
				start := make(chan struct{})
				type result struct {
					rec session.Record
					err error
				}
				done := make(chan result, 1)
				go func() {
					<-start
					rec, err := c.Fill(ctx, activeRecord(id, uid))
					done <- result{rec, err}
				}()
				close(start)
				_, ids, err := c.RevokeUser(ctx, uid)
				res := <-done
				if err != nil {
					t.Fatalf("run %d: RevokeUser(%q): %v", i, uid, err)
				}
				switch {
				case errors.Is(res.err, ErrFillRefused):
					refused++
				case res.err != nil:
					t.Fatalf("run %d: Fill: %v", i, res.err)
				case len(ids) == 1:
					filledFirst++
				}
				if s := r.rdb.HGet(ctx, "session:"+id, "status").Val(); s == "active" {
					t.Fatalf("run %d: HGET session:%s status = active after Fill racing RevokeUser (Fill %s, %v; RevokeUser revoked %v)",
						i, id, fmtRecord(res.rec), res.err, ids)
				}
			}
			t.Logf("%d runs: the fill ran first in %d, was refused in %d", runs, filledFirst, refused)
		})

		t.Run("revoke first", func(t *testing.T) {
			before := c.Stats().FillsRefused
			for i := range runs {
				id, uid := fmt.Sprintf("dev-b%d", i), fmt.Sprintf("user-b%d", i)
				if _, _, err := c.RevokeUser(ctx, uid); err != nil {
					t.Fatalf("run %d: RevokeUser: %v", i, err)
				}
				rec, err := c.Fill(ctx, activeRecord(id, uid))
				if !errors.Is(err, ErrFillRefused) {
					t.Fatalf("run %d: Fill = %s, %v; want ErrFillRefused", i, fmtRecord(rec), err)
				}
				if n := r.rdb.Exists(ctx, "session:"+id).Val(); n != 0 {
					t.Fatalf("run %d: EXISTS session:%s = %d, want 0", i, id, n)
				}
				if n := r.rdb.SCard(ctx, "user:"+uid+":sessions").Val(); n != 0 {
					t.Fatalf("run %d: the refused fill indexed %d sessions, want 0", i, n)
				}
			}
			if got := c.Stats().FillsRefused - before; got != uint64(runs) {
				t.Errorf("Stats().FillsRefused grew by %d, want %d", got, runs)
			}
		})

		t.Run("fill first", func(t *testing.T) {
			for i := range runs / 10 {
				id, uid := fmt.Sprintf("dev-c%d", i), fmt.Sprintf("user-c%d", i)
				if rec, err := c.Fill(ctx, activeRecord(id, uid)); err != nil || rec.Status != session.StatusActive {
					t.Fatalf("run %d: Fill = %s, %v; want active", i, fmtRecord(rec), err)
				}
				if _, ids, err := c.RevokeUser(ctx, uid); err != nil || !slices.Equal(ids, []string{id}) {
					t.Fatalf("run %d: RevokeUser = %v, %v; want [%s] (the fill indexed it)", i, ids, err, id)
				}
				if s := r.rdb.HGet(ctx, "session:"+id, "status").Val(); s != "revoked" {
					t.Fatalf("run %d: HGET session:%s status = %q, want revoked", i, id, s)
				}
			}
		})
	})
}

// TestFillSince checks the fill of a record fetched after a refusal: it is
// stored while the revocation that refused the first fill is the user's
// latest, refused again after a later one (whose marker is later even
// within one millisecond), and a revocation after its index step finds it.
func TestFillSince(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()
		refusal := func(id, uid string) *RefusedFill {
			t.Helper()
			_, err := c.Fill(ctx, activeRecord(id, uid))
			var refused *RefusedFill
			if !errors.As(err, &refused) || !errors.Is(err, ErrFillRefused) || refused.RevokedAtMS <= 0 {
				t.Fatalf("Fill after RevokeUser = %v, want a *RefusedFill wrapping ErrFillRefused", err)
			}
			return refused
		}
		if _, _, err := c.RevokeUser(ctx, "user-1"); err != nil {
			t.Fatal(err)
		}
		first := refusal("dev-1", "user-1")
		if got, err := c.FillSince(ctx, activeRecord("dev-1", "user-1"), first.RevokedAtMS); err != nil || got.Status != session.StatusActive {
			t.Fatalf("FillSince the refusing revocation = %s, %v; want active", fmtRecord(got), err)
		}
		// Two revocations back to back: the second's marker is later.
		for range 2 {
			if _, _, err := c.RevokeUser(ctx, "user-1"); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := c.Get(ctx, "dev-1"); got.Status != session.StatusRevoked {
			t.Fatalf("dev-1 after RevokeUser = %s, want revoked (it was indexed)", fmtRecord(got))
		}
		_, err := c.FillSince(ctx, activeRecord("dev-2", "user-1"), first.RevokedAtMS)
		var later *RefusedFill
		if !errors.As(err, &later) || later.RevokedAtMS <= first.RevokedAtMS+1 {
			t.Fatalf("FillSince an older revocation = %v, want a *RefusedFill later than %d + 1", err, first.RevokedAtMS)
		}
		if r.rdb.Exists(ctx, "session:dev-2").Val() != 0 {
			t.Fatalf("session:dev-2 written by a refused FillSince")
		}
		if _, err := c.FillSince(ctx, activeRecord("dev-2", "user-1"), 0); err == nil {
			t.Errorf("FillSince(0) = nil error, want one")
		}
		// A marker that is not a time refuses, with no time to fill since.
		r.rdb.Set(ctx, "user:user-2:revoked_at_ms", "garbage", time.Minute)
		_, err = c.Fill(ctx, activeRecord("dev-3", "user-2"))
		if !errors.Is(err, ErrFillRefused) || errors.As(err, &later) {
			t.Errorf("Fill with a garbage marker = %v, want ErrFillRefused without a time", err)
		}
	})
}

// TestFillWindowEnds uses miniredis' settable clock: fills are refused
// within FillWindow of a user-wide revocation and accepted after it.
func TestFillWindowEnds(t *testing.T) {
	mr := miniredis.RunT(t)
	start := time.Now()
	mr.SetTime(start)
	c := newCache(t, newClient(t, mr.Addr()), Options{FillWindow: 10 * time.Second})
	ctx := context.Background()
	if _, _, err := c.RevokeUser(ctx, "user-1"); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	tests := []struct {
		after time.Duration
		want  error
	}{
		{0, ErrFillRefused},
		{9999 * time.Millisecond, ErrFillRefused},
		{10001 * time.Millisecond, nil},
	}
	for _, tt := range tests {
		mr.SetTime(start.Add(tt.after))
		_, err := c.Fill(ctx, activeRecord("dev-1", "user-1"))
		if !errors.Is(err, tt.want) && !(err == nil && tt.want == nil) {
			t.Errorf("Fill %v after RevokeUser: error = %v, want %v", tt.after, err, tt.want)
		}
	}
}

// TestFillRefusedAfterItsDeadline moves miniredis' clock to show that the
// fill script writes an active record only while its caller awaits the
// reply, on Redis's clock: a script Redis runs after the call's deadline
// (a request held up in the network) is refused; the offset between the
// clocks is learnt from the replies, so a Redis clock that runs ahead or
// behind costs at most one refused fill.
func TestFillRefusedAfterItsDeadline(t *testing.T) {
	mr := miniredis.RunT(t)
	const callTimeout = 2 * time.Second
	c := newCache(t, newClient(t, mr.Addr()), Options{FillWindow: 10 * time.Second, CallTimeout: callTimeout})
	ctx := context.Background()
	n := 0
	fill := func() error {
		n++
		id := fmt.Sprintf("dev-%d", n)
		_, err := c.Fill(ctx, activeRecord(id, "user-1"))
		if exists := mr.Exists("session:" + id); exists != (err == nil) {
			t.Errorf("session:%s exists = %v after Fill = %v", id, exists, err)
		}
		return err
	}
	now := time.Now()
	mr.SetTime(now)
	if err := fill(); err != nil {
		t.Fatalf("Fill with the clocks together = %v, want nil", err)
	}
	// The script runs after the call's deadline as Redis's clock reads it.
	mr.SetTime(time.Now().Add(callTimeout + time.Second))
	if err := fill(); !errors.Is(err, ErrFillRefused) {
		t.Fatalf("Fill that Redis runs after the deadline = %v, want ErrFillRefused", err)
	}
	// Redis's clock is ahead now: learnt from the refusal.
	mr.SetTime(time.Now().Add(callTimeout + time.Second))
	if err := fill(); err != nil {
		t.Errorf("Fill after learning that Redis runs ahead = %v, want nil", err)
	}
	// A Redis clock far behind refuses nothing.
	mr.SetTime(time.Now().Add(-time.Hour))
	if err := fill(); err != nil {
		t.Errorf("Fill with Redis's clock an hour behind = %v, want nil", err)
	}
	// A revoked record has no deadline: nothing to resurrect.
	mr.SetTime(time.Now().Add(time.Hour))
	revoked := activeRecord("dev-r", "user-1")
	revoked.Status, revoked.RevokedAtMS = session.StatusRevoked, ptr(42)
	if rec, err := c.Fill(ctx, revoked); err != nil || rec.Status != session.StatusRevoked {
		t.Errorf("revoked Fill with Redis's clock an hour ahead = %s, %v; want revoked, nil", fmtRecord(rec), err)
	}
}

func TestDecodeHash(t *testing.T) {
	key := keyOf("k")
	raw31 := base64.StdEncoding.EncodeToString(make([]byte, 31))
	raw33 := base64.StdEncoding.EncodeToString(make([]byte, 33))
	urlSafe := base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16))
	revokedNoTime := &session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked}
	tests := []struct {
		name string
		id   string
		h    map[string]string
		want *session.Record // nil: an error wrapping ErrInvalidRecord
	}{
		{"active", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key, "status": "active"},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusActive}},
		{"revoked", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key, "status": "revoked", "revoked_at_ms": "1764415200000"},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusRevoked, RevokedAtMS: ptr(1764415200000)}},
		{"revoked at zero", "dev-1", map[string]string{"status": "revoked", "revoked_at_ms": "0"},
			&session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked, RevokedAtMS: ptr(0)}},
		{"tombstone", "dev-1", map[string]string{"status": "revoked"},
			&session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked}},
		{"extra fields ignored", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key, "status": "active", "note": "x"},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusActive}},
		{"unknown status", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key, "status": "Active"},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusRevoked}},
		{"status with space", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key, "status": "active "},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusRevoked}},
		{"empty status", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key, "status": ""},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusRevoked}},
		{"missing status", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusRevoked}},
		{"empty map", "dev-1", map[string]string{}, nil},
		{"bad base64", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": strings.Repeat("!", 44), "status": "active"}, nil},
		{"31-byte key", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": raw31, "status": "active"}, nil},
		{"33-byte key", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": raw33, "status": "active"}, nil},
		{"url-safe base64", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": urlSafe, "status": "active"}, nil},
		{"unpadded base64", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": strings.TrimRight(key, "="), "status": "active"}, nil},
		{"bad key on revoked", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": raw31, "status": "revoked"},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", Status: session.StatusRevoked}},
		{"bad user id on revoked", "dev-1", map[string]string{"user_id": "{x}", "client_public_key": key, "status": "revoked"},
			&session.Record{DeviceSessionID: "dev-1", ClientPublicKey: key, Status: session.StatusRevoked}},
		{"active without key", "dev-1", map[string]string{"user_id": "u-1", "status": "active"}, nil},
		{"active without user", "dev-1", map[string]string{"client_public_key": key, "status": "active"}, nil},
		{"bad user id", "dev-1", map[string]string{"user_id": "{x}", "client_public_key": key, "status": "active"}, nil},
		{"revoked_at_ms on active", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key, "status": "active", "revoked_at_ms": "5"},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusRevoked, RevokedAtMS: ptr(5)}},
		{"non-numeric revoked_at_ms on active", "dev-1", map[string]string{"user_id": "u-1", "client_public_key": key, "status": "active", "revoked_at_ms": "x"},
			&session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusRevoked}},
		{"negative revoked_at_ms", "dev-1", map[string]string{"status": "revoked", "revoked_at_ms": "-5"}, revokedNoTime},
		{"non-numeric revoked_at_ms", "dev-1", map[string]string{"status": "revoked", "revoked_at_ms": "soon"}, revokedNoTime},
		{"float revoked_at_ms", "dev-1", map[string]string{"status": "revoked", "revoked_at_ms": "1.7e12"}, revokedNoTime},
		{"signed revoked_at_ms", "dev-1", map[string]string{"status": "revoked", "revoked_at_ms": "+5"}, revokedNoTime},
		{"empty revoked_at_ms", "dev-1", map[string]string{"status": "revoked", "revoked_at_ms": ""}, revokedNoTime},
		{"huge revoked_at_ms", "dev-1", map[string]string{"status": "revoked", "revoked_at_ms": "99999999999999999999"}, revokedNoTime},
		{"invalid id", "dev*1", map[string]string{"status": "revoked"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeHash(tt.id, tt.h)
			if tt.want == nil {
				if err == nil || !errors.Is(err, session.ErrInvalidRecord) {
					t.Fatalf("DecodeHash(%q, %v) = %s, %v; want an error wrapping ErrInvalidRecord", tt.id, tt.h, fmtRecord(got), err)
				}
				if got != (session.Record{}) {
					t.Errorf("DecodeHash(%q, %v) returned record %s with its error", tt.id, tt.h, fmtRecord(got))
				}
				return
			}
			if err != nil || !sameRecord(got, *tt.want) {
				t.Fatalf("DecodeHash(%q, %v) = %s, %v; want %s, nil", tt.id, tt.h, fmtRecord(got), err, fmtRecord(*tt.want))
			}
		})
	}
}

func FuzzDecodeHash(f *testing.F) {
	key := keyOf("k")
	long := strings.Repeat("a", 10<<10)
	for _, s := range []string{"*", "?", "[a]", "{x}", long, "\x00", "\r\n", "\xff\xfe", "active", "revoked", "", "12", "-1"} {
		f.Add("dev-1", "u-1", key, "active", s, uint8(0b0111))
		f.Add("dev-1", "u-1", key, "revoked", s, uint8(0b1111))
		f.Add(s, "u-1", key, "active", "", uint8(0b0111))
		f.Add("dev-1", s, key, "revoked", "1", uint8(0b1111))
		f.Add("dev-1", "u-1", s, "active", "", uint8(0b0111))
		f.Add("dev-1", "u-1", key, s, "", uint8(0b0111))
	}
	f.Fuzz(func(t *testing.T, id, userID, key, status, revokedAt string, present uint8) {
		h := map[string]string{}
		for i, kv := range [][2]string{{"user_id", userID}, {"client_public_key", key}, {"status", status}, {"revoked_at_ms", revokedAt}} {
			if present&(1<<i) != 0 {
				h[kv[0]] = kv[1]
			}
		}
		r, err := DecodeHash(id, h)
		if err != nil {
			if !errors.Is(err, session.ErrInvalidRecord) {
				t.Fatalf("DecodeHash error %v does not wrap ErrInvalidRecord", err)
			}
			if len(id) > 8 && strings.Contains(err.Error(), id) {
				t.Fatalf("DecodeHash error %q contains the id", err)
			}
			return
		}
		if verr := r.Validate(); verr != nil {
			t.Fatalf("DecodeHash accepted %s, which fails Validate: %v", fmtRecord(r), verr)
		}
		if r.DeviceSessionID != id {
			t.Fatalf("DecodeHash(%q, status %q) = %s", id, status, fmtRecord(r))
		}
		_, hasAt := h["revoked_at_ms"]
		if wantActive := h["status"] == "active" && !hasAt; (r.Status == session.StatusActive) != wantActive {
			t.Fatalf("DecodeHash(%v) = %s; active only for exactly status active without revoked_at_ms", h, fmtRecord(r))
		}
	})
}

// commandCounter is a go-redis hook counting the commands a client sends.
type commandCounter struct {
	mu   sync.Mutex
	cmds []redis.Cmder // guarded by mu
}

func (h *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd)
		return next(ctx, cmd)
	}
}

func (h *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.add(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h *commandCounter) add(cmd redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cmds = append(h.cmds, cmd)
}

func (h *commandCounter) take() []redis.Cmder {
	h.mu.Lock()
	defer h.mu.Unlock()
	cmds := h.cmds
	h.cmds = nil
	return cmds
}

// TestInvalidIDsSendNothing is invariant 6: a rejected id makes no Redis
// command.
func TestInvalidIDsSendNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := newClient(t, mr.Addr())
	counter := &commandCounter{}
	rdb.AddHook(counter)
	c := newCache(t, rdb, Options{})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil { // set up a connection
		t.Fatalf("PING: %v", err)
	}
	counter.take()
	ids := map[string]string{
		"empty":          "",
		"too long":       strings.Repeat("a", session.MaxIDLength+1),
		"star":           "dev*",
		"question mark":  "dev?",
		"brackets":       "[a]",
		"braces":         "{x}",
		"space":          "dev 1",
		"NUL":            "dev\x00",
		"CRLF":           "dev\r\n",
		"invalid UTF-8":  "dev\xff",
		"colon":          "dev:1",
		"non-ASCII":      "dévice",
		"10 kB":          strings.Repeat("b", 10<<10),
		"trailing space": "dev-1 ",
	}
	for name, id := range ids {
		t.Run(name, func(t *testing.T) {
			ops := map[string]func() error{
				"Get":    func() error { _, err := c.Get(ctx, id); return err },
				"Lookup": func() error { _, err := c.Lookup(ctx, id); return err },
				"Fill":   func() error { _, err := c.Fill(ctx, activeRecord(id, "user-1")); return err },
				"Fill user": func() error {
					_, err := c.Fill(ctx, activeRecord("dev-1", id))
					return err
				},
				"RevokeSession": func() error { _, err := c.RevokeSession(ctx, id); return err },
				"RevokeUser":    func() error { _, _, err := c.RevokeUser(ctx, id); return err },
				"MarkRevoked":   func() error { c.MarkRevoked(id); return session.ErrInvalidID },
				"MarkAllRevokedForUser": func() error {
					c.MarkAllRevokedForUser(id)
					return session.ErrInvalidID
				},
			}
			for op, f := range ops {
				err := f()
				if !errors.Is(err, session.ErrInvalidID) {
					t.Errorf("%s(%q) error = %v, want ErrInvalidID", op, id, err)
				}
				if len(id) > 4 && err != nil && strings.Contains(err.Error(), id) {
					t.Errorf("%s error %q contains the id", op, err)
				}
				if cmds := counter.take(); len(cmds) != 0 {
					t.Errorf("%s(%q) sent %d commands %v, want 0", op, id, len(cmds), cmds)
				}
			}
		})
	}
	// The counter does count: a valid id sends a command.
	if _, err := c.Get(ctx, "dev-1"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get(%q) error = %v, want ErrNotFound", "dev-1", err)
	}
	if n := len(counter.take()); n != 1 {
		t.Fatalf("Get(%q) sent %d commands, want 1", "dev-1", n)
	}
}

// TestUnreachableRedisFailsFast points the client at a closed port.
func TestUnreachableRedisFailsFast(t *testing.T) {
	addr := redistest.ClosedAddr(t)
	const callTimeout = 100 * time.Millisecond
	const margin = 400 * time.Millisecond
	c := newCache(t, newClient(t, addr), Options{CallTimeout: callTimeout})
	ctx := context.Background()
	ops := []struct {
		name string
		f    func() error
	}{
		{"Get", func() error {
			r, err := c.Get(ctx, "dev-1")
			if r != (session.Record{}) {
				t.Errorf("Get returned record %s with error", fmtRecord(r))
			}
			return err
		}},
		{"Fill", func() error { _, err := c.Fill(ctx, activeRecord("dev-1", "user-1")); return err }},
		{"RevokeSession", func() error { _, err := c.RevokeSession(ctx, "dev-1"); return err }},
		{"RevokeUser", func() error { _, _, err := c.RevokeUser(ctx, "user-1"); return err }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			start := time.Now()
			err := op.f()
			elapsed := time.Since(start)
			if err == nil || errors.Is(err, session.ErrNotFound) {
				t.Fatalf("%s on a closed port = %v, want a connection error", op.name, err)
			}
			if elapsed > callTimeout+margin {
				t.Errorf("%s took %v, want at most %v", op.name, elapsed, callTimeout+margin)
			}
		})
	}
	if got := c.Stats().RevokeErrors; got != 2 {
		t.Errorf("Stats().RevokeErrors = %d, want 2", got)
	}
}

// TestStalledRedisBoundedByCallTimeout pauses a real redis-server: a call
// returns after CallTimeout, not after the client's 3 s read timeout.
func TestStalledRedisBoundedByCallTimeout(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := newClient(t, srv.Addr)
	const callTimeout = 100 * time.Millisecond
	c := newCache(t, rdb, Options{CallTimeout: callTimeout})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	srv.Pause()
	defer srv.Resume()
	start := time.Now()
	_, err := c.Get(ctx, "dev-1")
	elapsed := time.Since(start)
	if err == nil || errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get on a stalled Redis = %v, want a timeout", err)
	}
	if elapsed > callTimeout+400*time.Millisecond {
		t.Errorf("Get on a stalled Redis took %v, want about %v", elapsed, callTimeout)
	}
}

func TestMarkFailuresAreLoggedRedacted(t *testing.T) {
	addr := redistest.ClosedAddr(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, nil))
	c := newCache(t, newClient(t, addr), Options{CallTimeout: 50 * time.Millisecond, Logger: logger})
	c.MarkRevoked("device-session-secret-1")
	c.MarkAllRevokedForUser("user-secret-7")
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, want := range []string{"mark revoked failed", "mark all revoked for user failed", "devi…", "user…"} {
		if !strings.Contains(out, want) {
			t.Errorf("log = %q, want it to contain %q", out, want)
		}
	}
	for _, secret := range []string{"device-session-secret-1", "user-secret-7"} {
		if strings.Contains(out, secret) {
			t.Errorf("log = %q contains the full id %q", out, secret)
		}
	}
	if got := c.Stats().RevokeErrors; got != 2 {
		t.Errorf("Stats().RevokeErrors = %d, want 2", got)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestOptionsValidation(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := newClient(t, mr.Addr())
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"defaults", Options{}, true},
		{"window just over 4 call timeouts", Options{CallTimeout: time.Second, FillWindow: 4*time.Second + time.Millisecond}, true},
		{"window equal to 4 call timeouts", Options{CallTimeout: time.Second, FillWindow: 4 * time.Second}, false},
		{"window shorter than default call timeouts", Options{FillWindow: 500 * time.Millisecond}, false},
		{"negative window", Options{FillWindow: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(rdb, tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New(%+v) error = %v, want ok=%v", tt.opts, err, tt.ok)
			}
		})
	}
}
