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

// LogTTL is the lifetime of a stripe's sequence counter and log, renewed by
// every invalidation of the stripe. A counter that expires starts again at 1.
const LogTTL = 30 * 24 * time.Hour

// revokeBatch is how many session revocations RevokeUser sends in one
// pipeline.
const revokeBatch = 64

// storeState is the part of a Cache that the data operations own.
type storeState struct {
	published            atomic.Uint64
	publishedNoReceivers atomic.Uint64
	fillsRefused         atomic.Uint64
	revokeErrors         atomic.Uint64
	notReplicated        atomic.Uint64
	irregular            atomic.Uint64
	fallbacks            atomic.Uint64

	// warned holds the session keys whose irregular hash was logged.
	warned *lru.Cache[string, struct{}]

	// hookAfterIndex, when a test sets it before using the Cache, runs in
	// Fill between the index script and the fill script.
	hookAfterIndex func()
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
// An active record is first added to its user's index, which is refused
// with ErrFillRefused (and nothing is written) when a user-wide revocation
// of that user happened within Options.FillWindow. A revocation that runs
// after the index step finds the session in the index and revokes it. So
// that a record fetched before a user-wide revocation cannot pass the index
// step after the window, the caller must start Fill within FillWindow/2 −
// CallTimeout of starting the fetch that produced r (New enforces
// 4 × CallTimeout < FillWindow). The second step also refuses an active
// record when more than FillWindow/2 of Redis time passed since the first.
// A third step checks that the index still lists the session: if Redis lost
// the entry between the first two (a restart or failover), the active
// record is removed again and Fill returns ErrFillRefused.
//
// Each Redis call is bounded by Options.CallTimeout within ctx.
func (c *Cache) Fill(ctx context.Context, r session.Record) (session.Record, error) {
	if err := r.Validate(); err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill: %w", err)
	}
	id := r.DeviceSessionID
	active := r.Status == session.StatusActive
	var limitMS int64 // Redis time after which an active record is not written
	if r.UserID != "" {
		now, err := c.index(ctx, r.UserID, id, active)
		if err != nil {
			return session.Record{}, fmt.Errorf("rediscache: fill %s: index: %w", session.Redact(id), err)
		}
		if now == 0 {
			c.store.fillsRefused.Add(1)
			return session.Record{}, fmt.Errorf("rediscache: fill %s: %w", session.Redact(id), ErrFillRefused)
		}
		if active {
			limitMS = now + c.opts.FillWindow.Milliseconds()/2
		}
	}
	if c.store.hookAfterIndex != nil {
		c.store.hookAfterIndex()
	}
	if mutation.Disabled(mutation.GuardedFill) {
		return c.fillUnguarded(ctx, r)
	}
	revokedAt := ""
	if r.RevokedAtMS != nil {
		revokedAt = strconv.FormatInt(*r.RevokedAtMS, 10)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	res, err := fillScript.Run(cctx, c.rdb, []string{c.layout.SessionKey(id)},
		r.UserID, r.ClientPublicKey, string(r.Status), revokedAt,
		c.opts.SessionTTL.Milliseconds(), limitMS).Result()
	if err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill %s: %w", session.Redact(id), err)
	}
	fields, ok := res.([]any)
	if !ok {
		c.store.fillsRefused.Add(1)
		return session.Record{}, fmt.Errorf("rediscache: fill %s: index step too long ago: %w", session.Redact(id), ErrFillRefused)
	}
	h, err := pairs(fields)
	if err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill %s: %w", session.Redact(id), err)
	}
	stored, err := DecodeHash(id, h)
	if err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill %s: stored record: %w", session.Redact(id), err)
	}
	if active && r.UserID != "" && stored.Status == session.StatusActive {
		if err := c.confirmIndexed(ctx, r.UserID, id); err != nil {
			return session.Record{}, fmt.Errorf("rediscache: fill %s: %w", session.Redact(id), err)
		}
	}
	return stored, nil
}

