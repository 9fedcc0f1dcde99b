package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

func init() {
	register("inspect", "a session as Redis holds it: record, keys, TTL, the user's other sessions", runInspect)
}

// inspectKeys are the Redis keys of one session.
type inspectKeys struct {
	Session string `json:"session"`
	Seq     string `json:"seq"`
	Log     string `json:"log"`
	// UserSessions and UserRevoked are the user's index and marker of the
	// session's stripe (with one stripe, the user's only ones).
	UserSessions string `json:"user_sessions,omitempty"`
	UserRevoked  string `json:"user_revoked,omitempty"`
}

// userSession is one entry of a user's index.
type userSession struct {
	Session string `json:"session"`
	// Status is "active", "revoked", "missing" (indexed, no record) or
	// "invalid".
	Status string `json:"status"`
}

// inspectReport is what inspect prints; its JSON form is for scripts.
type inspectReport struct {
	Session         string            `json:"session"`
	Found           bool              `json:"found"`
	Stripe          int               `json:"stripe"`
	Stripes         int               `json:"stripes"`
	Keys            inspectKeys       `json:"keys"`
	RedisTimeMS     int64             `json:"redis_time_ms"`
	TTLMS           *int64            `json:"ttl_ms,omitempty"` // -1: no expiry
	Status          string            `json:"status,omitempty"`
	Tombstone       bool              `json:"tombstone,omitempty"`
	UserID          string            `json:"user_id,omitempty"`
	ClientPublicKey string            `json:"client_public_key,omitempty"`
	RevokedAtMS     *int64            `json:"revoked_at_ms,omitempty"`
	RevokedAt       string            `json:"revoked_at,omitempty"`
	RevokedAgeMS    *int64            `json:"revoked_age_ms,omitempty"`
	Invalid         string            `json:"invalid,omitempty"`   // why the hash fails decoding
	Irregular       string            `json:"irregular,omitempty"` // why a hash read as revoked is not in the documented form
	Raw             map[string]string `json:"raw,omitempty"`       // the hash, when invalid or irregular
	UserSessions    []userSession     `json:"user_sessions,omitempty"`
	UserRevokedAtMS *int64            `json:"user_revoked_at_ms,omitempty"`
	UserRevokedAt   string            `json:"user_revoked_at,omitempty"`

	// UserSessionsTotal is the size of the user's index of the session's
	// stripe; UserSessions lists the first -limit of them, sorted.
	UserSessionsTotal int `json:"user_sessions_total,omitempty"`

	// Backend is the backend's answer for the session (-backend).
	Backend *backendReport `json:"backend,omitempty"`
	// Gateways are the gateways' answers (-gateways), in the order given.
	Gateways []gatewayReport `json:"gateways,omitempty"`
}

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	var f redisFlags
	f.register(fs)
	limit := fs.Int("limit", defaultListLimit, "list at most this many of the user's sessions (0: all)")
	var gf gatewayFlags
	gf.register(fs)
	setUsage(fs, "inspect [flags] <session-id>",
		`Prints a device session as Redis holds it: the decoded record, its keys
(with hash tags when -stripes > 1), its TTL, whether it is revoked and since
when (Redis time), the other sessions in its user's index with their status,
and the user's last user-wide revocation. A session Redis does not hold is
reported as not found (exit status 1). The user's sessions are listed up to
-limit, sorted, with the count of the others.`+"\n"+gatewayUsage)
	pos, code := parseArgs(fs, args, stderr)
	if code >= 0 {
		return code
	}
	id, err := one(pos, "session id")
	if err == nil {
		err = checkID("session", id)
	}
	if err == nil && *limit < 0 {
		err = fmt.Errorf("%w: -limit must be >= 0", errUsage)
	}
	if err != nil {
		return fail(stderr, "inspect", err)
	}
	ask, err := gf.open(f.timeout)
	if err != nil {
		return fail(stderr, "inspect", err)
	}
	defer ask.close()
	c, rdb, err := f.open(ctx, "sessionctl-inspect")
	if err != nil {
		return fail(stderr, "inspect", err)
	}
	defer rdb.Close()

	rep, err := inspectLimit(ctx, c, rdb, id, *limit)
	if err != nil {
		return fail(stderr, "inspect", err)
	}
	ask.ask(ctx, &rep, id)
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(stderr, "inspect", err)
		}
	} else {
		printInspect(stdout, rep)
		printGateways(stdout, rep)
	}
	verdict := gatewayVerdict(stderr, rep)
	switch {
	case !rep.Found:
		fmt.Fprintf(stderr, "sessionctl inspect: session %s not found in Redis (expired, never filled, or another -prefix/-stripes)\n", id)
		return exitFailure
	case rep.Invalid != "":
		fmt.Fprintf(stderr, "sessionctl inspect: the record fails validation; lookups treat it as an error (never active)\n")
		return exitFailure
	case rep.Irregular != "":
		fmt.Fprintf(stderr, "sessionctl inspect: the record is not in the documented form (%s); replicas serve it as revoked. "+
			"To keep it revoked: redis-cli HSET %s status revoked\n", rep.Irregular, rep.Keys.Session)
	}
	return verdict
}

