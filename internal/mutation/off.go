//go:build !sessioncache_mutation

package mutation

// Built reports whether this binary was built with the sessioncache_mutation
// tag, that is, whether Disable exists and Disabled can return true.
const Built = false

// Disabled reports whether g is disabled. Without the sessioncache_mutation
// build tag it is always false, and calls to it are compiled away.
func Disabled(Guard) bool { return false }
