package l1

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/session"
)

// checkIndex verifies the user index against the LRU: every active
// entry is in its user's list exactly once, nothing else is, and the links
// are consistent; then the SLRU's segments and the bound on remembered
// invalidations.
func (c *Cache) checkIndex() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inLists := make(map[*entry]bool)
	for uid, head := range c.users {
		if head == nil {
			return fmt.Errorf("user %q has a nil list head", uid)
		}
		if head.uprev != nil {
			return fmt.Errorf("head of user %q has a previous entry", uid)
		}
		for e := head; e != nil; e = e.unext {
			if inLists[e] {
				return fmt.Errorf("entry %q is linked twice", e.rec.DeviceSessionID)
			}
			inLists[e] = true
			if !e.active() || e.rec.UserID != uid {
				return fmt.Errorf("entry %s is in the list of user %q", e.rec.DeviceSessionID, uid)
			}
			if e.unext != nil && e.unext.uprev != e {
				return fmt.Errorf("broken back link after %q", e.rec.DeviceSessionID)
			}
			if got := c.lru.peek(e.rec.DeviceSessionID); got != e {
				return fmt.Errorf("indexed entry %q is not in the LRU", e.rec.DeviceSessionID)
			}
		}
	}
	for id, e := range c.lru.items {
		if e.rec.DeviceSessionID != id {
			return fmt.Errorf("entry %q is stored under %q", e.rec.DeviceSessionID, id)
		}
		if e.active() != inLists[e] {
			return fmt.Errorf("entry %q active=%v indexed=%v", id, e.active(), inLists[e])
		}
	}
	if err := c.checkSegments(); err != nil {
		return err
	}
	if n := len(c.recent) - c.head; n > c.maxRecent {
		return fmt.Errorf("%d invalidations remembered, more than %d", n, c.maxRecent)
	}
	return nil
}

// checkSegments verifies the SLRU: every entry of the map is in exactly one
// segment, the one its protected flag names; the links and the counts are
// consistent; the bounds hold.
func (c *Cache) checkSegments() error {
	l := &c.lru
	seen := make(map[*entry]bool)
	for _, seg := range []struct {
		s         *segment
		protected bool
	}{{&l.probation, false}, {&l.protected, true}} {
		n := 0
		for e := seg.s.root.next; e != &seg.s.root; e = e.next {
			if e.next.prev != e {
				return fmt.Errorf("broken segment link after %q", e.rec.DeviceSessionID)
			}
			if seen[e] || e.protected != seg.protected || l.items[e.rec.DeviceSessionID] != e {
				return fmt.Errorf("entry %q misplaced (protected=%v, in protected segment %v)", e.rec.DeviceSessionID, e.protected, seg.protected)
			}
			seen[e] = true
			n++
		}
		if n != seg.s.n {
			return fmt.Errorf("segment (protected %v) holds %d entries, counts %d", seg.protected, n, seg.s.n)
		}
	}
	switch {
	case len(seen) != len(l.items):
		return fmt.Errorf("%d entries in segments, %d in the map", len(seen), len(l.items))
	case len(l.items) > l.size:
		return fmt.Errorf("%d entries, more than Size %d", len(l.items), l.size)
	case l.protected.n > l.protectedCap:
		return fmt.Errorf("%d protected entries, more than %d", l.protected.n, l.protectedCap)
	}
	return nil
}

