package l1_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/fakeclock"
	"github.com/galaxy-game/sessioncache/internal/l1"
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

func revoked(id, user string, atMS int64) session.Record {
	return active(id, user).Revoked(atMS)
}

func newCache(t testing.TB, opts l1.Options) *l1.Cache {
	t.Helper()
	c, err := l1.New(opts)
	if err != nil {
		t.Fatalf("New(%+v) = %v", opts, err)
	}
	return c
}

// fill stores r with a fresh token and fails the test if it is not stored.
func fill(t testing.TB, c *l1.Cache, r session.Record) {
	t.Helper()
	if got, ok := c.Fill(c.Begin(), r); !ok || !sameRecord(got, r) {
		t.Fatalf("Fill(fresh, %s) = %s, %v; want it stored", show(r), show(got), ok)
	}
}

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

// show formats a record for failure messages.
func show(r session.Record) string {
	at := "nil"
	if r.RevokedAtMS != nil {
		at = fmt.Sprint(*r.RevokedAtMS)
	}
	return fmt.Sprintf("{%s %s %s at=%s}", r.DeviceSessionID, r.UserID, r.Status, at)
}

// wantGet asserts what Get(id) returns: a miss if want is nil.
func wantGet(t *testing.T, c *l1.Cache, id string, want *session.Record) {
	t.Helper()
	got, ok := c.Get(id)
	switch {
	case want == nil && ok:
		t.Errorf("Get(%q) = %s, true; want a miss", id, show(got))
	case want != nil && !ok:
		t.Errorf("Get(%q) = miss; want %s", id, show(*want))
	case want != nil && !sameRecord(got, *want):
		t.Errorf("Get(%q) = %s; want %s", id, show(got), show(*want))
	}
}

func ptr(r session.Record) *session.Record { return &r }

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    l1.Options
		wantErr bool
	}{
		{"zero means defaults", l1.Options{}, false},
		{"explicit", l1.Options{Size: 1, TTL: time.Millisecond, RecentInvalidations: 1}, false},
		{"negative size", l1.Options{Size: -1}, true},
		{"negative ttl", l1.Options{TTL: -time.Second}, true},
		{"negative recent invalidations", l1.Options{RecentInvalidations: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := l1.New(tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New(%+v) = %v, want error %v", tt.opts, err, tt.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "localcache: ") {
				t.Errorf("New(%+v) error %q lacks the package prefix", tt.opts, err)
			}
			if err == nil && c == nil {
				t.Fatalf("New(%+v) = nil, nil", tt.opts)
			}
		})
	}
}

func TestDefaultSize(t *testing.T) {
	c := newCache(t, l1.Options{})
	for i := range l1.DefaultSize + 5 {
		fill(t, c, active(fmt.Sprintf("dev-%d", i), "u-1"))
	}
	if got := c.Len(); got != l1.DefaultSize {
		t.Errorf("Len() = %d, want %d", got, l1.DefaultSize)
	}
}

func TestDefaultTTL(t *testing.T) {
	clk := fakeclock.New()
	c := newCache(t, l1.Options{Now: clk.Now})
	r := active("dev-1", "u-1")
	fill(t, c, r)
	clk.Advance(l1.DefaultTTL - time.Nanosecond)
	wantGet(t, c, "dev-1", &r)
	clk.Advance(time.Nanosecond)
	wantGet(t, c, "dev-1", nil)
}

func TestLRUBoundAndEvictionOrder(t *testing.T) {
	c := newCache(t, l1.Options{Size: 3})
	a, b, d, e := active("a", "u-1"), active("b", "u-1"), active("d", "u-2"), active("e", "u-2")
	fill(t, c, a)
	fill(t, c, b)
	fill(t, c, d)
	// Touch a, so b is now the least recently used.
	wantGet(t, c, "a", &a)
	fill(t, c, e)
	if got := c.Len(); got != 3 {
		t.Errorf("Len() = %d, want 3", got)
	}
	wantGet(t, c, "b", nil)
	wantGet(t, c, "a", &a)
	wantGet(t, c, "d", &d)
	wantGet(t, c, "e", &e)
	if got := c.Stats().Evictions; got != 1 {
		t.Errorf("Stats().Evictions = %d, want 1", got)
	}
	// The evicted session left the user index: revoking its user must not
	// bring it back nor disturb the others.
	c.RevokeUser("u-1", 5)
	wantGet(t, c, "b", nil)
	wantGet(t, c, "a", ptr(a.Revoked(5)))
	wantGet(t, c, "d", &d)
	if got := c.Len(); got != 3 {
		t.Errorf("Len() after RevokeUser = %d, want 3", got)
	}
}

