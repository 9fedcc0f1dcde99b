//go:build sessioncache_mutation

package mutation

import (
	"fmt"
	"sync/atomic"
)

// Built reports whether this binary was built with the sessioncache_mutation
// tag, that is, whether Disable exists and Disabled can return true.
const Built = true

// disabled[g] is set while g is disabled. It is process-wide on purpose:
// the guards sit deep in library code that has no other way to be told.
var disabled [numGuards + 1]atomic.Bool

// Disabled reports whether g is disabled.
func Disabled(g Guard) bool {
	return g > 0 && int(g) < len(disabled) && disabled[g].Load()
}

// Disable turns g off for the whole process and returns the function that
// turns it back on. It panics if g is unknown or already disabled.
func Disable(g Guard) (restore func()) {
	if g <= 0 || int(g) >= len(disabled) {
		panic(fmt.Sprintf("mutation: Disable(%v): unknown guard", g))
	}
	if !disabled[g].CompareAndSwap(false, true) {
		panic(fmt.Sprintf("mutation: Disable(%v): already disabled", g))
	}
	return func() { disabled[g].Store(false) }
}
