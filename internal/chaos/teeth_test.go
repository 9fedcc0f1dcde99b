//go:build sessioncache_mutation

package chaos

import (
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/mutation"
)

// TestTeeth disables one guard at a time and runs histories until the
// checker reports a violation: it must within 50 seeds, for each guard.
// Run it with
//
//	go test -tags sessioncache_mutation -race ./internal/chaos/ -run Teeth
func TestTeeth(t *testing.T) {
	tests := []struct {
		guard mutation.Guard
		hc    HistoryConfig
	}{
		{mutation.GuardedFill, HistoryConfig{Sessions: 16, MaxLatency: 100 * time.Millisecond, Env: Config{CallTimeout: time.Second},
			Faults: []FaultKind{FaultLatency, FaultLatency, FaultLatency, FaultRestart}, FaultRate: 1}},
		{mutation.L1Generation, HistoryConfig{Sessions: 16, MaxLatency: 100 * time.Millisecond, Env: Config{CallTimeout: time.Second},
			Faults: []FaultKind{FaultLatency, FaultLatency, FaultLatency}, FaultRate: 1}},
		{mutation.Resync, HistoryConfig{}},
		{mutation.GapDetection, HistoryConfig{Faults: []FaultKind{FaultDrop}, FaultRate: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.guard.String(), func(t *testing.T) {
			restore := mutation.Disable(tc.guard)
			defer restore()
			start := time.Now()
			sum := runHistories(t, tc.hc, seeds(t, 50, 50), true)
			t.Logf("%v disabled: %v in %v", tc.guard, sum, time.Since(start).Round(time.Second))
			if sum.violations == 0 {
				t.Errorf("%v disabled: no violation in %d histories, want at least one", tc.guard, sum.histories)
			}
		})
	}
}
