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
// replicas learn of the loss only when their channel resyncs, up to
// StaleBound later. So when a resync follows a loss, every fill whose
// backend call began within StaleBound + FetchTimeout is taken back
// (Unfill: deleted if still active; the next lookup asks the backend), and
// a fill whose backend call began before the latest such resync is not
// written, or is taken back at once if it landed meanwhile.
type recentFills struct {
	mu      sync.Mutex
	fills   []recentFill // oldest first
	lossAt  int64        // UnixNano of the latest resync after a loss
	keepFor time.Duration
}

type recentFill struct {
	id    string
	start int64 // UnixNano the backend call began
}

// add remembers a fill and forgets those older than keepFor. It reports
// whether a loss was resynced after start: the fill must then be taken back.
func (r *recentFills) add(id string, start time.Time, now time.Time) (lost bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cut := now.Add(-r.keepFor).UnixNano()
	i := 0
	for i < len(r.fills) && r.fills[i].start < cut {
		i++
	}
	r.fills = append(r.fills[i:], recentFill{id: id, start: start.UnixNano()})
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

// lost records a resync after a loss at now and returns the ids of the
// fills whose backend call began within keepFor of it.
func (r *recentFills) lost(now time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lossAt = now.UnixNano()
	cut := now.Add(-r.keepFor).UnixNano()
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
	if c.recent.add(id, start, c.opts.Now()) {
		c.unfill(ctx, []string{id})
	}
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
	ids := c.recent.lost(c.opts.Now())
	if len(ids) == 0 {
		return
	}
	c.wg.Go(func() { c.unfill(c.ctx, ids) })
}
