package rediscache

import (
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/galaxy-game/sessioncache/session"
)

// Layout names the Redis keys and the channel of one deployment. It is a
// public interface: operators type these names into redis-cli.
//
// With one stripe (the default, for a single Redis or Sentinel):
//
//	<prefix>session:<device_session_id>      hash: user_id, client_public_key, status, revoked_at_ms
//	<prefix>user:<user_id>:sessions          set of the user's device session ids
//	<prefix>user:<user_id>:revoked_at_ms     string: time of the last user-wide revocation
//	<prefix>session_invalidation:seq         string: last sequence number assigned
//	<prefix>session_invalidation:log         stream: the recent invalidations, for replay
//	<prefix>session_invalidation             pub/sub channel
//
// With N > 1 stripes (for Redis Cluster), every key carries the hash tag of
// its stripe, so that each Lua script touches keys of one slot:
//
//	<prefix>session:{s<k>}:<device_session_id>   k = Stripe(device_session_id)
//	<prefix>user:{s<k>}:<user_id>:sessions       the user's sessions of stripe k
//	<prefix>user:{s<k>}:<user_id>:revoked_at_ms  the user's marker on stripe k
//	<prefix>session_invalidation:{s<k>}:seq
//	<prefix>session_invalidation:{s<k>}:log
//
// A user so has an index and a marker on each stripe that holds one of
// their sessions (a user-wide revocation sets the marker on every stripe):
// the fill script checks the marker and indexes the session in the same
// slot as the session's hash. A user's message is numbered on the user's
// own stripe, Stripe(user_id).
//
// The channel has no tag. Stripe(id) is the CRC-32 (IEEE) of the id modulo N;
// `sessionctl inspect` prints the keys of a session.
//
// A Layout is immutable and safe for concurrent use.
type Layout struct {
	prefix  string
	channel string
	stripes int
	tags    []string // tags[k] is "" (one stripe) or "{s<k>}:"
}

// NewLayout returns the layout for a key prefix, a channel name and a stripe
// count. An empty channel means session.DefaultChannel; stripes 0 means 1.
// The prefix and the channel are applied as given, the prefix to the channel
// too; both must be free of whitespace, glob characters and braces.
func NewLayout(prefix, channel string, stripes int) (Layout, error) {
	if channel == "" {
		channel = session.DefaultChannel
	}
	if stripes == 0 {
		stripes = 1
	}
	if stripes < 0 || stripes > session.MaxStripes {
		return Layout{}, fmt.Errorf("rediscache: stripes %d out of range 1..%d", stripes, session.MaxStripes)
	}
	if err := checkName("prefix", prefix, true); err != nil {
		return Layout{}, err
	}
	if err := checkName("channel", channel, false); err != nil {
		return Layout{}, err
	}
	l := Layout{prefix: prefix, channel: prefix + channel, stripes: stripes, tags: make([]string, stripes)}
	if stripes > 1 {
		for k := range l.tags {
			l.tags[k] = "{s" + strconv.Itoa(k) + "}:"
		}
	}
	return l, nil
}

// checkName accepts the identifier bytes plus ':' and, for a prefix, "".
func checkName(what, s string, emptyOK bool) error {
	if s == "" {
		if emptyOK {
			return nil
		}
		return fmt.Errorf("rediscache: %s is empty", what)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ':' {
			continue
		}
		if session.ValidateID(string(c)) != nil {
			return fmt.Errorf("rediscache: %s has a disallowed byte 0x%02x at offset %d", what, c, i)
		}
	}
	return nil
}

// Stripes returns the number of stripes.
func (l Layout) Stripes() int { return l.stripes }

// Channel returns the pub/sub channel, prefix included.
func (l Layout) Channel() string { return l.channel }

// Stripe returns the stripe of a device session or user id.
func (l Layout) Stripe(id string) int {
	if l.stripes == 1 {
		return 0
	}
	return int(crc32.ChecksumIEEE([]byte(id)) % uint32(l.stripes))
}

// SessionKey returns the hash key of a device session.
func (l Layout) SessionKey(id string) string {
	return l.prefix + "session:" + l.tags[l.Stripe(id)] + id
}

// SessionKeyPrefix returns what every session hash key starts with:
// <prefix>session:. Replicas ask Redis to report every change to keys
// with this prefix (CLIENT TRACKING BCAST PREFIX).
func (l Layout) SessionKeyPrefix() string { return l.prefix + "session:" }

// SessionIDOfKey returns the device session id of a session hash key, and
// false for any other key (another prefix, a wrong stripe tag, an invalid
// id).
func (l Layout) SessionIDOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, l.SessionKeyPrefix())
	if !ok {
		return "", false
	}
	if l.stripes > 1 {
		end := strings.Index(rest, "}:")
		if end < 0 {
			return "", false
		}
		rest = rest[end+2:]
	}
	if session.ValidateID(rest) != nil || l.SessionKey(rest) != key {
		return "", false
	}
	return rest, true
}

// UserSessionsKey returns the key of the set of a user's session ids of
// stripe k (with one stripe, k is 0 and the set lists them all).
func (l Layout) UserSessionsKey(userID string, k int) string {
	return l.prefix + "user:" + l.tags[k] + userID + ":sessions"
}

// UserRevokedKey returns the key holding the time of the user's last
// user-wide revocation, as stripe k's fills see it.
func (l Layout) UserRevokedKey(userID string, k int) string {
	return l.prefix + "user:" + l.tags[k] + userID + ":revoked_at_ms"
}

// SeqKey returns the key of stripe k's sequence counter.
func (l Layout) SeqKey(k int) string {
	return l.channel + ":" + l.tags[k] + "seq"
}

// LogKey returns the key of stripe k's invalidation stream.
func (l Layout) LogKey(k int) string {
	return l.channel + ":" + l.tags[k] + "log"
}
