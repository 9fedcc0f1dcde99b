package chaos

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

func TestMain(m *testing.M) {
	// An in-process toxiproxy link can keep one goroutine blocked in its
	// first (no-op) toxic after the proxy stopped, when a toxic was
	// removed while bytes were in flight (seen once in a full run under
	// load, blocked for over a minute): toxiproxy's, not the cache's.
	redistest.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"))
}
