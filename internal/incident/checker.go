package incident

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// Checker records every answer the replicas give, with the time its lookup
// began, and counts revoked sessions answered active: an active answer to
// a lookup that began more than a revocation's bound after the revocation
// completed. A revocation made only in Redis may be declared lost with its
// record (Lost); active answers from then on are counted as exposure, not
// as violations.
//
// It keeps counters per replica and session, not the answers themselves,
// so a workload may run for as long as a test needs. A Checker is safe for
// concurrent use.
type Checker struct {
	tb testing.TB

	mu      sync.Mutex // guards the fields below
	revs    map[string]revocation
	cells   map[cellKey]*tally
	answers int64
	errs    int64
}

// revocation is what the Checker knows of one session's revocation.
type revocation struct {
	what   string        // for messages: "hand HSET", "pushed revocation", ...
	at     time.Time     // when it completed
	bound  time.Duration // active answers may begin up to at+bound
	lostAt time.Time     // when its record was lost (cache-only revocations); zero if not
}

func (r revocation) deadline() time.Time { return r.at.Add(r.bound) }

type cellKey struct {
	replica int
	id      string
}

// tally summarises the answers of one replica for one session.
type tally struct {
	answers       int
	lastBegan     time.Time // latest lookup begun (and answered)
	lastActive    time.Time // began of the latest active answer; zero if none
	lastWasActive bool      // the latest answer recorded was active
	lastTier      tiered.Tier
	violations    int // active answers beyond the bound
	firstLate     time.Duration
	exposed       int       // active answers after the record was lost
	firstExposed  time.Time // began of the first of them
}

// NewChecker returns an empty Checker that reports misuse to tb.
func NewChecker(tb testing.TB) *Checker {
	return &Checker{tb: tb, revs: map[string]revocation{}, cells: map[cellKey]*tally{}}
}

// Revoked declares that the revocation of id completed at instant at (the
// redis-cli command returned, or the backend revoked it and a replica
// applied it): from at+bound on, an active answer is a violation. what
// names the revocation in messages. A second call for id keeps the
// revocation with the earlier deadline. It must be called within bound of
// at, or answers recorded meanwhile would escape the count.
func (c *Checker) Revoked(id, what string, at time.Time, bound time.Duration) {
	if late := time.Since(at); late >= bound {
		c.tb.Errorf("checker: revocation of %q declared %v after it completed, beyond its bound %v", id, late, bound)
	}
	r := revocation{what: what, at: at, bound: bound}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.revs[id]; ok && !r.deadline().Before(old.deadline()) {
		return
	}
	c.revs[id] = r
}

// Lost declares that the record holding id's revocation was lost at
// instant at, for a revocation the backend does not know: active answers
// to lookups begun from then on are exposure, counted apart. id must have
// been declared Revoked.
func (c *Checker) Lost(id string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.revs[id]
	if !ok {
		c.tb.Errorf("checker: Lost(%q) of a session never declared revoked", id)
		return
	}
	r.lostAt = at
	c.revs[id] = r
}

// Record adds one answer of replica to a lookup of id begun at began,
// answered by tier. An error counts as a denial.
func (c *Checker) Record(replica int, id string, began time.Time, rec session.Record, tier tiered.Tier, err error) {
	active := err == nil && rec.Status == session.StatusActive
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers++
	if err != nil {
		c.errs++
	}
	k := cellKey{replica, id}
	t := c.cells[k]
	if t == nil {
		t = &tally{}
		c.cells[k] = t
	}
	t.answers++
	if began.After(t.lastBegan) {
		t.lastBegan = began
	}
	t.lastWasActive, t.lastTier = active, tier
	if !active {
		return
	}
	if began.After(t.lastActive) {
		t.lastActive = began
	}
	r, ok := c.revs[id]
	switch {
	case !ok:
	case !r.lostAt.IsZero() && !began.Before(r.lostAt):
		if t.exposed == 0 {
			t.firstExposed = began
		}
		t.exposed++
	case began.After(r.deadline()):
		if t.violations == 0 {
			t.firstLate = began.Sub(r.at)
		}
		t.violations++
	}
}

// BeganAfter reports whether replica answered a lookup of id that began
// after at.
func (c *Checker) BeganAfter(replica int, id string, at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.cells[cellKey{replica, id}]
	return t != nil && t.lastBegan.After(at)
}

