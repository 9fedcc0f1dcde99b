package l1_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/fakeclock"
	"github.com/galaxy-game/sessioncache/internal/l1"
	"github.com/galaxy-game/sessioncache/session"
)

func int64p(v int64) *int64 { return &v }

// TestFillRules exercises each rule documented on Fill, in isolation.
func TestFillRules(t *testing.T) {
	a := active("dev-1", "u-1")
	tests := []struct {
		name string
		// setup prepares the cache and returns the token to fill with.
		setup  func(c *l1.Cache) l1.Token
		fill   session.Record
		want   session.Record
		wantOK bool
		// wantGet is what Get returns afterwards; nil means a miss.
		wantGet *session.Record
	}{
		{
			name:    "1 invalid record: unknown status",
			setup:   func(c *l1.Cache) l1.Token { return c.Begin() },
			fill:    session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: keyFor("dev-1"), Status: "Active"},
			want:    session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: keyFor("dev-1"), Status: "Active"},
			wantOK:  false,
			wantGet: nil,
		},
		{
			name:    "1 invalid record: short key",
			setup:   func(c *l1.Cache) l1.Token { return c.Begin() },
			fill:    session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: "AAAA", Status: session.StatusActive},
			want:    session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: "AAAA", Status: session.StatusActive},
			wantOK:  false,
			wantGet: nil,
		},
		{
			name: "1 invalid record does not replace a valid one",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), a)
				return c.Begin()
			},
			fill:    session.Record{DeviceSessionID: "dev-1", Status: session.StatusActive},
			want:    session.Record{DeviceSessionID: "dev-1", Status: session.StatusActive},
			wantOK:  false,
			wantGet: &a,
		},
		{
			name: "2 revoked stored over nothing, even with an old token",
			setup: func(c *l1.Cache) l1.Token {
				c.DropActive()
				c.Revoke("dev-1", 3)
				return l1.Token{}
			},
			fill:    revoked("dev-1", "u-1", 10),
			want:    revoked("dev-1", "u-1", 10),
			wantOK:  true,
			wantGet: ptr(revoked("dev-1", "u-1", 10)),
		},
		{
			name:    "2 revoked replaces active",
			setup:   func(c *l1.Cache) l1.Token { c.Fill(c.Begin(), a); return c.Begin() },
			fill:    revoked("dev-1", "u-1", 10),
			want:    revoked("dev-1", "u-1", 10),
			wantOK:  true,
			wantGet: ptr(revoked("dev-1", "u-1", 10)),
		},
		{
			name: "2 revoked over revoked keeps the earlier time (existing earlier)",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), revoked("dev-1", "u-1", 5))
				return c.Begin()
			},
			fill:    revoked("dev-1", "u-1", 10),
			want:    revoked("dev-1", "u-1", 5),
			wantOK:  true,
			wantGet: ptr(revoked("dev-1", "u-1", 5)),
		},
		{
			name: "2 revoked over revoked keeps the earlier time (new earlier)",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), revoked("dev-1", "u-1", 50))
				return c.Begin()
			},
			fill:    revoked("dev-1", "u-1", 10),
			want:    revoked("dev-1", "u-1", 10),
			wantOK:  true,
			wantGet: ptr(revoked("dev-1", "u-1", 10)),
		},
		{
			name: "2 revoked tombstone without time over revoked with time keeps the time",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), revoked("dev-1", "u-1", 50))
				return c.Begin()
			},
			fill:    session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked},
			want:    session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked, RevokedAtMS: int64p(50)},
			wantOK:  true,
			wantGet: &session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked, RevokedAtMS: int64p(50)},
		},
		{
			name: "3 session revoked after the token: converted, with its time",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				c.Revoke("dev-1", 42)
				return tok
			},
			fill:    a,
			want:    a.Revoked(42),
			wantOK:  true,
			wantGet: ptr(a.Revoked(42)),
		},
		{
			name: "3 user revoked after the token: converted, with its time",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				c.RevokeUser("u-1", 43)
				return tok
			},
			fill:    a,
			want:    a.Revoked(43),
			wantOK:  true,
			wantGet: ptr(a.Revoked(43)),
		},
		{
			name: "3 both revoked after the token: the later invalidation's time",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				c.RevokeUser("u-1", 43)
				c.Revoke("dev-1", 44)
				return tok
			},
			fill:    a,
			want:    a.Revoked(44),
			wantOK:  true,
			wantGet: ptr(a.Revoked(44)),
		},
		{
			name: "3 converted record merges with a cached revoked entry",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				c.Fill(c.Begin(), revoked("dev-1", "u-1", 7))
				c.Revoke("dev-1", 44)
				return tok
			},
			fill:    a,
			want:    a.Revoked(7),
			wantOK:  true,
			wantGet: ptr(a.Revoked(7)),
		},
		{
			name: "3 revocation before the token does not convert",
			setup: func(c *l1.Cache) l1.Token {
				c.Revoke("dev-1", 42)
				c.RevokeUser("u-1", 42)
				return c.Begin()
			},
			fill:    a,
			want:    a,
			wantOK:  true,
			wantGet: &a,
		},
		{
			name: "3 other session and other user revoked after the token: stored active",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				c.Revoke("dev-2", 42)
				c.RevokeUser("u-2", 42)
				return tok
			},
			fill:    a,
			want:    a,
			wantOK:  true,
			wantGet: &a,
		},
		{
			name: "4 remembered invalidations overflowed since the token: converted without a time",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				for i := range 5 { // RecentInvalidations is 4 in this test
					c.Revoke(fmt.Sprintf("other-%d", i), 1)
				}
				return tok
			},
			fill:    a,
			want:    a.Revoked(0),
			wantOK:  true,
			wantGet: ptr(a.Revoked(0)),
		},
		{
			name: "4 overflow while the session's own revocation is remembered keeps its time",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				for i := range 4 {
					c.Revoke(fmt.Sprintf("other-%d", i), 1)
				}
				c.Revoke("dev-1", 99)
				return tok
			},
			fill:    a,
			want:    a.Revoked(99),
			wantOK:  true,
			wantGet: ptr(a.Revoked(99)),
		},
		{
			name: "4 exactly RecentInvalidations since the token: no overflow",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				for i := range 4 {
					c.Revoke(fmt.Sprintf("other-%d", i), 1)
				}
				return tok
			},
			fill:    a,
			want:    a,
			wantOK:  true,
			wantGet: &a,
		},
		{
			name: "4 forgetting an old invalidation keeps a newer one of the same session",
			setup: func(c *l1.Cache) l1.Token {
				c.Revoke("dev-1", 10)
				tok := c.Begin()
				c.Revoke("dev-1", 20)
				for i := range 3 { // the fifth invalidation forgets the first
					c.Revoke(fmt.Sprintf("other-%d", i), 1)
				}
				return tok
			},
			fill:    a,
			want:    a.Revoked(20),
			wantOK:  true,
			wantGet: ptr(a.Revoked(20)),
		},
		{
			name: "4 forgetting an old invalidation keeps a newer one of the same user",
			setup: func(c *l1.Cache) l1.Token {
				c.RevokeUser("u-1", 10)
				tok := c.Begin()
				c.RevokeUser("u-1", 20)
				for i := range 3 {
					c.Revoke(fmt.Sprintf("other-%d", i), 1)
				}
				return tok
			},
			fill:    a,
			want:    a.Revoked(20),
			wantOK:  true,
			wantGet: ptr(a.Revoked(20)),
		},
		{
			name: "4 overflow before the token: stored active",
			setup: func(c *l1.Cache) l1.Token {
				for i := range 50 {
					c.Revoke(fmt.Sprintf("other-%d", i), 1)
				}
				return c.Begin()
			},
			fill:    a,
			want:    a,
			wantOK:  true,
			wantGet: &a,
		},
		{
			name: "5 DropActive after the token: not stored",
			setup: func(c *l1.Cache) l1.Token {
				tok := c.Begin()
				c.DropActive()
				return tok
			},
			fill:    a,
			want:    a,
			wantOK:  false,
			wantGet: nil,
		},
		{
			name: "5 DropActive after the token does not keep an older active entry",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), a)
				tok := c.Begin()
				c.DropActive()
				return tok
			},
			fill:    a,
			want:    a,
			wantOK:  false,
			wantGet: nil,
		},
		{
			name: "5 DropActive before the token: stored",
			setup: func(c *l1.Cache) l1.Token {
				c.DropActive()
				return c.Begin()
			},
			fill:    a,
			want:    a,
			wantOK:  true,
			wantGet: &a,
		},
		{
			name: "5 Invalidate after the token: not stored, the active entry removed",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), a)
				tok := c.Begin()
				c.Invalidate("dev-1")
				return tok
			},
			fill:    a,
			want:    a,
			wantOK:  false,
			wantGet: nil,
		},
		{
			name: "5 Changed after the token: not stored, the active entry kept",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), a)
				tok := c.Begin()
				c.Changed("dev-1")
				return tok
			},
			fill:    a,
			want:    a,
			wantOK:  false,
			wantGet: &a,
		},
		{
			name: "5 Changed before the token: stored",
			setup: func(c *l1.Cache) l1.Token {
				c.Changed("dev-1")
				return c.Begin()
			},
			fill:    a,
			want:    a,
			wantOK:  true,
			wantGet: &a,
		},
		{
			name: "6 cached revoked entry is never replaced by active",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), revoked("dev-1", "u-1", 8))
				return c.Begin()
			},
			fill:    a,
			want:    revoked("dev-1", "u-1", 8),
			wantOK:  false,
			wantGet: ptr(revoked("dev-1", "u-1", 8)),
		},
		{
			name: "6 cached tombstone is never replaced by active",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
				return c.Begin()
			},
			fill:    a,
			want:    session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked},
			wantOK:  false,
			wantGet: &session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked},
		},
		{
			name: "5 and 6 together: the revoked entry is returned",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), revoked("dev-1", "u-1", 8))
				tok := c.Begin()
				c.DropActive()
				return tok
			},
			fill:    a,
			want:    revoked("dev-1", "u-1", 8),
			wantOK:  false,
			wantGet: ptr(revoked("dev-1", "u-1", 8)),
		},
		{
			name:    "7 plain fill",
			setup:   func(c *l1.Cache) l1.Token { return c.Begin() },
			fill:    a,
			want:    a,
			wantOK:  true,
			wantGet: &a,
		},
		{
			name: "7 active replaces active",
			setup: func(c *l1.Cache) l1.Token {
				c.Fill(c.Begin(), active("dev-1", "u-old"))
				return c.Begin()
			},
			fill:    a,
			want:    a,
			wantOK:  true,
			wantGet: &a,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, l1.Options{RecentInvalidations: 4})
			tok := tt.setup(c)
			got, ok := c.Fill(tok, tt.fill)
			if ok != tt.wantOK || !sameRecord(got, tt.want) {
				t.Errorf("Fill(%s) = %s, %v; want %s, %v", show(tt.fill), show(got), ok, show(tt.want), tt.wantOK)
			}
			wantGet(t, c, tt.fill.DeviceSessionID, tt.wantGet)
		})
	}
}