// inspectLimit gathers the report on id, with at most limit of the user's
// sessions (0: all).
func inspectLimit(ctx context.Context, c *rediscache.Cache, rdb redis.UniversalClient, id string, limit int) (inspectReport, error) {
	l := c.Layout()
	k := l.Stripe(id)
	rep := inspectReport{
		Session: id,
		Stripe:  k,
		Stripes: l.Stripes(),
		Keys:    inspectKeys{Session: l.SessionKey(id), Seq: l.SeqKey(k), Log: l.LogKey(k)},
	}
	now, err := redisTime(ctx, rdb)
	if err != nil {
		return rep, err
	}
	rep.RedisTimeMS = now.UnixMilli()

	rec, err := c.Get(ctx, id)
	switch {
	case errors.Is(err, session.ErrNotFound):
		return rep, nil
	case errors.Is(err, session.ErrInvalidRecord):
		rep.Found = true
		rep.Invalid = err.Error()
		rep.Raw, err = rdb.HGetAll(ctx, rep.Keys.Session).Result()
		if err != nil {
			return rep, err
		}
	case err != nil:
		return rep, err
	default:
		rep.Found = true
		if rec.Status == session.StatusRevoked {
			raw, err := rdb.HGetAll(ctx, rep.Keys.Session).Result()
			if err != nil {
				return rep, err
			}
			if rep.Irregular = rediscache.Irregular(raw); rep.Irregular != "" {
				rep.Raw = raw
			}
		}
		rep.Status = string(rec.Status)
		rep.UserID = rec.UserID
		rep.ClientPublicKey = rec.ClientPublicKey
		rep.Tombstone = rec.Status == session.StatusRevoked && rec.UserID == ""
		if rec.RevokedAtMS != nil {
			at := *rec.RevokedAtMS
			age := rep.RedisTimeMS - at
			rep.RevokedAtMS, rep.RevokedAt, rep.RevokedAgeMS = &at, fmtMS(at), &age
		}
	}

	ttl, err := rdb.PTTL(ctx, rep.Keys.Session).Result()
	if err != nil {
		return rep, err
	}
	if ttl != -2 { // -2: expired since Get
		ms := ttl.Milliseconds()
		if ttl < 0 {
			ms = -1
		}
		rep.TTLMS = &ms
	}

	if rep.UserID == "" {
		return rep, nil
	}
	// The user's index and marker of the session's stripe: the keys the
	// fill script and a user-wide revocation use for this session.
	rep.Keys.UserSessions = l.UserSessionsKey(rep.UserID, l.Stripe(id))
	rep.Keys.UserRevoked = l.UserRevokedKey(rep.UserID, l.Stripe(id))
	if rep.UserSessions, rep.UserSessionsTotal, err = userSessions(ctx, l, rdb, rep.UserID, limit); err != nil {
		return rep, err
	}
	marker, err := rdb.Get(ctx, rep.Keys.UserRevoked).Result()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return rep, err
	default:
		if at, perr := strconv.ParseInt(marker, 10, 64); perr == nil {
			rep.UserRevokedAtMS, rep.UserRevokedAt = &at, fmtMS(at)
		} else {
			rep.UserRevokedAt = "invalid marker (fills of this user are refused)"
		}
	}
	return rep, nil
}