func TestTTLExpiry(t *testing.T) {
	clk := fakeclock.New()
	c := newCache(t, l1.Options{TTL: 10 * time.Second, Now: clk.Now})
	r := active("dev-1", "u-1")
	fill(t, c, r)
	clk.Advance(5 * time.Second)
	fill(t, c, active("dev-2", "u-1"))
	clk.Advance(5*time.Second - time.Nanosecond)
	wantGet(t, c, "dev-1", &r)
	clk.Advance(time.Nanosecond)
	wantGet(t, c, "dev-1", nil)
	if got, err := c.Lookup(context.Background(), "dev-1"); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("Lookup(%q) = %s, %v; want an error wrapping session.ErrNotFound", "dev-1", show(got), err)
	}
	wantGet(t, c, "dev-2", ptr(active("dev-2", "u-1")))
	if got := c.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1 (the expired entry removed)", got)
	}
	if got := c.Stats().Expired; got != 1 {
		t.Errorf("Stats().Expired = %d, want 1", got)
	}
	clk.Advance(5 * time.Second)
	wantGet(t, c, "dev-2", nil)
}

func TestRevokedServedUntilExpiry(t *testing.T) {
	clk := fakeclock.New()
	c := newCache(t, l1.Options{TTL: 10 * time.Second, Now: clk.Now})
	fill(t, c, active("dev-1", "u-1"))
	clk.Advance(4 * time.Second)
	c.Revoke("dev-1", 1000)
	want := revoked("dev-1", "u-1", 1000)
	// A refill of the active record (say, from a stale replica) is refused.
	if got, ok := c.Fill(c.Begin(), active("dev-1", "u-1")); ok || !sameRecord(got, want) {
		t.Errorf("Fill(fresh, active dev-1) = %s, %v; want %s, false", show(got), ok, show(want))
	}
	clk.Advance(6*time.Second - time.Nanosecond)
	got, err := c.Lookup(context.Background(), "dev-1")
	if err != nil || !sameRecord(got, want) {
		t.Errorf("Lookup(%q) = %s, %v; want %s, nil", "dev-1", show(got), err, show(want))
	}
	// The lifetime counts from the fill; the revoke did not extend it.
	clk.Advance(time.Nanosecond)
	wantGet(t, c, "dev-1", nil)
}

func TestMarkRevoked(t *testing.T) {
	c := newCache(t, l1.Options{})
	r := active("dev-1", "u-1")
	fill(t, c, r)
	fill(t, c, active("dev-2", "u-1"))
	c.MarkRevoked("dev-1")
	wantGet(t, c, "dev-1", ptr(r.Revoked(0)))
	wantGet(t, c, "dev-2", ptr(active("dev-2", "u-1")))
	// A later revoke with a time sets it; an existing time is kept.
	c.Revoke("dev-1", 700)
	wantGet(t, c, "dev-1", ptr(r.Revoked(700)))
	c.Revoke("dev-1", 900)
	wantGet(t, c, "dev-1", ptr(r.Revoked(700)))
	// Revoking an uncached id stores nothing.
	c.MarkRevoked("dev-9")
	wantGet(t, c, "dev-9", nil)
	if got := c.Len(); got != 2 {
		t.Errorf("Len() = %d, want 2", got)
	}
}

