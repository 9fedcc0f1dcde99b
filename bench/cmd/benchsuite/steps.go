package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/galaxy-game/sessioncache/bench"
	"github.com/galaxy-game/sessioncache/internal/workload"
)

// sample is one benchmark result line: unit -> value.
type sample map[string]float64

// results maps a benchmark name (without the "#NN" of a repeated name and
// the "-N" GOMAXPROCS suffix) to its samples in the order they ran.
type results map[string][]sample

func (r results) add(o results) {
	for k, v := range o {
		r[k] = append(r[k], v...)
	}
}

// values returns the unit's values of the named benchmark.
func (r results) values(name, unit string) []float64 {
	var vs []float64
	for _, s := range r[name] {
		if v, ok := s[unit]; ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// suite holds the state of one run.
type suite struct {
	cfg     config
	tmp     string
	log     io.Writer
	start   time.Time
	elapsed time.Duration
	machine machine
	bins    map[string]string // package -> test binary

	lib        results // BenchmarkL1Hit, BenchmarkL2Hit, BenchmarkFanout
	hitRatio   results
	memory     results
	protection results
	storm      results               // BenchmarkRevokeUserStorm, BenchmarkMassRevocation, a sample per round
	mixed      [][]bench.MixedResult // per round, in the order they ran
	mixedErr   map[string]error
	scale      []bench.ScalePoint
	fanout     []bench.FanoutPoint        // every point of every round, in the order they ran
	cluster    []bench.ClusterFanoutPoint // the cluster fan-out: every point, in the order they ran
	clusterRun stepRun                    // when the cluster fan-out step ran
	profiles   map[string]string          // target key -> pprof text
	failures   []string                   // benchmark runs that failed twice
	server     *bench.Server
}

var libPackages = []string{"localcache", "rediscache", "tiered"}

func (s *suite) build(ctx context.Context) error {
	s.bins = map[string]string{}
	for _, p := range libPackages {
		bin := filepath.Join(s.tmp, p+".test")
		cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./"+p)
		cmd.Dir = s.cfg.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go test -c ./%s: %w\n%s", p, err, out)
		}
		s.bins[p] = bin
	}
	// The bench module's own benchmarks (the L2-hit comparison with the
	// peers), built in its module, which alone may depend on them.
	bin := filepath.Join(s.tmp, "bench.test")
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, ".")
	cmd.Dir = filepath.Join(s.cfg.root, "bench")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c ./bench: %w\n%s", err, out)
	}
	s.bins["bench"] = bin
	return nil
}

// lineRE matches a benchmark result line.
var lineRE = regexp.MustCompile(`^(Benchmark\S+?)(#\d+)?(-\d+)?\s+(\d+)\s+(.*)$`)

// bench runs one package's test binary with -test.bench pattern and
// returns the parsed results. extra are more flags (-test.benchtime).
func (s *suite) bench(ctx context.Context, pkg, pattern string, extra ...string) (results, error) {
	args := append([]string{"-test.run", "^$", "-test.bench", pattern, "-test.benchmem", "-test.timeout", "30m"}, extra...)
	cmd := exec.CommandContext(ctx, s.bins[pkg], args...)
	cmd.Dir = filepath.Join(s.cfg.root, pkg)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	res := parseBench(out.Bytes())
	if err != nil {
		return res, fmt.Errorf("%s %s: %w\n%s", pkg, strings.Join(args, " "), err, tail(out.String(), 40))
	}
	if len(res) == 0 {
		return res, fmt.Errorf("%s %s: no results\n%s", pkg, strings.Join(args, " "), tail(out.String(), 40))
	}
	return res, nil
}

func parseBench(out []byte) results {
	res := results{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		f := strings.Fields(m[5])
		smp := sample{}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			smp[f[i+1]] = v
		}
		res[m[1]] = append(res[m[1]], smp)
	}
	return res
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-lines):], "\n")
}

