package rediscache

import "github.com/redis/go-redis/v9"

// The Lua scripts below are the only writers of session hashes, user
// indexes, user revocation markers, sequence counters and logs. Each one
// touches keys of a single hash slot (with N stripes, all its keys share one
// {s<k>} tag), reads the clock with redis.call('TIME') so that every replica
// compares times on the one Redis clock, and formats integers with
// string.format('%d', x) so that no number is written in float notation.
// They run on redis-server 7.0 and on miniredis.
//
// The scripts are created once with redis.NewScript, which computes their
// SHA-1 at creation; they are never modified afterwards.

// luaNow sets local now to the Redis server time in Unix milliseconds.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// luaExtendTTL renews key k to at least ttl milliseconds; a key without an
// expiry gets one.
const luaExtendTTL = `
local function extend(k, ttl)
  if redis.call('PTTL', k) < ttl then
    redis.call('PEXPIRE', k, string.format('%d', ttl))
  end
end
`

// fillScript stores a record fetched from the backend, never replacing a
// revoked record with an active one, and indexes an active record under its
// user in the same step.
//
//	KEYS[1]  session hash
//	KEYS[2]  the user's sessions set of the session's stripe (with a user id)
//	KEYS[3]  the user's revoked_at_ms marker of that stripe (with a user id)
//	ARGV[1]  user_id ("" for none)
//	ARGV[2]  client_public_key ("" for none)
//	ARGV[3]  status: "active" or "revoked"
//	ARGV[4]  revoked_at_ms ("" for none)
//	ARGV[5]  session TTL, ms
//	ARGV[6]  latest server time, ms, at which an active record may still be
//	         written ("0": no limit)
//	ARGV[7]  fill window, ms
//	ARGV[8]  "1": refuse an active record when the marker is within the
//	         window of now; a marker time: refuse it when the marker is
//	         later (the record was fetched after that revocation)
//	ARGV[9]  device session id, the member of KEYS[2]
//
// If Redis holds the session as anything but active (status "revoked", any
// other or no status, or a revoked_at_ms beside "active", as DecodeHash
// reads it), the record stays revoked and its status is written "revoked";
// a missing user_id or client_public_key is added from the arguments
// (completing a tombstone); a
// revoked fill keeps the earlier revoked_at_ms; the TTL becomes at least the
// session TTL. Otherwise an active record is refused after its limit, and
// refused by the marker as ARGV[8] says; if not refused, it is added to the
// user's set (whose TTL becomes at least the session TTL) and written. The
// arguments are written, revoked_at_ms removed from an active record, and
// the TTL set (an active fill) or extended (a revoked fill).
//
// It replies {now, "ok", field, value, ...} with HGETALL of the result;
// for an active record it did not write, {now, "late"} when it ran after
// its limit, {now, "marker", t} when the marker (time t) refused it, and
// {now, "marker"} for a marker that is not a decimal number (fail closed).
// now is the server time in ms.
var fillScript = redis.NewScript(luaNow + luaExtendTTL + `
local key = KEYS[1]
local ttl = tonumber(ARGV[5])
local function missing(f)
  local v = redis.call('HGET', key, f)
  return (not v) or v == ''
end
local function stored()
  local out = {now, 'ok'}
  for _, v in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = v end
  return out
end
-- Anything but exactly "active" without revoked_at_ms is revoked, as
-- DecodeHash reads it: a hand-typed "Revoked" is never overwritten active.
local status = redis.call('HGET', key, 'status')
local held
if status then
  held = status ~= 'active' or redis.call('HEXISTS', key, 'revoked_at_ms') == 1
else
  held = redis.call('EXISTS', key) == 1
end
if held then
  if status ~= 'revoked' then redis.call('HSET', key, 'status', 'revoked') end
  if ARGV[1] ~= '' and missing('user_id') then
    redis.call('HSET', key, 'user_id', ARGV[1])
  end
  if ARGV[2] ~= '' and missing('client_public_key') then
    redis.call('HSET', key, 'client_public_key', ARGV[2])
  end
  if ARGV[3] == 'revoked' and ARGV[4] ~= '' then
    local cur = redis.call('HGET', key, 'revoked_at_ms')
    if (not cur) or (not string.match(cur, '^%d+$')) or tonumber(ARGV[4]) < tonumber(cur) then
      redis.call('HSET', key, 'revoked_at_ms', ARGV[4])
    end
  end
  extend(key, ttl)
  return stored()
end
if ARGV[3] == 'active' then
  local limit = tonumber(ARGV[6])
  if limit > 0 and now > limit then return {now, 'late'} end
  if #KEYS == 3 then
    local at = redis.call('GET', KEYS[3])
    if at then
      if not string.match(at, '^%d+$') then return {now, 'marker'} end
      local t = tonumber(at)
      if ARGV[8] == '1' then
        if now - t < tonumber(ARGV[7]) then return {now, 'marker', t} end
      elseif t > tonumber(ARGV[8]) then
        return {now, 'marker', t}
      end
    end
    redis.call('SADD', KEYS[2], ARGV[9])
    extend(KEYS[2], ttl)
  end
  redis.call('HSET', key, 'user_id', ARGV[1], 'client_public_key', ARGV[2], 'status', 'active')
  redis.call('HDEL', key, 'revoked_at_ms')
  redis.call('PEXPIRE', key, string.format('%d', ttl))
  return stored()
end
redis.call('HSET', key, 'status', 'revoked')
if ARGV[1] ~= '' then redis.call('HSET', key, 'user_id', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', key, 'client_public_key', ARGV[2]) end
if ARGV[4] ~= '' then
  redis.call('HSET', key, 'revoked_at_ms', ARGV[4])
else
  redis.call('HDEL', key, 'revoked_at_ms')
end
extend(key, ttl)
return stored()
`)

