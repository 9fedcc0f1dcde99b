// Package l1 is the per-process L1 of the session cache, behind package
// localcache's narrow face and package tiered's lookups: a bounded map of
// decoded session.Records, each with its own expiry, evicted by a
// segmented LRU (a session read twice recently outlives sessions read once;
// see Options.Size).
//
// Revocation is one-way here as in every tier. Revoke and RevokeUser flip
// cached entries to revoked; nothing turns a revoked entry active again, and a
// revoked entry is served as revoked until it expires or is evicted.
//
// A fill cannot resurrect: a caller takes a Token with Begin before it reads
// a lower tier (Redis, the backend) and hands it to Fill with what it read.
// Fill converts an active record to revoked when its session or its user was
// invalidated after the Token was taken, and stores nothing active when
// DropActive ran after it. The rules are listed on Fill.
//
// A Cache is safe for concurrent use. Every method takes one mutex at most
// once; a hit costs one lock and no allocation. The Cache starts no
// goroutines: expiry is checked when an entry is read, against Options.Now.
package l1

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/galaxy-game/sessioncache/internal/mutation"
	"github.com/galaxy-game/sessioncache/session"
)

// Defaults for Options.
const (
	DefaultSize                = 10000
	DefaultTTL                 = 30 * time.Second
	DefaultRecentInvalidations = 65536
)

// errNotCached is returned by Lookup on a miss. It holds no identifier, so
// one value serves every miss without an allocation.
var errNotCached = fmt.Errorf("localcache: session not cached: %w", session.ErrNotFound)

// Options configures a Cache. Zero fields mean the documented defaults;
// negative values are errors.
type Options struct {
	// Size is the maximum number of entries, active and revoked together.
	// Default DefaultSize. When the Cache is full, a Fill of a new session
	// evicts the least recently used entry among those not read since they
	// were stored or demoted (the probationary segment); entries read again
	// are protected, up to 80% of Size, in least recently used order.
	Size int
	// TTL is the lifetime of an entry, counted from the Fill that stored it.
	// A Revoke does not extend it. Default DefaultTTL.
	TTL time.Duration
	// Now is the clock against which expiry is checked on every read.
	// Default time.Now. It is called outside the Cache's lock.
	Now func() time.Time
	// RecentInvalidations is how many invalidations (Revoke and RevokeUser
	// calls) are remembered for the checks made by Fill. When more happen
	// while a Token is outstanding, a Fill with that Token treats its
	// record as revoked (see Fill, rule 4). Each remembered invalidation
	// costs about 100 bytes. Default DefaultRecentInvalidations.
	RecentInvalidations int
}

