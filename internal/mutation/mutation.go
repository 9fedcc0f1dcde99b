// Package mutation holds test-only switches that each disable one safety
// guard of the session cache, so that the chaos tests can show that their
// checker notices when a guard is missing (that the tests have teeth).
//
// The library calls Disabled at each guard:
//
//	if mutation.Disabled(mutation.GuardedFill) { ... the unguarded path ... }
//
// In an ordinary build (without the build tag sessioncache_mutation),
// Disabled is a constant false that the compiler inlines, so the guarded
// branch and everything only it reaches are compiled away: production
// binaries pay nothing. Built with -tags sessioncache_mutation, Disable
// turns a guard off for the whole process until the function it returns is
// called. That process-wide switch is the one piece of package-level mutable
// state in the module, and it exists only in that build.
//
// Disabled is safe for concurrent use; Disable is meant for a test's own
// goroutine, with nothing else toggling the same guard.
package mutation

import "strconv"

// Guard names one safety guard.
type Guard int

// The guards that can be disabled.
const (
	// GuardedFill is the L2 fill script's check that refuses to write an
	// active record over a revoked one (rediscache.Cache.Fill). Disabled,
	// Fill writes the record with a plain HSET.
	GuardedFill Guard = iota + 1
	// L1Generation is the L1 token check (internal/l1 Fill and Check): a
	// record read from a lower tier before an invalidation of its session
	// or user is stored, or answered, as revoked, and one read before a
	// change Redis reported (Invalidate) is not stored. Disabled, it is
	// stored as read.
	L1Generation
	// Resync is the subscriber's sync after a reconnect: replay of the
	// invalidations missed from the log, or DropActive when they are no
	// longer there. Disabled, the subscriber takes the counters as its new
	// position and reports a sync without replaying or dropping anything.
	Resync
	// GapDetection is the subscriber's check of each message's sequence
	// number. Disabled, a message that skips numbers is applied and its
	// number taken as the position, without replaying what was skipped.
	GapDetection
	// Tracking is the subscriber's server-assisted invalidation (CLIENT
	// TRACKING on its connection), which carries changes to session keys
	// that no invalidation message announces: hand edits, DEL, expiry,
	// eviction, flushes. Disabled, the subscriber does not ask for it and
	// runs on the channel alone, as on a Redis without tracking.
	Tracking
	// LossUnfill is tiered's take-back of its recent fills after Redis
	// lost data (a resync after a loss). Disabled, fills are neither taken
	// back nor withheld.
	LossUnfill
	// UserIndex is the fill script's user-wide guard
	// (rediscache.Cache.Fill): an active record of a user is added to the
	// user's index, which RevokeUser reads, unless the user's revocation
	// marker refuses it. Disabled, Fill writes the record without either.
	UserIndex

	numGuards = iota
)

var names = [...]string{"", "GuardedFill", "L1Generation", "Resync", "GapDetection", "Tracking", "LossUnfill", "UserIndex"}

// String returns the guard's name, for example "GuardedFill".
func (g Guard) String() string {
	if g <= 0 || int(g) >= len(names) {
		return "Guard(" + strconv.Itoa(int(g)) + ")"
	}
	return names[g]
}

// Guards lists every guard, in declaration order.
func Guards() []Guard {
	return []Guard{GuardedFill, L1Generation, Resync, GapDetection, Tracking, LossUnfill, UserIndex}
}
