// Command benchsuite runs the session cache's benchmark suite and writes
// BENCHMARKS.md: every target of the suite as a ratio against a baseline
// measured in the same run, A/B interleaved over several rounds, with a
// 95% bootstrap confidence interval; the hit-ratio table; the mixed
// workload against rueidis and go-redis/cache; backend protection; memory;
// the scale curve as a table and a PNG; and the fan-out scale curve (10 to
// 1,000 subscribers on one redis-server) as a table and a PNG.
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
//	              fan-out plot is fanout.png beside it
//	-rounds n     interleaved rounds per comparison (default 10)
//	-quick        short phases and a small scale curve, to try the suite
//
// It needs go and redis-server on the PATH; the library's benchmarks start
// their own redis-server processes, and the suite starts one more for the
// mixed workload and the scale curves. All of them listen on loopback and
// are stopped when it ends. It takes about twenty minutes on two cores.
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
	flag.Parse()
	if flag.NArg() > 0 || cfg.rounds < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchsuite [-root dir] [-out file] [-png file] [-rounds n>=2] [-quick]")
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
	command        string
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
	if cfg.out == "" {
		cfg.out = filepath.Join(root, "BENCHMARKS.md")
	}
	if cfg.png == "" {
		cfg.png = filepath.Join(root, "bench", "scale.png")
	}
	tmp, err := os.MkdirTemp("", "benchsuite-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	s := &suite{cfg: cfg, tmp: tmp, log: stderr, start: time.Now()}
	defer func() {
		if s.server != nil {
			s.server.Close()
		}
	}()
	s.machine = readMachine(ctx)
	s.logf("machine: %d CPUs (%s), %s, %s; load average %s", s.machine.nproc, s.machine.cpu, s.machine.goVersion, s.machine.redis, s.machine.loadStart)
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"build the library's benchmark binaries", s.build},
		{"L1 hit, L2 hit and fan-out, interleaved rounds", s.runLibraryRounds},
		{"mixed workload against the peers", s.runMixed},
		{"hit-ratio table", s.runHitRatio},
		{"memory", s.runMemory},
		{"backend protection", s.runProtection},
		{"scale curve", s.runScale},
		{"fan-out scale curve", s.runFanoutScale},
		{"profiles of the targets that are short", s.runProfiles},
	}
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
	if err := s.writePlot(); err != nil {
		return err
	}
	if err := s.writeFanoutPlot(); err != nil {
		return err
	}
	report := s.report(targets)
	if err := os.WriteFile(cfg.out, []byte(report), 0o644); err != nil {
		return err
	}
	s.logf("wrote %s, %s and %s in %v", cfg.out, cfg.png, s.fanoutPNG(), s.elapsed.Round(time.Second))
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