// TestFillExpiry checks that a fill sets the expiry to now+TTL and that an
// expired revoked entry no longer blocks an active fill (rule 6 applies to
// live entries only).
func TestFillExpiry(t *testing.T) {
	clk := fakeclock.New()
	c := newCache(t, l1.Options{TTL: time.Minute, Now: clk.Now})
	a := active("dev-1", "u-1")
	fill(t, c, revoked("dev-1", "u-1", 1))
	clk.Advance(time.Minute)
	if got, ok := c.Fill(c.Begin(), a); !ok || !sameRecord(got, a) {
		t.Errorf("Fill(fresh, %s) after the revoked entry expired = %s, %v; want it stored", show(a), show(got), ok)
	}
	clk.Advance(time.Minute - time.Nanosecond)
	wantGet(t, c, "dev-1", &a)
}

// TestFillUserIndex checks that a fill that replaces an active entry with
// one of another user moves it between user lists.
func TestFillUserIndex(t *testing.T) {
	c := newCache(t, l1.Options{})
	fill(t, c, active("dev-1", "u-old"))
	fill(t, c, active("dev-1", "u-new"))
	c.RevokeUser("u-old", 1)
	wantGet(t, c, "dev-1", ptr(active("dev-1", "u-new")))
	c.RevokeUser("u-new", 2)
	wantGet(t, c, "dev-1", ptr(revoked("dev-1", "u-new", 2)))
}

