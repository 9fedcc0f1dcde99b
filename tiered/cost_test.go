package tiered

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// roundTripHook counts the round trips a go-redis client makes: a command
// or a pipeline each.
type roundTripHook struct{ n atomic.Int64 }

func (h *roundTripHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *roundTripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// TestDoubleMissCost counts what a lookup missing L1 and Redis costs when
// no revocation races it: Redis round trips on the lookup's path (the
// subscriber's connections are its own and not counted) and backend
// calls. Today: the L2 read and the fill script (docs/fill-guard.md says
// why), plus one more read when Redis's report of the fill's own write
// (tracking) reaches L1 before the fill does, which is most of the time;
// and one backend call. The first call of the script adds an EVAL after
// its NOSCRIPT. The test fails if either grows.
func TestDoubleMissCost(t *testing.T) {
	const misses = 100
	e := newEnv(t)
	r := e.replica(t, "cost", testHooks{})
	hook := &roundTripHook{}
	r.rdb.AddHook(hook)
	ids := make([]string, misses)
	for i := range ids {
		rec, _ := e.backend.NewSession("user-cost")
		ids[i] = rec.DeviceSessionID
	}
	calls := e.backend.Calls()
	for _, id := range ids {
		if _, tier, err := r.LookupTier(ctx, id); err != nil || tier != TierBackend {
			t.Fatalf("LookupTier = %v, %v; want an answer from the backend", tier, err)
		}
	}
	trips := float64(hook.n.Load()) / misses
	backendCalls := float64(e.backend.Calls()-calls) / misses
	t.Logf("per double miss: %.2f Redis round trips, %.2f backend calls", trips, backendCalls)
	if trips > 3.5 {
		t.Errorf("%.2f Redis round trips per double miss, want at most 3", trips)
	}
	if backendCalls != 1 {
		t.Errorf("%.2f backend calls per double miss, want 1", backendCalls)
	}
}
