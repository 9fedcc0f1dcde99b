// Command benchsuite runs the session cache's benchmark suite and writes
// BENCHMARKS.md: every target of the suite as a ratio against a baseline
// measured in the same run, A/B interleaved over several rounds, with a
// 95% bootstrap confidence interval; the hit-ratio table; the mixed
// workload against rueidis and go-redis/cache; backend protection; memory;
// the scale curve as a table and a PNG; the fan-out scale curve (10 to
// 1,000 subscribers on one redis-server) as a table and a PNG; the same
// curve on a Redis Cluster of three masters, raw PUBLISH against SPUBLISH,
// as a table and a PNG; and the revocation storms (a user-wide revocation
// of 100,000 sessions, and 10,000 single revocations from one replica).
//
// Run it from the bench module (`make bench` at the repository root does):
//
//	cd bench && go run ./cmd/benchsuite
//
// Flags:
//
//	-root dir     the repository root (default "..")
//	-out file     the report (default <root>/BENCHMARKS.md)
//	-png file     the scale plot (default <root>/bench/scale.png); the
//	              fan-out plots are fanout.png and fanout_cluster.png
//	              beside it
//	-rounds n     interleaved rounds per comparison (default 10)
//	-quick        short phases and a small scale curve, to try the suite
//	-only regexp  run only the steps whose name matches (the build always
//	              runs), to try a step; such a run writes the report and
//	              the plots only where -out and -png name them
//
// It needs go, redis-server and redis-cli on the PATH; the library's
// benchmarks start their own redis-server processes, and the suite starts
// one more for the mixed workload and the scale curves, and a cluster of
// three for the fan-out on Redis Cluster. All of them listen on loopback
// and are stopped when it ends. It takes about twenty minutes on two cores.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.root, "root", "..", "the repository root")
	flag.StringVar(&cfg.out, "out", "", "the report (default <root>/BENCHMARKS.md)")
	flag.StringVar(&cfg.png, "png", "", "the scale plot (default <root>/bench/scale.png)")
	flag.IntVar(&cfg.rounds, "rounds", 10, "interleaved rounds per comparison")
	flag.BoolVar(&cfg.quick, "quick", false, "short phases and a small scale curve")
	flag.StringVar(&cfg.only, "only", "", "run only the steps whose name matches this regexp")
	flag.Parse()
	if flag.NArg() > 0 || cfg.rounds < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchsuite [-root dir] [-out file] [-png file] [-rounds n>=2] [-quick] [-only regexp]")
		os.Exit(2)
	}
	cfg.command = "go run ./cmd/benchsuite" + strings.TrimPrefix(strings.Join(os.Args, " "), os.Args[0])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchsuite:", err)
		os.Exit(1)
	}
}

// config is what the flags set.
type config struct {
	root, out, png string
	rounds         int
	quick          bool
	only           string // a regexp of step names; "" runs them all
	command        string
}

// step is one step of the suite.
type step struct {
	name string
	f    func(context.Context) error
}

// steps returns the suite's steps in the order they run.
func (s *suite) steps() []step {
	return []step{
		{"build the library's benchmark binaries", s.build},
		{"L1 hit, L2 hit and fan-out, interleaved rounds", s.runLibraryRounds},
		{"mixed workload against the peers", s.runMixed},
		{"hit-ratio table", s.runHitRatio},
		{"memory", s.runMemory},
		{"backend protection", s.runProtection},
		{"scale curve", s.runScale},
		{"fan-out scale curve", s.runFanoutScale},
		{"fan-out scale on Redis Cluster", s.runClusterFanout},
		{"revocation storms", s.runStorms},
		{"profiles of the targets that are short", s.runProfiles},
	}
}

// selectSteps returns the build and the other steps whose name matches
// only; all of them if only is "".
func selectSteps(steps []step, only string) ([]step, error) {
	if only == "" {
		return steps, nil
	}
	re, err := regexp.Compile(only)
	if err != nil {
		return nil, fmt.Errorf("-only: %w", err)
	}
	sel := steps[:1:1]
	for _, st := range steps[1:] {
		if re.MatchString(st.name) {
			sel = append(sel, st)
		}
	}
	if len(sel) == 1 {
		return nil, fmt.Errorf("-only %q matches no step", only)
	}
	return sel, nil
}

func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	root, err := filepath.Abs(cfg.root)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "tiered")); err != nil {
		return fmt.Errorf("-root %s is not the repository root: %w", cfg.root, err)
	}
	cfg.root = root
	// A run of some steps writes files only where it is told to.
	writeReport := cfg.only == "" || cfg.out != ""
	writePlots := cfg.only == "" || cfg.png != ""
	if cfg.out == "" {
		cfg.out = filepath.Join(root, "BENCHMARKS.md")
	}
	if cfg.png == "" {
		cfg.png = filepath.Join(root, "bench", "scale.png")
	}
	s := &suite{cfg: cfg, log: stderr}
	steps, err := selectSteps(s.steps(), cfg.only)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "benchsuite-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	s.tmp, s.start = tmp, time.Now()
	defer func() {
		if s.server != nil {
			s.server.Close()
		}
	}()
	s.machine = readMachine(ctx)
	s.logf("machine: %d CPUs (%s), %s, %s; load average %s", s.machine.nproc, s.machine.cpu, s.machine.goVersion, s.machine.redis, s.machine.loadStart)
	for _, st := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.logf("== %s", st.name)
		t0 := time.Now()
		if err := st.f(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The report says what could not be measured; the other
			// steps still run.
			s.logf("   FAILED: %v", err)
			s.failures = append(s.failures, fmt.Sprintf("%s: %v", st.name, err))
			continue
		}
		s.logf("   done in %v", time.Since(t0).Round(time.Second))
	}
	s.machine.loadEnd = loadAverage()
	s.elapsed = time.Since(s.start)
	targets := s.targets()
	printTargets(stdout, targets)
	if writePlots {
		if err := s.writePlot(); err != nil {
			return err
		}
		if err := s.writeFanoutPlot(); err != nil {
			return err
		}
		if err := s.writeClusterPlot(); err != nil {
			return err
		}
	}
	if !writeReport {
		s.logf("ran %d of %d steps in %v; -out names no report, none written", len(steps), len(s.steps()), s.elapsed.Round(time.Second))
		return nil
	}
	report := s.report(targets)
	if err := os.WriteFile(cfg.out, []byte(report), 0o644); err != nil {
		return err
	}
	if writePlots {
		s.logf("wrote %s and the plots beside %s in %v", cfg.out, cfg.png, s.elapsed.Round(time.Second))
	} else {
		s.logf("wrote %s in %v", cfg.out, s.elapsed.Round(time.Second))
	}
	return nil
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(s.log, "%s "+format+"\n", append([]any{time.Since(s.start).Round(time.Second)}, args...)...)
}

// machine describes where the suite ran.
type machine struct {
	nproc, gomaxprocs     int
	cpu, goVersion, redis string
	kernel                string
	loadStart, loadEnd    string
}

func readMachine(ctx context.Context) machine {
	m := machine{nproc: runtime.NumCPU(), gomaxprocs: runtime.GOMAXPROCS(0), cpu: "unknown", loadStart: loadAverage()}
	if out, err := exec.CommandContext(ctx, "nproc").Output(); err == nil {
		fmt.Sscan(string(out), &m.nproc)
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	m.goVersion = commandLine(ctx, "go", "version")
	m.redis = commandLine(ctx, "redis-server", "--version")
	m.kernel = commandLine(ctx, "uname", "-sr")
	return m
}

func commandLine(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return name + ": " + err.Error()
	}
	return strings.TrimSpace(string(out))
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
