package rediscache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/mutation"
	"github.com/galaxy-game/sessioncache/session"
)

// Hash fields of a session record in Redis.
const (
	FieldUserID          = "user_id"
	FieldClientPublicKey = "client_public_key"
	FieldStatus          = "status"
	FieldRevokedAtMS     = "revoked_at_ms"
)

// LogTTL is the lifetime of a stripe's sequence counter and log after the
// stripe's last invalidation, to within an hour: a revocation script renews
// their TTLs when less than LogTTL − 1h is left (or it created either), not
// at every invalidation. A counter that expires starts again at 1.
const LogTTL = 30 * 24 * time.Hour

// Batches of the revocation scripts. Each script runs on its own and blocks
// Redis while it runs; other clients' commands run between two scripts of a
// pipeline.
const (
	// revokeBatch is how many sessions of one stripe RevokeSessions
	// revokes and announces in one script.
	revokeBatch = 64
	// revokePipeline bounds the sessions of one pipeline of
	// revoke_session scripts: two scripts keep Redis busy while the next
	// pipeline is on its way, and no more messages than that go out at a
	// time, so that subscribers are not handed thousands at once (which
	// is what fan-out delays are made of).
	revokePipeline = 2 * revokeBatch
	// markBatch is how many sessions of one stripe RevokeUser marks
	// revoked in one script, without announcing them: about 0.3 ms of
	// Redis time, far below the 50 ms a script may block Redis. 100,000
	// sessions are half a second of Redis time or more, so Redis is busy
	// with them for most of the revocation, and another client's lookup
	// that arrives meanwhile waits for the script (or pipeline) in
	// progress: 128 to a script doubled that wait and saved no time
	// (BenchmarkRevokeUserStorm: other lookups' p99 5 ms against 2.3 ms,
	// 760 ms against 740 ms for the revocation); 16 to 32 took 1.3 to
	// 1.7 s, for the round trips and the cost of each call.
	markBatch = 64
	// markPipeline bounds the sessions of one pipeline of mark_revoked
	// scripts. Redis runs every command of a pipeline that one read of
	// its socket brings before it serves another client, so a deep
	// pipeline of marks would hold other lookups for milliseconds; two
	// scripts keep Redis busy while the next pipeline is on its way. One
	// script a pipeline took 950 ms; two pipelines at a time, on two
	// connections, 880 ms with other lookups' p99 at 3.2 ms.
	markPipeline = 2 * markBatch
	// pipelineSessions bounds the DELs of one pipeline of a fallback, so
	// that Options.CallTimeout bounds each pipeline with room to spare.
	pipelineSessions = 4096
	// inlineIndex is the largest user index that revoke_user returns in
	// its own atomic step; RevokeUser scans a larger one afterwards.
	inlineIndex = 1000
	// scanCount is the COUNT of each SSCAN of a user index: an SSCAN
	// costs Redis about 1 µs an id, and one of 1,000 ids held other
	// lookups longer than a pipeline of marks.
	scanCount = 250
	// logRenewEvery is how often, at most, a revocation script renews the
	// TTLs of its stripe's counter and log: they live LogTTL after the
	// last invalidation, to within logRenewEvery.
	logRenewEvery = time.Hour
)

// storeState is the part of a Cache that the data operations own.
type storeState struct {
	published            atomic.Uint64
	publishedNoReceivers atomic.Uint64
	fillsRefused         atomic.Uint64
	revokeErrors         atomic.Uint64
	notReplicated        atomic.Uint64
	irregular            atomic.Uint64
	fallbacks            atomic.Uint64
	announcedBefore      atomic.Uint64

	// warned holds the session keys whose irregular hash was logged.
	warned *lru.Cache[string, struct{}]

	// redisAhead[k] is how far Redis's clock, on the node of stripe k, ran
	// ahead of this process's at the last fill of the stripe, in ms (a
	// lower bound; negative when behind).
	redisAhead []atomic.Int64
}

// Stats counts events since New. The counters only grow.
type Stats struct {
	// Published counts invalidation messages published.
	Published uint64
	// PublishedNoReceivers counts published messages that no subscriber
	// received (PUBLISH returned 0); replicas then learn of them only
	// through the log.
	PublishedNoReceivers uint64
	// FillsRefused counts fills that returned ErrFillRefused.
	FillsRefused uint64
	// RevokeErrors counts revocations that failed, each session of a
	// user-wide revocation counting once.
	RevokeErrors uint64
	// NotReplicated counts WAITs after revocation writes (Options.
	// WaitReplicas) that fewer replicas acknowledged in time, or that
	// failed.
	NotReplicated uint64
	// Irregular counts session keys found holding what no script writes
	// (a status other than "active" or "revoked", none, or a bad
	// revoked_at_ms), served as revoked; each key counts once while it is
	// among the last 1,024 such keys.
	Irregular uint64
	// Fallbacks counts revocations Redis refused (OOM, READONLY) after
	// which the records were deleted and an unnumbered message published.
	Fallbacks uint64
	// AnnouncedBefore counts session revocations that published nothing:
	// Redis held the session revoked by an earlier announced revocation
	// (another gateway's, or a retry's).
	AnnouncedBefore uint64
}

// Stats returns the counters. It is cheap and safe for concurrent use.
func (c *Cache) Stats() Stats {
	return Stats{
		Published:            c.store.published.Load(),
		PublishedNoReceivers: c.store.publishedNoReceivers.Load(),
		FillsRefused:         c.store.fillsRefused.Load(),
		RevokeErrors:         c.store.revokeErrors.Load(),
		NotReplicated:        c.store.notReplicated.Load(),
		Irregular:            c.store.irregular.Load(),
		Fallbacks:            c.store.fallbacks.Load(),
		AnnouncedBefore:      c.store.announcedBefore.Load(),
	}
}