// confirmIndexed checks, after an active fill, that the user's index still
// lists the session. It does not when Redis lost data between the index
// step and the write (it restarted empty, or failed over, while the fill
// was between its two calls, go-redis' retries included): the record is
// then active where a user-wide revocation, which finds sessions through
// the index, would miss it. So the record is taken out again (its fields
// deleted, unless a revocation replaced it meanwhile) and ErrFillRefused
// returned. If the check itself fails, its error is returned and the
// record stays; Redis is then unreachable or has lost it too.
func (c *Cache) confirmIndexed(ctx context.Context, userID, id string) error {
	cctx, cancel := c.call(ctx)
	listed, err := indexedScript.Run(cctx, c.rdb, []string{c.layout.UserSessionsKey(userID)}, id).Int()
	cancel()
	if err != nil {
		return fmt.Errorf("check the index: %w", err)
	}
	if listed == 1 {
		return nil
	}
	c.store.fillsRefused.Add(1)
	cctx, cancel = c.call(ctx)
	defer cancel()
	if err := unfillScript.Run(cctx, c.rdb, []string{c.layout.SessionKey(id)}).Err(); err != nil {
		return fmt.Errorf("the index lost the session since the index step; remove the record: %w", err)
	}
	return fmt.Errorf("the index lost the session since the index step: %w", ErrFillRefused)
}

