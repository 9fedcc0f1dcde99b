package tiered

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// metricsEnv is one Cache on miniredis and a backendtest server, with a
// hook that reports each invalidation applied to L1.
type metricsEnv struct {
	c       *Cache
	mr      *miniredis.Miniredis
	rdb     *redis.Client
	backend *backendtest.Server
	applied chan session.Invalidation
}

func newMetricsEnv(t *testing.T) *metricsEnv {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	l2, err := rediscache.New(rdb, rediscache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bs := backendtest.NewServer()
	t.Cleanup(bs.Close)
	be, err := backend.New(backend.Options{BaseURL: bs.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.CloseIdleConnections)
	applied := make(chan session.Invalidation, 16)
	c, err := newCache(Options{Redis: l2, Backend: be}, testHooks{applied: func(m session.Invalidation) { applied <- m }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatalf("WaitSynced: %v", err)
	}
	return &metricsEnv{c: c, mr: mr, rdb: rdb, backend: bs, applied: applied}
}

// waitApplied blocks until an invalidation of id (session or user) has been
// applied to L1.
func (e *metricsEnv) waitApplied(t *testing.T, id string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-e.applied:
			if m.SessionID == id || m.UserID == id {
				return
			}
		case <-deadline:
			t.Fatalf("invalidation of %s not applied within 5s", session.Redact(id))
		}
	}
}

// metricValue gathers reg and returns the value of the named series with
// exactly the given variable labels (the histogram's sample count for a
// histogram), and whether it exists.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelsMatch(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// labelsMatch reports whether m's labels other than the constant "replica"
// are exactly want.
func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if lp.GetName() == "replica" {
			continue
		}
		if want[lp.GetName()] != lp.GetValue() {
			return false
		}
		n++
	}
	return n == len(want)
}

type metricWant struct {
	name   string
	labels []string
	value  float64
}

func checkMetrics(t *testing.T, reg prometheus.Gatherer, step string, wants []metricWant) {
	t.Helper()
	for _, w := range wants {
		got, ok := metricValue(t, reg, w.name, w.labels...)
		if !ok || got != w.value {
			t.Errorf("%s: %s%v = %v (present %v), want %v", step, w.name, w.labels, got, ok, w.value)
		}
	}
}

func TestRegisterMetricsMoveWithLookups(t *testing.T) {
	e := newMetricsEnv(t)
	reg := prometheus.NewRegistry()
	if err := e.c.RegisterMetrics(reg, prometheus.Labels{"replica": "a"}); err != nil {
		t.Fatalf("RegisterMetrics = %v", err)
	}
	ctx := context.Background()

	checkMetrics(t, reg, "before any lookup", []metricWant{
		{"sessioncache_lookups_total", []string{"tier", "l1", "result", "found"}, 0},
		{"sessioncache_backend_calls_total", nil, 0},
		{"sessioncache_l1_entries", nil, 0},
		{"sessioncache_subscriber_up", nil, 1},
		{"sessioncache_revocation_fanout_seconds", nil, 0},
	})

	rec, _ := e.backend.NewSession("user-1")
	for i := range 3 {
		if _, err := e.c.Lookup(ctx, rec.DeviceSessionID); err != nil {
			t.Fatalf("Lookup #%d(%q) = %v, want nil", i, rec.DeviceSessionID, err)
		}
	}
	for i := range 2 {
		if _, err := e.c.Lookup(ctx, "unknown-1"); err == nil {
			t.Fatalf("Lookup #%d(%q) = nil error, want ErrNotFound", i, "unknown-1")
		}
	}
	if _, err := e.c.Lookup(ctx, "bad*id"); err == nil {
		t.Fatalf("Lookup(%q) = nil error, want ErrInvalidID", "bad*id")
	}
	e.backend.SetFault(backendtest.Fault{Status: 503})
	if _, err := e.c.Lookup(ctx, "down-1"); err == nil {
		t.Fatalf("Lookup(%q) with the backend down = nil error, want an error", "down-1")
	}
	e.backend.SetFault(backendtest.Fault{})

	checkMetrics(t, reg, "after lookups", []metricWant{
		{"sessioncache_lookups_total", []string{"tier", "l1", "result", "found"}, 2},
		{"sessioncache_lookups_total", []string{"tier", "l2", "result", "found"}, 0},
		{"sessioncache_lookups_total", []string{"tier", "negative", "result", "not_found"}, 1},
		{"sessioncache_lookups_total", []string{"tier", "backend", "result", "found"}, 1},
		{"sessioncache_lookups_total", []string{"tier", "backend", "result", "not_found"}, 1},
		{"sessioncache_lookups_total", []string{"tier", "backend", "result", "error"}, 1},
		// The three backend calls were timed: one found, and the two
		// that failed or found nothing (answered by no tier).
		{"sessioncache_lookup_duration_seconds", []string{"tier", "backend"}, 1},
		{"sessioncache_lookup_duration_seconds", []string{"tier", "none"}, 2},
		{"sessioncache_lookup_duration_seconds", []string{"tier", "l2"}, 0},
		{"sessioncache_l1_active_drops_total", nil, 0}, // the first sync's drop is not a resync
		{"sessioncache_lookups_total", []string{"tier", "none", "result", "invalid_id"}, 1},
		{"sessioncache_backend_calls_total", nil, 3},
		{"sessioncache_backend_errors_total", nil, 1},
		{"sessioncache_negative_hits_total", nil, 1},
		{"sessioncache_l1_entries", nil, 1},
		{"sessioncache_invalidations_published_total", nil, 0},
	})

	// A revocation: written and published by this replica, received back
	// on the channel and applied, with a fan-out delay.
	if err := e.c.Revoke(ctx, rec.DeviceSessionID); err != nil {
		t.Fatalf("Revoke(%q) = %v", rec.DeviceSessionID, err)
	}
	e.waitApplied(t, rec.DeviceSessionID)
	// A malformed message, then a hand-typed one: once the second is
	// applied, the first has been counted.
	if err := e.rdb.Publish(ctx, session.DefaultChannel, "{not json").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.Publish(ctx, session.DefaultChannel, `{"session":"typed-1"}`).Err(); err != nil {
		t.Fatal(err)
	}
	e.waitApplied(t, "typed-1")

	checkMetrics(t, reg, "after revocations", []metricWant{
		{"sessioncache_invalidations_published_total", nil, 1},
		{"sessioncache_invalidations_received_total", nil, 3},
		{"sessioncache_invalidations_malformed_total", nil, 1},
		{"sessioncache_invalidation_gaps_total", nil, 0},
		{"sessioncache_revocation_fanout_seconds", nil, 1}, // the hand-typed message has no at_ms
		{"sessioncache_revoke_failures_total", nil, 0},
		{"sessioncache_subscriber_up", nil, 1},
		{"sessioncache_tracking", nil, 0}, // miniredis has no CLIENT TRACKING
		{"sessioncache_revocations_pending", nil, 0},
	})
	// The heartbeat's age counts from the last answered probe, not from the
	// last message: poll until one was answered.
	for deadline := time.Now().Add(10 * time.Second); e.c.sub.Stats().LastHeartbeatUnixMs == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat answered within 10s")
		}
		time.Sleep(10 * time.Millisecond) // the subscriber has no hook for an answered probe
	}
	if age, ok := metricValue(t, reg, "sessioncache_heartbeat_age_seconds"); !ok || age < 0 || age > 5 {
		t.Errorf("sessioncache_heartbeat_age_seconds = %v (present %v), want between 0 and 5", age, ok)
	}
	if age, ok := metricValue(t, reg, "sessioncache_last_message_age_seconds"); !ok || age < 0 || age > 60 {
		t.Errorf("sessioncache_last_message_age_seconds = %v (present %v), want between 0 and 60", age, ok)
	}
	if got, _ := metricValue(t, reg, "sessioncache_invalidations_applied_total"); got < 2 {
		t.Errorf("sessioncache_invalidations_applied_total = %v, want at least 2", got)
	}

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("GatherAndLint = %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	e.c.Close()
	checkMetrics(t, reg, "after Close", []metricWant{{"sessioncache_subscriber_up", nil, 0}})
}