// DecodeHash converts the fields of a session hash, as HGETALL returns them,
// into a record for device session id. It fails closed on whatever a hand
// edit can leave behind:
//
//   - Only a status of exactly "active", with no revoked_at_ms field, is
//     active; such a hash must pass Record.Validate (user_id and
//     client_public_key), or it is an error wrapping
//     session.ErrInvalidRecord, never a record.
//   - Any other hash (status "revoked", "Revoked", "revokd", empty or
//     missing, or an active status with a revoked_at_ms) is revoked. Its
//     revoked_at_ms is kept when it is a decimal count of milliseconds;
//     user_id and client_public_key are kept when valid, else dropped (a
//     revoked record without them is a tombstone).
//
// Fields other than the four documented ones are ignored. An empty map is
// an invalid record here; Get reports a missing hash as session.ErrNotFound
// before decoding.
func DecodeHash(id string, h map[string]string) (session.Record, error) {
	r, _, err := decodeHash(id, h)
	return r, err
}

// Irregular returns why DecodeHash reads the session hash h as revoked
// although no script writes it so (a status other than "active" or
// "revoked", none, a revoked_at_ms beside "active" or not a number), or ""
// for a hash in the documented form. sessionctl inspect shows it, so that
// an operator can fix a typo.
func Irregular(h map[string]string) string {
	_, why, _ := decodeHash("x", h)
	return why
}

// decodeHash is DecodeHash that also says why a hash decoded as revoked is
// irregular (what no script writes: a typo, a missing status, a bad
// revoked_at_ms), or "" when it is regular.
func decodeHash(id string, h map[string]string) (session.Record, string, error) {
	if len(h) == 0 {
		return session.Record{}, "", fmt.Errorf("rediscache: decode: %w: empty hash", session.ErrInvalidRecord)
	}
	r := session.Record{
		DeviceSessionID: id,
		UserID:          h[FieldUserID],
		ClientPublicKey: h[FieldClientPublicKey],
		Status:          session.StatusActive,
	}
	status, hasStatus := h[FieldStatus]
	at, hasAt := h[FieldRevokedAtMS]
	if status == string(session.StatusActive) && !hasAt {
		if err := r.Validate(); err != nil {
			return session.Record{}, "", fmt.Errorf("rediscache: decode: %w", err)
		}
		return r, "", nil
	}
	var why string
	switch {
	case !hasStatus:
		why = "no status field"
	case status == string(session.StatusActive):
		why = "revoked_at_ms beside status \"active\""
	case status != string(session.StatusRevoked):
		why = "status is neither \"active\" nor \"revoked\""
	}
	r.Status = session.StatusRevoked
	if hasAt {
		if ms, err := parseMS(at); err == nil {
			r.RevokedAtMS = &ms
		} else if why == "" {
			why = "revoked_at_ms is not a decimal count of milliseconds"
		}
	}
	if session.ValidateUserID(r.UserID) != nil {
		r.UserID = ""
	}
	if session.ValidatePublicKey(r.ClientPublicKey) != nil {
		r.ClientPublicKey = ""
	}
	if err := r.Validate(); err != nil {
		return session.Record{}, "", fmt.Errorf("rediscache: decode: %w", err)
	}
	return r, why, nil
}

// parseMS accepts 1 to 18 decimal digits: no sign, no spaces, no exponent.
func parseMS(s string) (int64, error) {
	bad := len(s) == 0 || len(s) > 18
	for i := 0; i < len(s) && !bad; i++ {
		bad = s[i] < '0' || s[i] > '9'
	}
	if bad {
		return 0, fmt.Errorf("%w: revoked_at_ms is not a decimal count of milliseconds", session.ErrInvalidRecord)
	}
	return strconv.ParseInt(s, 10, 64)
}

// call bounds one Redis call by Options.CallTimeout within ctx.
func (c *Cache) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.CallTimeout)
}

// Get reads the record of device session id from Redis. An invalid id is an
// error wrapping session.ErrInvalidID, and no command is sent. A missing
// hash is an error wrapping session.ErrNotFound; a hash that DecodeHash
// rejects is an error wrapping session.ErrInvalidRecord. A revoked record is
// returned with a nil error.
func (c *Cache) Get(ctx context.Context, id string) (session.Record, error) {
	if err := session.ValidateID(id); err != nil {
		return session.Record{}, fmt.Errorf("rediscache: get: %w", err)
	}
	h, err := c.reads.hgetall(ctx, c.layout.SessionKey(id))
	switch {
	case errors.Is(err, redis.Nil) || (err == nil && len(h) == 0):
		return session.Record{}, fmt.Errorf("rediscache: get %s: %w", session.Redact(id), session.ErrNotFound)
	case err != nil:
		return session.Record{}, fmt.Errorf("rediscache: get %s: %w", session.Redact(id), err)
	}
	r, why, err := decodeHash(id, h)
	if err != nil {
		return session.Record{}, fmt.Errorf("rediscache: get %s: %w", session.Redact(id), err)
	}
	if why != "" {
		c.warnIrregular(id, why)
	}
	return r, nil
}

// warnIrregular logs, once per key while the key stays among the last
// maxWarned warned about, that a hash served as revoked holds what no
// script writes: an operator's typo is denied, and should be fixed.
func (c *Cache) warnIrregular(id, why string) {
	key := c.layout.SessionKey(id)
	if ok, _ := c.store.warned.ContainsOrAdd(key, struct{}{}); ok {
		return
	}
	c.store.irregular.Add(1)
	c.opts.Logger.Warn("rediscache: session hash is not in the documented form; served as revoked",
		"key", c.layout.SessionKey(session.Redact(id)), "why", why)
}