func TestMarkAllRevokedForUser(t *testing.T) {
	c := newCache(t, l1.Options{})
	mine := []session.Record{active("a-1", "u-a"), active("a-2", "u-a"), active("a-3", "u-a")}
	theirs := []session.Record{active("b-1", "u-b"), active("b-2", "u-b")}
	for _, r := range append(append([]session.Record{}, mine...), theirs...) {
		fill(t, c, r)
	}
	// One of u-a's sessions is already revoked with its own time.
	c.Revoke("a-2", 50)
	c.MarkAllRevokedForUser("u-a")
	wantGet(t, c, "a-1", ptr(mine[0].Revoked(0)))
	wantGet(t, c, "a-2", ptr(mine[1].Revoked(50)))
	wantGet(t, c, "a-3", ptr(mine[2].Revoked(0)))
	for _, r := range theirs {
		wantGet(t, c, r.DeviceSessionID, &r)
	}
	// A session of u-a filled later from a read that began before the
	// user-wide revocation is not stored active.
	tok := l1.Token{}
	if got, ok := c.Fill(tok, active("a-4", "u-a")); !ok || got.Status != session.StatusRevoked {
		t.Errorf("Fill(old token, active a-4) = %s, %v; want revoked, true", show(got), ok)
	}
}

func TestRevokeUserWithTime(t *testing.T) {
	c := newCache(t, l1.Options{})
	fill(t, c, active("a-1", "u-a"))
	c.RevokeUser("u-a", 1234)
	wantGet(t, c, "a-1", ptr(revoked("a-1", "u-a", 1234)))
	// Uncached user: a no-op on entries.
	c.RevokeUser("u-z", 1)
	if got := c.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1", got)
	}
}

func TestRevokeUserRemovesExpired(t *testing.T) {
	clk := fakeclock.New()
	c := newCache(t, l1.Options{TTL: time.Second, Now: clk.Now})
	fill(t, c, active("a-1", "u-a"))
	clk.Advance(time.Second)
	fill(t, c, active("a-2", "u-a"))
	c.RevokeUser("u-a", 9)
	if got := c.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1 (the expired session removed)", got)
	}
	wantGet(t, c, "a-2", ptr(revoked("a-2", "u-a", 9)))
}

func TestInvalidIDsIgnoredByRevoke(t *testing.T) {
	c := newCache(t, l1.Options{})
	r := active("dev-1", "u-1")
	tok := c.Begin()
	for _, id := range []string{"", "*", "dev 1", "{x}", "a\x00b"} {
		c.Revoke(id, 1)
		c.RevokeUser(id, 1)
	}
	// None of them counted as an invalidation.
	if got, ok := c.Fill(tok, r); !ok || !sameRecord(got, r) {
		t.Errorf("Fill(token before invalid revokes, %s) = %s, %v; want it stored active", show(r), show(got), ok)
	}
}

func TestLookup(t *testing.T) {
	c := newCache(t, l1.Options{})
	a, b := active("dev-a", "u-1"), active("dev-b", "u-1")
	fill(t, c, a)
	fill(t, c, b)
	c.Revoke("dev-b", 77)
	tests := []struct {
		id      string
		want    session.Record
		wantErr error
	}{
		{"dev-a", a, nil},
		{"dev-b", b.Revoked(77), nil},
		{"dev-c", session.Record{}, session.ErrNotFound},
		{"", session.Record{}, session.ErrInvalidID},
		{strings.Repeat("a", session.MaxIDLength+1), session.Record{}, session.ErrInvalidID},
		{"*", session.Record{}, session.ErrInvalidID},
		{"dev?", session.Record{}, session.ErrInvalidID},
		{"[a]", session.Record{}, session.ErrInvalidID},
		{"{x}", session.Record{}, session.ErrInvalidID},
		{"dev a", session.Record{}, session.ErrInvalidID},
		{"dev\r\n", session.Record{}, session.ErrInvalidID},
		{"dev\x00", session.Record{}, session.ErrInvalidID},
		{"dev\xff\xfe", session.Record{}, session.ErrInvalidID},
		{"session:dev-a", session.Record{}, session.ErrInvalidID},
	}
	for _, tt := range tests {
		name := tt.id
		if len(name) > 20 {
			name = name[:20]
		}
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			got, err := c.Lookup(context.Background(), tt.id)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Lookup(%q) = %s, %v; want an error wrapping %v", tt.id, show(got), err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "localcache: ") {
					t.Errorf("Lookup(%q) error %q lacks the package prefix", tt.id, err)
				}
				if len(tt.id) > 4 && strings.Contains(err.Error(), tt.id) {
					t.Errorf("Lookup(%q) error %q contains the id", tt.id, err)
				}
				return
			}
			if err != nil || !sameRecord(got, tt.want) {
				t.Errorf("Lookup(%q) = %s, %v; want %s, nil", tt.id, show(got), err, show(tt.want))
			}
		})
	}
}