func (o *Options) setDefaults() error {
	switch {
	case o.Size < 0:
		return fmt.Errorf("localcache: negative Size %d", o.Size)
	case o.TTL < 0:
		return fmt.Errorf("localcache: negative TTL %v", o.TTL)
	case o.RecentInvalidations < 0:
		return fmt.Errorf("localcache: negative RecentInvalidations %d", o.RecentInvalidations)
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.RecentInvalidations == 0 {
		o.RecentInvalidations = DefaultRecentInvalidations
	}
	return nil
}

// Token marks a point in the Cache's history of invalidations. Take one with
// Begin before reading a lower tier and pass it to Fill with what was read.
// The zero Token is older than every invalidation, so a Fill with it stores
// an active record only if the Cache has never been invalidated. A Token is
// meaningful only to the Cache that issued it.
type Token struct {
	epoch uint64
}

// Stats are cumulative counters of a Cache.
type Stats struct {
	// Hits and Misses count Get calls (and so Lookup calls with a valid
	// id). An expired entry counts as a miss.
	Hits, Misses uint64
	// Evictions counts entries pushed out by the Size bound.
	Evictions uint64
	// Expired counts entries found expired and removed.
	Expired uint64
	// Fills counts Fill calls.
	Fills uint64
	// FillsRevoked counts active records that Fill converted to revoked
	// (rules 3 and 4).
	FillsRevoked uint64
	// FillsDropped counts Fill calls that stored nothing (rules 1, 5, 6).
	FillsDropped uint64
}

// entry is the value kept in the cache. Every entry is linked into one
// segment of the SLRU; active entries are also linked into their user's
// list (Cache.users), revoked entries are not.
type entry struct {
	rec session.Record
	// expires is the end of the entry's life, as a duration since
	// Cache.base (monotonic when the clock provides a monotonic reading).
	expires time.Duration
	// prev and next link the entry into its SLRU segment; protected tells
	// which segment; stamp is slru.moves when it last moved to the front
	// of the protected segment.
	prev, next *entry
	stamp      uint64
	protected  bool
	// uprev and unext link the active entries of one user.
	uprev, unext *entry
}

func (e *entry) active() bool { return e.rec.Status == session.StatusActive }

// invalidation is the last remembered invalidation of one id or user.
type invalidation struct {
	epoch uint64
	atMS  int64
}

// What an invalidation concerns.
const (
	kindSession = iota // a revocation of one session (Revoke)
	kindUser           // a revocation of every session of a user (RevokeUser)
	kindChanged        // a change of one session's record below L1 (Invalidate)
)

// pastInvalidation is one element of the FIFO that bounds the memory of
// invalidations.
type pastInvalidation struct {
	key   string
	kind  int
	epoch uint64
}

// Cache is the L1 session cache. Create it with New.
type Cache struct {
	ttl time.Duration
	// now is Options.Now, or nil for the default clock, which is read with
	// time.Since (monotonic only, cheaper than time.Now).
	now       func() time.Time
	base      time.Time
	maxRecent int

	// epoch counts Revoke, RevokeUser and DropActive calls. It is written
	// only with mu held and read atomically by Begin.
	epoch atomic.Uint64

	fills, fillsRevoked, fillsDropped atomic.Uint64

	// mu guards every field below.
	mu sync.Mutex
	// The counters of Stats that change under mu sit next to it, so that a
	// hit touches no other shared cache line.
	hits, misses, evictions, expired uint64
	// lru holds the entries, keyed by DeviceSessionID.
	lru slru
	// users maps a user id to the first of its active entries.
	users map[string]*entry
	// idInv, userInv and chgInv hold the last invalidation of each kind
	// of a session or user, for the invalidations still in recent.
	idInv, userInv, chgInv map[string]invalidation
	// recent is the FIFO of remembered invalidations, from recent[head].
	recent []pastInvalidation
	head   int
	// floor is the epoch of the newest invalidation forgotten; a Token
	// older than it may have missed an invalidation.
	floor uint64
	// dropEpoch is the epoch of the last DropActive.
	dropEpoch uint64
}

var _ session.Cache = (*Cache)(nil)

// New returns an empty Cache configured by opts.
func New(opts Options) (*Cache, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	c := &Cache{
		ttl:       opts.TTL,
		now:       opts.Now,
		maxRecent: opts.RecentInvalidations,
		users:     make(map[string]*entry),
		idInv:     make(map[string]invalidation),
		userInv:   make(map[string]invalidation),
		chgInv:    make(map[string]invalidation),
	}
	if c.now != nil {
		c.base = c.now()
	} else {
		c.base = time.Now()
	}
	c.lru.init(opts.Size)
	return c, nil
}

// clock returns the current time as a duration since c.base.
func (c *Cache) clock() time.Duration {
	if c.now == nil {
		return time.Since(c.base)
	}
	return c.now().Sub(c.base)
}

// Lookup implements session.Cache. It validates id (an error wrapping
// session.ErrInvalidID) and returns the cached record: a revoked record
// comes with a nil error, a miss or an expired entry is an error wrapping
// session.ErrNotFound. It never blocks; ctx is not used.
func (c *Cache) Lookup(ctx context.Context, id string) (session.Record, error) {
	if err := session.ValidateID(id); err != nil {
		return session.Record{}, fmt.Errorf("localcache: lookup: %w", err)
	}
	if r, ok := c.Get(id); ok {
		return r, nil
	}
	return session.Record{}, errNotCached
}

// MarkRevoked implements session.Cache: it is Revoke(id, 0).
func (c *Cache) MarkRevoked(id string) { c.Revoke(id, 0) }

// MarkAllRevokedForUser implements session.Cache: it is RevokeUser(userID, 0).
func (c *Cache) MarkAllRevokedForUser(userID string) { c.RevokeUser(userID, 0) }

// Get returns the cached record for id, active or revoked. An absent or
// expired entry is a miss (an expired one is removed). Get does not
// validate id and does not allocate; an invalid id is simply a miss.
//
// The returned record shares its RevokedAtMS pointer with the cache: do not
// write through it.
func (c *Cache) Get(id string) (session.Record, bool) {
	now := c.clock()
	c.mu.Lock()
	e := c.lru.peek(id)
	if e == nil {
		c.misses++
		c.mu.Unlock()
		return session.Record{}, false
	}
	if now >= e.expires {
		c.removeLocked(e)
		c.expired++
		c.misses++
		c.mu.Unlock()
		return session.Record{}, false
	}
	c.lru.touch(e)
	c.hits++
	r := e.rec
	c.mu.Unlock()
	return r, true
}

// Begin returns a Token to pass to Fill. Take it before reading the lower
// tier whose answer will be filled.
func (c *Cache) Begin() Token {
	return Token{epoch: c.epoch.Load()}
}

// Fill stores r, read from a lower tier after t was taken, unless that could
// make a revoked session active. It returns the record now cached for r's
// session (or, when nothing was stored, the record the caller should serve)
// and whether r (possibly converted) was stored. The rules, in order:
//
//  1. r must pass r.Validate(); otherwise nothing is stored and Fill
//     returns (r, false).
//  2. A revoked r is always stored, replacing an active entry or merging
//     with a revoked one (the earliest RevokedAtMS is kept).
//  3. If the session r.DeviceSessionID or the user r.UserID was invalidated
//     (Revoke, RevokeUser) after t was taken, an active r is converted to
//     r.Revoked(atMS of the latest such invalidation) and stored as in
//     rule 2.
//  4. If more than Options.RecentInvalidations invalidations happened since
//     t was taken, some are forgotten and the Cache cannot tell whether one
//     concerned r: an active r is converted to revoked as in rule 3. A
//     spurious revocation is safe; a stale active record is not.
//  5. If DropActive ran after t was taken, or Invalidate or Changed of
//     r.DeviceSessionID did, an active r is not stored: Fill returns
//     (r, false).
//  6. If the Cache already holds an unexpired revoked entry for the session,
//     an active r never replaces it: Fill returns (that entry, false).
//  7. Otherwise r is stored with its expiry at now + Options.TTL, and Fill
//     returns (r, true).
//
// When rules 5 and 6 both apply, Fill returns the revoked entry, as in rule
// 6, so that the caller learns of the revocation.
func (c *Cache) Fill(t Token, r session.Record) (session.Record, bool) {
	c.fills.Add(1)
	if err := r.Validate(); err != nil {
		c.fillsDropped.Add(1)
		return r, false
	}
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Status == session.StatusActive {
		if atMS, stale := c.invalidatedSinceLocked(t, r); stale {
			r = r.Revoked(atMS)
			c.fillsRevoked.Add(1)
		}
	}
	e := c.liveLocked(r.DeviceSessionID, now)
	if r.Status == session.StatusRevoked {
		if e != nil && !e.active() {
			r.RevokedAtMS = earliest(e.rec.RevokedAtMS, r.RevokedAtMS)
		}
		c.storeLocked(e, r, now)
		return r, true
	}
	if e != nil && !e.active() {
		c.fillsDropped.Add(1)
		return e.rec, false
	}
	if t.epoch < c.dropEpoch || c.changedSinceLocked(t, r.DeviceSessionID) {
		c.fillsDropped.Add(1)
		return r, false
	}
	c.storeLocked(e, r, now)
	return r, true
}

// Check returns r as a reader that took t should answer it: an active r is
// returned revoked (as Fill would store it, rules 3 and 4) when its session
// or its user was revoked after t was taken, or when t is older than the
// remembered invalidations. Check stores nothing; it lets callers that share
// one read of a lower tier (joining an in-flight backend call) apply the
// fill guard to the answer they return.
func (c *Cache) Check(t Token, r session.Record) session.Record {
	if r.Status != session.StatusActive {
		return r
	}
	c.mu.Lock()
	atMS, stale := c.invalidatedSinceLocked(t, r)
	c.mu.Unlock()
	if stale {
		return r.Revoked(atMS)
	}
	return r
}

// invalidatedSinceLocked reports whether the active record r may have been
// invalidated after t was taken, and the atMS of the latest remembered such
// invalidation (0 if none or unknown).
func (c *Cache) invalidatedSinceLocked(t Token, r session.Record) (atMS int64, stale bool) {
	if mutation.Disabled(mutation.L1Generation) {
		return 0, false
	}
	var at uint64
	if inv, ok := c.idInv[r.DeviceSessionID]; ok && inv.epoch > t.epoch {
		at, atMS, stale = inv.epoch, inv.atMS, true
	}
	if inv, ok := c.userInv[r.UserID]; ok && inv.epoch > t.epoch && inv.epoch > at {
		atMS, stale = inv.atMS, true
	}
	if t.epoch < c.floor {
		stale = true
	}
	return atMS, stale
}

// changedSinceLocked reports whether Invalidate(id) or Changed(id) ran
// after t was taken.
func (c *Cache) changedSinceLocked(t Token, id string) bool {
	if mutation.Disabled(mutation.L1Generation) {
		return false
	}
	return c.chgInv[id].epoch > t.epoch
}

// earliest returns the earlier of two optional revocation times.
func earliest(a, b *int64) *int64 {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case *b < *a:
		return b
	}
	return a
}