// index runs the index script: it returns the Redis time in ms, or 0 when
// check is set and the user was revoked within the fill window.
func (c *Cache) index(ctx context.Context, userID, id string, check bool) (int64, error) {
	flag := "0"
	if check {
		flag = "1"
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	// The index outlives the session hashes it lists: a hash's TTL is set
	// at most FillWindow/2 after its index entry's.
	ttl := c.opts.SessionTTL + c.opts.FillWindow
	return indexScript.Run(cctx, c.rdb,
		[]string{c.layout.UserSessionsKey(userID), c.layout.UserRevokedKey(userID)},
		id, ttl.Milliseconds(), c.opts.FillWindow.Milliseconds(), flag).Int64()
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
// revoked_at_ms is kept. The TTL becomes at least Options.SessionTTL. It
// publishes even when the session was revoked already, so a retry fans out
// again. The call is bounded by Options.CallTimeout within ctx; an invalid
// id sends nothing.
//
// With Options.WaitReplicas set, a revocation written and published but
// not acknowledged by enough replicas returns its message and an error
// wrapping ErrNotReplicated.
func (c *Cache) RevokeSession(ctx context.Context, id string) (session.Invalidation, error) {
	if err := session.ValidateID(id); err != nil {
		return session.Invalidation{}, fmt.Errorf("rediscache: revoke session: %w", err)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	var cmd, wait *redis.Cmd
	if c.opts.WaitReplicas > 0 {
		// The WAIT must follow the write on its connection: one pipeline.
		pipe := c.rdb.Pipeline()
		cmd = c.revokeSessionCmd(cctx, pipe, id, revokeSessionScript.Eval)
		wait = c.waitCmd(cctx, pipe)
		_, _ = pipe.Exec(cctx) // errors are read per command below
	} else {
		cmd = c.revokeSessionCmd(cctx, c.rdb, id, revokeSessionScript.Run)
	}
	res, err := cmd.Int64Slice()
	m, err := c.sessionRevoked(id, res, err)
	if err != nil {
		err = c.fallBack(ctx, err, []string{id}, session.Invalidation{SessionID: id})
		return session.Invalidation{}, fmt.Errorf("rediscache: revoke session %s: %w", session.Redact(id), err)
	}
	if err := c.replicated(wait); err != nil {
		return m, fmt.Errorf("rediscache: revoke session %s: %w", session.Redact(id), err)
	}
	return m, nil
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
// lookup asks the backend, which knows) and publishes m without a sequence
// number (replicas flip L1 at once). It returns err, noting what the
// fallback did: the revocation is not in Redis, and the caller must retry
// it until Redis holds it. Errors other than a refusal are returned as
// they are.
func (c *Cache) fallBack(ctx context.Context, err error, ids []string, m session.Invalidation) error {
	if !isRefusal(err) {
		return err
	}
	c.store.fallbacks.Add(1)
	payload, merr := m.MarshalJSON()
	if merr != nil {
		return fmt.Errorf("%w (no fallback: %v)", err, merr)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	pipe := c.rdb.Pipeline()
	dels := make([]*redis.IntCmd, 0, len(ids))
	for _, id := range ids {
		if session.ValidateID(id) == nil {
			dels = append(dels, pipe.Del(cctx, c.layout.SessionKey(id)))
		}
	}
	pub := pipe.Publish(cctx, c.layout.Channel(), payload)
	_, _ = pipe.Exec(cctx) // read per command below
	deleted := 0
	var ferr error
	for _, d := range dels {
		if d.Err() != nil {
			ferr = d.Err()
			continue
		}
		deleted++
	}
	if pub.Err() != nil {
		ferr = pub.Err()
	}
	if ferr != nil {
		return fmt.Errorf("%w (fallback: %d of %d records deleted; %v)", err, deleted, len(dels), ferr)
	}
	return fmt.Errorf("%w (fallback: %d records deleted, unnumbered message published; retry until Redis holds the revocation)", err, deleted)
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

// revokeSessionCmd runs the revoke_session script for id with run, which is
// Script.Run or Script.Eval.
func (c *Cache) revokeSessionCmd(ctx context.Context, s redis.Scripter, id string,
	run func(context.Context, redis.Scripter, []string, ...any) *redis.Cmd) *redis.Cmd {
	k := c.layout.Stripe(id)
	return run(ctx, s,
		[]string{c.layout.SessionKey(id), c.layout.SeqKey(k), c.layout.LogKey(k)},
		id, c.opts.SessionTTL.Milliseconds(), k, c.layout.Channel(), c.opts.LogMaxLen, LogTTL.Milliseconds())
}

// sessionRevoked turns the reply of revoke_session into the message it
// published, counting it.
func (c *Cache) sessionRevoked(id string, res []int64, err error) (session.Invalidation, error) {
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("unexpected reply of %d values", len(res))
	}
	if err != nil {
		c.store.revokeErrors.Add(1)
		return session.Invalidation{}, err
	}
	c.countPublish(res[2])
	return session.Invalidation{SessionID: id, Seq: uint64(res[0]), Stripe: c.layout.Stripe(id), AtMS: res[1]}, nil
}

func (c *Cache) countPublish(receivers int64) {
	c.store.published.Add(1)
	if receivers == 0 {
		c.store.publishedNoReceivers.Add(1)
	}
}

// RevokeUser revokes every session of userID. In one atomic step it sets the
// user's revocation marker (refusing active fills of the user for
// Options.FillWindow; the marker lives 2 × FillWindow), reads the user's
// index, and publishes the user invalidation it returns. Then it revokes
// each indexed session as RevokeSession does, publishing one message each,
// and returns the ids it revoked. It tries every session and returns the
// first error; a caller retries the whole call on error, which is safe.
//
// The first call is bounded by Options.CallTimeout within ctx, and so is each
// pipeline of up to 64 session revocations. An invalid user id sends
// nothing.
func (c *Cache) RevokeUser(ctx context.Context, userID string) (session.Invalidation, []string, error) {
	if err := session.ValidateUserID(userID); err != nil {
		return session.Invalidation{}, nil, fmt.Errorf("rediscache: revoke user: %w", err)
	}
	k := c.layout.Stripe(userID)
	keys := []string{c.layout.UserSessionsKey(userID), c.layout.UserRevokedKey(userID), c.layout.SeqKey(k), c.layout.LogKey(k)}
	args := []any{userID, (2 * c.opts.FillWindow).Milliseconds(), k, c.layout.Channel(), c.opts.LogMaxLen, LogTTL.Milliseconds()}
	cctx, cancel := c.call(ctx)
	var cmd, wait *redis.Cmd
	if c.opts.WaitReplicas > 0 {
		pipe := c.rdb.Pipeline()
		cmd = revokeUserScript.Eval(cctx, pipe, keys, args...)
		wait = c.waitCmd(cctx, pipe)
		_, _ = pipe.Exec(cctx) // errors are read per command below
	} else {
		cmd = revokeUserScript.Run(cctx, c.rdb, keys, args...)
	}
	res, err := cmd.Slice()
	cancel()
	m, ids, err := c.userRevoked(userID, res, err)
	if err != nil {
		c.store.revokeErrors.Add(1)
		if isRefusal(err) {
			cctx, cancel := c.call(ctx)
			ids, _ := c.rdb.SMembers(cctx, c.layout.UserSessionsKey(userID)).Result()
			cancel()
			err = c.fallBack(ctx, err, ids, session.Invalidation{UserID: userID})
		}
		return session.Invalidation{}, nil, fmt.Errorf("rediscache: revoke user %s: %w", session.Redact(userID), err)
	}
	// Not replicated: the sessions are revoked all the same, and the
	// error is reported after them.
	notReplicated := c.replicated(wait)
	revoked, err := c.revokeSessions(ctx, ids)
	if err == nil {
		err = notReplicated
	}
	if err != nil {
		return m, revoked, fmt.Errorf("rediscache: revoke user %s: %w", session.Redact(userID), err)
	}
	return m, revoked, nil
}

// userRevoked parses the reply of revoke_user: {seq, now, receivers, ids}.
func (c *Cache) userRevoked(userID string, res []any, err error) (session.Invalidation, []string, error) {
	if err != nil {
		return session.Invalidation{}, nil, err
	}
	if len(res) != 4 {
		return session.Invalidation{}, nil, fmt.Errorf("unexpected reply of %d values", len(res))
	}
	seq, ok1 := res[0].(int64)
	now, ok2 := res[1].(int64)
	n, ok3 := res[2].(int64)
	members, ok4 := res[3].([]any)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return session.Invalidation{}, nil, errors.New("unexpected reply types")
	}
	c.countPublish(n)
	ids := make([]string, 0, len(members))
	for _, v := range members {
		id, ok := v.(string)
		if !ok {
			return session.Invalidation{}, nil, errors.New("unexpected reply types")
		}
		ids = append(ids, id)
	}
	m := session.Invalidation{UserID: userID, Seq: uint64(seq), Stripe: c.layout.Stripe(userID), AtMS: now}
	return m, ids, nil
}

// revokeSessions revokes ids in pipelines of plain EVAL (never EVALSHA, so a
// flushed script cache cannot fail a pipeline), each pipeline bounded by
// Options.CallTimeout and, with Options.WaitReplicas, ended by a WAIT. Ids
// that fail ValidateID are skipped and reported. It returns the ids revoked
// and the first error.
func (c *Cache) revokeSessions(ctx context.Context, ids []string) ([]string, error) {
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if err := session.ValidateID(id); err != nil {
			c.store.revokeErrors.Add(1)
			fail(fmt.Errorf("indexed session: %w", err))
			continue
		}
		valid = append(valid, id)
	}
	revoked := make([]string, 0, len(valid))
	for len(valid) > 0 {
		batch := valid[:min(revokeBatch, len(valid))]
		valid = valid[len(batch):]
		cctx, cancel := c.call(ctx)
		pipe := c.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(batch))
		for i, id := range batch {
			cmds[i] = c.revokeSessionCmd(cctx, pipe, id, revokeSessionScript.Eval)
		}
		var wait *redis.Cmd
		if c.opts.WaitReplicas > 0 {
			wait = c.waitCmd(cctx, pipe)
		}
		_, _ = pipe.Exec(cctx) // errors are read per command below
		cancel()
		if err := c.replicated(wait); err != nil {
			fail(fmt.Errorf("%d sessions: %w", len(batch), err))
		}
		for i, id := range batch {
			res, err := cmds[i].Int64Slice()
			if _, err := c.sessionRevoked(id, res, err); err != nil {
				fail(fmt.Errorf("session %s: %w", session.Redact(id), err))
				continue
			}
			revoked = append(revoked, id)
		}
	}
	return revoked, firstErr
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