// Lookup implements session.Cache: it is Get.
func (c *Cache) Lookup(ctx context.Context, deviceSessionID string) (session.Record, error) {
	return c.Get(ctx, deviceSessionID)
}

// Fill stores a record fetched from the backend and returns the record Redis
// holds afterwards. Writing an active record never overwrites a revoked one:
// if Redis holds a revoked record (or tombstone), it stays revoked, gains
// the user id and key it lacked, and Fill returns it as revoked with a nil
// error. A record that fails Record.Validate is an error and sends nothing.
//
// An active record of a user is written by one script that, in the same
// atomic step, adds the session to the user's index of its stripe, or
// refuses it with ErrFillRefused (writing nothing) when the user's
// revocation marker on that stripe is younger than Options.FillWindow. A
// user-wide revocation that runs after the fill finds the session in the
// index and revokes it; one that ran before refuses it. So that a record
// fetched before a user-wide revocation cannot be written after the window,
// the caller must start Fill within FillWindow/2 − CallTimeout of starting
// the fetch that produced r (New enforces 4 × CallTimeout < FillWindow).
// And the script writes an active record only while its caller still
// awaits the reply: it refuses, with ErrFillRefused, once Redis's clock has
// passed the call's deadline (this process's deadline stated on Redis's
// clock, whose offset from this process's clock the replies of the stripe's
// earlier fills measured). A write that landed after its caller gave up
// would escape a caller that takes back fills after Redis lost data.
//
// A refusal because of a user-wide revocation is a *RefusedFill.
//
// The call is bounded by Options.CallTimeout within ctx.
func (c *Cache) Fill(ctx context.Context, r session.Record) (session.Record, error) {
	return c.fill(ctx, r, 0)
}

// FillSince is Fill for a record the backend answered after a Fill was
// refused with a *RefusedFill whose RevokedAtMS is revokedAtMS: the answer
// reflects that revocation, so the script refuses it only when a later
// user-wide revocation of the user happened (again a *RefusedFill), not for
// the whole fill window. A session its user opened after a user-wide
// revocation is so cached at its first lookup, not FillWindow later.
func (c *Cache) FillSince(ctx context.Context, r session.Record, revokedAtMS int64) (session.Record, error) {
	if revokedAtMS <= 0 {
		return session.Record{}, fmt.Errorf("rediscache: fill since %d: not a revocation time", revokedAtMS)
	}
	return c.fill(ctx, r, revokedAtMS)
}

func (c *Cache) fill(ctx context.Context, r session.Record, sinceMS int64) (session.Record, error) {
	if err := r.Validate(); err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill: %w", err)
	}
	if mutation.Disabled(mutation.GuardedFill) {
		return c.fillUnguarded(ctx, r)
	}
	id := r.DeviceSessionID
	k := c.layout.Stripe(id)
	keys := []string{c.layout.SessionKey(id)}
	if r.UserID != "" && !mutation.Disabled(mutation.UserIndex) {
		keys = append(keys, c.layout.UserSessionsKey(r.UserID, k), c.layout.UserRevokedKey(r.UserID, k))
	}
	check := "1"
	if sinceMS > 0 {
		check = strconv.FormatInt(sinceMS, 10)
	}
	revokedAt := ""
	if r.RevokedAtMS != nil {
		revokedAt = strconv.FormatInt(*r.RevokedAtMS, 10)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	// The call's deadline on Redis's clock, less a millisecond for TIME's
	// resolution: a script that runs by then runs while its reply is
	// awaited.
	dl, _ := cctx.Deadline() // c.call always sets one
	limitMS := dl.UnixMilli() + c.store.redisAhead[k].Load() - 1
	res, err := fillScript.Run(cctx, c.rdb, keys,
		r.UserID, r.ClientPublicKey, string(r.Status), revokedAt,
		c.opts.SessionTTL.Milliseconds(), limitMS,
		c.opts.FillWindow.Milliseconds(), check, id).Slice()
	if err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill %s: %w", session.Redact(id), err)
	}
	if len(res) < 2 {
		return session.Record{}, fmt.Errorf("rediscache: fill %s: unexpected reply of %d values", session.Redact(id), len(res))
	}
	if now, ok := res[0].(int64); ok {
		// A lower bound of Redis's lead: the reply's travel is in it, so
		// the limits it gives err early, never late.
		c.store.redisAhead[k].Store(now - time.Now().UnixMilli())
	}
	switch kind, _ := res[1].(string); kind {
	case "ok":
	case "late":
		c.store.fillsRefused.Add(1)
		return session.Record{}, fmt.Errorf("rediscache: fill %s: Redis ran it after the call's deadline: %w", session.Redact(id), ErrFillRefused)
	case "marker":
		c.store.fillsRefused.Add(1)
		if len(res) == 3 {
			if at, ok := res[2].(int64); ok {
				return session.Record{}, fmt.Errorf("rediscache: fill %s: %w", session.Redact(id), &RefusedFill{RevokedAtMS: at})
			}
		}
		return session.Record{}, fmt.Errorf("rediscache: fill %s: the user's revocation marker is not a time: %w", session.Redact(id), ErrFillRefused)
	default:
		return session.Record{}, fmt.Errorf("rediscache: fill %s: unexpected reply %v", session.Redact(id), res[1])
	}
	h, err := pairs(res[2:])
	if err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill %s: %w", session.Redact(id), err)
	}
	stored, err := DecodeHash(id, h)
	if err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill %s: stored record: %w", session.Redact(id), err)
	}
	return stored, nil
}