// liveLocked returns the unexpired entry for id, or nil. It removes an
// expired entry.
func (c *Cache) liveLocked(id string, now time.Duration) *entry {
	e := c.lru.peek(id)
	if e == nil {
		return nil
	}
	if now >= e.expires {
		c.removeLocked(e)
		c.expired++
		return nil
	}
	return e
}

// storeLocked sets the record of e (the live entry for r's session, or nil
// for a new one) to r with a fresh expiry, and marks it most recently used.
func (c *Cache) storeLocked(e *entry, r session.Record, now time.Duration) {
	if e != nil {
		if e.active() {
			c.unlinkLocked(e)
		}
		e.rec, e.expires = r, now+c.ttl
		if e.active() {
			c.linkLocked(e)
		}
		c.lru.touch(e)
		return
	}
	e = &entry{rec: r, expires: now + c.ttl}
	if e.active() {
		c.linkLocked(e)
	}
	if old := c.lru.add(r.DeviceSessionID, e); old != nil {
		if old.active() {
			c.unlinkLocked(old)
		}
		c.evictions++
	}
}

// linkLocked puts the active entry e at the head of its user's list.
func (c *Cache) linkLocked(e *entry) {
	uid := e.rec.UserID
	if head := c.users[uid]; head != nil {
		head.uprev = e
		e.unext = head
	}
	c.users[uid] = e
}

