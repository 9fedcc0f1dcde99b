package chaos

import (
	"testing"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

func TestMain(m *testing.M) {
	redistest.VerifyTestMain(m)
}