// Unfill takes back the active records of ids: a record whose status is
// still active loses its fields, so the next lookup asks the backend; a
// revoked record stays. It is for a caller whose recent fills may have
// landed after Redis lost data (a restart without persistence, a
// failover): their backend answers were read before the loss, and may
// predate a revocation Redis lost with it.
// It returns how many records it took back; invalid ids are skipped. The
// calls go in one pipeline bounded by Options.CallTimeout within ctx.
func (c *Cache) Unfill(ctx context.Context, ids []string) (int, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.Cmd, 0, len(ids))
	for _, id := range ids {
		if session.ValidateID(id) == nil {
			// EVAL, not EVALSHA: after a restart Redis has no scripts.
			cmds = append(cmds, unfillScript.Eval(cctx, pipe, []string{c.layout.SessionKey(id)}))
		}
	}
	if len(cmds) == 0 {
		return 0, nil
	}
	_, err := pipe.Exec(cctx)
	n := 0
	for _, cmd := range cmds {
		if v, _ := cmd.Int(); v == 1 {
			n++
		}
	}
	if err != nil {
		return n, fmt.Errorf("rediscache: unfill: %w", err)
	}
	return n, nil
}

// pairs converts a flat HGETALL reply into a map.
func pairs(fields []any) (map[string]string, error) {
	if len(fields)%2 != 0 {
		return nil, fmt.Errorf("%w: odd number of hash fields", session.ErrInvalidRecord)
	}
	h := make(map[string]string, len(fields)/2)
	for i := 0; i < len(fields); i += 2 {
		k, ok1 := fields[i].(string)
		v, ok2 := fields[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: hash field is not a string", session.ErrInvalidRecord)
		}
		h[k] = v
	}
	return h, nil
}

// RevokeSession marks device session id revoked in Redis, creating a
// revoked tombstone when Redis holds no record, and publishes the
// invalidation it returns (also appended to the stripe's log). An existing
// revoked_at_ms is kept. The TTL becomes at least Options.SessionTTL. A
// session that an earlier RevokeSession (of any process) revoked and
// announced is not announced again: the earlier message is returned, and
// nothing published, so the gateways that each hear of one revocation
// publish it once. The call is bounded by Options.CallTimeout within ctx;
// an invalid id sends nothing.
//
// With Options.WaitReplicas set, a revocation written and published but
// not acknowledged by enough replicas returns its message and an error
// wrapping ErrNotReplicated.
func (c *Cache) RevokeSession(ctx context.Context, id string) (session.Invalidation, error) {
	if err := session.ValidateID(id); err != nil {
		return session.Invalidation{}, fmt.Errorf("rediscache: revoke session: %w", err)
	}
	ids := []string{id}
	cctx, cancel := c.call(ctx)
	defer cancel()
	call := c.revokeSessionsCall(ids)
	cmd, wait := c.runWaited(cctx, revokeSessionScript, call.keys, call.args...)
	res, err := cmd.Int64Slice()
	ms, err := c.sessionsRevoked(ids, res, err)
	if err != nil {
		err = c.fallBack(ctx, err, ids, []session.Invalidation{{SessionID: id}})
		return session.Invalidation{}, fmt.Errorf("rediscache: revoke session %s: %w", session.Redact(id), err)
	}
	if err := c.replicated(wait); err != nil {
		return ms[0], fmt.Errorf("rediscache: revoke session %s: %w", session.Redact(id), err)
	}
	return ms[0], nil
}

// RevokeSessions revokes each of ids as RevokeSession does, each with its
// own numbered, logged and published message, but sends them together: the
// ids of one stripe go up to 64 to a script, and the scripts two to a
// pipeline, each pipeline bounded by Options.CallTimeout within ctx (and
// ended by a WAIT with Options.WaitReplicas). It is the call for many revocations at
// once, such as the sessions of a leaked credential.
//
// msgs[i] is the message published for ids[i]. errs is nil when Redis holds
// every revocation; otherwise errs[i] is nil for the ids Redis holds and
// the error of each other one: an invalid id (nothing sent), a refusal (the
// record was deleted and an unnumbered message published, as RevokeSession
// does), a pipeline that Redis did not answer (the ids of later pipelines
// are not sent and carry the same error), or, with msgs[i] set,
// ErrNotReplicated. A caller retries the ids that failed; a retry is safe.
func (c *Cache) RevokeSessions(ctx context.Context, ids []string) (msgs []session.Invalidation, errs []error) {
	msgs = make([]session.Invalidation, len(ids))
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(ids))
		}
		errs[i] = fmt.Errorf("rediscache: revoke session %s: %w", session.Redact(ids[i]), err)
	}
	valid := make([]int, 0, len(ids))
	for i, id := range ids {
		if err := session.ValidateID(id); err != nil {
			c.store.revokeErrors.Add(1)
			fail(i, err)
			continue
		}
		valid = append(valid, i)
	}
	batches := c.stripeBatches(ids, valid, revokeBatch)
	for len(batches) > 0 {
		n := pipelineLen(batches, revokePipeline)
		pipeBatches := batches[:n]
		batches = batches[n:]
		calls := make([]scriptCall, len(pipeBatches))
		for j, b := range pipeBatches {
			calls[j] = c.revokeSessionsCall(pick(ids, b))
		}
		cmds, notReplicated := c.runScripts(ctx, revokeSessionScript, calls)
		var unanswered error
		for j, b := range pipeBatches {
			res, err := cmds[j].Int64Slice()
			bids := pick(ids, b)
			ms, err := c.sessionsRevoked(bids, res, err)
			if err != nil {
				if !isRefusal(err) {
					unanswered = err
				}
				fallback := make([]session.Invalidation, len(bids))
				for k, id := range bids {
					fallback[k] = session.Invalidation{SessionID: id}
				}
				err = c.fallBack(ctx, err, bids, fallback)
				for _, i := range b {
					fail(i, err)
				}
				continue
			}
			for k, i := range b {
				msgs[i] = ms[k]
				if notReplicated != nil {
					fail(i, notReplicated)
				}
			}
		}
		if unanswered != nil {
			for _, b := range batches {
				for _, i := range b {
					c.store.revokeErrors.Add(1)
					fail(i, fmt.Errorf("not sent after an unanswered pipeline: %w", unanswered))
				}
			}
			break
		}
	}
	return msgs, errs
}