// unlinkLocked takes the active entry e out of its user's list.
func (c *Cache) unlinkLocked(e *entry) {
	if e.uprev != nil {
		e.uprev.unext = e.unext
	} else if e.unext != nil {
		c.users[e.rec.UserID] = e.unext
	} else {
		delete(c.users, e.rec.UserID)
	}
	if e.unext != nil {
		e.unext.uprev = e.uprev
	}
	e.uprev, e.unext = nil, nil
}

// removeLocked takes e out of the cache and, if active, out of its user's
// list (expiry, DropActive).
func (c *Cache) removeLocked(e *entry) {
	c.lru.remove(e)
	if e.active() {
		c.unlinkLocked(e)
	}
}

// flipLocked makes the live entry e revoked, keeping an existing
// RevokedAtMS, else using atMS if positive. Its expiry is unchanged.
func (c *Cache) flipLocked(e *entry, atMS int64) {
	if e.active() {
		c.unlinkLocked(e)
	}
	e.rec = e.rec.Revoked(atMS)
}

// Revoke flips the cached entry for id, if any, to revoked: an existing
// RevokedAtMS is kept, otherwise atMS is used when positive. Whether or not
// id is cached, the invalidation is remembered so that a Fill with an older
// Token cannot store id as active. An invalid id is ignored (it can never be
// cached).
//
// For the Fill check to cover a lookup that reads a lower tier while the
// revocation is being written there, call Revoke once the lower tier holds
// the revocation (or again after it does).
func (c *Cache) Revoke(id string, atMS int64) {
	if session.ValidateID(id) != nil {
		return
	}
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rememberLocked(id, kindSession, atMS)
	if e := c.liveLocked(id, now); e != nil {
		c.flipLocked(e, atMS)
	}
}

// Invalidate reports that the lower tier's record of id changed in a way
// L1 cannot interpret (deleted, expired, rewritten): an active entry for id
// is removed, a revoked one stays (revocation is one-way), and a Fill with a
// Token taken before stores nothing active for id (rule 5), since what it
// read may predate the change. An invalid id is ignored.
func (c *Cache) Invalidate(id string) {
	if session.ValidateID(id) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rememberLocked(id, kindChanged, 0)
	if e := c.lru.peek(id); e != nil && e.active() {
		c.removeLocked(e)
	}
}

