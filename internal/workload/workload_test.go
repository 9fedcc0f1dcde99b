package workload_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/rediscache"
)

func TestMain(m *testing.M) { redistest.VerifyTestMain(m) }

func TestRecordsAreValidAndDistinct(t *testing.T) {
	seen := make(map[string]bool)
	for i := range 3000 {
		r := workload.Record(i)
		if err := r.Validate(); err != nil {
			t.Fatalf("Record(%d).Validate() = %v, want nil", i, err)
		}
		if seen[r.DeviceSessionID] {
			t.Fatalf("Record(%d) repeats id %q", i, r.DeviceSessionID)
		}
		seen[r.DeviceSessionID] = true
		if want := workload.UserID(i - i%workload.SessionsPerUser); r.UserID != want {
			t.Fatalf("Record(%d).UserID = %q, want %q (the user of its group)", i, r.UserID, want)
		}
	}
	if got, want := workload.IDs(5), []string{workload.ID(0), workload.ID(1), workload.ID(2), workload.ID(3), workload.ID(4)}; !slices.Equal(got, want) {
		t.Errorf("IDs(5) = %q, want %q", got, want)
	}
}

func TestZipfIsDeterministicAndSkewed(t *testing.T) {
	const n, length = 1000, 200_000
	a := workload.Zipf(n, 1.1, length, 7)
	if b := workload.Zipf(n, 1.1, length, 7); !slices.Equal(a, b) {
		t.Fatalf("Zipf with the same seed gave two traces")
	}
	if c := workload.Zipf(n, 1.1, length, 8); slices.Equal(a, c) {
		t.Fatalf("Zipf with two seeds gave the same trace")
	}
	counts := make([]int, n)
	for _, i := range a {
		if i < 0 || int(i) >= n {
			t.Fatalf("Zipf index %d outside [0, %d)", i, n)
		}
		counts[i]++
	}
	// P(0)/P(9) = 10^1.1 ≈ 12.6 for s = 1.1.
	if counts[0] < 10*counts[9] || counts[9] <= counts[99] {
		t.Errorf("Zipf counts of indexes 0, 9, 99 = %d, %d, %d; want strongly decreasing", counts[0], counts[9], counts[99])
	}
	for _, i := range workload.Uniform(n, 10_000, 1) {
		if i < 0 || int(i) >= n {
			t.Fatalf("Uniform index %d outside [0, %d)", i, n)
		}
	}
}

func TestLoadWritesWhatRediscacheReads(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t)
	ctx := context.Background()
	layout, err := rediscache.NewLayout("p:", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := rediscache.New(rdb, rediscache.Options{Prefix: "p:"})
	if err != nil {
		t.Fatal(err)
	}
	const from, to = 3, 1203 // more than one pipeline
	if err := workload.Load(ctx, rdb, layout, from, to, time.Hour); err != nil {
		t.Fatalf("Load = %v", err)
	}
	for _, i := range []int{from, 700, to - 1} {
		got, err := l2.Get(ctx, workload.ID(i))
		if want := workload.Record(i); err != nil || got != want {
			t.Errorf("Get(%q) = %+v, %v; want %+v", workload.ID(i), got, err, want)
		}
		if ttl := rdb.PTTL(ctx, layout.SessionKey(workload.ID(i))).Val(); ttl <= 0 || ttl > time.Hour {
			t.Errorf("PTTL of session %d = %v, want within (0, 1h]", i, ttl)
		}
		if ok, err := rdb.SIsMember(ctx, layout.UserSessionsKey(workload.UserID(i), layout.Stripe(workload.ID(i))), workload.ID(i)).Result(); err != nil || !ok {
			t.Errorf("SISMEMBER user index of session %d = %v, %v; want true", i, ok, err)
		}
	}
	for _, i := range []int{from - 1, to} {
		if n := rdb.Exists(ctx, layout.SessionKey(workload.ID(i))).Val(); n != 0 {
			t.Errorf("session %d outside the range exists", i)
		}
	}
}