// stripeBatches groups the indexes in valid (into ids) by the stripe of
// their id, in order, and cuts each group into batches of at most size.
func (c *Cache) stripeBatches(ids []string, valid []int, size int) [][]int {
	groups := make(map[int][]int)
	var order []int
	for _, i := range valid {
		k := c.layout.Stripe(ids[i])
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	var batches [][]int
	for _, k := range order {
		g := groups[k]
		for len(g) > 0 {
			n := min(size, len(g))
			batches = append(batches, g[:n:n])
			g = g[n:]
		}
	}
	return batches
}

// pipelineLen returns how many of batches, at least one, go in one
// pipeline: as many as hold at most limit sessions.
func pipelineLen(batches [][]int, limit int) int {
	n, sessions := 0, 0
	for n < len(batches) && (n == 0 || sessions+len(batches[n]) <= limit) {
		sessions += len(batches[n])
		n++
	}
	return n
}

// pick returns ids[i] for each i of idx.
func pick(ids []string, idx []int) []string {
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = ids[i]
	}
	return out
}

// isRefusal reports whether err is Redis refusing a command it received
// (OOM under noeviction, READONLY after a failover, MISCONF, NOPERM), as
// opposed to Redis not answering.
func isRefusal(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// fallBack runs after Redis refused a revocation script (err): with the
// commands Redis runs even when it refuses writes for lack of memory, it
// deletes the hashes of ids (an active record is then gone, and the next
// lookup asks the backend, which knows) and publishes msgs without a
// sequence number (replicas flip L1 at once). It returns err, noting what
// the fallback did: the revocation is not in Redis, and the caller must
// retry it until Redis holds it. Errors other than a refusal are returned
// as they are.
func (c *Cache) fallBack(ctx context.Context, err error, ids []string, msgs []session.Invalidation) error {
	if !isRefusal(err) {
		return err
	}
	c.store.fallbacks.Add(1)
	deleted, total, ferr := c.deleteSessions(ctx, ids)
	if ferr == nil {
		ferr = c.publishUnnumbered(ctx, msgs)
	}
	if ferr != nil {
		return fmt.Errorf("%w (fallback: %d of %d records deleted; %v)", err, deleted, total, ferr)
	}
	return fmt.Errorf("%w (fallback: %d records deleted, unnumbered message published; retry until Redis holds the revocation)", err, deleted)
}

// deleteSessions deletes the hashes of the valid ids among ids, in
// pipelines of at most pipelineSessions DELs, each bounded by
// Options.CallTimeout. It returns how many DELs succeeded, how many were
// due, and the last error.
func (c *Cache) deleteSessions(ctx context.Context, ids []string) (deleted, total int, err error) {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if session.ValidateID(id) == nil {
			valid = append(valid, id)
		}
	}
	for len(valid) > 0 {
		chunk := valid[:min(pipelineSessions, len(valid))]
		valid = valid[len(chunk):]
		cctx, cancel := c.call(ctx)
		pipe := c.rdb.Pipeline()
		dels := make([]*redis.IntCmd, len(chunk))
		for i, id := range chunk {
			dels[i] = pipe.Del(cctx, c.layout.SessionKey(id))
		}
		_, _ = pipe.Exec(cctx) // read per command below
		cancel()
		for _, d := range dels {
			if d.Err() != nil {
				err = d.Err()
				continue
			}
			deleted++
		}
		total += len(chunk)
	}
	return deleted, total, err
}

// publishUnnumbered publishes msgs, without sequence numbers, in one
// pipeline bounded by Options.CallTimeout.
func (c *Cache) publishUnnumbered(ctx context.Context, msgs []session.Invalidation) error {
	cctx, cancel := c.call(ctx)
	defer cancel()
	pipe := c.rdb.Pipeline()
	pubs := make([]*redis.IntCmd, 0, len(msgs))
	for _, m := range msgs {
		payload, err := m.MarshalJSON()
		if err != nil {
			return err
		}
		pubs = append(pubs, pipe.Publish(cctx, c.layout.Channel(), payload))
	}
	_, _ = pipe.Exec(cctx) // read per command below
	for _, p := range pubs {
		if err := p.Err(); err != nil {
			return err
		}
	}
	return nil
}

// runWaited runs script. With Options.WaitReplicas it sends the script
// (as EVAL: a pipeline cannot fall back after NOSCRIPT) and a WAIT in one
// pipeline, since the WAIT must follow the write on its connection, and
// returns the WAIT's reply too; otherwise wait is nil. Errors are read
// from the commands.
func (c *Cache) runWaited(ctx context.Context, script *redis.Script, keys []string, args ...any) (cmd, wait *redis.Cmd) {
	if c.opts.WaitReplicas == 0 {
		return script.Run(ctx, c.rdb, keys, args...), nil
	}
	pipe := c.rdb.Pipeline()
	cmd = script.Eval(ctx, pipe, keys, args...)
	wait = c.waitCmd(ctx, pipe)
	_, _ = pipe.Exec(ctx)
	return cmd, wait
}

