// Package localcache is the per-process first tier (L1) of the session
// cache: a bounded map of decoded session.Records, each with its own
// expiry, evicted by a segmented LRU (a session read twice recently outlives
// sessions read once), in which revocation is one-way.
//
// MarkRevoked and MarkAllRevokedForUser flip cached entries to revoked;
// nothing turns a revoked entry active again, and a revoked entry is served
// as revoked until it expires or is evicted. Load fills a miss from a slower
// source without losing a revocation that arrives while it runs: the record
// is then stored, and returned, revoked.
//
// Package tiered composes this cache with Redis and the backend; use it
// unless L1 alone is what you need. A Cache is safe for concurrent use; a
// hit costs one lock and no allocation. It starts no goroutines: expiry is
// checked when an entry is read, against Options.Now.
package localcache

import (
	"context"
	"fmt"
	"time"

	"github.com/galaxy-game/sessioncache/internal/l1"
	"github.com/galaxy-game/sessioncache/session"
)

// Defaults for Options.
const (
	DefaultSize = 10000
	DefaultTTL  = 30 * time.Second
)

// Options configures a Cache. Zero fields mean the documented defaults;
// negative values are errors.
type Options struct {
	// Size is the maximum number of entries, active and revoked together.
	// Default DefaultSize. When the Cache is full, storing a new
	// session evicts the least recently used entry among those not read
	// since they were stored (the probationary segment); entries read again
	// are protected, up to 80% of Size, in least recently used order.
	Size int
	// TTL is the lifetime of an entry, counted from when it was stored. A
	// revocation does not extend it. Default DefaultTTL.
	TTL time.Duration
	// Now is the clock against which expiry is checked on every read.
	// Default time.Now. It is called outside the Cache's lock.
	Now func() time.Time
}

// Stats are cumulative counters of a Cache.
type Stats struct {
	// Hits and Misses count reads (Get, Lookup with a valid id, Load). An
	// expired entry counts as a miss.
	Hits, Misses uint64
	// Evictions counts entries pushed out by the Size bound.
	Evictions uint64
	// Expired counts entries found expired and removed.
	Expired uint64
	// Fills counts records offered to the cache after a miss: by Load, or,
	// in a tiered.Cache, by its lookups.
	Fills uint64
	// FillsRevoked counts active records stored revoked because a
	// revocation arrived while they were being read, or because more
	// revocations arrived meanwhile than the cache remembers (65,536), so
	// that it could not tell.
	FillsRevoked uint64
	// FillsDropped counts records offered but not stored: the cache held
	// the session revoked already, or, in a tiered.Cache, the record
	// changed in Redis or the invalidation channel was resynced while it
	// was being read.
	FillsDropped uint64
}

// Cache is the L1 session cache. Create it with New.
type Cache struct {
	c *l1.Cache
}

var _ session.Cache = (*Cache)(nil)

// New returns an empty Cache configured by opts.
func New(opts Options) (*Cache, error) {
	c, err := l1.New(l1.Options{Size: opts.Size, TTL: opts.TTL, Now: opts.Now})
	if err != nil {
		return nil, err
	}
	return &Cache{c: c}, nil
}

// Get returns the cached record for id, active or revoked. An absent or
// expired entry is a miss. Get does not validate id and does not allocate;
// an invalid id is simply a miss. The returned record shares its
// RevokedAtMS pointer with the cache: do not write through it.
func (c *Cache) Get(id string) (session.Record, bool) { return c.c.Get(id) }

// Lookup implements session.Cache. It validates id (an error wrapping
// session.ErrInvalidID) and returns the cached record: a revoked record
// comes with a nil error, a miss or an expired entry is an error wrapping
// session.ErrNotFound. It never blocks; ctx is not used.
func (c *Cache) Lookup(ctx context.Context, id string) (session.Record, error) {
	return c.c.Lookup(ctx, id)
}

// Load returns the record cached for id or, on a miss, the one load
// returns for it, which it stores. When the session or its user is revoked
// (MarkRevoked, MarkAllRevokedForUser) while load runs, the loaded record
// is stored and returned revoked; so it is, on the safe side, when more
// than 65,536 revocations arrive while load runs (the cache remembers no
// more, and cannot tell whether one concerned this session). When the cache
// holds the session revoked, that record is returned.
//
// An invalid id is an error wrapping session.ErrInvalidID, and load is not
// called. An error from load is returned as it is. A record that fails
// session.Record.Validate (the error wraps Validate's) or names another
// session is an error too. With any error, Load returns a zero record and
// stores nothing. Concurrent Loads of one id each call load.
func (c *Cache) Load(ctx context.Context, id string, load func(context.Context) (session.Record, error)) (session.Record, error) {
	if err := session.ValidateID(id); err != nil {
		return session.Record{}, fmt.Errorf("localcache: load: %w", err)
	}
	if r, ok := c.c.Get(id); ok {
		return r, nil
	}
	tok := c.c.Begin()
	r, err := load(ctx)
	if err != nil {
		return session.Record{}, err
	}
	if r.DeviceSessionID != id {
		return session.Record{}, fmt.Errorf("localcache: load %s: got a record of another session", session.Redact(id))
	}
	if err := r.Validate(); err != nil {
		return session.Record{}, fmt.Errorf("localcache: load %s: %w", session.Redact(id), err)
	}
	stored, _ := c.c.Fill(tok, r)
	return stored, nil
}

// MarkRevoked implements session.Cache: the cached entry for id, if any,
// becomes revoked now, and a Load running meanwhile stores id revoked. An
// invalid id is ignored.
func (c *Cache) MarkRevoked(id string) { c.c.MarkRevoked(id) }

// MarkAllRevokedForUser implements session.Cache: every cached session of
// userID becomes revoked, and a Load running meanwhile stores that user's
// sessions revoked. An invalid user id is ignored.
func (c *Cache) MarkAllRevokedForUser(userID string) { c.c.MarkAllRevokedForUser(userID) }

// Len returns the number of entries, including expired ones not yet
// removed.
func (c *Cache) Len() int { return c.c.Len() }

// Stats returns the Cache's counters.
func (c *Cache) Stats() Stats { return Stats(c.c.Stats()) }