// unfillScript takes back an active record (see Cache.Unfill): it deletes
// the record's fields if its status is still active, and returns 1; a
// revoked record stays, and it returns 0.
//
//	KEYS[1]  session hash
var unfillScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end
redis.call('HDEL', KEYS[1], 'user_id', 'client_public_key', 'status', 'revoked_at_ms')
return 1
`)

// luaRevokeHash defines revokedAt(key) and revoke(key, at, ttl, nowS, ...).
// revokedAt returns the revoked_at_ms of the session hash at key when it is
// revoked with a valid one (status "revoked" and a decimal revoked_at_ms),
// and nil otherwise. revoke makes the hash revoked (a tombstone when it does
// not exist) in one HSET: unless at, what revokedAt returned for it, is
// set, it writes status "revoked" and revoked_at_ms nowS, so the earliest
// revocation time wins; the field-value pairs given after nowS are written
// too. Its TTL becomes at least ttl ms (a decimal string), and a key
// without one gets one: PEXPIRE GT does that in one command where the key
// has a TTL, as every key a script wrote has; it treats a key without a TTL
// as one that lives for ever, which PTTL then tells apart.
const luaRevokeHash = `
local function revokedAt(key)
  if redis.call('HGET', key, 'status') ~= 'revoked' then return nil end
  local at = redis.call('HGET', key, 'revoked_at_ms')
  if at and string.match(at, '^%d+$') then return at end
  return nil
end
local function revoke(key, at, ttl, nowS, ...)
  if not at then
    redis.call('HSET', key, 'status', 'revoked', 'revoked_at_ms', nowS, ...)
  elseif select('#', ...) > 0 then
    redis.call('HSET', key, ...)
  end
  if redis.call('PEXPIRE', key, ttl, 'GT') == 0 and redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, ttl)
  end
