package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// runDemoJSON runs the demo in-process with args and decodes its JSON.
func runDemoJSON(t *testing.T, args ...string) (*demoResult, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append([]string{"demo", "--duration", "2s", "--sessions", "500", "--json"}, args...)
	code := dispatch(context.Background(), args, &stdout, &stderr)
	if strings.TrimSpace(stderr.String()) != "" {
		t.Errorf("dispatch(%q) wrote to stderr: %s", args, stderr.String())
	}
	var res demoResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("dispatch(%q): output is not the JSON result: %v\n%s", args, err, stdout.String())
	}
	return &res, code
}

// checkDemoResult asserts what every healthy run must show.
func checkDemoResult(t *testing.T, res *demoResult, code, replicas int) {
	t.Helper()
	if code != exitOK || res.ExitCode != exitOK {
		t.Errorf("demo exit status = %d (JSON %d), want %d", code, res.ExitCode, exitOK)
	}
	if len(res.Replicas) != replicas {
		t.Fatalf("demo replicas = %d, want %d", len(res.Replicas), replicas)
	}
	if res.WronglyAccepted != 0 || res.Totals.WronglyAccepted != 0 {
		t.Errorf("demo wrongly accepted = %d (totals %d), want 0", res.WronglyAccepted, res.Totals.WronglyAccepted)
	}
	if res.StillActive != 0 {
		t.Errorf("demo revoked lookups answering active after the run = %d, want 0", res.StillActive)
	}
	var users int
	for _, rv := range res.Revocations {
		if rv.Kind == "user" {
			users++
		}
		if rv.Reached != replicas {
			t.Errorf("demo revocation %+v reached %d replicas, want %d", rv, rv.Reached, replicas)
		}
	}
	if len(res.Revocations) < 2 || users != 1 {
		t.Errorf("demo revocations = %d (%d of users), want at least 2 with 1 of a user", len(res.Revocations), users)
	}
	if !res.AllReached {
		t.Errorf("demo all_reached = false, want true")
	}
	if res.Totals.RejectedRevoked == 0 {
		t.Errorf("demo rejected_revoked = 0, want > 0: revoked sessions were not asked for afterwards")
	}
	for _, rr := range res.Replicas {
		if rr.Lookups == 0 || rr.Accepted == 0 {
			t.Errorf("%s: lookups = %d, accepted = %d, want both > 0", rr.Name, rr.Lookups, rr.Accepted)
		}
		if rr.WronglyAccepted != 0 {
			t.Errorf("%s: wrongly accepted = %d, want 0", rr.Name, rr.WronglyAccepted)
		}
		if rr.RevocationsReached != len(res.Revocations) {
			t.Errorf("%s: revocations reached = %d, want %d", rr.Name, rr.RevocationsReached, len(res.Revocations))
		}
		if rr.BadSignatures != 0 || rr.WrongRecords != 0 {
			t.Errorf("%s: bad signatures = %d, wrong records = %d, want 0", rr.Name, rr.BadSignatures, rr.WrongRecords)
		}
		if rr.FanoutPush.N != int64(len(res.Revocations)) || rr.FanoutStats.N == 0 {
			t.Errorf("%s: fan-out samples = %d (demo), %d (Stats), want %d and > 0",
				rr.Name, rr.FanoutPush.N, rr.FanoutStats.N, len(res.Revocations))
		}
		if l1 := rr.LatencyUS["l1"]; l1.N == 0 || l1.P50US <= 0 || l1.P99US < l1.P50US {
			t.Errorf("%s: L1 latency = %+v, want samples with 0 < p50 <= p99", rr.Name, l1)
		}
	}
}

func TestDemoEmbedded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	res, code := runDemoJSON(t)
	checkDemoResult(t, res, code, demoDefaultReplicas)
	if !strings.Contains(res.Redis, "embedded") {
		t.Errorf("demo redis = %q, want the embedded one", res.Redis)
	}
}

