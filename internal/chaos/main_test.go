package chaos

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

func TestMain(m *testing.M) {
	// An in-process toxiproxy link can keep one goroutine blocked in its
	// first toxic after the proxy stopped, when a toxic was removed while
	// bytes were in flight (seen under load, blocked for minutes; once in
	// toxiproxy's no-op toxic, once in toxitest's link toxic, which now
	// stands first and passes data on the same way): toxiproxy's, not the
	// cache's.
	redistest.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/galaxy-game/sessioncache/internal/toxitest.(*linkToxic).Pipe"))
}