func TestInvalidLookupCountsNothing(t *testing.T) {
	c := newCache(t, l1.Options{})
	_, _ = c.Lookup(context.Background(), "*")
	if got := c.Stats(); got != (l1.Stats{}) {
		t.Errorf("Stats() after an invalid Lookup = %+v, want all zero", got)
	}
}

func TestDropActive(t *testing.T) {
	c := newCache(t, l1.Options{})
	a1, a2, b1, b2 := active("a-1", "u-a"), active("a-2", "u-a"), active("b-1", "u-b"), active("b-2", "u-b")
	for _, r := range []session.Record{a1, a2, b1, b2} {
		fill(t, c, r)
	}
	c.Revoke("a-2", 3)
	fill(t, c, revoked("t-1", "", 4)) // a tombstone
	before := c.Begin()
	if got := c.DropActive(); got != 3 {
		t.Errorf("DropActive() = %d, want 3", got)
	}
	wantGet(t, c, "a-1", nil)
	wantGet(t, c, "b-1", nil)
	wantGet(t, c, "b-2", nil)
	wantGet(t, c, "a-2", ptr(a2.Revoked(3)))
	wantGet(t, c, "t-1", ptr(revoked("t-1", "", 4)))
	if got := c.Len(); got != 2 {
		t.Errorf("Len() = %d, want 2", got)
	}
	if got, ok := c.Fill(before, b1); ok || !sameRecord(got, b1) {
		t.Errorf("Fill(token before DropActive, %s) = %s, %v; want it returned unstored", show(b1), show(got), ok)
	}
	fill(t, c, b1) // a token taken after DropActive stores
	// The user index was emptied: revoking u-a touches nothing active.
	c.RevokeUser("u-b", 8)
	wantGet(t, c, "b-1", ptr(b1.Revoked(8)))
	if got := c.DropActive(); got != 0 {
		t.Errorf("second DropActive() = %d, want 0", got)
	}
}

func TestStats(t *testing.T) {
	clk := fakeclock.New()
	c := newCache(t, l1.Options{Size: 2, TTL: time.Second, Now: clk.Now})
	old := c.Begin()
	c.Revoke("x-1", 0)
	fill(t, c, active("a", "u"))          // Fills 1
	fill(t, c, active("b", "u"))          // Fills 2
	fill(t, c, active("c", "u"))          // Fills 3, evicts a
	c.Fill(old, active("x-1", "u"))       // Fills 4, revoked, evicts b
	c.Fill(c.Begin(), session.Record{})   // Fills 5, dropped
	c.Fill(c.Begin(), active("x-1", "u")) // Fills 6, dropped (revoked cached)
	c.Get("c")                            // hit
	c.Get("a")                            // miss
	clk.Advance(time.Second)              //
	c.Get("c")                            // miss, expired
	want := l1.Stats{Hits: 1, Misses: 2, Evictions: 2, Expired: 1, Fills: 6, FillsRevoked: 1, FillsDropped: 2}
	if got := c.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestGetHitAllocs(t *testing.T) {
	c := newCache(t, l1.Options{})
	fill(t, c, active("dev-1", "u-1"))
	c.Revoke("dev-1", 5)
	fill(t, c, active("dev-2", "u-1"))
	for _, id := range []string{"dev-1", "dev-2"} {
		var ok bool
		allocs := testing.AllocsPerRun(1000, func() { _, ok = c.Get(id) })
		if !ok {
			t.Fatalf("Get(%q) = miss, want a hit", id)
		}
		if allocs != 0 {
			t.Errorf("Get(%q) hit: %v allocations, want 0", id, allocs)
		}
	}
	var err error
	allocs := testing.AllocsPerRun(1000, func() { _, err = c.Lookup(context.Background(), "dev-2") })
	if err != nil || allocs != 0 {
		t.Errorf("Lookup(%q) hit: %v allocations, err %v; want 0, nil", "dev-2", allocs, err)
	}
}
