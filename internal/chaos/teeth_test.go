//go:build sessioncache_mutation

package chaos

import (
	"slices"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/mutation"
)

// TestTeeth disables one guard at a time and runs histories until the
// checker reports a violation: it must within 50 seeds, for each guard.
// Each guard gets the fault that makes its race happen (the same faults,
// with every guard on, are TestTargetedFaultHistories: 0 violations):
//
//   - GuardedFill: FaultFillRace, a backend answer read before a
//     revocation the filling replica did not hear of;
//   - L1Generation: FaultL1Race, a Redis read answered after the
//     revocation's message arrived;
//   - Resync: a blackhole, a CLIENT KILL and a restart in every history;
//   - GapDetection: FaultDrop, a message lost on a live connection;
//   - Tracking: FaultHandRevoke, an operator's HSET status revoked with
//     no message;
//   - LossUnfill: FaultLossFill, a backend answer read before a revocation
//     and filled after a restart lost it;
//   - UserIndex: the default faults; a user-wide revocation of the
//     workload leaves active the user's sessions that Redis holds unless
//     they are indexed.
//
// Run it with
//
//	go test -tags sessioncache_mutation -race ./internal/chaos/ -run Teeth
func TestTeeth(t *testing.T) {
	tests := []struct {
		guard mutation.Guard
		hc    HistoryConfig
	}{
		{mutation.GuardedFill, HistoryConfig{Faults: []FaultKind{FaultFillRace}, FaultRate: 1}},
		{mutation.L1Generation, HistoryConfig{Faults: []FaultKind{FaultL1Race}, FaultRate: 1}},
		{mutation.Resync, HistoryConfig{Faults: []FaultKind{FaultBlackhole, FaultKill, FaultRestart}, FaultRate: 1}},
		// With tracking, the dropped message's revocation still reaches
		// L1 as a change of the key: gap detection is the only defense
		// only on a Redis without tracking.
		{mutation.GapDetection, HistoryConfig{Env: Config{Untracked: true}, Faults: []FaultKind{FaultDrop}, FaultRate: 1}},
		{mutation.Tracking, HistoryConfig{Faults: []FaultKind{FaultHandRevoke}, FaultRate: 1}},
		{mutation.LossUnfill, HistoryConfig{Faults: []FaultKind{FaultLossFill}, FaultRate: 1}},
		{mutation.UserIndex, HistoryConfig{}},
	}
	for _, tc := range tests {
		t.Run(tc.guard.String(), func(t *testing.T) {
			restore := mutation.Disable(tc.guard)
			defer restore()
			start := time.Now()
			list := seeds(t, 50, 50)
			sum := runHistories(t, tc.hc, list, true)
			t.Logf("%v disabled: %v in %v", tc.guard, sum, time.Since(start).Round(time.Second))
			if sum.violations == 0 {
				t.Errorf("%v disabled: no violation in %d histories, want at least one", tc.guard, sum.histories)
				return
			}
			t.Logf("%v disabled: first violation at seed %d of %d", tc.guard, slices.Min(sum.failed)-list[0]+1, len(list))
		})
	}
}
