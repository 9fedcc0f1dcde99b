package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/bench"
)

func TestParseBench(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkL1Hit/serial/lookup-2         	 9827263	        62.01 ns/op	       0 B/op	       0 allocs/op
BenchmarkL1Hit/serial/raw#01-2         	10201689	        59.13 ns/op	       0 B/op	       0 allocs/op
BenchmarkFanout-2   	    1000	       182.2 p50-us	       373.6 p99-us	 60.55 script-us
BenchmarkHitRatio/s=1.1/localcache-2 	       1	        87.49 hit-%
--- FAIL: BenchmarkOther
PASS
`)
	res := parseBench(out)
	for _, c := range []struct {
		name, unit string
		want       float64
	}{
		{"BenchmarkL1Hit/serial/lookup", "ns/op", 62.01},
		{"BenchmarkL1Hit/serial/raw", "ns/op", 59.13},
		{"BenchmarkL1Hit/serial/lookup", "allocs/op", 0},
		{"BenchmarkFanout", "script-us", 60.55},
		{"BenchmarkHitRatio/s=1.1/localcache", "hit-%", 87.49},
	} {
		if got := res.values(c.name, c.unit); len(got) != 1 || got[0] != c.want {
			t.Errorf("values(%q, %q) = %v, want [%v]", c.name, c.unit, got, c.want)
		}
	}
	if len(res) != 4 {
		t.Errorf("parseBench found %d benchmarks, want 4: %v", len(res), res)
	}
}

// fakeSuite returns a suite with results where every target is met except
// the L2-hit throughput.
func fakeSuite() *suite {
	s := &suite{cfg: config{rounds: 2, command: "go run ./cmd/benchsuite"}, start: time.Now()}
	s.lib = results{}
	for _, r := range []struct {
		name string
		ns   float64
	}{
		{"BenchmarkL1Hit/serial/lookup", 66}, {"BenchmarkL1Hit/serial/raw", 60},
		{"BenchmarkL1Hit/parallel/lookup", 85}, {"BenchmarkL1Hit/parallel/raw", 80},
		{"BenchmarkL2Hit/g16/lookup", 12000}, {"BenchmarkL2Hit/g16/raw", 9000},
		{"BenchmarkL2Hit/g64/lookup", 12000}, {"BenchmarkL2Hit/g64/raw", 9000},
	} {
		s.lib[r.name] = []sample{{"ns/op": r.ns, "allocs/op": 0}, {"ns/op": r.ns * 1.01, "allocs/op": 0}}
	}
	// sessioncache beats rueidis at 64 goroutines but is not twice raw
	// go-redis there; its 1-goroutine latency and its Redis CPU meet.
	for _, r := range []struct {
		name    string
		ns, cpu float64
	}{
		{"g1/lookup", 40000, 20}, {"g1/raw", 38000, 22},
		{"g16/lookup", 20000, 8}, {"g16/raw", 30000, 12}, {"g16/rueidis", 19000, 7},
		{"g64/lookup", 15000, 6}, {"g64/raw", 25000, 15}, {"g64/rueidis", 16000, 6},
	} {
		s.lib["BenchmarkL2Peers/"+r.name] = []sample{{"ns/op": r.ns, "redis-cpu-us/read": r.cpu}, {"ns/op": r.ns * 1.01, "redis-cpu-us/read": r.cpu}}
	}
	s.lib["BenchmarkFanout"] = []sample{{"p99-us": 200, "raw-p99-us": 180, "script-us": 20, "publish-us": 1}}
	s.hitRatio = results{"BenchmarkHitRatio/s=1.1/localcache": {{"hit-%": 87.5}}}
	s.protection = results{"BenchmarkBackendProtection": {{"cold-calls/id": 1, "unknown-calls/id": 1}}}
	s.memory = results{"BenchmarkHeapPerEntry": {{"heap-B/entry": 270}}, "BenchmarkRedisMemory": {{"used-B/session": 430, "hash-B/session": 200}}}
	for range 2 {
		s.mixed = append(s.mixed, []bench.MixedResult{
			{System: bench.SystemSessioncache, Throughput: 400_000, HitP50: 150 * time.Nanosecond, HitP99: time.Microsecond, LookupP99: 400 * time.Microsecond},
			{System: bench.SystemRueidis, Throughput: 250_000, HitP50: time.Microsecond, HitP99: 100 * time.Microsecond, LookupP99: 500 * time.Microsecond},
			{System: bench.SystemGoCache, Throughput: 130_000, HitP50: 1500 * time.Nanosecond, HitP99: 20 * time.Microsecond, LookupP99: 900 * time.Microsecond},
		})
	}
	s.storm = results{
		"BenchmarkRevokeUserStorm": {
			{"revoke-ms": 600, "messages": 1, "slowest-ms": 4.8, "lookup-p99-us": 150, "base-p99-us": 100},
			{"revoke-ms": 650, "messages": 1, "slowest-ms": 5.1, "lookup-p99-us": 170, "base-p99-us": 110},
			{"revoke-ms": 700, "messages": 1, "slowest-ms": 5.0, "lookup-p99-us": 160, "base-p99-us": 100},
		},
		"BenchmarkMassRevocation": {
			{"held-per-s": 80_000, "applied-per-s": 70_000, "fanout-p50-us": 1500, "fanout-p99-us": 6000, "raw-per-s": 160_000, "raw-p99-us": 5000},
			{"held-per-s": 82_000, "applied-per-s": 72_000, "fanout-p50-us": 1400, "fanout-p99-us": 7000, "raw-per-s": 150_000, "raw-p99-us": 5500},
			{"held-per-s": 78_000, "applied-per-s": 68_000, "fanout-p50-us": 1600, "fanout-p99-us": 6500, "raw-per-s": 155_000, "raw-p99-us": 5200},
		},
	}
	s.scale = []bench.ScalePoint{{Sessions: 10_000, L1: 1_000, HitRatio: 0.8, LookupsPerSec: 3e5, L2PerSec: 6e4}}
	for _, n := range []int{10, 100, 1000} {
		s.fanout = append(s.fanout, bench.FanoutPoint{Subscribers: n, Revocations: 1000, P50: time.Duration(n) * time.Microsecond,
			P99: time.Duration(3*n) * time.Microsecond, Max: time.Duration(5*n) * time.Microsecond, CPUPerRevocation: time.Duration(80+n) * time.Microsecond, ScriptUsec: 70})
	}
	for _, n := range []int{10, 100, 1000} {
		s.cluster = append(s.cluster,
			bench.ClusterFanoutPoint{Mode: bench.ModePublish, Subscribers: n, Messages: 1000, P50: time.Duration(2*n) * time.Microsecond,
				P99: time.Duration(40_000+n) * time.Microsecond, Max: time.Duration(50_000+n) * time.Microsecond, CPUPerMessage: time.Duration(200+9*n) * time.Microsecond, BusPerMessage: 2},
			bench.ClusterFanoutPoint{Mode: bench.ModeSPublish, Subscribers: n, Messages: 1000, P50: time.Duration(n) * time.Microsecond,
				P99: time.Duration(4*n) * time.Microsecond, Max: time.Duration(6*n) * time.Microsecond, CPUPerMessage: time.Duration(70+10*n) * time.Microsecond})
	}
	s.clusterRun = stepRun{start: time.Date(2026, 12, 8, 2, 15, 0, 0, time.UTC), elapsed: 74 * time.Second, loadAvg: "1.00 2.00 3.00"}
	return s
}

func TestTargetsJudgeEachFigure(t *testing.T) {
	ts := fakeSuite().targets()
	got := map[string]bool{}
	for _, tg := range ts {
		got[tg.key] = tg.ok
		if tg.figure == "n/a" {
			t.Errorf("target %s (%s) not measured from complete results", tg.key, tg.what)
		}
	}
	for _, key := range []string{"10a", "10b", "10c", "10d", "10e", "10f"} {
		if _, ok := got[key]; !ok {
			t.Errorf("target %s missing", key)
		}
	}
	for key, want := range map[string]bool{"1a": true, "1b": true, "1c": true, "2": true, "3a": false, "3b": false,
		"3c": true, "3d": true, "3e": false, "3f": true, "3g": true, "3h": true, "4": true,
		"5a": true, "5b": true, "5c": true, "5d": true, "5e": true, "6a": true, "6b": true, "7a": true, "9": true, "9b": true,
		"10a": true, "10b": true, "10c": true, "10d": true, "10e": true, "10f": true} {
		if got[key] != want {
			t.Errorf("target %s ok = %v, want %v", key, got[key], want)
		}
	}
}

// TestStormTargets moves one figure of one round of the revocation storms
// past its goal at a time: its row, and only its row, turns short.
func TestStormTargets(t *testing.T) {
	for _, c := range []struct {
		key, name, unit string
		v               float64
		figure          string // the row's figure after the change
	}{
		// A median over three rounds moves only with two of them.
		{"10a", "BenchmarkRevokeUserStorm", "revoke-ms", 1200, "1200 ms"},
		{"10b", "BenchmarkRevokeUserStorm", "messages", 2, "1 to 2"},
		{"10b", "BenchmarkRevokeUserStorm", "messages", 0, "0 to 1"},
		{"10c", "BenchmarkRevokeUserStorm", "slowest-ms", 80, "80.0 ms"},
		{"10d", "BenchmarkRevokeUserStorm", "lookup-p99-us", 250, "2.27×"},
		{"10e", "BenchmarkMassRevocation", "applied-per-s", 40_000, "40,000/s"},
		{"10f", "BenchmarkMassRevocation", "fanout-p99-us", 12_000, "12.0 ms"},
	} {
		s := fakeSuite()
		smps := s.storm[c.name]
		rounds := []int{0, 1}
		if c.key == "10b" {
			rounds = rounds[:1] // judged on every round
		}
		for _, i := range rounds {
			smps[i][c.unit] = c.v
		}
		for _, tg := range s.targets() {
			if !strings.HasPrefix(tg.key, "10") {
				continue
			}
			if want := tg.key != c.key; tg.ok != want {
				t.Errorf("%s of %s set to %g: target %s ok = %v, want %v", c.unit, c.name, c.v, tg.key, tg.ok, want)
			}
			if tg.key == c.key {
				if tg.figure != c.figure {
					t.Errorf("%s of %s set to %g: target %s figure = %q, want %q", c.unit, c.name, c.v, tg.key, tg.figure, c.figure)
				}
				if !strings.Contains(tg.why, "revocation storms") {
					t.Errorf("target %s why = %q, want the pointer to the storms' section", tg.key, tg.why)
				}
			}
		}
	}

	// Without the storms' results every row is there, unmeasured and short.
	s := fakeSuite()
	s.storm = nil
	n := 0
	for _, tg := range s.targets() {
		if strings.HasPrefix(tg.key, "10") {
			n++
			if tg.ok || tg.figure != "n/a" {
				t.Errorf("target %s without results: figure %q, ok %v; want n/a, short", tg.key, tg.figure, tg.ok)
			}
		}
	}
	if n != 6 {
		t.Errorf("%d storm targets without results, want 6", n)
	}
}

func TestGrouped(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999.6: "1,000", 18513.2: "18,513", 1234567: "1,234,567", -50000: "-50,000"} {
		if got := grouped(v); got != want {
			t.Errorf("grouped(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSelectSteps(t *testing.T) {
	s := fakeSuite()
	all := s.steps()
	if got, err := selectSteps(all, ""); err != nil || len(got) != len(all) {
		t.Errorf("selectSteps(all, \"\") = %d steps, %v; want %d", len(got), err, len(all))
	}
	got, err := selectSteps(all, "storm")
	if err != nil || len(got) != 2 || got[0].name != all[0].name || got[1].name != "revocation storms" {
		var names []string
		for _, st := range got {
			names = append(names, st.name)
		}
		t.Errorf("selectSteps(all, \"storm\") = %q, %v; want the build and the revocation storms", names, err)
	}
	got, err = selectSteps(all, "Redis Cluster")
	if err != nil || len(got) != 2 || got[1].name != "fan-out scale on Redis Cluster" {
		t.Errorf("selectSteps(all, \"Redis Cluster\") = %d steps, %v; want the build and the fan-out on Redis Cluster", len(got), err)
	}
	if _, err := selectSteps(all, "no such step"); err == nil {
		t.Error("selectSteps with a pattern that matches nothing: no error")
	}
	if _, err := selectSteps(all, "("); err == nil {
		t.Error("selectSteps with a bad regexp: no error")
	}
}

func TestReportNamesShortTargetsAndMachine(t *testing.T) {
	s := fakeSuite()
	s.machine = machine{nproc: 2, gomaxprocs: 2, cpu: "Test CPU", goVersion: "go version test", redis: "Redis server v=7.0.15"}
	report := s.report(s.targets())
	for _, want := range []string{"## Targets", "| 3a |", "**short**", "### Short targets", "Test CPU", "go version test", "Redis server v=7.0.15", "go run ./cmd/benchsuite", "![scale curve](bench/scale.png)",
		"| 3d |", "**met**", "| 64 | rueidis |", "![fan-out scale](bench/fanout.png)", "| 1k | 1000 µs |",
		"## Revocation storms", "| 10d | Other users' lookup p99 during that revocation / before it (median of per-round ratios) | 1.55× |",
		"| 10e |", "| 3 | 700 ms | 1 | 5.0 ms | 160 µs | 100 µs | 1.60× |", "| 2 | 82,000/s | 72,000/s | 1.4 ms | 7.0 ms | 150,000/s | 5.5 ms |",
		"go test -run '^$' -bench BenchmarkRevokeUserStorm -benchtime=1x ./rediscache/", "go test -run '^$' -bench BenchmarkMassRevocation -benchtime=1x ./tiered/",
		"| 9b | Fan-out scale on Redis Cluster", "| 6 points (table, fanout_cluster.png) |",
		"## Fan-out scale on Redis Cluster", "![fan-out scale on Redis Cluster](bench/fanout_cluster.png)",
		"1,000 per point", "1 round; this step ran on 2026-12-08 02:15 UTC, in 1m14s (load average 1.00 2.00 3.00 at its start).",
		"go run ./cmd/benchsuite -only 'Redis Cluster' -out /tmp/BENCHMARKS.md -png /tmp/scale.png",
		"| 10 | PUBLISH | 20 µs | 40010 µs | 50010 µs | 290 µs | 2.0 |", "| 1k | SPUBLISH | 1000 µs | 4000 µs | 6000 µs | 10070 µs | 0.0 |"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// The sections in the order of the steps.
	single, cluster, storms := strings.Index(report, "## Fan-out scale\n"), strings.Index(report, "## Fan-out scale on Redis Cluster"), strings.Index(report, "## Revocation storms")
	if single < 0 || !(single < cluster && cluster < storms) {
		t.Errorf("sections at %d (fan-out scale), %d (on Redis Cluster), %d (storms); want them in that order", single, cluster, storms)
	}
}

// TestReportClusterFanoutWithout checks the cluster fan-out's section and
// target when the step did not run or lost a point.
func TestReportClusterFanoutWithout(t *testing.T) {
	s := fakeSuite()
	s.cluster = s.cluster[1:] // 10 subscribers with PUBLISH failed
	report := s.report(s.targets())
	for _, want := range []string{"| 10 | PUBLISH | n/a | | | | |", "| 10 | SPUBLISH | 10 µs |", "| 5 points (table, fanout_cluster.png) |"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	s.cluster, s.clusterRun = nil, stepRun{}
	for _, tg := range s.targets() {
		if tg.key == "9b" && (tg.ok || tg.figure != "n/a") {
			t.Errorf("target 9b without results: figure %q, ok %v; want n/a, short", tg.figure, tg.ok)
		}
	}
	report = s.report(s.targets())
	if !strings.Contains(report, "\n1 round.\n") || strings.Contains(report, "this step ran on") {
		t.Errorf("cluster section without a run: want \"1 round.\" and no date")
	}
	s.cfg.quick = true
	if report := s.report(s.targets()); !strings.Contains(report, "200 per point") {
		t.Errorf("cluster section of a -quick run: want \"200 per point\"")
	}
	dir := t.TempDir()
	s.cfg.png = filepath.Join(dir, "scale.png")
	if err := s.writeClusterPlot(); err != nil {
		t.Fatalf("writeClusterPlot without points = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "fanout_cluster.png")); !os.IsNotExist(err) {
		t.Errorf("writeClusterPlot without points wrote a plot (%v), want none", err)
	}
}

func TestWritePlots(t *testing.T) {
	s := fakeSuite()
	dir := t.TempDir()
	s.cfg.png = filepath.Join(dir, "scale.png")
	if err := s.writePlot(); err != nil {
		t.Fatalf("writePlot = %v", err)
	}
	if err := s.writeFanoutPlot(); err != nil {
		t.Fatalf("writeFanoutPlot = %v", err)
	}
	if err := s.writeClusterPlot(); err != nil {
		t.Fatalf("writeClusterPlot = %v", err)
	}
	for _, name := range []string{"scale.png", "fanout.png", "fanout_cluster.png"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(f); err != nil {
			t.Errorf("png.Decode(%s) = %v", name, err)
		}
		f.Close()
	}
}

// TestFanoutWhyGivesScriptParts: a short fan-out target explains itself
// with the parts of the revoke script's time measured in the same run,
// and without them says nothing about parts.
func TestFanoutWhyGivesScriptParts(t *testing.T) {
	s := fakeSuite()
	s.lib["BenchmarkFanout"] = []sample{{"p99-us": 400, "raw-p99-us": 180, "script-us": 50, "publish-us": 1}}
	whyOf4 := func() string {
		for _, tg := range s.targets() {
			if tg.key == "4" {
				if tg.ok {
					t.Fatalf("target 4 met at 400/180 µs, want short")
				}
				return s.why(tg)
			}
		}
		t.Fatal("no target 4")
		return ""
	}
	if why := whyOf4(); strings.Contains(why, "BenchmarkRevokeScriptParts") {
		t.Errorf("why without the parts' results = %q, want no parts", why)
	}
	s.lib["BenchmarkRevokeScriptParts"] = []sample{{"evalsha-us": 8, "publish-us": 16, "announce-us": 30, "revoke-us": 48}}
	want := "an empty script costs 8 µs, TIME and PUBLISH 16 µs, the announcement (INCR, XADD and PUBLISH) 30 µs, and the whole script 48 µs; the announcement is 62% of it"
	if why := whyOf4(); !strings.Contains(why, want) {
		t.Errorf("why = %q, want it to contain %q", why, want)
	}
}