// runLibraryRounds runs, in each round, the L1-hit comparison, the L2-hit
// comparison (the library's against raw go-redis, then the bench module's
// against raw go-redis and rueidis, with Redis's CPU), the fan-out
// comparison and the parts of the revoke script's Redis time; each
// comparison runs its sides A, B, B, A (A, B, C, C, B, A with three; the
// fan-out alternates per revocation).
func (s *suite) runLibraryRounds(ctx context.Context) error {
	l1Time, l2Time, peersTime, fanout := "300ms", "1s", "500ms", "1000x"
	if s.cfg.quick {
		l1Time, l2Time, peersTime, fanout = "100ms", "200ms", "150ms", "200x"
	}
	s.lib = results{}
	for r := range s.cfg.rounds {
		for _, b := range []struct{ pkg, pattern, benchtime string }{
			{"tiered", "^BenchmarkL1Hit$", l1Time},
			{"tiered", "^BenchmarkL2Hit$", l2Time},
			{"bench", "^BenchmarkL2Peers$", peersTime},
			{"tiered", "^BenchmarkFanout$", fanout},
			{"rediscache", "^BenchmarkRevokeScriptParts$", "1x"},
		} {
			res, err := s.bench(ctx, b.pkg, b.pattern, "-test.benchtime", b.benchtime)
			if err != nil && ctx.Err() == nil {
				// A benchmark fails when its checks fail; on a shared
				// machine that may be a passing spike: try once more, then
				// go on without this round's samples and say so.
				s.logf("   round %d: %s failed, retrying: %s", r+1, b.pattern, firstLine(err))
				res, err = s.bench(ctx, b.pkg, b.pattern, "-test.benchtime", b.benchtime)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.failures = append(s.failures, fmt.Sprintf("round %d: %v", r+1, err))
				continue
			}
			s.lib.add(res)
		}
		s.logf("   round %d/%d: L1 serial %.1f vs %.1f ns/op, L2 g16 %.1f vs %.1f µs/op, g64 %.1f vs rueidis %.1f µs/op, fan-out p99 %.0f vs %.0f µs",
			r+1, s.cfg.rounds,
			last(s.lib.values("BenchmarkL1Hit/serial/lookup", "ns/op")), last(s.lib.values("BenchmarkL1Hit/serial/raw", "ns/op")),
			last(s.lib.values("BenchmarkL2Hit/g16/lookup", "ns/op"))/1e3, last(s.lib.values("BenchmarkL2Hit/g16/raw", "ns/op"))/1e3,
			last(s.lib.values("BenchmarkL2Peers/g64/lookup", "ns/op"))/1e3, last(s.lib.values("BenchmarkL2Peers/g64/rueidis", "ns/op"))/1e3,
			last(s.lib.values("BenchmarkFanout", "p99-us")), last(s.lib.values("BenchmarkFanout", "raw-p99-us")))
	}
	return nil
}

func firstLine(err error) string {
	line, _, _ := strings.Cut(err.Error(), "\n")
	return line
}

func last(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	return vs[len(vs)-1]
}

// startServer starts the suite's own redis-server once.
func (s *suite) startServer() error {
	if s.server != nil {
		return nil
	}
	dir := filepath.Join(s.tmp, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	srv, err := bench.StartServer(dir)
	if err != nil {
		return err
	}
	s.server = srv
	return nil
}

func (s *suite) mixedOptions(trace workload.Trace) bench.MixedOptions {
	o := bench.MixedOptions{Addr: s.server.Addr, Trace: trace}
	if s.cfg.quick {
		o.WarmupOps, o.Measure = 200_000, time.Second
	}
	return o
}

// runMixed runs the mixed workload on every system in each round, in an
// order rotated from round to round.
func (s *suite) runMixed(ctx context.Context) error {
	if err := s.startServer(); err != nil {
		return err
	}
	trace := workload.Zipf(100_000, 1.1, 1<<22, 1)
	s.mixedErr = map[string]error{}
	n := len(bench.Systems)
	for r := range s.cfg.rounds {
		var round []bench.MixedResult
		for k := range n {
			name := bench.Systems[(r+k)%n]
			if s.mixedErr[name] != nil {
				continue
			}
			res, err := bench.RunMixed(ctx, name, s.mixedOptions(trace))
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.logf("   %s failed: %v", name, err)
				s.mixedErr[name] = err
				continue
			}
			round = append(round, res)
			s.logf("   round %d/%d %-15s %8.0f ops/s  hit %.1f%%  hit p50 %v  lookup p99 %v  (warm-up %v)",
				r+1, s.cfg.rounds, name, res.Throughput, 100*res.HitRatio, res.HitP50, res.LookupP99, res.Warmup.Round(100*time.Millisecond))
		}
		s.mixed = append(s.mixed, round)
	}
	return nil
}

func (s *suite) runHitRatio(ctx context.Context) error {
	var err error
	s.hitRatio, err = s.bench(ctx, "localcache", "^BenchmarkHitRatio$", "-test.benchtime", "1x")
	return err
}