// TestFillConcurrentRevoke runs fillers that read a lower tier between Begin
// and Fill while another goroutine revokes sessions and users (lower tier
// first, then the cache, as the tiered layer does). Each round uses fresh
// sessions, so revocations keep racing with fills for the whole run. No
// active entry may survive a revocation that happened after its token.
func TestFillConcurrentRevoke(t *testing.T) {
	const (
		rounds  = 200
		users   = 4
		perUser = 4
		fillers = 4
	)
	c := newCache(t, l1.Options{Size: rounds * users * perUser, RecentInvalidations: 8})
	type lower struct {
		id, user string
		revoked  atomic.Bool
	}
	tier := make([][]*lower, rounds)
	for r := range rounds {
		for u := range users {
			for s := range perUser {
				tier[r] = append(tier[r], &lower{
					id:   fmt.Sprintf("r%d-d%d-%d", r, u, s),
					user: fmt.Sprintf("r%d-u%d", r, u),
				})
			}
		}
	}
	var round atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for f := range fillers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := f; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				l := tier[round.Load()][(i*5)%(users*perUser)]
				tok := c.Begin()
				rec := active(l.id, l.user)
				if l.revoked.Load() {
					rec = rec.Revoked(1)
				}
				runtime.Gosched() // the lower tier takes a while to answer
				if got, ok := c.Fill(tok, rec); rec.Status == session.StatusRevoked && (!ok || got.Status != session.StatusRevoked) {
					t.Errorf("Fill(%s) = %s, %v; want revoked stored", show(rec), show(got), ok)
					return
				}
			}
		}()
	}
	for r := range rounds {
		for u := range users {
			if u%2 == 0 { // user-wide revocation
				for s := range perUser {
					tier[r][u*perUser+s].revoked.Store(true)
				}
				c.RevokeUser(tier[r][u*perUser].user, 1)
				runtime.Gosched()
				continue
			}
			for s := 0; s < perUser; s += 2 {
				l := tier[r][u*perUser+s]
				l.revoked.Store(true)
				c.Revoke(l.id, 1)
				runtime.Gosched()
			}
		}
		if r+1 < rounds {
			round.Store(int64(r + 1))
		}
	}
	close(done)
	wg.Wait()

	for r := range rounds {
		for _, l := range tier[r] {
			if !l.revoked.Load() {
				continue
			}
			if got, ok := c.Get(l.id); ok && got.Status != session.StatusRevoked {
				t.Errorf("Get(%q) = %s after its revocation; want revoked or a miss", l.id, show(got))
			}
		}
	}
	st := c.Stats()
	t.Logf("stats: %+v", st)
	if st.Evictions != 0 {
		t.Errorf("Stats().Evictions = %d, want 0 (the check above needs every entry)", st.Evictions)
	}
}

