package tiered

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/subscriber"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// MarkRevoked revokes a device session: L1 at once, then Redis (write and
// publish) from a background worker that retries until Redis holds it or
// the Cache closes (see Options.RevokeRetryFor). An invalid id is counted
// and ignored.
func (c *Cache) MarkRevoked(id string) {
	if err := session.ValidateID(id); err != nil {
		c.stats.invalidIDs.Add(1)
		c.opts.Logger.Warn("MarkRevoked: invalid session id", "err", err)
		return
	}
	c.owe(revokeJob{id: id})
}

// MarkAllRevokedForUser revokes every session of a user: L1 at once, then
// Redis from the background worker, as MarkRevoked.
func (c *Cache) MarkAllRevokedForUser(userID string) {
	if err := session.ValidateUserID(userID); err != nil {
		c.stats.invalidIDs.Add(1)
		c.opts.Logger.Warn("MarkAllRevokedForUser: invalid user id", "err", err)
		return
	}
	c.owe(revokeJob{userID: userID})
}

// Revoke revokes a device session in L1 and then writes and publishes the
// revocation in Redis, returning the error of that write. A failed write
// is owed and retried by the background worker, as after MarkRevoked.
func (c *Cache) Revoke(ctx context.Context, id string) error {
	if err := session.ValidateID(id); err != nil {
		return err
	}
	at := c.nowMS()
	c.revokeLocal(id, at)
	if !c.pending.add(id, "", at) {
		c.stats.revokeOwedFull.Add(1)
	}
	return c.writeSync(ctx, revokeJob{id: id})
}

// RevokeUser revokes every session of a user in L1 and then in Redis,
// returning the error of the Redis write; a failed write is retried in
// the background.
func (c *Cache) RevokeUser(ctx context.Context, userID string) error {
	if err := session.ValidateUserID(userID); err != nil {
		return err
	}
	at := c.nowMS()
	c.l1.RevokeUser(userID, at)
	if !c.pending.add("", userID, at) {
		c.stats.revokeOwedFull.Add(1)
	}
	return c.writeSync(ctx, revokeJob{userID: userID})
}

func (c *Cache) revokeLocal(id string, atMS int64) {
	c.l1.Revoke(id, atMS)
	c.flights.Forget(id)
}

func (c *Cache) nowMS() int64 { return c.opts.Now().UnixMilli() }

// owe flips L1 and hands the Redis write to the worker. When the owed set
// is full, the write is made here, once, instead.
func (c *Cache) owe(j revokeJob) {
	at := c.nowMS()
	if j.userID != "" {
		c.l1.RevokeUser(j.userID, at)
	} else {
		c.revokeLocal(j.id, at)
	}
	if !c.pending.add(j.id, j.userID, at) {
		c.stats.revokeOwedFull.Add(1)
		_ = c.writeSync(c.ctx, j)
		return
	}
	c.wake()
}