// waitCmd queues WAIT WaitReplicas WaitTimeout on pipe.
func (c *Cache) waitCmd(ctx context.Context, pipe redis.Pipeliner) *redis.Cmd {
	return pipe.Do(ctx, "WAIT", c.opts.WaitReplicas, c.opts.WaitTimeout.Milliseconds())
}

// replicated checks the reply of a WAIT sent after revocation writes; a nil
// wait (Options.WaitReplicas 0) passes.
func (c *Cache) replicated(wait *redis.Cmd) error {
	if wait == nil {
		return nil
	}
	n, err := wait.Int64()
	switch {
	case err != nil:
		c.store.notReplicated.Add(1)
		return fmt.Errorf("%w: WAIT: %w", ErrNotReplicated, err)
	case n < int64(c.opts.WaitReplicas):
		c.store.notReplicated.Add(1)
		return fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, n, c.opts.WaitReplicas, c.opts.WaitTimeout)
	}
	return nil
}

// logArgs are the last arguments of the scripts that announce: the log's
// MAXLEN, the TTL of the counter and the log, and the TTL below which a
// script renews them.
func (c *Cache) logArgs() []any {
	return []any{c.opts.LogMaxLen, LogTTL.Milliseconds(), (LogTTL - logRenewEvery).Milliseconds()}
}

// scriptCall is the keys and arguments of one script call.
type scriptCall struct {
	keys []string
	args []any
}

// runScripts sends calls of s as one pipeline of EVALSHA, bounded by
// Options.CallTimeout within ctx and ended by a WAIT with
// Options.WaitReplicas; the calls that Redis answers NOSCRIPT (its script
// cache was flushed) are sent again at once with EVAL. It returns each
// call's command and the WAIT's verdict (see replicated).
func (c *Cache) runScripts(ctx context.Context, s *redis.Script, calls []scriptCall) ([]*redis.Cmd, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	if len(calls) == 1 && c.opts.WaitReplicas == 0 {
		// No pipeline for one call: EVALSHA, then EVAL on NOSCRIPT.
		return []*redis.Cmd{s.Run(cctx, c.rdb, calls[0].keys, calls[0].args...)}, nil
	}
	cmds := make([]*redis.Cmd, len(calls))
	send := func(idx []int, run func(context.Context, redis.Scripter, []string, ...any) *redis.Cmd) error {
		pipe := c.rdb.Pipeline()
		for _, i := range idx {
			cmds[i] = run(cctx, pipe, calls[i].keys, calls[i].args...)
		}
		var wait *redis.Cmd
		if c.opts.WaitReplicas > 0 {
			wait = c.waitCmd(cctx, pipe)
		}
		_, _ = pipe.Exec(cctx) // errors are read per command
		return c.replicated(wait)
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	notReplicated := send(all, s.EvalSha)
	var again []int
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		if err := send(again, s.Eval); notReplicated == nil {
			notReplicated = err
		}
	}
	return cmds, notReplicated
}

// revokeSessionsCall returns the keys and arguments of revoke_session for
// ids, which share a stripe.
func (c *Cache) revokeSessionsCall(ids []string) scriptCall {
	k := c.layout.Stripe(ids[0])
	keys := make([]string, 0, len(ids)+2)
	for _, id := range ids {
		keys = append(keys, c.layout.SessionKey(id))
	}
	keys = append(keys, c.layout.SeqKey(k), c.layout.LogKey(k))
	args := make([]any, 0, 6+len(ids))
	args = append(args, c.opts.SessionTTL.Milliseconds(), k, c.layout.Channel())
	args = append(args, c.logArgs()...)
	for _, id := range ids {
		args = append(args, id)
	}
	return scriptCall{keys: keys, args: args}
}

// sessionsRevoked turns the reply of revoke_session for ids, {seq_1,
// receivers_1, at_1, ...}, into the messages that announce them, counting
// those it published (receivers ≥ 0) and those announced before (-1). On
// error every id counts in Stats.RevokeErrors.
func (c *Cache) sessionsRevoked(ids []string, res []int64, err error) ([]session.Invalidation, error) {
	if err == nil && len(res) != 3*len(ids) {
		err = fmt.Errorf("unexpected reply of %d values", len(res))
	}
	if err != nil {
		c.store.revokeErrors.Add(uint64(len(ids)))
		return nil, err
	}
	ms := make([]session.Invalidation, len(ids))
	for i, id := range ids {
		seq, receivers, at := res[3*i], res[3*i+1], res[3*i+2]
		if receivers < 0 {
			c.store.announcedBefore.Add(1)
		} else {
			c.countPublish(receivers)
		}
		ms[i] = session.Invalidation{SessionID: id, Seq: uint64(seq), Stripe: c.layout.Stripe(id), AtMS: at}
	}
	return ms, nil
}

func (c *Cache) countPublish(receivers int64) {
	c.store.published.Add(1)
	if receivers == 0 {
		c.store.publishedNoReceivers.Add(1)
	}
}

