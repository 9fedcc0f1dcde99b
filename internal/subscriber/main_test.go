package subscriber

import (
	"testing"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// TestMain fails the package's tests if a goroutine outlives them.
func TestMain(m *testing.M) {
	redistest.VerifyTestMain(m)
}
