package tiered

import (
	"context"
	"time"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// MarkRevoked revokes a device session: L1 at once, then Redis (write and
// publish) from a background worker that retries. Failures are counted
// (Stats.RevokeFailures) and logged. An invalid id is counted and ignored.
func (c *Cache) MarkRevoked(id string) {
	if err := session.ValidateID(id); err != nil {
		c.stats.invalidIDs.Add(1)
		c.opts.Logger.Warn("MarkRevoked: invalid session id", "err", err)
		return
	}
	at := c.nowMS()
	c.revokeLocal(id, at)
	c.pending.add(id, "", at)
	c.enqueue(revokeJob{id: id})
}

// MarkAllRevokedForUser revokes every session of a user: L1 at once, then
// Redis from the background worker, as MarkRevoked.
func (c *Cache) MarkAllRevokedForUser(userID string) {
	if err := session.ValidateUserID(userID); err != nil {
		c.stats.invalidIDs.Add(1)
		c.opts.Logger.Warn("MarkAllRevokedForUser: invalid user id", "err", err)
		return
	}
	at := c.nowMS()
	c.l1.RevokeUser(userID, at)
	c.pending.add("", userID, at)
	c.enqueue(revokeJob{userID: userID})
}

// Revoke revokes a device session in L1 and then writes and publishes the
// revocation in Redis, returning the error of that write.
func (c *Cache) Revoke(ctx context.Context, id string) error {
	if err := session.ValidateID(id); err != nil {
		return err
	}
	at := c.nowMS()
	c.revokeLocal(id, at)
	c.pending.add(id, "", at)
	return c.writeSync(ctx, revokeJob{id: id})
}

// RevokeUser revokes every session of a user in L1 and then in Redis,
// returning the error of the Redis write.
func (c *Cache) RevokeUser(ctx context.Context, userID string) error {
	if err := session.ValidateUserID(userID); err != nil {
		return err
	}
	at := c.nowMS()
	c.l1.RevokeUser(userID, at)
	c.pending.add("", userID, at)
	return c.writeSync(ctx, revokeJob{userID: userID})
}

func (c *Cache) revokeLocal(id string, atMS int64) {
	c.l1.Revoke(id, atMS)
	c.flights.Forget(id)
}

func (c *Cache) nowMS() int64 { return c.opts.Now().UnixMilli() }

// writeSync is the one attempt of Revoke and RevokeUser; a failure is
// counted and returned to the caller.
func (c *Cache) writeSync(ctx context.Context, j revokeJob) error {
	err := c.writeRevocation(ctx, j)
	if err != nil {
		c.stats.revokeFailures.Add(1)
	}
	return err
}

// enqueue hands a revocation to the worker. When the queue is full the
// revocation is written synchronously rather than dropped.
func (c *Cache) enqueue(j revokeJob) {
	select {
	case c.revokes <- j:
		return
	case <-c.ctx.Done():
		c.stats.revokeFailures.Add(1)
		return
	default:
	}
	c.stats.revokeQueueFull.Add(1)
	_ = c.writeSync(c.ctx, j)
}

func (c *Cache) revokeWorker() {
	for {
		select {
		case <-c.ctx.Done():
			for {
				select {
				case <-c.revokes:
					c.stats.revokeFailures.Add(1)
				default:
					return
				}
			}
		case j := <-c.revokes:
			c.retryRevocation(j)
		}
	}
}

// retryRevocation attempts a revocation until it succeeds, RevokeRetryFor
// has passed, or the Cache closes, with exponential backoff from 50 ms
// capped at 2 s. Only a revocation given up for good counts as a failure.
func (c *Cache) retryRevocation(j revokeJob) {
	deadline := c.opts.Now().Add(c.opts.RevokeRetryFor)
	backoff := 50 * time.Millisecond
	for try := 1; ; try++ {
		err := c.writeRevocation(c.ctx, j)
		if err == nil {
			return
		}
		if c.opts.Now().Add(backoff).After(deadline) {
			c.stats.revokeFailures.Add(1)
			c.opts.Logger.Error("revocation not written to Redis; other replicas rely on their L1 TTL",
				"id", session.Redact(j.id), "user", session.Redact(j.userID), "tries", try, "err", err)
			return
		}
		c.stats.revokeRetries.Add(1)
		t := time.NewTimer(backoff)
		select {
		case <-c.ctx.Done():
			t.Stop()
			c.stats.revokeFailures.Add(1)
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// writeRevocation makes one attempt.
func (c *Cache) writeRevocation(ctx context.Context, j revokeJob) error {
	var err error
	if j.userID != "" {
		_, _, err = c.l2.RevokeUser(ctx, j.userID)
	} else {
		_, err = c.l2.RevokeSession(ctx, j.id)
	}
	if err == nil {
		c.stats.revocationsPublished.Add(1)
		c.pending.done(j.id, j.userID)
	}
	return err
}

// maxFanout is the longest delay recorded as fan-out; anything longer is a
// replayed, forged or clock-skewed message, not a measure of propagation.
const maxFanout = time.Minute

// apply handles one message from the channel: flip L1.
func (c *Cache) apply(m session.Invalidation) {
	if m.SessionID != "" {
		c.revokeLocal(m.SessionID, m.AtMS)
	} else {
		c.l1.RevokeUser(m.UserID, m.AtMS)
	}
	c.stats.invalidationsApplied.Add(1)
	// at_ms is Redis time from the revocation script; a hand-typed or
	// forged message may carry anything, so only plausible delays count.
	if m.AtMS > 0 {
		if d := elapsedMS(c.opts.Now(), m.AtMS); d >= -time.Second && d <= maxFanout {
			c.stats.fanout.observe(max(d, 0))
		}
	}
	if h := c.hooks.applied; h != nil {
		h(m)
	}
}

// keysChanged handles Redis's report that the hashes of ids changed, by
// anyone: an operator's HSET or DEL, expiry, eviction, or a fill or
// revocation of any replica (this one's included). A revoked L1 entry
// stays. An active one is checked against Redis at once: kept if Redis
// still says active, flipped if it says revoked (a hand revocation), and
// dropped if the record is gone or unreadable. An id L1 does not hold is
// marked changed, so that a lookup reading it at this moment does not
// cache what it read.
func (c *Cache) keysChanged(ids []string) {
	for _, id := range ids {
		c.stats.keysChanged.Add(1)
		cur, ok := c.l1.Peek(id)
		switch {
		case !ok:
			c.l1.Invalidate(id)
			continue
		case cur.Status != session.StatusActive:
			continue
		}
		rec, err := c.l2.Get(c.ctx, id)
		switch {
		case err == nil && rec.Status == session.StatusActive:
		case err == nil:
			at := int64(0)
			if rec.RevokedAtMS != nil {
				at = *rec.RevokedAtMS
			}
			c.revokeLocal(id, at)
			c.stats.handRevocations.Add(1)
		default:
			c.l1.Invalidate(id)
		}
	}
}

// event tracks the channel's health from the subscriber's events.
func (c *Cache) event(e rediscache.Event) {
	switch e.Kind {
	case rediscache.EventLost:
		c.unhealthySince.CompareAndSwap(0, c.opts.Now().UnixNano())
		c.stats.channelLost.Add(1)
		c.opts.Logger.Warn("session invalidation channel lost", "reason", e.Reason)
	case rediscache.EventSynced:
		if e.DropActive {
			n := c.l1.DropActive()
			c.stats.resyncDrops.Add(1)
			c.opts.Logger.Info("session invalidation channel synced; dropped L1 active entries",
				"reason", e.Reason, "dropped", n)
		} else if e.Replayed > 0 {
			c.opts.Logger.Info("session invalidation channel synced by replay",
				"reason", e.Reason, "replayed", e.Replayed)
		}
		c.stats.resyncs.Add(1)
		c.unhealthySince.Store(0)
		c.syncOnce.Do(func() { close(c.synced) })
	}
	if h := c.hooks.event; h != nil {
		h(e)
	}
}