func (s *suite) runMemory(ctx context.Context) error {
	heap, err := s.bench(ctx, "localcache", "^BenchmarkHeapPerEntry$", "-test.benchtime", "3x", "-test.count", "3")
	if err != nil {
		return err
	}
	redisMem, err := s.bench(ctx, "tiered", "^BenchmarkRedisMemory$", "-test.benchtime", "1x")
	if err != nil {
		return err
	}
	s.memory = results{}
	s.memory.add(heap)
	s.memory.add(redisMem)
	return nil
}

func (s *suite) runProtection(ctx context.Context) error {
	var err error
	s.protection, err = s.bench(ctx, "tiered", "^BenchmarkBackendProtection$", "-test.benchtime", "3x")
	return err
}

// scaleGrid returns the session counts and L1 sizes of the scale curve.
func (s *suite) scaleGrid() (sessions, l1s []int) {
	if s.cfg.quick {
		return []int{10_000, 100_000}, []int{1_000, 10_000}
	}
	return []int{10_000, 100_000, 1_000_000}, []int{1_000, 10_000, 100_000}
}

func (s *suite) runScale(ctx context.Context) error {
	if err := s.startServer(); err != nil {
		return err
	}
	sessions, l1s := s.scaleGrid()
	most := slices.Max(sessions)
	if err := bench.LoadFresh(ctx, s.server.Addr, bench.SystemSessioncache, most); err != nil {
		return err
	}
	ids := workload.IDs(most)
	measure := 3 * time.Second
	if s.cfg.quick {
		measure = time.Second
	}
	for _, n := range sessions {
		for _, l1 := range l1s {
			p, err := bench.RunScale(ctx, bench.ScaleOptions{Addr: s.server.Addr, Sessions: n, L1: l1, IDs: ids, Measure: measure})
			if err != nil {
				return fmt.Errorf("sessions %d, L1 %d: %w", n, l1, err)
			}
			s.scale = append(s.scale, p)
			s.logf("   sessions %7d L1 %6d: hit %.1f%%, %.0f lookups/s, %.0f Redis reads/s (warm-up %v)",
				n, l1, 100*p.HitRatio, p.LookupsPerSec, p.L2PerSec, p.Warmup.Round(100*time.Millisecond))
		}
	}
	s.server.Close()
	s.server = nil
	return nil
}

// fanoutGrid returns the subscriber counts of the fan-out scale curve and
// the revocations timed at each point.
func (s *suite) fanoutGrid() (subscribers []int, revocations int) {
	if s.cfg.quick {
		return []int{10, 100, 1000}, 200
	}
	return []int{10, 100, 1000}, 1000
}

// fanoutRounds is the number of rounds of the fan-out scale curve.
func (s *suite) fanoutRounds() int { return min(s.cfg.rounds, 3) }

// runFanoutScale measures the fan-out scale curve: in each round every
// subscriber count once, in an order rotated from round to round.
func (s *suite) runFanoutScale(ctx context.Context) error {
	if err := s.startServer(); err != nil {
		return err
	}
	defer func() {
		s.server.Close()
		s.server = nil
	}()
	subs, revocations := s.fanoutGrid()
	for r := range s.fanoutRounds() {
		for k := range subs {
			n := subs[(r+k)%len(subs)]
			opts := bench.FanoutScaleOptions{Addr: s.server.Addr, Subscribers: n, Revocations: revocations}
			p, err := bench.RunFanoutScale(ctx, opts)
			if err != nil && ctx.Err() == nil {
				// As with the benchmarks: once more, then go on without
				// this point and say so.
				s.logf("   round %d %4d subscribers failed, retrying: %v", r+1, n, err)
				p, err = bench.RunFanoutScale(ctx, opts)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.failures = append(s.failures, fmt.Sprintf("fan-out scale, round %d, %d subscribers: %v", r+1, n, err))
				continue
			}
			s.fanout = append(s.fanout, p)
			s.logf("   round %d %4d subscribers: p50 %v p99 %v, Redis CPU %v per revocation (script %.0f µs)",
				r+1, n, p.P50, p.P99, p.CPUPerRevocation, p.ScriptUsec)
		}
	}
	return nil
}

