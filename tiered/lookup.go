package tiered

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/galaxy-game/sessioncache/internal/l1"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// Lookup returns the record of a device session. A revoked session is
// returned with a nil error (the caller rejects it); an unknown one returns
// an error wrapping session.ErrNotFound; an invalid id returns an error
// wrapping session.ErrInvalidID without any I/O. Any other error means no
// tier could answer safely, and the caller must deny.
func (c *Cache) Lookup(ctx context.Context, id string) (session.Record, error) {
	rec, _, err := c.LookupTier(ctx, id)
	return rec, err
}

// LookupTier is Lookup that also reports which tier answered.
func (c *Cache) LookupTier(ctx context.Context, id string) (session.Record, Tier, error) {
	// L1 stores only records that passed validation, so a hit proves id
	// valid, and the id is validated after a miss, before any other tier
	// sees it. The length bound keeps an oversized id from being hashed.
	if len(id) <= session.MaxIDLength {
		if rec, ok := c.l1.Get(id); ok {
			// L1 counts its hits; Stats derives L1Hits from that count,
			// so a hit pays for one counter, taken under L1's lock.
			if rec.Status == session.StatusRevoked || c.trustL1() {
				return rec, TierL1, nil
			}
			c.stats.l1Distrusted.Add(1)
		}
	}
	if err := session.ValidateID(id); err != nil {
		c.stats.invalidIDs.Add(1)
		return session.Record{}, TierNone, err
	}
	if c.knownUnknown(id) {
		c.stats.negativeHits.Add(1)
		return session.Record{}, TierNegative, fmt.Errorf("tiered: %w", session.ErrNotFound)
	}
	// Lookups that leave L1 are timed (an L1 hit is not: reading the clock
	// would cost as much as the hit itself).
	start := time.Now()
	rec, tier, err := c.load(ctx, id)
	c.stats.latency[tier].observe(time.Since(start))
	return rec, tier, err
}

// trustL1 reports whether an L1 "active" may be served: the channel is
// healthy, or has been unhealthy for at most StaleBound.
func (c *Cache) trustL1() bool {
	since := c.unhealthySince.Load()
	if since == 0 {
		return true
	}
	return c.opts.Now().UnixNano()-since <= int64(c.opts.StaleBound)
}

func (c *Cache) knownUnknown(id string) bool {
	until, ok := c.neg.Get(id)
	if !ok {
		return false
	}
	if c.opts.Now().Before(until) {
		return true
	}
	c.neg.Remove(id)
	return false
}

// load answers an L1 miss from L2, then from the backend.
func (c *Cache) load(ctx context.Context, id string) (session.Record, Tier, error) {
	tok := c.l1.Begin()
	rec, err := c.l2.Get(ctx, id)
	switch {
	case err == nil:
		if h := c.hooks.afterL2Read; h != nil {
			h(id)
		}
		rec = c.fillL1(ctx, tok, rec, false)
		c.stats.l2Hits.Add(1)
		return rec, TierL2, nil
	case errors.Is(err, session.ErrNotFound):
	case ctx.Err() != nil:
		return session.Record{}, TierNone, fmt.Errorf("tiered: %w", ctx.Err())
	default:
		// Redis down, slow or holding a corrupt record: the backend
		// decides, and a guarded fill repairs L2 when it can.
		c.stats.l2Errors.Add(1)
		c.opts.Logger.Debug("session L2 read failed", "id", session.Redact(id), "err", err)
	}
	return c.fetchShared(ctx, id)
}

// flight is the outcome of one shared backend call.
type flight struct {
	rec session.Record
	tok l1.Token // taken before the backend was asked
	// fresh marks an answer the backend gave after this replica had
	// applied its own pending revocations to L1: the backend revokes
	// before it pushes, so a pending user-wide revocation is in it
	// already and must not revoke a session its user opened since. A
	// pending revocation of this very session still applies.
	fresh bool
}