end
`

// luaAnnounce defines announce(seqKey, logKey, kind, id, stripe, channel,
// now): it assigns the next sequence number of a stripe, appends the
// invalidation to the stripe's log and publishes it. kind is "session" or
// "user"; the message has exactly the bytes
// session.Invalidation.MarshalJSON produces; the id needs no JSON escaping
// because Go validated it (session.ValidateID or ValidateUserID). It
// returns the sequence number and the PUBLISH receiver count.
//
// The number is logged before it is published, so that a replica that
// misses the message finds it in the log. Only every 100th number of a
// stripe trims its log to about maxlen entries (XADD MAXLEN ~), not every
// XADD: Redis trims a stream by whole nodes of 100 entries
// (stream-node-max-entries), so a trim at each XADD mostly removes nothing
// and cost about as much as the rest of the XADD. The scripts use only
// commands that deploy/redis/gateway.acl grants, except SCARD and SSCAN
// (see revokeUserScript). A log that did not exist (XADD
// NOMKSTREAM declined) is created, and the counter and the log get their
// TTL; so does every 100th number. The renewal of those TTLs is left to
// renew, once per script.
const luaAnnounce = `
local renewLog = false
local function announce(seqKey, logKey, kind, id, stripe, channel, maxlen, now)
  local seq = redis.call('INCR', seqKey)
  local s = string.format('%d', seq)
  local at = string.format('%d', now)
  if seq % 100 == 0 then
    redis.call('XADD', logKey, 'MAXLEN', '~', maxlen, '*', kind, id, 'seq', s, 'at_ms', at)
    renewLog = true
  elseif not redis.call('XADD', logKey, 'NOMKSTREAM', '*', kind, id, 'seq', s, 'at_ms', at) then
    redis.call('XADD', logKey, '*', kind, id, 'seq', s, 'at_ms', at)
    renewLog = true
  end
  local msg = '{"' .. kind .. '":"' .. id .. '","seq":' .. s .. ',"stripe":' .. stripe .. ',"at_ms":' .. at .. '}'
  return seq, redis.call('PUBLISH', channel, msg)
end
-- The counter and the log live keep ms after the last invalidation, to
-- within keep - renewBelow: their TTLs are renewed when the counter's has
-- fallen below renewBelow (or it has none), or the log was just created.
local function renew(seqKey, logKey, keep, renewBelow)
  if renewLog or redis.call('PTTL', seqKey) < tonumber(renewBelow) then
    redis.call('PEXPIRE', seqKey, keep)
    redis.call('PEXPIRE', logKey, keep)
  end
end
`

// revokeSessionScript revokes one or more sessions of one stripe, each as
// revoke does (creating a tombstone if the hash does not exist), and
// announces each in its own message, in the order given, recording the
// message's number in the hash's seq field: the message is numbered, logged
// and published first, then the hash is written with its number in one
// HSET. The script is atomic, so no client sees the message before the
// hash; a script that Redis refuses (out of memory, read-only) fails at
// its first write and writes nothing, and the caller's fallback deletes
// the records. A session whose hash is revoked with a valid revoked_at_ms
// and a seq already was announced by an earlier run: it is not announced
// again (every replica received that message or notices the gap in the
// numbers), so N gateways revoking one session publish once. A hash
// revoked any other way (a fill, a hand HSET, a user-wide revocation) has
// no seq and is announced.
//
//	KEYS[1..n]  session hashes (n = #KEYS - 2)
//	KEYS[n+1]   sequence counter of their stripe
//	KEYS[n+2]   log of their stripe
//	ARGV[1]     session TTL, ms
//	ARGV[2]     stripe
//	ARGV[3]     channel
//	ARGV[4]     log MAXLEN (approximate)
//	ARGV[5]     TTL of the counter and the log, ms
//	ARGV[6]     renew those TTLs when the counter's is below this, ms
//	ARGV[7..]   device session ids, in the order of KEYS
//
// It returns {seq_1, receivers_1, at_1, ..., seq_n, receivers_n, at_n}:
// for a session announced by an earlier run, that run's seq and
// revoked_at_ms, and receivers -1.
var revokeSessionScript = redis.NewScript(luaNow + luaRevokeHash + luaAnnounce + `
local n = #KEYS - 2
local seqKey, logKey = KEYS[n + 1], KEYS[n + 2]
local ttl = ARGV[1]
local nowS = string.format('%d', now)
local out = {}
for i = 1, n do
  local key = KEYS[i]
  local seq, recv, at = nil, -1, now
  -- HGET, not HMGET: deploy/redis/gateway.acl grants HGET.
  local kept = revokedAt(key)
  if kept then
    local s = redis.call('HGET', key, 'seq')
    if s and string.match(s, '^%d+$') then
      seq, at = tonumber(s), tonumber(kept)
    end
  end
  if seq then
    revoke(key, kept, ttl, nowS)
  else
    seq, recv = announce(seqKey, logKey, 'session', ARGV[6 + i], ARGV[2], ARGV[3], ARGV[4], now)
    revoke(key, kept, ttl, nowS, 'seq', string.format('%d', seq))
  end
  out[3 * i - 2], out[3 * i - 1], out[3 * i] = seq, recv, at