func TestDemoRealRedis(t *testing.T) {
	tests := []struct {
		name string
		tls  bool
	}{
		{"redis", false},
		{"rediss", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after the server is killed
			var opts redistest.Options
			args := []string{"--duration", "1s", "--replicas", "2"}
			if tt.tls {
				opts.TLS = redistest.NewTestCA(t)
				args = append(args, "--tls-ca", opts.TLS.CAFile())
			}
			srv := redistest.Start(t, opts)
			rdb := srv.Client(t)
			if err := rdb.Set(context.Background(), "unrelated", "kept", 0).Err(); err != nil {
				t.Fatalf("SET unrelated: %v", err)
			}
			args = append(args, "--redis", tt.name+"://"+srv.Addr)
			res, code := runDemoJSON(t, args...)
			checkDemoResult(t, res, code, 2)
			if !strings.Contains(res.Redis, srv.Addr) {
				t.Errorf("demo redis = %q, want it to name %s", res.Redis, srv.Addr)
			}
			// The run's keys are gone; the key it did not create is kept.
			keys, err := rdb.Keys(context.Background(), "*").Result()
			if err != nil {
				t.Fatalf("KEYS: %v", err)
			}
			if len(keys) != 1 || keys[0] != "unrelated" {
				t.Errorf("keys after the demo = %q, want [unrelated]", keys)
			}
		})
	}
}

func TestDemoUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"help", []string{"demo", "-h"}, exitOK},
		{"no replicas", []string{"demo", "--replicas", "0"}, exitUsage},
		{"too few sessions", []string{"demo", "--sessions", "5"}, exitUsage},
		{"short duration", []string{"demo", "--duration", "1ms"}, exitUsage},
		{"argument", []string{"demo", "extra"}, exitUsage},
		{"unknown flag", []string{"demo", "--nope"}, exitUsage},
		{"CA without Redis", []string{"demo", "--tls-ca", "/nonexistent"}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := dispatch(context.Background(), tt.args, &stdout, &stderr); got != tt.want {
				t.Errorf("dispatch(%q) = %d, want %d (stderr %q)", tt.args, got, tt.want, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("dispatch(%q) wrote %q to stdout, want nothing", tt.args, stdout.String())
			}
		})
	}
}

func TestDemoUnreachableRedis(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	args := []string{"demo", "--redis", "redis://" + redistest.ClosedAddr(t), "--sessions", "20", "--duration", "100ms"}
	var stdout, stderr bytes.Buffer
	if got := dispatch(context.Background(), args, &stdout, &stderr); got != exitFailure {
		t.Errorf("dispatch(%q) = %d, want %d", args, got, exitFailure)
	}
	if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); lines != 0 || stderr.Len() == 0 {
		t.Errorf("dispatch(%q) stderr = %q, want one line", args, stderr.String())
	}
}

// TestDemoJudgesAcceptance feeds the judgement synthetic timings: a request
// accepted after the revocation reached its replica is wrongly accepted
// (exit 3); one accepted in the fan-out window is not.
func TestDemoJudgesAcceptance(t *testing.T) {
	const ms = int64(time.Millisecond)
	tests := []struct {
		name       string
		applied    int64 // when replica 1 applied the message
		revokedAt  int64 // first lookup on replica 1 answering revoked, 0 none
		start      int64 // the accepted request's Lookup start on replica 1
		wantWrong  int64
		wantWindow int64
		wantExit   int
	}{
		{"before reached", 20 * ms, 0, 15 * ms, 0, 1, exitOK},
		{"after applied", 20 * ms, 0, 25 * ms, 1, 0, exitAccepted},
		{"after a revoked answer", 20 * ms, 12 * ms, 15 * ms, 1, 0, exitAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := syntheticDemoRun(2)
			tg := d.targets[0]
			tg.pushNS.Store(10 * ms)
			tg.markedNS = 11 * ms
			tg.appliedNS[0].Store(12 * ms)
			tg.appliedNS[1].Store(tt.applied)
			if tt.revokedAt != 0 {
				d.watch[0].firstRevokedNS[1].Store(tt.revokedAt)
			}
			d.workers[0].accepts = []demoAccept{{replica: 1, session: 0, startNS: tt.start}}
			res := d.result(time.Second, 0)
			if res.WronglyAccepted != tt.wantWrong || res.Totals.AcceptedInWindow != tt.wantWindow || res.ExitCode != tt.wantExit {
				t.Errorf("result() = wrongly %d, in window %d, exit %d; want %d, %d, %d",
					res.WronglyAccepted, res.Totals.AcceptedInWindow, res.ExitCode, tt.wantWrong, tt.wantWindow, tt.wantExit)
			}
		})
	}
	t.Run("not reached", func(t *testing.T) {
		d := syntheticDemoRun(2)
		d.targets[0].pushNS.Store(ms)
		d.targets[0].appliedNS[0].Store(2 * ms)
		res := d.result(time.Second, 0)
		if res.AllReached || res.ExitCode != exitFailure {
			t.Errorf("result() = all reached %v, exit %d; want false, %d", res.AllReached, res.ExitCode, exitFailure)
		}
	})
}