// fetchShared calls the backend once per id at a time. The call runs on a
// context detached from any one caller (bounded by FetchTimeout and Close),
// so a caller that gives up does not fail the others.
func (c *Cache) fetchShared(ctx context.Context, id string) (session.Record, Tier, error) {
	if h := c.hooks.beforeFlight; h != nil {
		h(id)
	}
	ch := c.flights.DoChan(id, func() (any, error) { return c.fetch(id) })
	select {
	case res := <-ch:
		if res.Err != nil {
			return session.Record{}, TierNone, res.Err
		}
		f := res.Val.(flight)
		// A revocation that reached this replica after the backend was
		// asked turns the shared answer into revoked, for every caller.
		return c.ownRevocations(c.l1.Check(f.tok, f.rec), f.fresh), TierBackend, nil
	case <-ctx.Done():
		return session.Record{}, TierNone, fmt.Errorf("tiered: %w", ctx.Err())
	}
}

func (c *Cache) fetch(id string) (flight, error) {
	// A lookup that read L2 just before the previous shared call for id
	// filled it starts a call of its own: L1 may hold the answer by now.
	if rec, ok := c.l1.Peek(id); ok && (rec.Status == session.StatusRevoked || c.trustL1()) {
		return flight{rec: rec, tok: c.l1.Begin()}, nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.FetchTimeout)
	defer cancel()
	start := c.opts.Now()
	tok := c.l1.Begin()
	rec, err := c.fetchBackend(ctx, id)
	if err != nil {
		return flight{}, err
	}
	if h := c.hooks.afterBackendRead; h != nil {
		h(id)
	}
	// A fill begun before Redis lost data may predate a revocation lost
	// with it; so may one written while the channel is unhealthy, since a
	// loss then goes unnoticed until the channel resyncs; and one the
	// journal has no room for could not be taken back (see recentFills):
	// serve it, but cache nothing. (No fill outlives a user-wide
	// revocation's refusal window: ctx, at most FetchTimeout <=
	// FillWindow/2, bounds the fills after this call, and the fill script
	// refuses to run after its call's deadline.)
	if c.recent.lostSince(start) || !c.fillable() {
		c.stats.fillsSkipped.Add(1)
		return flight{rec: rec, tok: tok}, nil
	}
	fresh := false
	if rec.Status == session.StatusActive {
		if known := c.ownRevocations(c.l1.Check(tok, rec), false); known.Status == session.StatusRevoked {
			// An invalidation reached this replica while the backend was
			// answering. It may name this session, or only its user, whose
			// sessions opened after that revocation stay active. The
			// backend revokes before it publishes, so its answer to a call
			// made now tells which; without one, serve revoked and cache
			// nothing.
			again, againTok, err := c.askAgain(ctx, id)
			if err != nil {
				return flight{rec: known, tok: tok}, nil
			}
			rec, tok, fresh = again, againTok, true
		}
	}
	stored, err := c.l2.Fill(ctx, rec)
	switch {
	case err == nil:
		rec = stored
		if rec.Status == session.StatusActive {
			c.filled(ctx, id, start)
		}
	case errors.Is(err, rediscache.ErrFillRefused):
		// A user-wide revocation of this user is recent. The backend
		// now knows whether this session predates it: ask once more.
		// An active answer goes to Redis as one given after that
		// revocation (the fill script still refuses it if a later one
		// happened), unless this replica still owes Redis a revocation
		// of the session or its user: its L2 reads count as revoked
		// until then, so the answer is served uncached as before. L1 is
		// left to the next lookup, which reads Redis after the
		// revocation's message has most likely arrived (a token taken
		// before it would store the session revoked).
		c.stats.fillsRefused.Add(1)
		var refused *rediscache.RefusedFill
		errors.As(err, &refused)
		againStart := c.opts.Now()
		again, againTok, err := c.askAgain(ctx, id)
		if err != nil {
			return flight{rec: rec, tok: tok}, nil
		}
		if again.Status != session.StatusRevoked {
			if refused != nil && c.ownRevocations(again, false).Status == session.StatusActive {
				switch stored, err := c.l2.FillSince(ctx, again, refused.RevokedAtMS); {
				case err == nil && stored.Status == session.StatusActive:
					c.filled(ctx, id, againStart)
				case err != nil && !errors.Is(err, rediscache.ErrFillRefused):
					c.stats.l2Errors.Add(1)
				}
			}
			return flight{rec: again, tok: againTok, fresh: true}, nil
		}
		rec, tok, fresh = again, againTok, true
		if stored, err := c.l2.Fill(ctx, rec); err == nil {
			rec = stored
		}
	default:
		// L2 unavailable: L1 alone is filled; its token check still
		// guards against a revocation that arrived meanwhile.
		c.stats.l2Errors.Add(1)
		c.opts.Logger.Debug("session L2 fill failed", "id", session.Redact(id), "err", err)
	}
	rec = c.fillL1(ctx, tok, rec, fresh)
	return flight{rec: rec, tok: tok, fresh: fresh}, nil
}

