package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// debugSessionsPath is the prefix of GET /debug/sessions/{id}.
const debugSessionsPath = "/debug/sessions/"

// Bounds of one /debug/sessions answer: the Redis read, and the whole
// answer (the backend client has its own timeout within it).
const (
	debugRedisTimeout = time.Second
	debugTimeout      = 5 * time.Second
)

// Decisions of /debug/sessions: what serveAuthenticated would do now with a
// request of the session, before it checks the signature.
const (
	decisionAccept  = "accept"         // the lookup answers active; the signature decides
	decisionRevoked = "reject_revoked" // 401 revoked
	decisionUnknown = "reject_unknown" // 401 unknown_session
	decisionError   = "deny_error"     // 503 unavailable: no tier could answer
)

// What a tier holds, in sessionState.
const (
	heldActive   = "active"
	heldRevoked  = "revoked"
	heldAbsent   = "absent"    // L1 does not hold the session (or it expired)
	heldNotFound = "not_found" // Redis has no record, or the backend does not know the id
	heldError    = "error"     // the tier could not answer; see sessionState.Error
)

// sessionState is the body of a 200 from /debug/sessions/{id}.
type sessionState struct {
	Replica string `json:"replica"`
	// Decision is one of the decision* constants; Tier is the tier that
	// decides it: l1, l2, backend, or none when no tier could answer.
	Decision string `json:"decision"`
	Tier     string `json:"tier"`
	// L1 is what L1 holds: active, revoked or absent. L1RevokedAtMS is
	// its revocation time, when L1 holds it revoked and knows when.
	L1            string `json:"l1"`
	L1RevokedAtMS *int64 `json:"l1_revoked_at_ms,omitempty"`
	// L1Distrusted: L1 holds the session active, but the invalidation
	// channel has been unhealthy for longer than -stale-bound, so lookups
	// read Redis instead (see tiered.Cache.Peek).
	L1Distrusted bool `json:"l1_distrusted,omitempty"`
	// L2 and Backend are what Redis and the backend answered (active,
	// revoked, not_found, error), or empty when the lookup would not ask
	// them. L2Irregular says why a hash read as revoked is not in the
	// documented form (a hand edit).
	L2          string `json:"l2,omitempty"`
	L2Irregular string `json:"l2_irregular,omitempty"`
	Backend     string `json:"backend,omitempty"`
	// Errors are the failures of the tiers that could not answer.
	Errors []string `json:"errors,omitempty"`
	// Subscribed and Tracking describe the invalidation channel: a replica
	// without tracking hears no hand edit of Redis (redis-cli HSET).
	Subscribed bool `json:"subscribed"`
	Tracking   bool `json:"tracking"`
	// RevocationsPending counts revocations this replica still owes Redis.
	// A lookup answers revoked for those sessions whatever Redis and the
	// backend say, which this answer cannot see (it reads the tiers only).
	RevocationsPending int64 `json:"revocations_pending,omitempty"`
}

// serveDebugSession answers what this replica would do with session {id}
// now and which tier decides, without changing any cache: L1 is peeked (no
// fill, no LRU move, no hit counted), Redis is read with one HGETALL, the
// backend is asked with one GET, and nothing is written anywhere, not even
// the unknown-id cache or a counter. It follows the lookup's order: an L1
// entry decides when the cache would serve it (tiered.Cache.Peek), then
// Redis, then the backend.
//
// It requires the push token as a bearer token, like the push endpoint:
// the answer tells who may still get in.
func (g *gateway) serveDebugSession(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
		return
	}
	if g.cfg.PushToken != "" && !bearerOK(r, g.cfg.PushToken) {
		g.log.Warn("debug request refused: missing or wrong bearer token", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="gatewayd debug"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "bad push token"})
		return
	}
	id := r.PathValue("id")
	if err := session.ValidateID(id); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), debugTimeout)
	defer cancel()
	st := g.sessionState(ctx, id)
	g.log.Info("debug: session state read", "id", session.Redact(id), "decision", st.Decision,
		"tier", st.Tier, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, st)
}

// sessionState reads the tiers in lookup order and stops at the first that
// decides. id must be valid.
func (g *gateway) sessionState(ctx context.Context, id string) sessionState {
	sub := g.cache.Stats().Channel
	st := sessionState{
		Replica:            g.cfg.Name,
		L1:                 heldAbsent,
		Subscribed:         sub.Subscribed,
		Tracking:           sub.Tracking,
		RevocationsPending: g.cache.Stats().RevocationsPending,
	}
	if rec, ok, served := g.cache.Peek(id); ok {
		st.L1 = held(rec)
		switch {
		case rec.Status != session.StatusActive:
			if rec.RevokedAtMS != nil {
				at := *rec.RevokedAtMS
				st.L1RevokedAtMS = &at
			}
			return st.decide(decisionRevoked, tiered.TierL1)
		case served:
			return st.decide(decisionAccept, tiered.TierL1)
		}
		st.L1Distrusted = true
	}

	rec, irregular, err := g.readRedis(ctx, id)
	switch {
	case err == nil:
		st.L2, st.L2Irregular = held(rec), irregular
		return st.decide(decision(rec), tiered.TierL2)
	case errors.Is(err, session.ErrNotFound):
		st.L2 = heldNotFound
	default:
		// Redis down or a record that fails decoding: the lookup asks the
		// backend.
		st.L2 = heldError
		st.Errors = append(st.Errors, "redis: "+err.Error())
	}

	rec, err = g.backend.Fetch(ctx, id)
	switch {
	case err == nil:
		st.Backend = held(rec)
		return st.decide(decision(rec), tiered.TierBackend)
	case errors.Is(err, session.ErrNotFound):
		st.Backend = heldNotFound
		return st.decide(decisionUnknown, tiered.TierBackend)
	}
	st.Backend = heldError
	st.Errors = append(st.Errors, "backend: "+err.Error())
	return st.decide(decisionError, tiered.TierNone)
}

func (st sessionState) decide(decision string, tier tiered.Tier) sessionState {
	st.Decision, st.Tier = decision, tier.String()
	return st
}

func held(rec session.Record) string {
	if rec.Status == session.StatusActive {
		return heldActive
	}
	return heldRevoked
}

func decision(rec session.Record) string {
	if rec.Status == session.StatusActive {
		return decisionAccept
	}
	return decisionRevoked
}

// readRedis reads the session hash as rediscache.Cache.Get does (same key,
// same decoding), but with HGETALL alone, so that no counter or warning of
// the L2 changes: a missing hash is session.ErrNotFound. It also returns why
// a hash read as revoked is irregular.
func (g *gateway) readRedis(ctx context.Context, id string) (session.Record, string, error) {
	ctx, cancel := context.WithTimeout(ctx, debugRedisTimeout)
	defer cancel()
	h, err := g.rdb.HGetAll(ctx, g.layout.SessionKey(id)).Result()
	switch {
	case err != nil:
		return session.Record{}, "", errors.New(redisconn.Explain(err))
	case len(h) == 0:
		return session.Record{}, "", session.ErrNotFound
	}
	rec, err := rediscache.DecodeHash(id, h)
	if err != nil {
		return session.Record{}, "", err
	}
	return rec, rediscache.Irregular(h), nil
}