// clusterFanoutGrid returns the subscriber counts of the fan-out curve on
// Redis Cluster and the messages timed at each point. The whole step takes
// about a minute on two cores.
func (s *suite) clusterFanoutGrid() (subscribers []int, messages int) {
	if s.cfg.quick {
		return []int{10, 100, 1000}, 200
	}
	return []int{10, 100, 1000}, 1000
}

// clusterFanoutRounds is the number of rounds of the fan-out curve on
// Redis Cluster.
func (s *suite) clusterFanoutRounds() int { return 1 }

// clusterModes are the modes of the fan-out curve on Redis Cluster.
var clusterModes = []bench.FanoutMode{bench.ModePublish, bench.ModeSPublish}

// stepRun is when a step ran, for a section that may be measured apart
// from the rest of the report.
type stepRun struct {
	start   time.Time // zero when the step did not run
	elapsed time.Duration
	loadAvg string // at the start
}

// runClusterFanout measures the fan-out curve on a Redis Cluster of three
// masters started for the step: in each round every subscriber count, in
// an order rotated from round to round, and at each both modes, in an
// order alternated from count to count.
func (s *suite) runClusterFanout(ctx context.Context) error {
	s.clusterRun = stepRun{start: time.Now(), loadAvg: loadAverage()}
	defer func() {
		s.clusterRun.elapsed = time.Since(s.clusterRun.start)
	}()
	c, err := bench.StartCluster(ctx, s.tmp)
	if err != nil {
		return err
	}
	defer c.Close()
	subs, messages := s.clusterFanoutGrid()
	for r := range s.clusterFanoutRounds() {
		for k := range subs {
			n := subs[(r+k)%len(subs)]
			for j := range clusterModes {
				mode := clusterModes[(r+k+j)%len(clusterModes)]
				opts := bench.ClusterFanoutOptions{Cluster: c, Subscribers: n, Messages: messages, Mode: mode}
				p, err := bench.RunClusterFanout(ctx, opts)
				if err != nil && ctx.Err() == nil {
					// As with the benchmarks: once more, then go on
					// without this point and say so.
					s.logf("   round %d %4d subscribers %s failed, retrying: %v", r+1, n, mode, err)
					p, err = bench.RunClusterFanout(ctx, opts)
				}
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					s.failures = append(s.failures, fmt.Sprintf("fan-out scale on Redis Cluster, round %d, %d subscribers, %s: %v", r+1, n, mode, err))
					continue
				}
				s.cluster = append(s.cluster, p)
				s.logf("   round %d %4d subscribers %-8s: p50 %v p99 %v max %v, Redis CPU %v per message (3 masters), %.1f bus messages per message",
					r+1, n, mode, p.P50, p.P99, p.Max, p.CPUPerMessage, p.BusPerMessage)
			}
		}
	}
	return nil
}

// stormBenchmarks are the revocation storms: each run is one iteration,
// the whole storm.
var stormBenchmarks = []struct{ pkg, name string }{
	{"rediscache", "BenchmarkRevokeUserStorm"},
	{"tiered", "BenchmarkMassRevocation"},
}

// stormRounds is the number of rounds of the revocation storms.
func (s *suite) stormRounds() int { return min(s.cfg.rounds, 5) }

// runStorms runs, in each round, every revocation storm once
// (-test.benchtime 1x).
func (s *suite) runStorms(ctx context.Context) error {
	s.storm = results{}
	for r := range s.stormRounds() {
		for _, b := range stormBenchmarks {
			pattern := "^" + b.name + "$"
			res, err := s.bench(ctx, b.pkg, pattern, "-test.benchtime", "1x")
			if err != nil && ctx.Err() == nil {
				// As with the other benchmarks: once more, then go on
				// without this round's sample and say so.
				s.logf("   round %d: %s failed, retrying: %s", r+1, b.name, firstLine(err))
				res, err = s.bench(ctx, b.pkg, pattern, "-test.benchtime", "1x")
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.failures = append(s.failures, fmt.Sprintf("revocation storms, round %d: %v", r+1, err))
				continue
			}
			s.storm.add(res)
		}
		s.logf("   round %d/%d: RevokeUser %.0f ms, %.0f messages, slowest command %.1f ms, other lookups p99 %.0f vs %.0f µs; mass revocation %.0f applied/s, fan-out p99 %.1f ms",
			r+1, s.stormRounds(),
			last(s.storm.values("BenchmarkRevokeUserStorm", "revoke-ms")), last(s.storm.values("BenchmarkRevokeUserStorm", "messages")),
			last(s.storm.values("BenchmarkRevokeUserStorm", "slowest-ms")),
			last(s.storm.values("BenchmarkRevokeUserStorm", "lookup-p99-us")), last(s.storm.values("BenchmarkRevokeUserStorm", "base-p99-us")),
			last(s.storm.values("BenchmarkMassRevocation", "applied-per-s")), last(s.storm.values("BenchmarkMassRevocation", "fanout-p99-us"))/1e3)
	}
	return nil
}