// RevokeUser revokes every session of userID and publishes one message,
// however many sessions the user has. In one atomic step per stripe (the
// steps of all stripes in one pipeline) it sets the user's revocation
// marker of the stripe (refusing active fills of the user's sessions of
// that stripe for Options.FillWindow; the marker lives 2 × FillWindow) and
// reads the user's index of the stripe (when it lists at most 1,000
// sessions; a larger one is scanned next). Then it marks each indexed
// session revoked as RevokeSession does but without a message of its own,
// the sessions of one stripe up to 64 to a script, and only then logs and
// publishes the user invalidation it returns, which flips the user's
// sessions in every replica's L1 (see the package doc for why that is
// enough). It returns the ids it marked. It tries every session and
// returns the first error, after publishing the user message all the same;
// a caller retries the whole call on error, which is safe.
//
// Each call is bounded by Options.CallTimeout within ctx: the first step,
// each SSCAN of a large index, each pipeline of up to 128 marked sessions
// and the message. An invalid user id sends nothing.
func (c *Cache) RevokeUser(ctx context.Context, userID string) (session.Invalidation, []string, error) {
	if err := session.ValidateUserID(userID); err != nil {
		return session.Invalidation{}, nil, fmt.Errorf("rediscache: revoke user: %w", err)
	}
	calls := make([]scriptCall, c.layout.Stripes())
	for k := range calls {
		calls[k] = scriptCall{
			keys: []string{c.layout.UserSessionsKey(userID, k), c.layout.UserRevokedKey(userID, k)},
			args: []any{(2 * c.opts.FillWindow).Milliseconds(), inlineIndex},
		}
	}
	// Not replicated: the sessions are revoked all the same, and the
	// error is reported after them.
	cmds, firstErr := c.runScripts(ctx, revokeUserScript, calls)
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	var ids []string
	var large []int // stripes whose index is scanned
	for k, cmd := range cmds {
		got, size, err := userIndex(cmd.Slice())
		if err != nil {
			c.store.revokeErrors.Add(1)
			if isRefusal(err) {
				ids, serr := c.scanIndex(ctx, userID)
				err = c.fallBack(ctx, err, ids, []session.Invalidation{{UserID: userID}})
				if serr != nil {
					err = fmt.Errorf("%w (index read for the fallback: %v)", err, serr)
				}
			}
			return session.Invalidation{}, nil, fmt.Errorf("rediscache: revoke user %s: %w", session.Redact(userID), err)
		}
		ids = append(ids, got...)
		if int64(len(got)) < size {
			large = append(large, k)
		}
	}
	var revoked []string
	if len(ids) > 0 {
		marked, _, err := c.markRevoked(ctx, ids)
		revoked = append(revoked, marked...)
		keep(err)
	}
	for _, k := range large {
		// The marker is set: the index gains no session for FillWindow,
		// so a scan now finds the sessions indexed before it.
		marked, err := c.markIndex(ctx, c.layout.UserSessionsKey(userID, k))
		revoked = append(revoked, marked...)
		keep(err)
	}
	// Announced after the marks: a replica that read a session active
	// from Redis read it before its mark, so before this message, which
	// then flips it in its L1 or makes the fill store it revoked.
	m, err := c.announceUser(ctx, userID)
	if err != nil {
		firstErr = err // the message matters most
	}
	if firstErr != nil {
		return m, revoked, fmt.Errorf("rediscache: revoke user %s: %w", session.Redact(userID), firstErr)
	}
	return m, revoked, nil
}

// userIndex parses the reply of revoke_user: {ids, size}.
func userIndex(res []any, err error) ([]string, int64, error) {
	if err != nil {
		return nil, 0, err
	}
	if len(res) != 2 {
		return nil, 0, fmt.Errorf("unexpected reply of %d values", len(res))
	}
	members, ok1 := res[0].([]any)
	size, ok2 := res[1].(int64)
	if !ok1 || !ok2 {
		return nil, 0, errors.New("unexpected reply types")
	}
	ids := make([]string, 0, len(members))
	for _, v := range members {
		id, ok := v.(string)
		if !ok {
			return nil, 0, errors.New("unexpected reply types")
		}
		ids = append(ids, id)
	}
	return ids, size, nil
}

// announceUser numbers, logs and publishes the user-wide revocation of
// userID (announce_user), followed by a WAIT with Options.WaitReplicas.
// When Redis refuses the script, it publishes the message unnumbered and
// returns the refusal.
func (c *Cache) announceUser(ctx context.Context, userID string) (session.Invalidation, error) {
	k := c.layout.Stripe(userID)
	keys := []string{c.layout.SeqKey(k), c.layout.LogKey(k)}
	args := append([]any{userID, k, c.layout.Channel()}, c.logArgs()...)
	cctx, cancel := c.call(ctx)
	defer cancel()
	cmd, wait := c.runWaited(cctx, announceUserScript, keys, args...)
	res, err := cmd.Int64Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("unexpected reply of %d values", len(res))
	}
	if err != nil {
		c.store.revokeErrors.Add(1)
		if isRefusal(err) {
			c.store.fallbacks.Add(1)
			if perr := c.publishUnnumbered(ctx, []session.Invalidation{{UserID: userID}}); perr != nil {
				return session.Invalidation{}, fmt.Errorf("message: %w (fallback: %v)", err, perr)
			}
			return session.Invalidation{}, fmt.Errorf("message: %w (fallback: unnumbered message published; retry until Redis holds the revocation)", err)
		}
		return session.Invalidation{}, fmt.Errorf("message: %w", err)
	}
	c.countPublish(res[2])
	m := session.Invalidation{UserID: userID, Seq: uint64(res[0]), Stripe: k, AtMS: res[1]}
	return m, c.replicated(wait)
}

// scanIndex reads a user's indexes of every stripe with SSCAN, each call
// bounded by Options.CallTimeout, and returns their ids without
// duplicates.
func (c *Cache) scanIndex(ctx context.Context, userID string) ([]string, error) {
	var ids []string
	for k := range c.layout.Stripes() {
		err := c.scanIndexPages(ctx, c.layout.UserSessionsKey(userID, k), func(page []string) bool {
			ids = append(ids, page...)
			return true
		})
		if err != nil {
			return ids, err
		}
	}
	return ids, nil
}