end
renew(seqKey, logKey, ARGV[5], ARGV[6])
return out
`)

// markRevokedScript revokes sessions of one stripe, each as revoke does,
// without announcing them: RevokeUser's user message announces them all.
//
//	KEYS[1..n]  session hashes
//	ARGV[1]     session TTL, ms
//
// It returns n.
var markRevokedScript = redis.NewScript(luaNow + luaRevokeHash + `
local ttl = ARGV[1]
local nowS = string.format('%d', now)
for i = 1, #KEYS do
  revoke(KEYS[i], revokedAt(KEYS[i]), ttl, nowS)
end
return #KEYS
`)

// revokeUserScript records a user-wide revocation on one stripe: it sets
// the user's marker of that stripe to the Redis time, or 1 ms after the
// marker it replaces if that is not earlier (which makes the fill script
// refuse active fills of the user's sessions of that stripe for the fill
// window), and returns the user's indexed session ids of the stripe, read
// in the same atomic step, when there are at most ARGV[2] of them: a fill
// that ran before is in that list; a fill that runs after sees the marker.
// A larger index is not read here (SMEMBERS of 100,000 ids blocks Redis for
// tens of milliseconds): the caller scans it afterwards, which finds the
// same sessions, since the marker keeps new ones out of the index for the
// fill window. It announces nothing: announceUserScript does, once the
// sessions are marked. SCARD here and SSCAN in RevokeUser are the two
// commands the library sends beyond those deploy/redis/gateway.acl granted
// before; where an ACL refuses SCARD, the script reads the whole index
// inline, as it used to.
//
//	KEYS[1]  the user's sessions set of the stripe
//	KEYS[2]  the user's revoked_at_ms marker of the stripe
//	ARGV[1]  marker TTL, ms
//	ARGV[2]  largest index returned inline
//
// It returns {{session ids}, size of the index}; the ids are empty when
// the index is larger than ARGV[2].
var revokeUserScript = redis.NewScript(luaNow + `
-- Each revocation's marker is later than the last (FillSince compares them).
local at = now
local last = redis.call('GET', KEYS[2])
if last and string.match(last, '^%d+$') and tonumber(last) >= at then at = tonumber(last) + 1 end
redis.call('SET', KEYS[2], string.format('%d', at), 'PX', ARGV[1])
local size = redis.pcall('SCARD', KEYS[1])
local members = {}
if type(size) ~= 'number' then
  -- SCARD refused (an ACL that predates it): the whole index inline.
  members = redis.call('SMEMBERS', KEYS[1])
  size = #members
elseif size <= tonumber(ARGV[2]) then
  members = redis.call('SMEMBERS', KEYS[1])
end
return {members, size}
`)

// announceUserScript numbers, logs and publishes a user-wide revocation
// ({"user":…,"seq":…,"stripe":…,"at_ms":…}), as revoke_session does for a
// session.
//
//	KEYS[1]  sequence counter of the user's stripe
//	KEYS[2]  log of the user's stripe
//	ARGV[1]  user id
//	ARGV[2]  stripe
//	ARGV[3]  channel
//	ARGV[4]  log MAXLEN (approximate)
//	ARGV[5]  TTL of the counter and the log, ms
//	ARGV[6]  renew those TTLs when the counter's is below this, ms
//
// It returns {seq, now, receivers}.
var announceUserScript = redis.NewScript(luaNow + luaAnnounce + `
local seq, n = announce(KEYS[1], KEYS[2], 'user', ARGV[1], ARGV[2], ARGV[3], ARGV[4], now)
renew(KEYS[1], KEYS[2], ARGV[5], ARGV[6])
return {seq, now, n}
`)