// syntheticDemoRun returns a run with one revoked session (index 0, pushed
// to replica 0) and no caches, for the judgement alone.
func syntheticDemoRun(replicas int) *demoRun {
	env := &demoEnv{sessions: make([]demoSession, 2)}
	for i := range replicas {
		env.replicas = append(env.replicas, &demoReplica{name: "r" + strconv.Itoa(i)})
	}
	tg := &demoTarget{ids: []int{0}, appliedNS: make([]atomic.Int64, replicas)}
	d := &demoRun{
		env:     env,
		targets: []*demoTarget{tg},
		watch:   []*demoWatch{{target: tg, firstRevokedNS: make([]atomic.Int64, replicas)}, nil},
		workers: []*demoWorker{{counts: make([]demoCounts, replicas)}},
	}
	return d
}

func TestDemoHistogram(t *testing.T) {
	// Every value lies in its bucket, buckets grow, and a bucket is at
	// most 1/16 of its values wide.
	prev := -1
	for _, v := range []int64{0, 1, 31, 32, 33, 47, 48, 1000, 1023, 1024, 123456, 1e9, 1 << 39} {
		i := demoHistIndex(v)
		if i < prev {
			t.Errorf("demoHistIndex(%d) = %d, below the previous %d", v, i, prev)
		}
		prev = i
		lo := int64(0)
		if i > 0 {
			lo = demoHistUpper(i-1) + 1
		}
		if up := demoHistUpper(i); v < lo || v > up || (v >= 32 && up-lo+1 > lo/16+1) {
			t.Errorf("demoHistIndex(%d) = %d, bucket [%d, %d]: want v inside, width <= v/16", v, i, lo, up)
		}
	}
	var h demoHist
	for v := int64(1); v <= 1000; v++ {
		h.add(v * 1000)
	}
	for _, q := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := h.quantile(q.q)
		if got < q.want || float64(got) > 1.07*float64(q.want) {
			t.Errorf("quantile(%v) = %v, want %v within 7%%", q.q, got, q.want)
		}
	}
}

func TestDemoTableFits80Columns(t *testing.T) {
	d := syntheticDemoRun(3)
	d.targets[0].pushNS.Store(1)
	for r := range 3 {
		d.targets[0].appliedNS[r].Store(int64(time.Millisecond))
		c := &d.workers[0].counts[r]
		c.lookups, c.accepted, c.rejected = 123456789, 123000000, 456789
		c.tiers[1] = 123456789
		c.latency[1].add(int64(1500 * time.Nanosecond))
	}
	res := d.result(10*time.Second, 0)
	res.Redis = "Redis at 127.0.0.1:6379, key prefix sessionctl-demo:0123456789ab:"
	var b bytes.Buffer
	res.writeTable(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Errorf("table line is %d columns, want <= 80: %q", n, line)
		}
	}
	if !strings.Contains(b.String(), "OK: every revocation reached all 3 replicas") {
		t.Errorf("table lacks the verdict:\n%s", b.String())
	}
}

func TestDemoTableAndProgress(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	args := []string{"demo", "--duration", "600ms", "--sessions", "100", "--progress"}
	var stdout, stderr bytes.Buffer
	if got := dispatch(context.Background(), args, &stdout, &stderr); got != exitOK {
		t.Fatalf("dispatch(%q) = %d, want %d\nstdout:\n%s\nstderr:\n%s", args, got, exitOK, stdout.String(), stderr.String())
	}
	for _, want := range []string{"demo-replica-1", "demo-replica-3", "lookup latency", "fan-out", "OK: every revocation reached all 3 replicas"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("dispatch(%q) table lacks %q:\n%s", args, want, stdout.String())
		}
	}
	if s := stderr.String(); !strings.HasPrefix(s, "\r") || !strings.Contains(s, "requests") || strings.Contains(s, "\n") {
		t.Errorf("dispatch(%q) stderr = %q, want progress lines updated in place with \\r", args, s)
	}
}