// scanIndexPages reads the user index at key with SSCAN, each call bounded
// by Options.CallTimeout, and hands each page of ids not seen before to
// emit, until the scan ends or emit returns false.
func (c *Cache) scanIndexPages(ctx context.Context, key string, emit func([]string) bool) error {
	seen := make(map[string]struct{})
	var cursor uint64
	for {
		cctx, cancel := c.call(ctx)
		page, next, err := c.rdb.SScan(cctx, key, cursor, "", scanCount).Result()
		cancel()
		if err != nil {
			return err
		}
		fresh := page[:0]
		for _, id := range page {
			if _, ok := seen[id]; !ok {
				seen[id] = struct{}{}
				fresh = append(fresh, id)
			}
		}
		if len(fresh) > 0 && !emit(fresh) {
			return nil
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// markIndex marks the sessions of the user index at key revoked, as
// markRevoked does, page by page while a goroutine of its own scans the
// next page. It returns the ids marked and the first error; after an error
// of the scan or a pipeline Redis did not answer, it stops.
func (c *Cache) markIndex(ctx context.Context, key string) ([]string, error) {
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	pages := make(chan []string, 1)
	scanned := make(chan error, 1)
	go func() {
		defer close(pages)
		scanned <- c.scanIndexPages(sctx, key, func(page []string) bool {
			select {
			case pages <- page:
				return true
			case <-sctx.Done():
				return false
			}
		})
	}()
	var revoked []string
	var firstErr error
	for page := range pages {
		marked, halted, err := c.markRevoked(ctx, page)
		revoked = append(revoked, marked...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if halted {
			stop()
			for range pages { // let the scan end
			}
		}
	}
	if err := <-scanned; err != nil && firstErr == nil {
		c.store.revokeErrors.Add(1)
		firstErr = fmt.Errorf("read the index: %w", err)
	}
	return revoked, firstErr
}

// markRevoked marks ids revoked without announcing them (the
// mark_revoked script), the ids of one stripe up to markBatch to a script,
// in pipelines sent by runScripts. Ids that fail ValidateID are skipped and
// reported. A script Redis refuses (OOM, READONLY) is followed by DEL of
// its sessions, as RevokeSession's fallback; after a pipeline Redis did not
// answer, the rest is not sent and halted is true. It returns the ids
// marked and the first error.
func (c *Cache) markRevoked(ctx context.Context, ids []string) (revoked []string, halted bool, err error) {
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	valid := make([]int, 0, len(ids))
	for i, id := range ids {
		if err := session.ValidateID(id); err != nil {
			c.store.revokeErrors.Add(1)
			fail(fmt.Errorf("indexed session: %w", err))
			continue
		}
		valid = append(valid, i)
	}
	batches := c.stripeBatches(ids, valid, markBatch)
	revoked = make([]string, 0, len(valid))
	for len(batches) > 0 {
		n := pipelineLen(batches, markPipeline)
		pipeBatches := batches[:n]
		batches = batches[n:]
		calls := make([]scriptCall, len(pipeBatches))
		for j, b := range pipeBatches {
			keys := make([]string, len(b))
			for k, i := range b {
				keys[k] = c.layout.SessionKey(ids[i])
			}
			calls[j] = scriptCall{keys: keys, args: []any{c.opts.SessionTTL.Milliseconds()}}
		}
		cmds, notReplicated := c.runScripts(ctx, markRevokedScript, calls)
		if err := notReplicated; err != nil {
			fail(fmt.Errorf("%d sessions: %w", pipelineCount(pipeBatches), err))
		}
		var unanswered error
		for j, b := range pipeBatches {
			if err := cmds[j].Err(); err != nil {
				c.store.revokeErrors.Add(uint64(len(b)))
				if isRefusal(err) {
					c.store.fallbacks.Add(1)
					deleted, total, derr := c.deleteSessions(ctx, pick(ids, b))
					if derr != nil {
						err = fmt.Errorf("%w (fallback: %d of %d records deleted; %v)", err, deleted, total, derr)
					} else {
						err = fmt.Errorf("%w (fallback: %d records deleted; retry until Redis holds the revocation)", err, deleted)
					}
				} else {
					unanswered = err
				}
				fail(fmt.Errorf("%d sessions of stripe %d: %w", len(b), c.layout.Stripe(ids[b[0]]), err))
				continue
			}
			revoked = append(revoked, pick(ids, b)...)
		}
		if unanswered != nil {
			c.store.revokeErrors.Add(uint64(pipelineCount(batches)))
			return revoked, true, firstErr
		}
	}
	return revoked, false, firstErr
}

// pipelineCount returns the sessions in batches.
func pipelineCount(batches [][]int) int {
	n := 0
	for _, b := range batches {
		n += len(b)
	}
	return n
}

// MarkRevoked implements session.Cache: RevokeSession bounded by
// Options.CallTimeout. A failure is logged with the id redacted and counted
// in Stats.RevokeErrors.
func (c *Cache) MarkRevoked(deviceSessionID string) {
	if _, err := c.RevokeSession(context.Background(), deviceSessionID); err != nil {
		c.opts.Logger.Warn("rediscache: mark revoked failed",
			"session", session.Redact(deviceSessionID), "err", err)
	}
}

// MarkAllRevokedForUser implements session.Cache: RevokeUser, each of its
// Redis calls bounded by Options.CallTimeout. A failure is logged with the
// id redacted and counted in Stats.RevokeErrors.
func (c *Cache) MarkAllRevokedForUser(userID string) {
	if _, _, err := c.RevokeUser(context.Background(), userID); err != nil {
		c.opts.Logger.Warn("rediscache: mark all revoked for user failed",
			"user", session.Redact(userID), "err", err)
	}
}