// fillL1 stores rec, read from L2 or the backend after tok was taken, in
// L1, and returns what the lookup answers. When L1 refuses an active record
// because Redis reported a change of its key since tok (often a fill's own
// write, or another replica's), the key is read from Redis once more and
// that is cached instead, so that a replica's fills do not leave its own
// or its peers' lookups uncached.
func (c *Cache) fillL1(ctx context.Context, tok l1.Token, rec session.Record, fresh bool) session.Record {
	got, cached := c.l1.Fill(tok, c.ownRevocations(rec, fresh))
	if cached || got.Status != session.StatusActive {
		return got
	}
	again := c.l1.Begin()
	now, err := c.l2.Get(ctx, rec.DeviceSessionID)
	if err != nil {
		if !errors.Is(err, session.ErrNotFound) {
			c.stats.l2Errors.Add(1) // answered all the same; cached next time
		}
		return got
	}
	got, _ = c.l1.Fill(again, c.ownRevocations(now, fresh))
	return got
}

// askAgain repeats a backend call whose answer a revocation may have
// overtaken. The token is taken first, so that Check and Fill with it catch
// any invalidation that arrives during this call too.
func (c *Cache) askAgain(ctx context.Context, id string) (session.Record, l1.Token, error) {
	tok := c.l1.Begin()
	rec, err := c.fetchBackend(ctx, id)
	return rec, tok, err
}

// fetchBackend makes one backend call and caches an unknown answer.
func (c *Cache) fetchBackend(ctx context.Context, id string) (session.Record, error) {
	c.stats.backendCalls.Add(1)
	rec, err := c.backend.Fetch(ctx, id)
	switch {
	case err == nil:
		c.stats.backendFound.Add(1)
		return rec, nil
	case errors.Is(err, session.ErrNotFound):
		c.stats.notFound.Add(1)
		c.neg.Add(id, c.opts.Now().Add(c.opts.NegativeTTL))
		return session.Record{}, fmt.Errorf("tiered: %w", err)
	default:
		c.stats.backendErrors.Add(1)
		return session.Record{}, fmt.Errorf("tiered: backend: %w", err)
	}
}

// ownRevocations applies this replica's revocations that Redis does not
// hold yet to a record read from L2 or the backend.
// With sessionsOnly, user-wide ones are left out (see flight.fresh).
func (c *Cache) ownRevocations(r session.Record, sessionsOnly bool) session.Record {
	r, _ = c.pending.check(r, !sessionsOnly)
	return r
}

// elapsedMS converts a Unix millisecond timestamp into an age.
func elapsedMS(now time.Time, atMS int64) time.Duration {
	return now.Sub(time.UnixMilli(atMS))
}