// Last returns whether the latest answer of replica for id was active and
// which tier gave it; ok is false when replica never answered id.
func (c *Checker) Last(replica int, id string) (active bool, tier tiered.Tier, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.cells[cellKey{replica, id}]
	if t == nil {
		return false, tiered.TierNone, false
	}
	return t.lastWasActive, t.lastTier, true
}

// Totals returns the number of answers recorded and how many were errors.
func (c *Checker) Totals() (answers, errs int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.answers, c.errs
}

// Violations returns the number of active answers beyond the bound for
// ids, on any replica, and one message per replica and session that gave
// any.
func (c *Checker) Violations(ids []string) (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	var msgs []string
	for _, k := range c.sortedKeysLocked(ids) {
		t := c.cells[k]
		if t.violations == 0 {
			continue
		}
		r := c.revs[k.id]
		n += t.violations
		msgs = append(msgs, fmt.Sprintf("Lookup(%q) on replica %d = active %d times, the first begun %v after the %s completed, want revoked after %v",
			k.id, k.replica, t.violations, t.firstLate.Round(100*time.Microsecond), r.what, r.bound))
	}
	return n, msgs
}

// maxMessages is how many replica and session pairs Expect details.
const maxMessages = 12

// Expect reports the revoked sessions among ids answered active beyond
// their bound: the count, and one error per replica and session for the
// first maxMessages of them.
func (c *Checker) Expect(t testing.TB, ids []string) {
	t.Helper()
	n, msgs := c.Violations(ids)
	if n == 0 {
		return
	}
	t.Errorf("%d answers of revoked sessions were active beyond the bound, from %d replica and session pairs:", n, len(msgs))
	for i, m := range msgs {
		if i == maxMessages {
			t.Errorf("... and %d more pairs", len(msgs)-maxMessages)
			break
		}
		t.Error(m)
	}
}

// Denial returns, for session id, the latest time after its revocation
// completed at which any of replicas began a lookup answered active (0
// when none was), and whether each of them answered its latest lookup as
// not active. It is the time every replica took to deny, to the
// workload's resolution.
func (c *Checker) Denial(id string, replicas []*Replica) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.revs[id]
	if !ok {
		c.tb.Errorf("checker: Denial(%q) of a session never declared revoked", id)
		return 0, false
	}
	var d time.Duration
	denied := true
	for _, rep := range replicas {
		t := c.cells[cellKey{rep.Index, id}]
		if t == nil {
			denied = false
			continue
		}
		if t.lastActive.After(r.at) {
			d = max(d, t.lastActive.Sub(r.at))
		}
		denied = denied && !t.lastWasActive
	}
	return d, denied
}

// Exposure returns, for a session whose record was lost, how many active
// answers replicas gave to lookups begun after the loss, on how many
// replicas, and how long after the loss the first such lookup began.
func (c *Checker) Exposure(id string, replicas []*Replica) (answers, onReplicas int, first time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.revs[id]
	first = -1
	for _, rep := range replicas {
		t := c.cells[cellKey{rep.Index, id}]
		if t == nil || t.exposed == 0 {
			continue
		}
		answers += t.exposed
		onReplicas++
		if d := t.firstExposed.Sub(r.lostAt); first < 0 || d < first {
			first = d
		}
	}
	return answers, onReplicas, first
}

func (c *Checker) sortedKeysLocked(ids []string) []cellKey {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var keys []cellKey
	for k := range c.cells {
		if want[k.id] {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b cellKey) int {
		if a.id != b.id {
			if a.id < b.id {
				return -1
			}
			return 1
		}
		return a.replica - b.replica
	})
	return keys
}

// Quantile returns the q-quantile (0 < q <= 1) of ds by the nearest-rank
// method, or 0 for no durations.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// Denials returns Denial for each id, and how many ids some replica still
// answered active at its latest lookup.
func (c *Checker) Denials(ids []string, replicas []*Replica) (ds []time.Duration, notDenied int) {
	for _, id := range ids {
		d, denied := c.Denial(id, replicas)
		ds = append(ds, d)
		if !denied {
			notDenied++
		}
	}
	return ds, notDenied
}