// TestChanged checks what Changed reports: true only for a live active
// entry, which it keeps for the caller to verify; a revoked entry stays
// revoked; an invalid id is ignored.
func TestChanged(t *testing.T) {
	clock := fakeclock.New()
	c, err := l1.New(l1.Options{TTL: time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	a, r := active("dev-1", "u-1"), revoked("dev-2", "u-1", 5)
	c.Fill(c.Begin(), a)
	c.Fill(c.Begin(), r)
	for _, tc := range []struct {
		id   string
		want bool
	}{{"dev-1", true}, {"dev-2", false}, {"dev-3", false}, {"not an id!", false}} {
		if got := c.Changed(tc.id); got != tc.want {
			t.Errorf("Changed(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
	if got, ok := c.Peek("dev-1"); !ok || got.Status != session.StatusActive {
		t.Errorf("Peek(dev-1) after Changed = %+v, %v; want the active entry kept", got, ok)
	}
	if got, ok := c.Peek("dev-2"); !ok || got.Status != session.StatusRevoked {
		t.Errorf("Peek(dev-2) after Changed = %+v, %v; want revoked", got, ok)
	}
	clock.Advance(2 * time.Minute)
	if c.Changed("dev-1") {
		t.Errorf("Changed(dev-1) = true for an expired entry, want false")
	}
}