// userSessions lists the first limit ids (0: all) of a user's indexes, one
// per stripe, sorted, with the status of each session, read in pipelines of
// 100, and returns the size of the indexes.
func userSessions(ctx context.Context, l rediscache.Layout, rdb redis.UniversalClient, userID string, limit int) ([]userSession, int, error) {
	pipe := rdb.Pipeline()
	members := make([]*redis.StringSliceCmd, l.Stripes())
	for k := range members {
		members[k] = pipe.SMembers(ctx, l.UserSessionsKey(userID, k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, err
	}
	var ids []string
	for _, m := range members {
		ids = append(ids, m.Val()...)
	}
	slices.Sort(ids)
	total := len(ids)
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]userSession, 0, len(ids))
	for chunk := range slices.Chunk(ids, 100) {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(chunk))
		for i, sid := range chunk {
			if session.ValidateID(sid) == nil {
				cmds[i] = pipe.HGet(ctx, l.SessionKey(sid), rediscache.FieldStatus)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, 0, err
		}
		for i, sid := range chunk {
			us := userSession{Session: sid, Status: "invalid"}
			if cmds[i] != nil {
				st, err := cmds[i].Result()
				switch {
				case errors.Is(err, redis.Nil):
					us.Status = "missing"
				case err != nil:
					return nil, 0, err
				default:
					if s, err := session.ParseStatus(st); err == nil {
						us.Status = string(s)
					}
				}
			}
			out = append(out, us)
		}
	}
	return out, total, nil
}

// printRaw prints the fields of a hash, sorted, with quotes.
func printRaw(row func(label, format string, a ...any), raw map[string]string) {
	keys := make([]string, 0, len(raw))
	for f := range raw {
		keys = append(keys, f)
	}
	slices.Sort(keys)
	for _, f := range keys {
		row("  "+f, "%q", raw[f])
	}
}

func printInspect(w io.Writer, r inspectReport) {
	row := func(label, format string, a ...any) {
		fmt.Fprintf(w, "%-14s"+format+"\n", append([]any{label}, a...)...)
	}
	row("session", "%s", r.Session)
	row("key", "%s", r.Keys.Session)
	row("stripe", "%d (log %s, seq %s)", r.Stripe, r.Keys.Log, r.Keys.Seq)
	if !r.Found {
		row("status", "not found")
		return
	}
	if r.Invalid != "" {
		row("status", "INVALID: %s", r.Invalid)
		printRaw(row, r.Raw)
	} else {
		switch {
		case r.RevokedAtMS != nil:
			row("status", "revoked since %s (%s ago)", r.RevokedAt, fmtAge(time.Duration(*r.RevokedAgeMS)*time.Millisecond))
		default:
			row("status", "%s", r.Status)
		}
		if r.Irregular != "" {
			row("hand-edited", "%s: served as revoked", r.Irregular)
			printRaw(row, r.Raw)
		}
		if r.Tombstone {
			row("user", "(tombstone: revoked before any tier held its data)")
		} else {
			row("user", "%s", r.UserID)
			row("public key", "%s", r.ClientPublicKey)
		}
	}
	switch {
	case r.TTLMS == nil:
		row("ttl", "expired just now")
	case *r.TTLMS < 0:
		row("ttl", "NONE (every key should expire)")
	default:
		row("ttl", "%s", fmtAge(time.Duration(*r.TTLMS)*time.Millisecond))
	}
	if r.UserID == "" {
		return
	}
	total := max(r.UserSessionsTotal, len(r.UserSessions))
	if r.Stripes > 1 {
		row("user sessions", "%s and %d other stripes' (%d)", r.Keys.UserSessions, r.Stripes-1, total)
	} else {
		row("user sessions", "%s (%d)", r.Keys.UserSessions, total)
	}
	for _, us := range r.UserSessions {
		note := ""
		switch {
		case us.Session == r.Session:
			note = "  (this session)"
		case us.Status == "missing":
			note = "  (indexed, no record: expired or never filled)"
		}
		name := us.Session
		if us.Status == "invalid" {
			name = strconv.Quote(name) // not a valid id: show its bytes safely
		}
		fmt.Fprintf(w, "  %-40s %s%s\n", name, us.Status, note)
	}
	if more := r.UserSessionsTotal - len(r.UserSessions); more > 0 {
		fmt.Fprintf(w, "  … and %d more (-limit 0 lists them all)\n", more)
	}
	switch {
	case r.UserRevokedAtMS != nil:
		row("user revoked", "%s (%s ago) %s", r.UserRevokedAt,
			fmtAge(time.Duration(r.RedisTimeMS-*r.UserRevokedAtMS)*time.Millisecond), r.Keys.UserRevoked)
	case r.UserRevokedAt != "":
		row("user revoked", "%s %s", r.UserRevokedAt, r.Keys.UserRevoked)
	default:
		row("user revoked", "no recent user-wide revocation (%s absent)", r.Keys.UserRevoked)
	}
}
