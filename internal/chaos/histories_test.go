package chaos

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Environment variables of the history tests:
//
//	SESSIONCACHE_SOAK=1              5,000 histories instead of 200
//	SESSIONCACHE_CHAOS_HISTORIES=n   n histories
//	SESSIONCACHE_CHAOS_SEED=s        replay the one history of seed s
//	SESSIONCACHE_CHAOS_BASE=b        seeds b, b+1, ... (default: from the clock)
const (
	envSoak      = "SESSIONCACHE_SOAK"
	envHistories = "SESSIONCACHE_CHAOS_HISTORIES"
	envSeed      = "SESSIONCACHE_CHAOS_SEED"
	envBase      = "SESSIONCACHE_CHAOS_BASE"
)

// margin is added to the design bound for scheduling on a loaded machine
// under the race detector.
const margin = 400 * time.Millisecond

func soak() bool { return os.Getenv(envSoak) == "1" }

// seeds returns the seeds to run: the one of SESSIONCACHE_CHAOS_SEED, or n
// (SESSIONCACHE_CHAOS_HISTORIES, or soakN under SESSIONCACHE_SOAK=1)
// consecutive seeds from a base.
func seeds(t *testing.T, n, soakN int) []uint64 {
	t.Helper()
	if s := os.Getenv(envSeed); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, s, err)
		}
		return []uint64{seed}
	}
	if soak() {
		n = soakN
	}
	if s := os.Getenv(envHistories); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("%s=%q: want a positive count", envHistories, s)
		}
		n = v
	}
	base := uint64(time.Now().UnixNano()) % 1_000_000_000
	if s := os.Getenv(envBase); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envBase, s, err)
		}
		base = v
	}
	t.Logf("seeds %d to %d; replay one with %s=<seed>", base, base+uint64(n)-1, envSeed)
	out := make([]uint64, n)
	for i := range out {
		out[i] = base + uint64(i)
	}
	return out
}

// summary aggregates the reports of many histories.
type summary struct {
	mu           sync.Mutex
	histories    int
	violations   int
	lookups      map[Answer]int
	falseRevoked int // revoked answers no revocation explains
	faults       map[FaultKind]int
	maxStale     time.Duration
	l2Ops        int
	longest      time.Duration
	dropped      int
	failed       []uint64
}

func (s *summary) add(h *History, rep Report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookups == nil {
		s.lookups, s.faults = map[Answer]int{}, map[FaultKind]int{}
	}
	s.histories++
	s.violations += len(rep.Violations)
	if len(rep.Violations) > 0 {
		s.failed = append(s.failed, h.Seed)
	}
	for a, n := range rep.Lookups {
		s.lookups[a] += n
	}
	s.falseRevoked += rep.FalseRevoked
	for _, f := range h.Plan {
		s.faults[f.Kind]++
	}
	s.maxStale = max(s.maxStale, rep.MaxStale)
	s.l2Ops += rep.L2Ops
	s.longest = max(s.longest, h.End)
	s.dropped += h.Dropped
}

func (s *summary) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d histories, %d violations (seeds %v); lookups: %d active, %d revoked (%d of them failing closed on a session nobody revoked), %d not found, %d errors (denied); "+
		"faults: %v; messages dropped: %d; latest active answer after a revocation returned: %v; L2 operations checked: %d; longest history: %v",
		s.histories, s.violations, s.failed, s.lookups[AnswerActive], s.lookups[AnswerRevoked], s.falseRevoked, s.lookups[AnswerNotFound],
		s.lookups[AnswerError], s.faults, s.dropped, s.maxStale.Round(time.Millisecond), s.l2Ops, s.longest)
}

// lanes is how many histories run at once. Each is mostly idle (its
// operations are paced over its span), so three fit on two cores.
const lanes = 3

// runHistories runs a history per seed, lanes at a time, each in its own
// subtest, and checks each. With stopAtFirst, it stops starting histories
// after the first violation and does not fail the test for it.
func runHistories(t *testing.T, hc HistoryConfig, list []uint64, stopAtFirst bool) *summary {
	t.Helper()
	hc.setDefaults()
	bound := hc.Env.Bound() + margin
	sum := &summary{}
	var mu sync.Mutex // guards next and stop
	next, stop := 0, false
	take := func() (uint64, bool) {
		mu.Lock()
		defer mu.Unlock()
		if stop || next == len(list) {
			return 0, false
		}
		next++
		return list[next-1], true
	}
	var wg sync.WaitGroup
	for range min(lanes, len(list)) {
		wg.Go(func() {
			for seed, ok := take(); ok; seed, ok = take() {
				t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
					h := RunHistory(t, seed, hc)
					rep := Check(h, bound, 10*time.Second, os.TempDir())
					sum.add(h, rep)
					if len(rep.Violations) == 0 {
						return
					}
					t.Logf("%s", h.Describe())
					for _, v := range rep.Violations {
						t.Logf("  %v", v)
					}
					for _, line := range h.DescribeEvents() {
						t.Logf("  %s", line)
					}
					if stopAtFirst {
						mu.Lock()
						stop = true
						mu.Unlock()
						return
					}
					t.Errorf("seed %d: %d violations (bound %v); replay with %s=%d", seed, len(rep.Violations), bound, envSeed, seed)
				})
			}
		})
	}
	wg.Wait()
	return sum
}

// TestHistories runs randomized concurrent histories (8 clients, 32
// sessions, 3 replicas; 85% lookups, 10% revocations of which 30% are
// user-wide, 5% new sessions; about 100 operations each) with faults drawn
// per history from DefaultFaults, and checks every one: 0 violations.
func TestHistories(t *testing.T) {
	list := seeds(t, 200, 5000)
	start := time.Now()
	sum := runHistories(t, HistoryConfig{}, list, false)
	hc := HistoryConfig{}
	hc.setDefaults()
	t.Logf("bound %v (heartbeat %v + timeout %v + StaleBound %v + margin %v); %v in %v",
		hc.Env.Bound()+margin, hc.Env.Heartbeat, hc.Env.HeartbeatTimeout, hc.Env.StaleBound, margin, sum, time.Since(start).Round(time.Second))
	if sum.histories != len(list) {
		t.Errorf("%d histories ran, want %d", sum.histories, len(list))
	}
}

// TestTargetedFaultHistories is the control of the teeth tests that use
// targeted faults: the same histories with FaultDrop (one numbered message
// lost on a live subscriber connection, and a next message 300 ms later),
// FaultFillRace (a backend answer read before a revocation whose message
// the filling replica lost, delivered after it) and FaultL1Race (a Redis
// read answered after the revocation's message arrived), every guard on:
// the gap is detected at the next message and the lost one replayed, the
// guarded fill keeps the tombstone, the L1 generation check stores the
// late read as revoked; and FaultLossFill (a backend answer read before a
// revocation, filled after a restart lost it), which the take-back after
// the loss removes; so 0 violations.
func TestTargetedFaultHistories(t *testing.T) {
	list := seeds(t, 30, 500)
	sum := runHistories(t, HistoryConfig{Faults: []FaultKind{FaultDrop, FaultFillRace, FaultL1Race, FaultLossFill}, FaultRate: 0.6}, list, false)
	t.Logf("%v", sum)
	if sum.dropped == 0 {
		t.Errorf("no message was dropped in %d histories", sum.histories)
	}
}
