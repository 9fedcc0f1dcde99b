// Package workload is the benchmark workload of the session cache: a
// numbered population of sessions (three per user), Zipf-distributed
// traces of their indexes, and a bulk loader that writes the population into
// Redis in the layout rediscache reads. The benchmarks of localcache and
// tiered and the suite under bench/ all draw from it, so that every figure
// of BENCHMARKS.md is measured on the same sessions and the same keys.
//
// Everything here is deterministic: ID(i), Record(i) and a Trace built with
// the same arguments are the same in every process. The functions are safe
// for concurrent use; a Trace is read-only once built.
package workload

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// SessionsPerUser is how many consecutive session indexes share a user.
const SessionsPerUser = 3

// ID returns the device session id of session i: "device-session-" and
// eight digits (23 bytes below 10^8).
func ID(i int) string { return fmt.Sprintf("device-session-%08d", i) }

// UserID returns the user id of session i: "user-" and six digits.
func UserID(i int) string { return fmt.Sprintf("user-%06d", i/SessionsPerUser) }

// PublicKey returns the client public key of session i: the standard
// base64 of 32 bytes derived from the index.
func PublicKey(i int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(i)))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Record returns the active record of session i.
func Record(i int) session.Record {
	return session.Record{
		DeviceSessionID: ID(i),
		UserID:          UserID(i),
		ClientPublicKey: PublicKey(i),
		Status:          session.StatusActive,
	}
}

// IDs returns ID(0) to ID(n-1), so that hot loops index a slice instead of
// formatting.
func IDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = ID(i)
	}
	return ids
}

// Trace is a sequence of session indexes.
type Trace []int32

// Zipf returns a trace of length indexes in [0, n) drawn from a Zipf
// distribution of exponent s > 1 (P(k) ∝ (1+k)^-s, math/rand/v2's NewZipf
// with v = 1): index 0 is the most popular. seed selects the sequence.
func Zipf(n int, s float64, length int, seed uint64) Trace {
	if n <= 0 || length < 0 || !(s > 1) {
		panic(fmt.Sprintf("workload: Zipf(n=%d, s=%v, length=%d): need n > 0, s > 1, length >= 0", n, s, length))
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5a17c0de))
	z := rand.NewZipf(rng, s, 1, uint64(n-1))
	t := make(Trace, length)
	for i := range t {
		t[i] = int32(z.Uint64())
	}
	return t
}

// Uniform returns a trace of length indexes drawn uniformly from [0, n).
func Uniform(n, length int, seed uint64) Trace {
	rng := rand.New(rand.NewPCG(seed, seed^0x0dd5eed))
	t := make(Trace, length)
	for i := range t {
		t[i] = int32(rng.IntN(n))
	}
	return t
}

// loadBatch is how many sessions one pipeline writes.
const loadBatch = 500

// Load writes sessions [from, to) into Redis as rediscache's Fill would
// store them active: the hash under layout.SessionKey with user_id,
// client_public_key and status, expiring after ttl, and the id in its
// user's index, expiring after ttl. It uses pipelines of plain commands
// (Fill's guarded scripts cost two round trips per session) and does not
// touch sessions outside the range.
func Load(ctx context.Context, rdb redis.UniversalClient, layout rediscache.Layout, from, to int, ttl time.Duration) error {
	for lo := from; lo < to; lo += loadBatch {
		hi := min(lo+loadBatch, to)
		pipe := rdb.Pipeline()
		for i := lo; i < hi; i++ {
			key := layout.SessionKey(ID(i))
			pipe.HSet(ctx, key,
				rediscache.FieldUserID, UserID(i),
				rediscache.FieldClientPublicKey, PublicKey(i),
				rediscache.FieldStatus, string(session.StatusActive))
			pipe.PExpire(ctx, key, ttl)
			uk := layout.UserSessionsKey(UserID(i), layout.Stripe(ID(i)))
			pipe.SAdd(ctx, uk, ID(i))
			pipe.PExpire(ctx, uk, ttl)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("workload: load sessions %d..%d: %w", lo, hi-1, err)
		}
	}
	return nil
}