// TestNeverResurrect runs random sequences of reads of a consistent lower
// tier (Begin, then read, then Fill later), revocations, user revocations,
// DropActive, Gets and clock steps, with a small cache and a small memory
// of invalidations. After every step it checks:
//
//   - once a session is revoked (in the lower tier and then in the cache,
//     by Revoke, RevokeUser, or by DropActive after a lost invalidation),
//     Get never returns it active;
//   - once Get returned a session revoked, Get returns it active only after
//     an entry left the cache (an eviction or an expiry);
//   - the user index matches the active entries.
func TestNeverResurrect(t *testing.T) {
	const (
		runs    = 300
		steps   = 400
		nUsers  = 4
		perUser = 4
	)
	baseSeed := uint64(20251129)
	for run := range runs {
		seed := baseSeed + uint64(run)
		if err := resurrectRun(seed, steps, nUsers, perUser); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

// pendingRead is a lower-tier read in flight: its token and what it read.
type pendingRead struct {
	tok Token
	rec session.Record
}

func resurrectRun(seed uint64, steps, nUsers, perUser int) error {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c, err := New(Options{
		Size:                1 + rng.IntN(nUsers*perUser),
		TTL:                 10 * time.Second,
		Now:                 func() time.Time { return now },
		RecentInvalidations: 1 + rng.IntN(6),
	})
	if err != nil {
		return err
	}
	var ids []string
	userOf := make(map[string]string)
	for u := range nUsers {
		for s := range perUser {
			id := fmt.Sprintf("d%d-%d", u, s)
			ids = append(ids, id)
			userOf[id] = fmt.Sprintf("u%d", u)
		}
	}
	sum := sha256.Sum256([]byte("k"))
	key := base64.StdEncoding.EncodeToString(sum[:])
	// lowerRevoked is the lower tier's truth (one-way); cacheRevoked marks
	// the sessions whose revocation the cache has been told of.
	lowerRevoked := make(map[string]bool)
	cacheRevoked := make(map[string]bool)
	// lost marks sessions revoked in the lower tier whose invalidation the
	// cache missed; DropActive resyncs them.
	lost := make(map[string]bool)
	read := func(id string) session.Record {
		r := session.Record{DeviceSessionID: id, UserID: userOf[id], ClientPublicKey: key, Status: session.StatusActive}
		if lowerRevoked[id] {
			r = r.Revoked(int64(len(id)))
		}
		return r
	}
	var pending []pendingRead
	// seenRevoked holds the eviction+expiry count when Get last returned
	// the session revoked.
	seenRevoked := make(map[string]uint64)
	var trace []string
	fail := func(format string, args ...any) error {
		last := trace
		if len(last) > 30 {
			last = last[len(last)-30:]
		}
		return fmt.Errorf("%s\nlast steps:\n  %s", fmt.Sprintf(format, args...), strings.Join(last, "\n  "))
	}

	for step := range steps {
		id := ids[rng.IntN(len(ids))]
		switch op := rng.IntN(100); {
		case op < 30: // a lookup begins reading the lower tier
			tok := c.Begin()
			pending = append(pending, pendingRead{tok, read(id)})
			trace = append(trace, "read "+id)
		case op < 60 && len(pending) > 0: // a read completes, in any order
			i := rng.IntN(len(pending))
			p := pending[i]
			pending[i] = pending[len(pending)-1]
			pending = pending[:len(pending)-1]
			got, ok := c.Fill(p.tok, p.rec)
			trace = append(trace, fmt.Sprintf("fill %s %s -> %s %v", p.rec.DeviceSessionID, p.rec.Status, got.Status, ok))
		case op < 68:
			lowerRevoked[id] = true
			c.Revoke(id, int64(step))
			cacheRevoked[id] = true
			trace = append(trace, "revoke "+id)
		case op < 72:
			uid := userOf[id]
			for _, other := range ids {
				if userOf[other] == uid {
					lowerRevoked[other] = true
				}
			}
			c.RevokeUser(uid, int64(step))
			for _, other := range ids {
				if userOf[other] == uid {
					cacheRevoked[other] = true
				}
			}
			trace = append(trace, "revoke user "+uid)
		case op < 74: // a revocation whose message is lost
			lowerRevoked[id] = true
			lost[id] = true
			trace = append(trace, "lost revoke "+id)
		case op < 77: // the loss is noticed: resync by dropping actives
			n := c.DropActive()
			for id := range lost {
				cacheRevoked[id] = true
			}
			clear(lost)
			trace = append(trace, fmt.Sprintf("drop active (%d)", n))
		case op < 82:
			d := time.Duration(rng.IntN(6)) * time.Second
			now = now.Add(d)
			trace = append(trace, fmt.Sprintf("advance %v", d))
		default:
			c.Get(id)
			trace = append(trace, "get "+id)
		}
		// Check every session.
		for _, id := range ids {
			st := c.Stats()
			gone := st.Evictions + st.Expired
			got, ok := c.Get(id)
			if !ok {
				continue
			}
			if got.Status == session.StatusActive && cacheRevoked[id] {
				return fail("step %d: Get(%q) = active after its revocation", step, id)
			}
			if got.Status == session.StatusActive {
				if n, seen := seenRevoked[id]; seen && n == gone {
					return fail("step %d: Get(%q) = active after it was served revoked, with no entry gone since", step, id)
				}
			}
			if got.Status == session.StatusRevoked {
				seenRevoked[id] = gone
			}
		}
		if err := c.checkIndex(); err != nil {
			return fail("step %d: %v", step, err)
		}
	}
	return nil
}