// wake makes the worker try what is owed.
func (c *Cache) wake() {
	select {
	case c.kick <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// writeSync is the one attempt of Revoke and RevokeUser; on failure the
// worker retries it.
func (c *Cache) writeSync(ctx context.Context, j revokeJob) error {
	err := c.writeRevocation(ctx, j)
	if !held(err) {
		c.stats.revokeRetries.Add(1)
		c.wake()
	}
	return err
}

// revokeWorker writes the revocations this replica owes Redis (pending),
// each until Redis holds it: at every wake-up it tries them all, and while
// any fails it tries again after a backoff growing from 50 ms to 2 s. The
// users owed are revoked one by one; the sessions owed go to Redis together
// (rediscache's RevokeSessions: a script per 64 sessions of a stripe,
// pipelined), so that a burst of revocations, such as the sessions of a
// leaked credential, costs a few round trips rather than one each. A
// revocation still failing RevokeRetryFor after it was first tried is
// counted in RevokeFailures and logged at ERROR, once, and retried all the
// same: while it fails, Redis may hold the session active (Redis refusing
// writes for lack of memory is the usual cause; see rediscache's fallback,
// which deletes the record meanwhile). What is still owed at Close is
// counted as failed.
func (c *Cache) revokeWorker() {
	type failure struct {
		since    time.Time // first failed attempt
		reported bool      // counted and logged
	}
	backoff := time.Duration(0)
	failing := map[revokeJob]*failure{}
	for {
		var retry <-chan time.Time
		var t *time.Timer
		if backoff > 0 {
			t = time.NewTimer(backoff)
			retry = t.C
		}
		select {
		case <-c.ctx.Done():
			if t != nil {
				t.Stop()
			}
			c.stats.revokeFailures.Add(c.pending.n.Load())
			return
		case <-c.kick:
			if t != nil {
				t.Stop()
			}
		case <-retry:
		}
		ids, users := c.pending.snapshot()
		jobs := make([]revokeJob, 0, len(ids)+len(users))
		for _, u := range users {
			jobs = append(jobs, revokeJob{userID: u})
		}
		for _, id := range ids {
			jobs = append(jobs, revokeJob{id: id})
		}
		// Forget the failures of revocations no longer owed (a Revoke
		// wrote them meanwhile).
		owed := make(map[revokeJob]bool, len(jobs))
		for _, j := range jobs {
			owed[j] = true
		}
		for j := range failing {
			if !owed[j] {
				delete(failing, j)
			}
		}
		failed := false
		var unreachable error   // once Redis does not answer, the rest wait
		var sessionErrs []error // of ids, written together after the users
		for n, j := range jobs {
			err := unreachable
			switch {
			case err != nil:
			case j.userID != "":
				err = c.writeRevocation(c.ctx, j)
			default:
				if sessionErrs == nil {
					sessionErrs = c.writeSessions(c.ctx, ids)
				}
				err = sessionErrs[n-len(users)]
			}
			if held(err) {
				err = nil
			}
			if err == nil {
				delete(failing, j)
				continue
			}
			failed = true
			if c.ctx.Err() != nil {
				break
			}
			if unreachable == nil {
				c.stats.revokeRetries.Add(1)
			}
			f := failing[j]
			if f == nil {
				f = &failure{since: c.opts.Now()}
				failing[j] = f
			}
			if d := c.opts.Now().Sub(f.since); !f.reported && d >= c.opts.RevokeRetryFor {
				f.reported = true
				c.stats.revokeFailures.Add(1)
				c.opts.Logger.Error("revocation not written to Redis yet; retrying until it is",
					"id", session.Redact(j.id), "user", session.Redact(j.userID),
					"failing_for", d.String(), "err", err)
			}
			if !isRefusal(err) {
				unreachable = err
			}
		}
		if failed {
			backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
		} else {
			backoff = 0
		}
	}
}

// isRefusal reports whether Redis answered err (it refused the write) as
// opposed to not answering.
func isRefusal(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// writeRevocation makes one attempt and, on success, forgets the debt.
//
// A revocation the primary wrote but its replicas did not acknowledge
// (rediscache.ErrNotReplicated) is held by Redis: it is no longer owed, and
// the error goes to the caller of Revoke, who decides (retrying it would
// run the script and its WAIT again every round while the new primary has
// no replica).
func (c *Cache) writeRevocation(ctx context.Context, j revokeJob) error {
	var m session.Invalidation
	var err error
	if j.userID != "" {
		m, _, err = c.l2.RevokeUser(ctx, j.userID)
	} else {
		m, err = c.l2.RevokeSession(ctx, j.id)
	}
	if held(err) {
		c.settled(j.id, j.userID, m.AtMS)
	}
	return err
}

// writeSessions makes one attempt at revoking ids in Redis, together, and
// forgets the debt of each that Redis now holds. It returns the error of
// each id (nil when held).
func (c *Cache) writeSessions(ctx context.Context, ids []string) []error {
	msgs, errs := c.l2.RevokeSessions(ctx, ids)
	out := make([]error, len(ids))
	for i, id := range ids {
		var err error
		if errs != nil {
			err = errs[i]
		}
		if held(err) {
			var atMS int64
			if i < len(msgs) {
				atMS = msgs[i].AtMS
			}
			c.settled(id, "", atMS)
		}
		out[i] = err
	}
	return out
}

// settled forgets the debt of a revocation that Redis now holds, after
// applying it to L1 once more. A lookup that began after the revocation was
// made here may have read Redis or the backend before the write: until now
// the debt turned what it read into revoked, and until the revocation's
// message arrives nothing else would, so L1 records it again here, after
// that lookup's token (Fill rule 3). atMS is Redis's revocation time, or 0
// when the reply did not carry one (this process's clock is used then).
func (c *Cache) settled(id, userID string, atMS int64) {
	if atMS == 0 {
		atMS = c.nowMS()
	}
	if userID != "" {
		c.l1.RevokeUser(userID, atMS)
	} else {
		c.revokeLocal(id, atMS)
	}
	c.stats.revocationsPublished.Add(1)
	c.pending.done(id, userID)
}

// held reports whether err, from writeRevocation or writeSessions, leaves
// the revocation in Redis.
func held(err error) bool { return err == nil || errors.Is(err, rediscache.ErrNotReplicated) }

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
// dropped if the record is gone or unreadable. Either way the id is marked
// changed, so that a lookup reading it at this moment does not cache what it
// read; deciding and marking are one step (l1.Cache.Changed), so a
// fill landing in between is checked too, never dropped unread.
func (c *Cache) keysChanged(ids []string) {
	for _, id := range ids {
		c.stats.keysChanged.Add(1)
		if !c.l1.Changed(id) {
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
		case errors.Is(err, session.ErrNotFound):
			c.l1.Invalidate(id) // deleted, expired or evicted: the next lookup asks the backend
		default:
			// Unreadable (Redis slow, down, or the record corrupt): the
			// entry cannot be vouched for, so it goes.
			c.stats.l2Errors.Add(1)
			c.opts.Logger.Debug("session key changed and Redis not read; L1 entry dropped", "id", session.Redact(id), "err", err)
			c.l1.Invalidate(id)
		}
	}
}

// event tracks the channel's health from the subscriber's events.
func (c *Cache) event(e subscriber.Event) {
	switch e.Kind {
	case subscriber.EventLost:
		c.unhealthySince.CompareAndSwap(0, c.opts.Now().UnixNano())
		c.stats.channelLost.Add(1)
		c.opts.Logger.Warn("session invalidation channel lost", "reason", e.Reason)
	case subscriber.EventSynced:
		if e.DropActive {
			n := c.l1.DropActive()
			if e.Reason != subscriber.ReasonStart {
				c.stats.resyncDrops.Add(1) // a start has nothing to drop
				c.lossResynced()
			}
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
