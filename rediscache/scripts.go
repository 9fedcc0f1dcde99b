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

// indexScript adds a session id to its user's index.
//
//	KEYS[1]  user sessions set
//	KEYS[2]  user revoked_at_ms marker
//	ARGV[1]  device session id
//	ARGV[2]  minimum TTL of the set, ms
//	ARGV[3]  fill window, ms
//	ARGV[4]  "1": refuse when the marker is within the window of now
//
// It returns 0 when refused, else the server time in ms. A marker that is not
// a decimal number refuses too (fail closed).
var indexScript = redis.NewScript(luaNow + luaExtendTTL + `
if ARGV[4] == '1' then
  local at = redis.call('GET', KEYS[2])
  if at then
    if not string.match(at, '^%d+$') then return 0 end
    if now - tonumber(at) < tonumber(ARGV[3]) then return 0 end
  end
end
redis.call('SADD', KEYS[1], ARGV[1])
extend(KEYS[1], tonumber(ARGV[2]))
return now
`)

// fillScript stores a record fetched from the backend, never replacing a
// revoked record with an active one.
//
//	KEYS[1]  session hash
//	ARGV[1]  user_id ("" for none)
//	ARGV[2]  client_public_key ("" for none)
//	ARGV[3]  status: "active" or "revoked"
//	ARGV[4]  revoked_at_ms ("" for none)
//	ARGV[5]  session TTL, ms
//	ARGV[6]  latest server time, ms, at which an active record may still be
//	         written ("0": no limit)
//
// If Redis holds the session as anything but active (status "revoked", any
// other or no status, or a revoked_at_ms beside "active", as DecodeHash
// reads it), the record stays revoked and its status is written "revoked";
// a missing user_id or client_public_key is added from the arguments
// (completing a tombstone); a
// revoked fill keeps the earlier revoked_at_ms; the TTL becomes at least the
// session TTL. Otherwise the arguments are written, revoked_at_ms removed
// from an active record, and the TTL set (an active fill) or extended (a
// revoked fill). It returns HGETALL of the result, or 0 when an active fill
// came after its limit and wrote nothing.
var fillScript = redis.NewScript(luaNow + luaExtendTTL + `
local key = KEYS[1]
local ttl = tonumber(ARGV[5])
local function missing(f)
  local v = redis.call('HGET', key, f)
  return (not v) or v == ''
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
  return redis.call('HGETALL', key)
end
if ARGV[3] == 'active' then
  local limit = tonumber(ARGV[6])
  if limit > 0 and now > limit then return 0 end
  redis.call('HSET', key, 'user_id', ARGV[1], 'client_public_key', ARGV[2], 'status', 'active')
  redis.call('HDEL', key, 'revoked_at_ms')
  redis.call('PEXPIRE', key, string.format('%d', ttl))
  return redis.call('HGETALL', key)
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
return redis.call('HGETALL', key)
`)

// indexedScript reports whether a user's index lists a session: 1 or 0. It
// reads the set with SMEMBERS (a user has few sessions) so that it needs no
// command beyond the ones the other scripts use.
//
//	KEYS[1]  user sessions set
//	ARGV[1]  device session id
var indexedScript = redis.NewScript(`
for _, v in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if v == ARGV[1] then return 1 end
end
return 0
`)

// unfillScript takes back an active record whose fill lost its index entry
// (see Cache.Fill): it deletes the record's fields if its status is still
// active, and returns 1; a revoked record stays, and it returns 0.
//
//	KEYS[1]  session hash
var unfillScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end
redis.call('HDEL', KEYS[1], 'user_id', 'client_public_key', 'status', 'revoked_at_ms')
return 1
`)

// luaAnnounce assigns the next sequence number of a stripe, appends the
// invalidation to the stripe's log and publishes it. kind is "session" or
// "user"; the message has exactly the bytes session.Invalidation.MarshalJSON
// produces; the id needs no JSON escaping because Go validated it
// (session.ValidateID or ValidateUserID). It returns the sequence number and
// the PUBLISH receiver count.
const luaAnnounce = `
local function announce(seqKey, logKey, kind, id, stripe, channel, maxlen, keep, now)
  local seq = redis.call('INCR', seqKey)
  redis.call('PEXPIRE', seqKey, keep)
  local s = string.format('%d', seq)
  local at = string.format('%d', now)
  redis.call('XADD', logKey, 'MAXLEN', '~', maxlen, '*', kind, id, 'seq', s, 'at_ms', at)
  redis.call('PEXPIRE', logKey, keep)
  local msg = '{"' .. kind .. '":"' .. id .. '","seq":' .. s .. ',"stripe":' .. stripe .. ',"at_ms":' .. at .. '}'
  return seq, redis.call('PUBLISH', channel, msg)
end
`

// revokeSessionScript revokes one session, creating a tombstone if the hash
// does not exist, and announces it. It always announces, even when the
// session was revoked already, so that a retried revocation fans out again.
//
//	KEYS[1]  session hash
//	KEYS[2]  sequence counter of the session's stripe
//	KEYS[3]  log of the session's stripe
//	ARGV[1]  device session id
//	ARGV[2]  session TTL, ms
//	ARGV[3]  stripe
//	ARGV[4]  channel
//	ARGV[5]  log MAXLEN (approximate)
//	ARGV[6]  TTL of the counter and the log, ms
//
// It returns {seq, now, receivers}.
var revokeSessionScript = redis.NewScript(luaNow + luaExtendTTL + luaAnnounce + `
local key = KEYS[1]
local at = redis.call('HGET', key, 'revoked_at_ms')
local keep = redis.call('HGET', key, 'status') == 'revoked' and at and string.match(at, '^%d+$')
if not keep then
  redis.call('HSET', key, 'status', 'revoked', 'revoked_at_ms', string.format('%d', now))
end
extend(key, tonumber(ARGV[2]))
local seq, n = announce(KEYS[2], KEYS[3], 'session', ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], now)
return {seq, now, n}
`)

// revokeUserScript records a user-wide revocation and announces it. It sets
// the user's marker (which makes the index script refuse active fills for
// the fill window), and returns the user's indexed session ids, read in the
// same atomic step: a fill indexed before is in that list; a fill indexed
// after sees the marker.
//
//	KEYS[1]  user sessions set
//	KEYS[2]  user revoked_at_ms marker
//	KEYS[3]  sequence counter of the user's stripe
//	KEYS[4]  log of the user's stripe
//	ARGV[1]  user id
//	ARGV[2]  marker TTL, ms
//	ARGV[3]  stripe
//	ARGV[4]  channel
//	ARGV[5]  log MAXLEN (approximate)
//	ARGV[6]  TTL of the counter and the log, ms
//
// It returns {seq, now, receivers, {session ids}}.
var revokeUserScript = redis.NewScript(luaNow + luaAnnounce + `
redis.call('SET', KEYS[2], string.format('%d', now), 'PX', ARGV[2])
local members = redis.call('SMEMBERS', KEYS[1])
local seq, n = announce(KEYS[3], KEYS[4], 'user', ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], now)
return {seq, now, n, members}
`)