func TestRegisterMetricsErrors(t *testing.T) {
	e := newMetricsEnv(t)
	if err := e.c.RegisterMetrics(nil, nil); err == nil {
		t.Errorf("RegisterMetrics(nil, nil) = nil, want an error")
	}
	reg := prometheus.NewRegistry()
	if err := e.c.RegisterMetrics(reg, nil); err != nil {
		t.Fatalf("RegisterMetrics = %v", err)
	}
	if err := e.c.RegisterMetrics(reg, nil); err == nil {
		t.Errorf("second RegisterMetrics on one registry = nil, want an error")
	}
	// Distinct constant labels let several replicas share a registry.
	shared := prometheus.NewRegistry()
	for _, name := range []string{"a", "b"} {
		if err := e.c.RegisterMetrics(shared, prometheus.Labels{"replica": name}); err != nil {
			t.Errorf("RegisterMetrics(replica=%s) on a shared registry = %v, want nil", name, err)
		}
	}
	if n, err := testutil.GatherAndCount(shared, "sessioncache_backend_calls_total"); err != nil || n != 2 {
		t.Errorf("GatherAndCount(sessioncache_backend_calls_total) = %d, %v; want 2 series", n, err)
	}
}

func TestFanoutHistogramCumulative(t *testing.T) {
	var h histogram
	samples := []time.Duration{300 * time.Microsecond, 2 * time.Millisecond, 40 * time.Millisecond, 3 * time.Second, 2 * time.Minute}
	var trueSum float64
	for _, d := range samples {
		h.observe(d)
		trueSum += d.Seconds()
	}
	count, sum, buckets := h.cumulative(fanoutBuckets[:])
	if count != uint64(len(samples)) {
		t.Errorf("cumulative count = %d, want %d", count, len(samples))
	}
	if sum < trueSum || sum > 1.1*trueSum {
		t.Errorf("cumulative sum = %v, want within [%v, %v]", sum, trueSum, 1.1*trueSum)
	}
	tests := []struct {
		le   float64
		want uint64
	}{
		{0.0005, 1}, {0.001, 1}, {0.0025, 2}, {0.025, 2}, {0.05, 3}, {2.5, 3}, {5, 4}, {60, 4},
	}
	for _, tt := range tests {
		if got := buckets[tt.le]; got != tt.want {
			t.Errorf("bucket le=%v = %d, want %d", tt.le, got, tt.want)
		}
	}
	if len(buckets) != len(fanoutBuckets) {
		t.Errorf("%d buckets, want %d", len(buckets), len(fanoutBuckets))
	}
}
