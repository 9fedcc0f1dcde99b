package tiered

import (
	"context"
	"sync"
	"time"

	"github.com/galaxy-game/sessioncache/internal/mutation"
)

// recentFills remembers the active records this replica wrote to Redis
// lately, with when the backend call behind each began, so that they can be
// taken back after Redis lost data.
//
// The guarded fill script never writes "active" over a revocation Redis
// holds. A restart without persistence (or a failover) empties Redis,
// revocations included; a backend answer read before such a revocation
// and written after the loss would then stand as "active", and the
// replicas learn of the loss when their channel is found unhealthy, up to
// StaleBound later, and resync when it comes back, which may be much later
// (a network partition of the subscriber alone). So when a resync follows a
// loss, every fill whose backend call began within StaleBound +
// FetchTimeout before the channel was found unhealthy, or since, is taken
// back (Unfill: deleted if still active; the next lookup asks the
// backend), and a fill whose backend call began before the latest such
// resync is not written, or is taken back at once if it landed meanwhile.
// While the channel is unhealthy no fill is written (a loss then would
// stand until the resync); the journal keeps the fills that were already
// on their way, up to maxRecentFills, and a fill that finds it full is
// served but not written.
type recentFills struct {
	mu      sync.Mutex
	fills   []recentFill // oldest first
	lossAt  int64        // UnixNano of the latest resync after a loss
	keepFor time.Duration
}

// maxRecentFills bounds the journal of recent fills while the channel is
// unhealthy (about 40 bytes and a string header a fill).
const maxRecentFills = 1 << 16

type recentFill struct {
	id    string
	start int64 // UnixNano the backend call began
}

// room forgets the fills that began more than keepFor before from (now,
// or when the channel was found unhealthy) and reports whether another
// fill may be remembered.
func (r *recentFills) room(from time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forget(from)
	return len(r.fills) < maxRecentFills
}

func (r *recentFills) forget(from time.Time) {
	cut := from.Add(-r.keepFor).UnixNano()
	i := 0
	for i < len(r.fills) && r.fills[i].start < cut {
		i++
	}
	r.fills = r.fills[i:]
}

// add remembers a fill, forgetting those that began more than keepFor
// before from. It reports whether a loss was resynced after start: the
// fill must then be taken back.
func (r *recentFills) add(id string, start, from time.Time) (lost bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forget(from)
	r.fills = append(r.fills, recentFill{id: id, start: start.UnixNano()})
	return r.lossAt > start.UnixNano()
}

// lostSince reports whether a loss was resynced after start.
func (r *recentFills) lostSince(start time.Time) bool {
	if mutation.Disabled(mutation.LossUnfill) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lossAt > start.UnixNano()
}

// lost records a resync after a loss at now, the channel having been
// unhealthy since from, and returns the ids of the fills whose backend call
// began within keepFor before from, or since.
func (r *recentFills) lost(now, from time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lossAt = now.UnixNano()
	cut := from.Add(-r.keepFor).UnixNano()
	var ids []string
	for _, f := range r.fills {
		if f.start >= cut {
			ids = append(ids, f.id)
		}
	}
	r.fills = r.fills[:0]
	return ids
}

// filled notes an active record this replica wrote to Redis from a backend
// call begun at start, and takes it back at once if a loss was resynced
// since start.
func (c *Cache) filled(ctx context.Context, id string, start time.Time) {
	if mutation.Disabled(mutation.LossUnfill) {
		return
	}
	if c.recent.add(id, start, c.keepFrom()) {
		c.unfill(ctx, []string{id})
	}
}

// fillable reports whether a backend answer may be written to Redis now:
// the channel is healthy, so that a loss of Redis data would be noticed
// within StaleBound and the fill taken back, and the journal has room for
// it.
func (c *Cache) fillable() bool {
	if mutation.Disabled(mutation.LossUnfill) {
		return true
	}
	return c.unhealthySince.Load() == 0 && c.recent.room(c.opts.Now())
}

// keepFrom is the time the journal of recent fills counts back from: now,
// or when the channel was found unhealthy.
func (c *Cache) keepFrom() time.Time {
	if since := c.unhealthySince.Load(); since != 0 {
		return time.Unix(0, since)
	}
	return c.opts.Now()
}

// unfill takes back fills that may predate a revocation Redis lost.
func (c *Cache) unfill(ctx context.Context, ids []string) {
	n, err := c.l2.Unfill(ctx, ids)
	c.stats.lossUnfills.Add(int64(n))
	if err != nil {
		c.stats.l2Errors.Add(1)
		c.opts.Logger.Warn("recent fills not taken back after Redis lost data; they expire with the session TTL or the next revocation",
			"fills", len(ids), "err", err)
		return
	}
	if n > 0 {
		c.opts.Logger.Info("recent fills taken back after Redis lost data", "taken", n, "of", len(ids))
	}
}

// lossResynced takes back, in the background, the recent fills a loss may
// have made stale.
func (c *Cache) lossResynced() {
	ids := c.recent.lost(c.opts.Now(), c.keepFrom())
	if len(ids) == 0 {
		return
	}
	c.wg.Go(func() { c.unfill(c.ctx, ids) })
}