// Changed reports that the lower tier's record of id changed, by anyone,
// in a way L1 has not interpreted yet. Like Invalidate it makes a Fill with
// a Token taken before store nothing active for id (rule 5), but it keeps
// an active entry and returns true: the caller must read the lower tier
// and then Revoke, Invalidate or keep the entry by what it finds. Deciding
// and recording under one lock keeps a Fill that lands meanwhile from
// slipping between them. An invalid id is ignored.
func (c *Cache) Changed(id string) (verify bool) {
	if session.ValidateID(id) != nil {
		return false
	}
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rememberLocked(id, kindChanged, 0)
	e := c.liveLocked(id, now)
	return e != nil && e.active()
}

// Peek returns the cached record for id, as Get does, without counting a
// hit or a miss and without marking the entry recently used. An expired
// entry is a miss and stays until a Get removes it.
func (c *Cache) Peek(id string) (session.Record, bool) {
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lru.peek(id)
	if e == nil || now >= e.expires {
		return session.Record{}, false
	}
	return e.rec, true
}

// RevokeUser flips every cached session of userID to revoked, as Revoke
// does for one, and remembers the user-wide invalidation so that a Fill with
// an older Token cannot store any session of that user as active. An invalid
// user id is ignored.
func (c *Cache) RevokeUser(userID string, atMS int64) {
	if session.ValidateUserID(userID) != nil {
		return
	}
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rememberLocked(userID, kindUser, atMS)
	for e := c.users[userID]; e != nil; {
		next := e.unext
		if now >= e.expires {
			c.removeLocked(e)
			c.expired++
		} else {
			c.flipLocked(e, atMS)
		}
		e = next
	}
}

// rememberLocked starts a new epoch for an invalidation of key (a session
// id, or a user id for kindUser) and records it, forgetting the oldest
// remembered invalidation beyond Options.RecentInvalidations.
func (c *Cache) rememberLocked(key string, kind int, atMS int64) {
	epoch := c.epoch.Add(1)
	c.invMapLocked(kind)[key] = invalidation{epoch: epoch, atMS: atMS}
	c.recent = append(c.recent, pastInvalidation{key: key, kind: kind, epoch: epoch})
	if len(c.recent)-c.head <= c.maxRecent {
		return
	}
	old := c.recent[c.head]
	c.recent[c.head] = pastInvalidation{}
	c.head++
	m := c.invMapLocked(old.kind)
	if m[old.key].epoch == old.epoch {
		delete(m, old.key)
	}
	c.floor = old.epoch
	if c.head >= len(c.recent)/2 {
		n := copy(c.recent, c.recent[c.head:])
		clear(c.recent[n:])
		c.recent, c.head = c.recent[:n], 0
	}
}

// invMapLocked returns the map of the last invalidations of a kind.
func (c *Cache) invMapLocked(kind int) map[string]invalidation {
	switch kind {
	case kindUser:
		return c.userInv
	case kindChanged:
		return c.chgInv
	}
	return c.idInv
}

// DropActive removes every active entry (revoked entries stay) and makes
// every Token taken before it unable to store an active record. It returns
// how many entries were removed. The caller uses it when invalidations may
// have been lost.
func (c *Cache) DropActive() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropEpoch = c.epoch.Add(1)
	n := 0
	for _, head := range c.users {
		for e := head; e != nil; {
			next := e.unext
			c.removeLocked(e)
			n++
			e = next
		}
	}
	return n
}

// Len returns the number of entries, including expired ones not yet
// removed.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.len()
}

// Stats returns the Cache's counters. Hits, Misses, Evictions and Expired
// are read together under the lock; the Fill counters are read one by one
// after it, not as one snapshot with the others.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	hits, misses, evictions, expired := c.hits, c.misses, c.evictions, c.expired
	c.mu.Unlock()
	return Stats{
		Hits:         hits,
		Misses:       misses,
		Evictions:    evictions,
		Expired:      expired,
		Fills:        c.fills.Load(),
		FillsRevoked: c.fillsRevoked.Load(),
		FillsDropped: c.fillsDropped.Load(),
	}
}