// runProfiles takes a CPU profile of sessioncache's side of every target
// that is short, for the report.
func (s *suite) runProfiles(ctx context.Context) error {
	s.profiles = map[string]string{}
	for _, t := range s.targets() {
		if t.ok || t.profile == "" || s.profiles[t.profile] != "" {
			continue
		}
		var text string
		var err error
		if t.profile == "mixed" {
			text, err = s.profileMixed(ctx)
		} else {
			text, err = s.profileBench(ctx, t.profile)
		}
		if err != nil {
			s.logf("   profile %s: %v", t.profile, err)
			continue
		}
		s.profiles[t.profile] = text
	}
	return nil
}

// profileBench profiles one tiered benchmark and returns how much of
// Lookup's CPU time lies outside go-redis, and pprof's top of that part.
func (s *suite) profileBench(ctx context.Context, pattern string) (string, error) {
	prof := filepath.Join(s.tmp, "cpu.prof")
	if _, err := s.bench(ctx, "tiered", pattern, "-test.benchtime", "2s", "-test.cpuprofile", prof); err != nil {
		return "", err
	}
	const lookup = `tiered\.\(\*Cache\)\.LookupTier`
	bin := s.bins["tiered"]
	all, err := pprofTop(ctx, bin, prof, lookup)
	if err != nil {
		return "", err
	}
	outside, err := pprofTop(ctx, bin, prof, lookup, "-ignore", "redis/go-redis")
	if err != nil {
		return "", err
	}
	total, inRedis := cumOf(all, "tiered.(*Cache).LookupTier"), cumOf(all, "go-redis/v9.cmdable.HGetAll")
	share := 100 * (total - inRedis) / max(total, 1e-9)
	summary := fmt.Sprintf("LookupTier: %.2fs of CPU samples, of which HGETALL (go-redis) %.2fs: %.0f%% of the lookup's client CPU is outside the Redis call.\n"+
		"Below, the top of that %.0f%% (samples under go-redis ignored):\n\n", total, inRedis, share, share)
	return summary + outside, nil
}

// cumOf returns the cumulative seconds that pprof's -top -cum text gives
// the first function whose name contains fn, or 0.
func cumOf(top, fn string) float64 {
	for line := range strings.Lines(top) {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.Contains(f[5], fn) {
			continue
		}
		v, scale := strings.TrimSuffix(f[3], "s"), 1.0
		if strings.HasSuffix(f[3], "ms") {
			v, scale = strings.TrimSuffix(f[3], "ms"), 1e-3
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0
		}
		return x * scale
	}
	return 0
}

// profileMixed profiles a run of the mixed workload on sessioncache in
// this process.
func (s *suite) profileMixed(ctx context.Context) (string, error) {
	if err := s.startServer(); err != nil {
		return "", err
	}
	defer func() {
		s.server.Close()
		s.server = nil
	}()
	prof := filepath.Join(s.tmp, "mixed.prof")
	f, err := os.Create(prof)
	if err != nil {
		return "", err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return "", err
	}
	_, err = bench.RunMixed(ctx, bench.SystemSessioncache, s.mixedOptions(workload.Zipf(100_000, 1.1, 1<<22, 1)))
	pprof.StopCPUProfile()
	f.Close()
	if err != nil {
		return "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return pprofTop(ctx, exe, prof, `bench\.runWorker`)
}

// pprofTop returns the 40 heaviest functions (cumulative) of the samples
// that pass through focus; extra are more pprof flags.
func pprofTop(ctx context.Context, bin, prof, focus string, extra ...string) (string, error) {
	args := append([]string{"tool", "pprof", "-top", "-cum", "-nodecount", "40", "-focus", focus}, extra...)
	out, err := exec.CommandContext(ctx, "go", append(args, bin, prof)...).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w", err)
	}
	var keep []string
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		keep = append(keep, strings.TrimRight(line, "\n"))
	}
	return strings.Join(keep, "\n"), nil
}
