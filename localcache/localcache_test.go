package localcache_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/fakeclock"
	"github.com/galaxy-game/sessioncache/internal/l1"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/session"
)

// keyFor returns a valid public key derived from s.
func keyFor(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func active(id, user string) session.Record {
	return session.Record{DeviceSessionID: id, UserID: user, ClientPublicKey: keyFor(id), Status: session.StatusActive}
}

func newCache(t testing.TB, opts localcache.Options) *localcache.Cache {
	t.Helper()
	c, err := localcache.New(opts)
	if err != nil {
		t.Fatalf("New(%+v) = %v", opts, err)
	}
	return c
}

// store loads r into c on a miss (a hit keeps what c holds).
func store(c *localcache.Cache, r session.Record) {
	_, _ = c.Load(context.Background(), r.DeviceSessionID, func(context.Context) (session.Record, error) { return r, nil })
}

// loader returns a load function that runs during (if set) and then returns
// r, err, and a pointer to the number of times it ran.
func loader(r session.Record, err error, during func()) (func(context.Context) (session.Record, error), *int) {
	calls := new(int)
	return func(context.Context) (session.Record, error) {
		*calls++
		if during != nil {
			during()
		}
		return r, err
	}, calls
}

func TestDefaultsAreL1s(t *testing.T) {
	if localcache.DefaultSize != l1.DefaultSize || localcache.DefaultTTL != l1.DefaultTTL {
		t.Fatalf("localcache defaults %d, %v; l1 applies %d, %v", localcache.DefaultSize, localcache.DefaultTTL, l1.DefaultSize, l1.DefaultTTL)
	}
}

func TestNewRefusesNegativeOptions(t *testing.T) {
	for _, opts := range []localcache.Options{{Size: -1}, {TTL: -time.Second}} {
		if _, err := localcache.New(opts); err == nil || !strings.HasPrefix(err.Error(), "localcache: ") {
			t.Errorf("New(%+v) error = %v, want a localcache error", opts, err)
		}
	}
}

func TestLoadStoresAMissAndServesHits(t *testing.T) {
	c := newCache(t, localcache.Options{})
	ctx := context.Background()
	rec := active("dev-1", "user-1")
	load, calls := loader(rec, nil, nil)
	for range 3 {
		got, err := c.Load(ctx, "dev-1", load)
		if err != nil || got.Status != session.StatusActive {
			t.Fatalf("Load = %+v, %v; want the active record", got, err)
		}
	}
	if *calls != 1 {
		t.Errorf("load ran %d times for 3 Loads, want 1", *calls)
	}
	if st := c.Stats(); st.Hits != 2 || st.Misses != 1 || st.Fills != 1 {
		t.Errorf("Stats() = %+v, want 2 hits, 1 miss, 1 fill", st)
	}
}

// TestLoadKeepsARevocationThatArrivesDuringIt is the reason Load exists: a
// revocation that reaches the cache while the slower source is read wins
// over the "active" that source returns.
func TestLoadKeepsARevocationThatArrivesDuringIt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(c *localcache.Cache)
	}{
		{"session", func(c *localcache.Cache) { c.MarkRevoked("dev-1") }},
		{"user", func(c *localcache.Cache) { c.MarkAllRevokedForUser("user-1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, localcache.Options{})
			var load func(context.Context) (session.Record, error)
			load, _ = loader(active("dev-1", "user-1"), nil, func() { tc.revoke(c) })
			got, err := c.Load(context.Background(), "dev-1", load)
			if err != nil || got.Status != session.StatusRevoked {
				t.Fatalf("Load = %+v, %v; want revoked", got, err)
			}
			if held, ok := c.Get("dev-1"); !ok || held.Status != session.StatusRevoked {
				t.Fatalf("Get after Load = %+v, %v; want revoked", held, ok)
			}
			if st := c.Stats(); st.FillsRevoked != 1 {
				t.Errorf("Stats().FillsRevoked = %d, want 1", st.FillsRevoked)
			}
		})
	}
}

func TestRevocationIsOneWay(t *testing.T) {
	c := newCache(t, localcache.Options{})
	ctx := context.Background()
	store(c, active("dev-1", "user-1"))
	c.MarkRevoked("dev-1")
	got, err := c.Lookup(ctx, "dev-1")
	if err != nil || got.Status != session.StatusRevoked {
		t.Fatalf("Lookup after MarkRevoked = %+v, %v; want revoked", got, err)
	}
	load, calls := loader(active("dev-1", "user-1"), nil, nil)
	if got, err := c.Load(ctx, "dev-1", load); err != nil || got.Status != session.StatusRevoked || *calls != 0 {
		t.Fatalf("Load of a revoked session = %+v, %v (load ran %d times); want revoked from the cache", got, err, *calls)
	}
}

func TestLoadRefusesBadInputAndStoresNothing(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("backend down")
	bad := active("dev-1", "user-1")
	bad.ClientPublicKey = "short"
	for _, tc := range []struct {
		name     string
		id       string
		rec      session.Record
		err      error
		wantErr  func(error) bool
		wantCall int
	}{
		{"invalid id", "dev-*", active("dev-*", "user-1"), nil, func(err error) bool { return errors.Is(err, session.ErrInvalidID) }, 0},
		{"load error", "dev-1", session.Record{}, boom, func(err error) bool { return err == boom }, 1},
		{"not found", "dev-1", session.Record{}, session.ErrNotFound, func(err error) bool { return errors.Is(err, session.ErrNotFound) }, 1},
		{"another session", "dev-1", active("dev-2", "user-1"), nil, func(err error) bool { return err != nil && strings.Contains(err.Error(), "another session") }, 1},
		{"invalid record", "dev-1", bad, nil, func(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "localcache: load ") }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, localcache.Options{})
			load, calls := loader(tc.rec, tc.err, nil)
			got, err := c.Load(ctx, tc.id, load)
			if !tc.wantErr(err) || got != (session.Record{}) {
				t.Errorf("Load = %+v, %v; want a zero record and the expected error", got, err)
			}
			if *calls != tc.wantCall {
				t.Errorf("load ran %d times, want %d", *calls, tc.wantCall)
			}
			if n := c.Len(); n != 0 {
				t.Errorf("Len() = %d after a refused Load, want 0", n)
			}
		})
	}
}

func TestEntriesExpireOnTheGivenClock(t *testing.T) {
	clk := fakeclock.New()
	c := newCache(t, localcache.Options{TTL: time.Minute, Now: clk.Now})
	store(c, active("dev-1", "user-1"))
	clk.Advance(time.Minute - time.Millisecond)
	if _, ok := c.Get("dev-1"); !ok {
		t.Fatal("entry gone before its TTL")
	}
	clk.Advance(time.Millisecond)
	if _, ok := c.Get("dev-1"); ok {
		t.Fatal("entry served at its TTL")
	}
	if st := c.Stats(); st.Expired != 1 {
		t.Errorf("Stats().Expired = %d, want 1", st.Expired)
	}
}

func TestSizeBoundsEntries(t *testing.T) {
	c := newCache(t, localcache.Options{Size: 10})
	for i := range 25 {
		store(c, active("dev-"+string(rune('a'+i)), "user-1"))
	}
	if n, st := c.Len(), c.Stats(); n != 10 || st.Evictions != 15 {
		t.Errorf("Len() = %d, Evictions = %d after 25 sessions in 10 entries; want 10, 15", n, st.Evictions)
	}
}
