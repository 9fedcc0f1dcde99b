// Package rediscache is the shared second tier (L2) of the session cache:
// one Redis hash per device session, read and written by every gateway
// replica through a redis.UniversalClient (a single Redis, Sentinel or
// Redis Cluster), and the publisher of revocations on the invalidation
// channel.
//
// # Contract
//
// Get (and Lookup, its session.Cache name) returns the record Redis holds:
// a revoked record with a nil error, an error wrapping session.ErrNotFound
// when there is none, and an error (never a record) when the hash fails
// DecodeHash or Redis cannot be reached. DecodeHash fails closed on hand
// edits: only a status of exactly "active" (without revoked_at_ms) is
// active; any other status, none, or a bad revoked_at_ms is revoked. Fill stores a record fetched from
// the backend; RevokeSession and RevokeUser revoke and publish. An invalid
// session or user id is rejected with an error wrapping
// session.ErrInvalidID before any key is built, so it costs no Redis
// command. Every Redis call is bounded by Options.CallTimeout within the
// caller's context. Errors and log lines carry ids only through
// session.Redact.
//
// Revocation is one-way in Redis: no script writes "active" over a hash
// DecodeHash reads as revoked.
// A revoked record keeps its earliest revoked_at_ms and lives at least
// Options.SessionTTL. Revoking a session Redis does not hold writes a
// tombstone (status revoked, no user_id or key), which a later fill
// completes but never reactivates.
//
// # Layout
//
// The keys, hash fields and channel are a public interface; Layout
// documents them. A session hash has the fields user_id,
// client_public_key, status ("active" or "revoked") and, when revoked,
// revoked_at_ms (decimal Unix milliseconds of the Redis clock). Every key
// written has a TTL: session hashes SessionTTL (at least, when revoked);
// user indexes SessionTTL; user revocation markers
// 2 × FillWindow; sequence counters and logs LogTTL after their stripe's
// last invalidation (renewed when less than LogTTL − 1h is left).
//
// # Scripts
//
// All writes are Lua scripts, each touching the keys of one hash slot (with
// several stripes they share the {s<k>} tag), using redis.call('TIME') as the
// one clock:
//
//   - fill writes the record unless Redis holds it revoked, in which case it
//     only completes a tombstone's user_id and key; an active record is
//     added to its user's index of its stripe in the same step, or refused
//     when the user's revocation marker of that stripe is younger than
//     FillWindow;
//   - revoke_session revokes one or more sessions of one stripe: each hash
//     becomes revoked (a tombstone if needed; a valid revoked_at_ms is
//     kept), takes the next sequence number of the stripe, is appended as
//     `session <id> seq <n> at_ms <t>` to the stripe's log stream and
//     published as {"session":…,"seq":…,"stripe":…,"at_ms":…}. Every
//     100th number trims the log (XTRIM MAXLEN ~ LogMaxLen); the counter's
//     and the log's TTLs are renewed when they run low, not at each
//     message. RevokeSession sends one session, RevokeSessions up to 64
//     of a stripe per script;
//   - revoke_user sets the user's marker of one stripe and reads the user's
//     index of that stripe (up to 1,000 ids; a larger index is scanned
//     afterwards); RevokeUser runs it on every stripe, in one pipeline;
//   - mark_revoked revokes sessions of one stripe as revoke_session does,
//     up to 64 per script and two scripts to a pipeline, but neither
//     numbers, logs nor publishes them;
//   - announce_user logs and publishes {"user":…,…} as revoke_session does
//     for a session. RevokeUser runs revoke_user, then mark_revoked over
//     the indexed sessions, then announce_user.
//
// A user-wide revocation is one message, however many sessions the user
// has. A message per session would add nothing. The user message reaches
// every replica's L1: each replica applies it as a user-wide revocation,
// which flips every cached session of the user and makes a fill whose
// token predates it store the user's sessions revoked; it is numbered and
// logged like any other, so a replica that misses it finds the gap and
// replays it from the log, or drops its active entries. And it is
// published after every indexed session is marked revoked in Redis: a
// replica that read one of them active read it before its mark, so before
// the message, which then either flips the entry or makes that fill store
// it revoked. What a replica reads after the marks is revoked (fill never
// writes active over revoked), and a session indexed after the marker is
// refused. Per-session messages cost a user with 100,000 sessions 100,000
// publishes and seconds of fan-out; marking them takes about a second.
//
// The published bytes are exactly what session.Invalidation.MarshalJSON
// produces for the returned message. The message's number goes into the
// session hash (field seq); a later RevokeSession of a hash revoked and
// numbered that way publishes nothing and returns the earlier message, since
// every replica received it or notices the gap in the numbers. So the
// gateways that each hear of one revocation publish it once.
//
// # Receiving
//
// The receiving side (subscribing, noticing lost messages, replaying them
// from the logs, server-assisted invalidation of session keys) belongs to
// package tiered: its Cache keeps L1 in step with the channel and reports
// the channel's health in Stats.Channel.
//
// # Concurrency
//
// A Cache is safe for concurrent use; it holds no lock and starts no
// goroutine of its own. A fill racing a RevokeSession cannot leave "active"
// behind,
// because each script is atomic and fill never overwrites "revoked". A fill
// racing a RevokeUser cannot either: the fill script indexes the session in
// the step that writes it, and revoke_user reads the index of the session's
// stripe in the same atomic step that sets the marker of that stripe, in
// the same slot. A fill that ran before it is in the list that RevokeUser
// revokes; a fill that runs after it sees the marker and is refused with
// ErrFillRefused. An index too large to read in that step (over 1,000 ids)
// is scanned (SSCAN) right after it: the marker keeps new sessions out of
// the index for FillWindow, so the scan finds the same sessions, unless it
// outlasts FillWindow, when it may also find (and revoke) sessions created
// after the revocation. That holds provided the caller starts Fill within
// FillWindow/2 − CallTimeout of starting the backend fetch (see Cache.Fill).
//
// When Redis refuses a revocation script (OOM under noeviction, READONLY
// after a failover), RevokeSession and RevokeUser fall back to what Redis
// still runs: DEL of the session hashes (a lookup then asks the backend,
// which knows) and PUBLISH of an unnumbered message; they return the error
// all the same, and the caller retries until Redis holds the revocation.
// A mark_revoked script that Redis refuses after revoke_user ran is
// followed by DEL of its sessions, and the user message is published all
// the same.
//
// A RevokeUser that fails part-way has set the marker and, unless that
// failed too, published the user message, but may have left some sessions
// active in Redis; it returns an error, and the caller retries it (the
// index is kept, so a retry finds the same sessions, and publishes the user
// message again).
package rediscache
