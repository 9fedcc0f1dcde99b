package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/galaxy-game/sessioncache/bench"
)

// target is one line of the targets table.
type target struct {
	key    string // "1a", ...
	what   string
	figure string // the measured value, or "n/a"
	ci     string // the 95% confidence interval, if any
	goal   string
	ok     bool
	// profile names what runProfiles profiles when the target is short:
	// a tiered benchmark pattern, or "mixed".
	profile string
	// why explains a short target (written when it is short).
	why string
}

func (t target) verdict() string {
	switch {
	case t.ok && t.goal == "reported":
		return "reported"
	case t.ok:
		return "met"
	}
	return "short"
}

func ratio(v float64) string { return fmt.Sprintf("%.2f×", v) }

func interval(lo, hi float64) string { return fmt.Sprintf("[%.2f, %.2f]", lo, hi) }

// targets evaluates every target on the results gathered so far. A ratio
// target is judged on its point estimate; the interval says how firm that
// is.
func (s *suite) targets() []target {
	var ts []target
	lookupVsRaw := func(key, what, name string, goal float64, profile string) target {
		a, b := s.lib.values(name+"/lookup", "ns/op"), s.lib.values(name+"/raw", "ns/op")
		t := target{key: key, what: what, goal: fmt.Sprintf("≤ %.1f×", goal), figure: "n/a", profile: profile}
		if len(a) > 0 && len(b) > 0 {
			r, lo, hi := bench.RatioCI(a, b, 1)
			t.figure, t.ci, t.ok = ratio(r), interval(lo, hi), r <= goal
		}
		return t
	}
	ts = append(ts,
		lookupVsRaw("1a", "L1-hit Lookup / golang-lru Get, serial (time per op)", "BenchmarkL1Hit/serial", 1.5, "^BenchmarkL1Hit$/^serial$/^lookup$"),
		lookupVsRaw("1b", "L1-hit Lookup / golang-lru Get, GOMAXPROCS goroutines", "BenchmarkL1Hit/parallel", 1.5, "^BenchmarkL1Hit$/^parallel$/^lookup$"),
	)
	allocs := slices.Concat(s.lib.values("BenchmarkL1Hit/serial/lookup", "allocs/op"), s.lib.values("BenchmarkL1Hit/parallel/lookup", "allocs/op"))
	t := target{key: "1c", what: "L1-hit Lookup allocations per op (max over samples)", goal: "0", figure: "n/a"}
	if len(allocs) > 0 {
		m := slices.Max(allocs)
		t.figure, t.ok = fmt.Sprintf("%g", m), m == 0
	}
	ts = append(ts, t)

	t = target{key: "2", what: "L1 hit ratio at Zipf 1.1 (100,000 sessions, 10,000 entries)", goal: "≥ 87%", figure: "n/a"}
	if v := s.hitRatio.values("BenchmarkHitRatio/s=1.1/localcache", "hit-%"); len(v) > 0 {
		t.figure, t.ok = fmt.Sprintf("%.2f%%", v[0]), v[0] >= 87
	}
	ts = append(ts, t)

	for _, g := range []string{"16", "64"} {
		a, b := s.lib.values("BenchmarkL2Hit/g"+g+"/raw", "ns/op"), s.lib.values("BenchmarkL2Hit/g"+g+"/lookup", "ns/op")
		t := target{key: "3" + map[string]string{"16": "a", "64": "b"}[g], what: "L2-hit Lookup / raw HGETALL throughput, " + g + " goroutines", goal: "≥ 0.90×", figure: "n/a",
			profile: "^BenchmarkL2Hit$/^g" + g + "$/^lookup$"}
		if len(a) > 0 && len(b) > 0 {
			// Throughput is the inverse of the time per op.
			r, lo, hi := bench.RatioCI(a, b, 2)
			t.figure, t.ci, t.ok = ratio(r), interval(lo, hi), r >= 0.9
		}
		ts = append(ts, t)
	}

	ts = append(ts, s.peerTargets()...)

	t = target{key: "4", what: "Revocation fan-out to 3 replicas / raw PUBLISH to 3 subscribers, p99 of 1,000 (median of per-round ratios)", goal: "≤ 1.5×", figure: "n/a"}
	if rs := perRound(s.lib.values("BenchmarkFanout", "p99-us"), s.lib.values("BenchmarkFanout", "raw-p99-us")); len(rs) > 0 {
		m, lo, hi := bench.MedianCI(rs, 3)
		t.figure, t.ci, t.ok = ratio(m), interval(lo, hi), m <= 1.5
	}
	ts = append(ts, t)

	ts = append(ts, s.mixedTargets()...)

	t = target{key: "6a", what: "Backend calls for 1,000 concurrent lookups of one cold id", goal: "1", figure: "n/a"}
	if v := s.protection.values("BenchmarkBackendProtection", "cold-calls/id"); len(v) > 0 {
		t.figure, t.ok = fmt.Sprintf("%g", v[0]), v[0] == 1
	}
	ts = append(ts, t)
	t = target{key: "6b", what: "Backend calls per id, 10,000 distinct unknown ids each looked up 3 times within the negative TTL", goal: "≤ 1", figure: "n/a"}
	if v := s.protection.values("BenchmarkBackendProtection", "unknown-calls/id"); len(v) > 0 {
		t.figure, t.ok = fmt.Sprintf("%g", v[0]), v[0] <= 1
	}
	ts = append(ts, t)

	t = target{key: "7a", what: "Heap bytes per L1 entry (median)", goal: "≤ 400 B", figure: "n/a"}
	if v := s.memory.values("BenchmarkHeapPerEntry", "heap-B/entry"); len(v) > 0 {
		m := bench.Median(v)
		t.figure, t.ok = fmt.Sprintf("%.0f B", m), m <= 400
	}
	ts = append(ts, t)
	t = target{key: "7b", what: "Redis bytes per session (used_memory growth; MEMORY USAGE of the hash)", goal: "reported", figure: "n/a"}
	if u, h := s.memory.values("BenchmarkRedisMemory", "used-B/session"), s.memory.values("BenchmarkRedisMemory", "hash-B/session"); len(u) > 0 && len(h) > 0 {
		t.figure, t.ok = fmt.Sprintf("%.0f B; %.0f B", u[0], h[0]), true
	}
	ts = append(ts, t)
	t = target{key: "8", what: "Scale curve: L1 1k/10k/100k × sessions 10k/100k/1M", goal: "reported", figure: "n/a"}
	if len(s.scale) > 0 {
		t.figure, t.ok = fmt.Sprintf("%d points (table, scale.png)", len(s.scale)), true
	}
	ts = append(ts, t)
	t = target{key: "9", what: "Fan-out scale curve: 10/100/1,000 subscribers on one redis-server (p50, p99, Redis CPU per revocation)", goal: "reported", figure: "n/a"}
	if len(s.fanout) > 0 {
		t.figure, t.ok = fmt.Sprintf("%d points (table, fanout.png)", len(s.fanout)), true
	}
	ts = append(ts, t)
	t = target{key: "9b", what: "Fan-out scale on Redis Cluster: 10/100/1,000 subscribers × PUBLISH/SPUBLISH on 3 masters (p50, p99, Redis CPU per message)", goal: "reported", figure: "n/a"}
	if len(s.cluster) > 0 {
		t.figure, t.ok = fmt.Sprintf("%d points (table, fanout_cluster.png)", len(s.cluster)), true
	}
	ts = append(ts, t)
	ts = append(ts, s.stormTargets()...)
	for i := range ts {
		ts[i].why = s.why(ts[i])
	}
	return ts
}

// stormTargets are the targets of the revocation storms: a user-wide
// revocation (BenchmarkRevokeUserStorm) and many single revocations from
// one replica (BenchmarkMassRevocation), a sample per round.
func (s *suite) stormTargets() []target {
	const user, mass = "BenchmarkRevokeUserStorm", "BenchmarkMassRevocation"
	var ts []target
	// median is a target on the median over the rounds, times scale.
	median := func(key, what, name, unit, goal string, scale float64, format string, ok func(float64) bool) target {
		t := target{key: key, what: what, goal: goal, figure: "n/a"}
		if v := s.storm.values(name, unit); len(v) > 0 {
			m := bench.Median(v) * scale
			t.figure, t.ok = fmt.Sprintf(format, m), ok(m)
			if strings.Contains(format, "%s") {
				t.figure = fmt.Sprintf(format, grouped(m))
			}
		}
		return t
	}
	ts = append(ts, median("10a", "User-wide revocation of 100,000 sessions: RevokeUser's time (median over the rounds)",
		user, "revoke-ms", "≤ 1000 ms", 1, "%.0f ms", func(m float64) bool { return m <= 1000 }))
	t := target{key: "10b", what: "Messages a subscriber receives for that revocation (every round)", goal: "1", figure: "n/a"}
	if v := s.storm.values(user, "messages"); len(v) > 0 {
		lo, hi := slices.Min(v), slices.Max(v)
		t.figure, t.ok = fmt.Sprintf("%g", lo), lo == 1 && hi == 1
		if lo != hi {
			t.figure = fmt.Sprintf("%g to %g", lo, hi)
		}
	}
	ts = append(ts, t)
	ts = append(ts, median("10c", "Longest Redis command during that revocation (SLOWLOG; median over the rounds)",
		user, "slowest-ms", "≤ 50 ms", 1, "%.1f ms", func(m float64) bool { return m <= 50 }))
	t = target{key: "10d", what: "Other users' lookup p99 during that revocation / before it (median of per-round ratios)", goal: "≤ 2.00×", figure: "n/a"}
	if rs := perRound(s.storm.values(user, "lookup-p99-us"), s.storm.values(user, "base-p99-us")); len(rs) > 0 {
		m, lo, hi := bench.MedianCI(rs, 21)
		t.figure, t.ci, t.ok = ratio(m), interval(lo, hi), m <= 2
	}
	ts = append(ts, t)
	ts = append(ts, median("10e", "Mass revocation of 10,000 single sessions from one replica: revocations per second until 3 other replicas applied them all (median over the rounds)",
		mass, "applied-per-s", "≥ 50,000/s", 1, "%s/s", func(m float64) bool { return m >= 50_000 }))
	ts = append(ts, median("10f", "Mass revocation fan-out p99, from a message's Redis time to a replica's L1 (median over the rounds)",
		mass, "fanout-p99-us", "≤ 10 ms", 1e-3, "%.1f ms", func(m float64) bool { return m <= 10 }))
	return ts
}

// peerTargets are the targets of the bench module's L2-hit comparison
// (BenchmarkL2Peers): sessioncache against rueidis and raw go-redis, time
// and Redis CPU per read.
func (s *suite) peerTargets() []target {
	const name = "BenchmarkL2Peers"
	var ts []target
	// throughput: ours / side's, the inverse of the time per op.
	throughput := func(key, what, g, side string, goal float64, reported bool, seed uint64) target {
		t := target{key: key, what: what, goal: fmt.Sprintf("≥ %.2f×", goal), figure: "n/a"}
		if reported {
			t.goal = "reported"
		}
		a, b := s.lib.values(name+"/g"+g+"/"+side, "ns/op"), s.lib.values(name+"/g"+g+"/lookup", "ns/op")
		if len(a) > 0 && len(b) > 0 {
			r, lo, hi := bench.RatioCI(a, b, seed)
			t.figure, t.ci, t.ok = ratio(r), interval(lo, hi), reported || r >= goal
		}
		return t
	}
	ts = append(ts,
		throughput("3c", "L2-hit Lookup / rueidis HGETALL (auto-pipelined) throughput, 16 goroutines", "16", "rueidis", 1, true, 11),
		throughput("3d", "L2-hit Lookup / rueidis HGETALL (auto-pipelined) throughput, 64 goroutines", "64", "rueidis", 1, false, 12),
		throughput("3e", "L2-hit Lookup / raw go-redis HGETALL throughput, 64 goroutines (beside rueidis)", "64", "raw", 2, false, 13),
	)
	t := target{key: "3f", what: "L2-hit Lookup / raw go-redis HGETALL latency, 1 goroutine (time per op)", goal: "≤ 1.10×", figure: "n/a"}
	if a, b := s.lib.values(name+"/g1/lookup", "ns/op"), s.lib.values(name+"/g1/raw", "ns/op"); len(a) > 0 && len(b) > 0 {
		r, lo, hi := bench.RatioCI(a, b, 14)
		t.figure, t.ci, t.ok = ratio(r), interval(lo, hi), r <= 1.1
	}
	ts = append(ts, t)
	for i, g := range []string{"64", "16"} {
		t := target{key: "3" + string(rune('g'+i)), what: "Redis CPU per L2 read (INFO cpu): Lookup / raw go-redis HGETALL, " + g + " goroutines", goal: "≤ 0.50×", figure: "n/a"}
		if g == "16" {
			t.goal = "reported"
		}
		a, b := s.lib.values(name+"/g"+g+"/lookup", "redis-cpu-us/read"), s.lib.values(name+"/g"+g+"/raw", "redis-cpu-us/read")
		if len(a) > 0 && len(b) > 0 {
			r, lo, hi := bench.RatioCI(a, b, 15+uint64(i))
			t.figure, t.ci, t.ok = ratio(r), interval(lo, hi), g == "16" || r <= 0.5
		}
		ts = append(ts, t)
	}
	return ts
}

// perRound returns a[i]/b[i] for the rounds that have both.
func perRound(a, b []float64) []float64 {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	return rs
}

// mixedRound returns the result of the named system in one round.
func mixedRound(round []bench.MixedResult, name string) (bench.MixedResult, bool) {
	for _, r := range round {
		if r.System == name {
			return r, true
		}
	}
	return bench.MixedResult{}, false
}

// mixedRatios returns, per round where both systems ran, f(ours, peer).
func (s *suite) mixedRatios(peer string, f func(ours, peer bench.MixedResult) float64) []float64 {
	var rs []float64
	for _, round := range s.mixed {
		ours, ok1 := mixedRound(round, bench.SystemSessioncache)
		p, ok2 := mixedRound(round, peer)
		if ok1 && ok2 {
			rs = append(rs, f(ours, p))
		}
	}
	return rs
}

func (s *suite) mixedTargets() []target {
	var ts []target
	t := target{key: "5a", what: "Mixed workload throughput / the better peer's (per round)", goal: "≥ 1.00×", figure: "n/a", profile: "mixed"}
	var rs []float64
	for _, round := range s.mixed {
		ours, ok := mixedRound(round, bench.SystemSessioncache)
		best := 0.0
		for _, peer := range bench.Systems[1:] {
			if p, ok := mixedRound(round, peer); ok {
				best = max(best, p.Throughput)
			}
		}
		if ok && best > 0 {
			rs = append(rs, ours.Throughput/best)
		}
	}
	if len(rs) > 0 {
		m, lo, hi := bench.MedianCI(rs, 4)
		t.figure, t.ci, t.ok = ratio(m), interval(lo, hi), m >= 1
	}
	ts = append(ts, t)
	for i, peer := range bench.Systems[1:] {
		t := target{key: "5" + string(rune('b'+i)), what: "Mixed workload hit latency p50: " + peer + " / sessioncache", goal: "≥ 5×", figure: "n/a"}
		if rs := s.mixedRatios(peer, func(o, p bench.MixedResult) float64 { return float64(p.HitP50) / float64(o.HitP50) }); len(rs) > 0 {
			m, lo, hi := bench.MedianCI(rs, 5)
			t.figure, t.ci, t.ok = ratio(m), interval(lo, hi), m >= 5
		}
		ts = append(ts, t)
	}
	for i, peer := range bench.Systems[1:] {
		t := target{key: "5" + string(rune('d'+i)), what: "Mixed workload lookup latency p99 (hits and misses): sessioncache / " + peer, goal: "≤ 1.00×", figure: "n/a", profile: "mixed"}
		if rs := s.mixedRatios(peer, func(o, p bench.MixedResult) float64 { return float64(o.LookupP99) / float64(p.LookupP99) }); len(rs) > 0 {
			m, lo, hi := bench.MedianCI(rs, 6)
			t.figure, t.ci, t.ok = ratio(m), interval(lo, hi), m <= 1
		}
		ts = append(ts, t)
	}
	for i, peer := range bench.Systems[1:] {
		t := target{key: "5" + string(rune('f'+i)), what: "Mixed workload hit latency p99: sessioncache / " + peer, goal: "≤ 1.00×", figure: "n/a"}
		if rs := s.mixedRatios(peer, func(o, p bench.MixedResult) float64 { return float64(o.HitP99) / float64(p.HitP99) }); len(rs) > 0 {
			m, lo, hi := bench.MedianCI(rs, 7)
			t.figure, t.ci, t.ok = ratio(m), interval(lo, hi), m <= 1
		}
		ts = append(ts, t)
	}
	for _, peer := range bench.Systems {
		if err := s.mixedErr[peer]; err != nil {
			for i := range ts {
				if strings.Contains(ts[i].what, peer) || (peer == bench.SystemSessioncache) {
					ts[i].why = peer + " failed: " + err.Error()
				}
			}
		}
	}
	return ts
}

// why explains a short target from what the profiles of this repository
// showed; the report adds the profile of this run.
func (s *suite) why(t target) string {
	if t.ok {
		return ""
	}
	if t.figure == "n/a" {
		return "Not measured in this run (see the log of the suite)."
	}
	switch {
	case strings.HasPrefix(t.key, "10"):
		return "The per-round figures and the commands that reproduce them are in the section on the revocation storms."
	case strings.HasPrefix(t.key, "1"):
		return "An L1 hit takes L1's lock, a map lookup and a list move, as golang-lru does; on top of that it reads L1's clock (a coarse clock refreshed every 10 ms), compares the status and copies the record twice. On a shared two-core machine parallel runs vary widely from round to round; the interval shows it."
	case t.key == "3d":
		return "rueidis writes every concurrent command of all its callers into one of a few connections and reads the replies in order, without a goroutine per command; rediscache's shared pipelines go through go-redis, whose pipeline takes a pooled connection, allocates a command object per read and a result map per hash, and the Lookup then decodes, validates and fills L1 (the table of the L2 hit against the peers gives allocations per op). On two cores shared with redis-server the client CPU per read decides the throughput."
	case t.key == "3e":
		return "Against the raw go-redis HGETALL at 64 goroutines, whose pool of 20 connections makes the other callers wait, shared pipelines win most when Redis and the clients have cores to spare; here both share two cores."
	case t.key == "3f":
		return "A lone Lookup that misses L1 does more than the raw HGETALL: the id check, the negative-cache check, a slot of the shared pipelines (a channel send and the queue's lock, then a plain HGETALL when it is alone), a context with the call's timeout, the decode and validation of the hash, and the L1 fill, with more allocations per read (the table of the L2 hit against the peers gives them). One round trip on loopback is a few tens of microseconds here, so a few microseconds of client work show; the interval says how firm the point estimate is."
	case strings.HasPrefix(t.key, "3g"):
		return "Redis's CPU per read falls when many reads arrive in one read of its socket and leave in one write; at this concurrency the shared pipelines did not batch enough reads per pipeline to halve it."
	case strings.HasPrefix(t.key, "3"):
		return "The profile below is the Lookup side. Beyond the HGETALL itself, a Lookup pays rediscache.Get's per-call context.WithTimeout (a context and a timer allocated and stopped per call), DecodeHash (the status parse and the public key check), the L1 fill (the same validation again and an entry allocation), the L1 miss and the negative-cache check: 6 more allocations per lookup. That is the share of the lookup's client CPU the profile below gives outside the Redis call, plus collecting the extra garbage (the collector's work is not under Lookup in the profile); on a machine where client and redis-server share two cores it is lost throughput. The per-call timeout lies in rediscache (a deadline from the client's ReadTimeout would avoid it, at the cost of the CallTimeout bound); the rest is the price of serving a validated, decoded record."
	case t.key == "4":
		script := bench.Median(s.lib.values("BenchmarkFanout", "script-us"))
		publish := bench.Median(s.lib.values("BenchmarkFanout", "publish-us"))
		why := fmt.Sprintf("The fan-out is bound by Redis, not by the replicas: a revocation is one Lua script (rediscache's revoke_session: read the hash, INCR the stripe's sequence, XADD to the log, PUBLISH, write the hash, and renew the TTLs of the hash and, when they run low, of the counter and the log), which Redis runs in %.0f µs per call (INFO commandstats, median over the rounds) against %.1f µs for the raw PUBLISH, and the message leaves Redis only when the script ends. The replicas' part (parse the JSON message, flip L1 under its lock) takes a few microseconds of CPU and does not show in a profile of the benchmark, which spends its time waiting.", script, publish)
		parts := func(unit string) float64 { return bench.Median(s.lib.values("BenchmarkRevokeScriptParts", unit)) }
		if whole := parts("revoke-us"); whole > 0 {
			why += fmt.Sprintf(" Where the script's time goes, one call at a time with Redis idle in between as here (rediscache's BenchmarkRevokeScriptParts, medians over the rounds): an empty script costs %.0f µs, TIME and PUBLISH %.0f µs, the announcement (INCR, XADD and PUBLISH) %.0f µs, and the whole script %.0f µs; the announcement is %.0f%% of it.",
				parts("evalsha-us"), parts("publish-us"), parts("announce-us"), whole, 100*parts("announce-us")/whole)
		}
		return why + " Bringing the ratio under 1.5× means publishing before the log write, which would break the replay of missed messages from the log."
	case t.key == "5a":
		return "See the profile below: the mixed workload spends most of its client CPU on L1 misses read from Redis (go-redis, a connection per concurrent command) and on revocations, whose Lua script also costs Redis time the peers' HSET or SET does not."
	case t.key == "5b" || t.key == "5c":
		return "A hit is timed with two monotonic clock reads (about 20 ns each here) around the call, which weighs far more on sessioncache's hit than on a peer's; and in the mixed workload an L1 hit competes for L1's lock and the CPU caches with the misses, the revocations and the subscriber flipping entries."
	case t.key == "5d" || t.key == "5e":
		return "The lookup p99 is the latency of an L1 miss under full load: every system runs a closed loop at its own maximum throughput on two shared cores, so the faster system also queues more work per core. sessioncache's misses go through go-redis with a connection per concurrent command, while rueidis pipelines all commands over two connections (fewer system calls per command); its revocations are Lua scripts that hold Redis longer than an HSET or SET."
	}
	return ""
}

func printTargets(w io.Writer, ts []target) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\ttarget\tfigure\t95% CI\tgoal\t")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.key, t.what, t.figure, t.ci, t.goal, t.verdict())
	}
	tw.Flush()
}

// fanoutPNG is the fan-out plot's file, beside the scale plot.
func (s *suite) fanoutPNG() string { return filepath.Join(filepath.Dir(s.cfg.png), "fanout.png") }

// writeFanoutPlot draws the fan-out scale curve: p50 and p99 against the
// subscribers, and Redis's CPU per revocation (medians over the rounds).
func (s *suite) writeFanoutPlot() error {
	subs, _ := s.fanoutGrid()
	lat := []bench.Series{{Name: "p50"}, {Name: "p99"}}
	cpu := []bench.Series{{Name: "Redis CPU"}}
	for _, n := range subs {
		var p50, p99, c []float64
		for _, pt := range s.fanout {
			if pt.Subscribers == n {
				p50 = append(p50, float64(pt.P50)/1e3)
				p99 = append(p99, float64(pt.P99)/1e3)
				c = append(c, float64(pt.CPUPerRevocation)/1e3)
			}
		}
		if len(p50) == 0 {
			continue
		}
		x := float64(n)
		lat[0].X, lat[0].Y = append(lat[0].X, x), append(lat[0].Y, bench.Median(p50))
		lat[1].X, lat[1].Y = append(lat[1].X, x), append(lat[1].Y, bench.Median(p99))
		cpu[0].X, cpu[0].Y = append(cpu[0].X, x), append(cpu[0].Y, bench.Median(c))
	}
	if len(lat[0].X) == 0 {
		return nil
	}
	f, err := os.Create(s.fanoutPNG())
	if err != nil {
		return err
	}
	err = bench.WritePNG(f, []bench.Panel{
		// The font has no µ.
		{Title: "Fan-out to 3 replicas, microseconds", XLabel: "subscribers", LogY: true, Series: lat},
		{Title: "Redis CPU per revocation, microseconds", XLabel: "subscribers", LogY: true, Series: cpu},
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// clusterPNG is the plot of the fan-out curve on Redis Cluster, beside the
// scale plot.
func (s *suite) clusterPNG() string {
	return filepath.Join(filepath.Dir(s.cfg.png), "fanout_cluster.png")
}

// clusterMedians returns the medians over the rounds of the points of the
// cluster fan-out with n subscribers in mode, and how many there were.
func (s *suite) clusterMedians(n int, mode bench.FanoutMode) (m bench.ClusterFanoutPoint, points int) {
	var p50, p99, mx, cpu, bus []float64
	for _, pt := range s.cluster {
		if pt.Subscribers == n && pt.Mode == mode {
			p50, p99, mx = append(p50, float64(pt.P50)), append(p99, float64(pt.P99)), append(mx, float64(pt.Max))
			cpu, bus = append(cpu, float64(pt.CPUPerMessage)), append(bus, pt.BusPerMessage)
		}
	}
	if len(p50) == 0 {
		return m, 0
	}
	d := func(v []float64) time.Duration { return time.Duration(bench.Median(v)) }
	return bench.ClusterFanoutPoint{Mode: mode, Subscribers: n, P50: d(p50), P99: d(p99), Max: d(mx), CPUPerMessage: d(cpu), BusPerMessage: bench.Median(bus)}, len(p50)
}

// writeClusterPlot draws the fan-out curve on Redis Cluster: p99 against
// the subscribers, and the masters' CPU per message, one line per mode
// (medians over the rounds).
func (s *suite) writeClusterPlot() error {
	subs, _ := s.clusterFanoutGrid()
	var lat, cpu []bench.Series
	for _, mode := range clusterModes {
		l, c := bench.Series{Name: string(mode)}, bench.Series{Name: string(mode)}
		for _, n := range subs {
			m, points := s.clusterMedians(n, mode)
			if points == 0 {
				continue
			}
			x := float64(n)
			l.X, l.Y = append(l.X, x), append(l.Y, float64(m.P99)/1e3)
			c.X, c.Y = append(c.X, x), append(c.Y, float64(m.CPUPerMessage)/1e3)
		}
		if len(l.X) > 0 {
			lat, cpu = append(lat, l), append(cpu, c)
		}
	}
	if len(lat) == 0 {
		return nil
	}
	f, err := os.Create(s.clusterPNG())
	if err != nil {
		return err
	}
	err = bench.WritePNG(f, []bench.Panel{
		// The font has no µ.
		{Title: "Cluster fan-out p99, microseconds", XLabel: "subscribers", LogY: true, Series: lat},
		{Title: "Redis CPU per message, 3 masters, microseconds", XLabel: "subscribers", LogY: true, Series: cpu},
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writePlot draws the scale curve.
func (s *suite) writePlot() error {
	sessions, _ := s.scaleGrid()
	var hit, reads []bench.Series
	for _, n := range sessions {
		h := bench.Series{Name: humanInt(n) + " sessions"}
		r := h
		for _, p := range s.scale {
			if p.Sessions == n {
				h.X, h.Y = append(h.X, float64(p.L1)), append(h.Y, p.HitRatio)
				r.X, r.Y = append(r.X, float64(p.L1)), append(r.Y, max(p.L2Per100k, 1))
			}
		}
		if len(h.X) > 0 {
			hit, reads = append(hit, h), append(reads, r)
		}
	}
	if len(hit) == 0 {
		return nil
	}
	f, err := os.Create(s.cfg.png)
	if err != nil {
		return err
	}
	err = bench.WritePNG(f, []bench.Panel{
		{Title: "L1 hit ratio (Zipf 1.1)", XLabel: "L1 entries", YLabel: "", YMin: 0, YMax: 1, YPercent: true, Series: hit},
		{Title: "Redis reads/s at 100k lookups/s (0 drawn as 1)", XLabel: "L1 entries", YLabel: "", LogY: true, Series: reads},
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func humanInt(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func us(d time.Duration) string {
	if d < 10*time.Microsecond {
		return fmt.Sprintf("%.2f µs", float64(d)/1e3)
	}
	return fmt.Sprintf("%.0f µs", float64(d)/1e3)
}

// report renders BENCHMARKS.md.
func (s *suite) report(ts []target) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := s.machine
	p("# Benchmarks\n\n")
	p("Written by `bench/cmd/benchsuite` (`make bench`) on %s, in %v. Every target is a ratio against a\n", s.start.UTC().Format("2006-01-02 15:04 MST"), s.elapsed.Round(time.Second))
	p("baseline measured in the same run on the same machine, the two sides interleaved (A, B, B, A within a\n")
	p("process; %d rounds), and comes with a 95%% confidence interval (percentile bootstrap, 10,000 resamples:\n", s.cfg.rounds)
	p("of the ratio of medians for time per operation, of the median of per-round ratios for paired figures).\n")
	p("A target is judged on its point estimate.\n\n")
	p("| | |\n|---|---|\n")
	p("| command | `%s` (in `bench/`) |\n", s.cfg.command)
	p("| machine | %d CPUs (`nproc`), GOMAXPROCS %d, %s; %s |\n", m.nproc, m.gomaxprocs, m.cpu, m.kernel)
	p("| Go | %s |\n", m.goVersion)
	p("| Redis | %s, on loopback |\n", m.redis)
	p("| load average | %s at the start, %s at the end |\n", m.loadStart, m.loadEnd)
	p("| workload | 100,000 sessions in Redis, L1 of 10,000 entries, Zipf s = 1.1 (math/rand/v2, v = 1), internal/workload |\n\n")
	p("The machine is shared with other jobs and noisy: a serial loopback round trip swings several-fold with\n")
	p("the CPU's idle state, which is why only same-run ratios are targets and absolute figures are context.\n\n")

	p("## Targets\n\n| # | target | figure | 95%% CI | goal | |\n|---|---|---|---|---|---|\n")
	for _, t := range ts {
		p("| %s | %s | %s | %s | %s | **%s** |\n", t.key, t.what, t.figure, t.ci, t.goal, t.verdict())
	}
	p("\n")
	var short []target
	for _, t := range ts {
		if !t.ok {
			short = append(short, t)
		}
	}
	if len(short) == 0 {
		p("Every target is met.\n\n")
	} else {
		p("### Short targets\n\n")
		for _, t := range short {
			p("- **%s** (%s): %s, goal %s. %s\n", t.key, t.what, t.figure, t.goal, t.why)
		}
		p("\n")
		for key, text := range s.profiles {
			p("Profile of sessioncache's side (`%s`), `go tool pprof -top -cum`:\n\n```\n%s\n```\n\n", key, text)
		}
	}

	if len(s.failures) > 0 {
		p("### What failed in this run\n\n```\n%s\n```\n\n", strings.Join(s.failures, "\n"))
	}
	s.reportLibrary(&b)
	s.reportHitRatio(&b)
	s.reportMixed(&b)
	s.reportProtectionMemory(&b)
	s.reportScale(&b)
	s.reportFanoutScale(&b)
	s.reportClusterFanout(&b)
	s.reportStorms(&b)
	return b.String()
}

func (s *suite) reportLibrary(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## L1 hit and L2 hit against the raw limits\n\n")
	p("`tiered`'s `BenchmarkL1Hit` and `BenchmarkL2Hit`. L1 hit: `Lookup` on a replica whose L1 holds 10,000\n")
	p("sessions, against golang-lru/v2's thread-safe `Cache.Get` holding the same records, with the same keys\n")
	p("(Zipf 1.1 over the cached sessions). L2 hit: `Lookup` on a replica with a one-entry L1 (every lookup of\n")
	p("uniformly drawn sessions misses it), against go-redis `HGETALL` of the same keys on a client with the\n")
	p("same options. Medians over %d rounds × 2 samples.\n\n", s.cfg.rounds)
	p("| benchmark | sessioncache | raw | ratio | sessioncache allocs/op | raw allocs/op |\n|---|---|---|---|---|---|\n")
	for _, row := range []struct{ name, label string }{
		{"BenchmarkL1Hit/serial", "L1 hit, serial"},
		{"BenchmarkL1Hit/parallel", "L1 hit, GOMAXPROCS goroutines"},
		{"BenchmarkL2Hit/g16", "L2 hit, 16 goroutines"},
		{"BenchmarkL2Hit/g64", "L2 hit, 64 goroutines"},
	} {
		a, r := s.lib.values(row.name+"/lookup", "ns/op"), s.lib.values(row.name+"/raw", "ns/op")
		if len(a) == 0 || len(r) == 0 {
			continue
		}
		ma, mr := bench.Median(a), bench.Median(r)
		p("| %s | %s/op | %s/op | %.2f× time | %g | %g |\n", row.label, nsString(ma), nsString(mr), ma/mr,
			bench.Median(s.lib.values(row.name+"/lookup", "allocs/op")), bench.Median(s.lib.values(row.name+"/raw", "allocs/op")))
	}
	p("\nThroughput of the L2-hit side is the inverse of its time per operation. A lookup whose Redis read\n")
	p("exceeds rediscache's CallTimeout (250 ms) fails closed; the share that did, median over the samples:\n")
	p("%.3f%% at 16 goroutines, %.3f%% at 64.\n\n", bench.Median(s.lib.values("BenchmarkL2Hit/g16/lookup", "failed-%")), bench.Median(s.lib.values("BenchmarkL2Hit/g64/lookup", "failed-%")))

	s.reportPeers(b)

	p("## Revocation fan-out\n\n`tiered`'s `BenchmarkFanout`: three replicas with the session in their L1; a fourth client revokes it\n")
	p("(`rediscache.RevokeSession`: the Lua script writes the hash, the sequence and the log, and publishes);\n")
	p("the time runs until the third replica has flipped its L1 entry. Baseline: a raw go-redis `PUBLISH` of a\n")
	p("message of the same size to three go-redis subscribers on the same server, until the third received it.\n")
	p("The two alternate revocation by revocation, 1,000 of each per round.\n\n")
	p("Redis time per revocation script and per raw PUBLISH is INFO commandstats' usec_per_call.\n\n")
	p("| round | p50 | raw p50 | p99 | raw p99 | p99 ratio | Redis µs per script | per PUBLISH |\n|---|---|---|---|---|---|---|---|\n")
	p50, rp50 := s.lib.values("BenchmarkFanout", "p50-us"), s.lib.values("BenchmarkFanout", "raw-p50-us")
	p99, rp99 := s.lib.values("BenchmarkFanout", "p99-us"), s.lib.values("BenchmarkFanout", "raw-p99-us")
	script, publish := s.lib.values("BenchmarkFanout", "script-us"), s.lib.values("BenchmarkFanout", "publish-us")
	for i := range min(len(p50), len(rp50), len(p99), len(rp99), len(script), len(publish)) {
		p("| %d | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.2f× | %.0f | %.1f |\n", i+1, p50[i], rp50[i], p99[i], rp99[i], p99[i]/rp99[i], script[i], publish[i])
	}
	p("\n")
}

// reportPeers writes the table of the bench module's L2-hit comparison.
func (s *suite) reportPeers(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	const name = "BenchmarkL2Peers"
	p("### L2 hit against rueidis and raw go-redis, with Redis's CPU\n\n")
	p("The bench module's `BenchmarkL2Peers`, run in every round right after `BenchmarkL2Hit`, on a redis-server\n")
	p("of its own loaded with the same 100,000 sessions: `Lookup` on a replica with a one-entry L1 (rediscache\n")
	p("shares pipelines between concurrent reads), a raw go-redis `HGETALL` on a client with the same options\n")
	p("(its pool: 10 connections per CPU), and a rueidis `HGETALL` (`Do`, client-side caching off; rueidis\n")
	p("pipelines concurrent commands over its own connections). The sides run A, B, C, C, B, A at 16 and 64\n")
	p("goroutines, and sessioncache and go-redis A, B, B, A at 1. Redis CPU per read is the growth of INFO cpu's\n")
	p("used_cpu_sys + used_cpu_user over the timed phase divided by the HGETALLs INFO commandstats counted in it;\n")
	p("\"Redis µs in HGETALL\" is commandstats' usec per call (the command alone, without the socket I/O).\n")
	p("Medians over %d rounds × 2 samples; ratios are sessioncache's throughput over the side's.\n\n", s.cfg.rounds)
	p("| goroutines | side | time per read | throughput: sessioncache / side | Redis CPU per read | Redis µs in HGETALL | allocs/op | failed |\n|---|---|---|---|---|---|---|---|\n")
	for _, g := range []string{"1", "16", "64"} {
		ours := bench.Median(s.lib.values(name+"/g"+g+"/lookup", "ns/op"))
		for _, side := range []struct{ key, label string }{{"lookup", "sessioncache"}, {"raw", "go-redis"}, {"rueidis", "rueidis"}} {
			k := name + "/g" + g + "/" + side.key
			t := s.lib.values(k, "ns/op")
			if len(t) == 0 {
				continue
			}
			rel := "—"
			if side.key != "lookup" {
				rel = fmt.Sprintf("%.2f×", bench.Median(t)/ours)
			}
			p("| %s | %s | %s | %s | %.1f µs | %.2f | %g | %.3f%% |\n", g, side.label, nsString(bench.Median(t)), rel,
				bench.Median(s.lib.values(k, "redis-cpu-us/read")), bench.Median(s.lib.values(k, "redis-cmd-us/read")),
				bench.Median(s.lib.values(k, "allocs/op")), bench.Median(s.lib.values(k, "failed-%")))
		}
	}
	p("\n")
}

// reportFanoutScale writes the table of the fan-out scale curve.
func (s *suite) reportFanoutScale(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	subs, revocations := s.fanoutGrid()
	p("## Fan-out scale\n\n`bench.RunFanoutScale`: one redis-server, the invalidation channel with 10, 100 and 1,000\n")
	p("subscribers in all: three real replicas (`tiered.Cache`, each holding every session to be revoked in L1)\n")
	p("and bare connections that `SUBSCRIBE` and only read, standing in for the rest of a fleet. A fifth client\n")
	p("revokes %s sessions one at a time (`rediscache.RevokeSession`: the script and its `PUBLISH`); each is\n", humanInt(revocations))
	p("timed until the third replica has flipped its L1 entry, and every bare subscriber must receive every\n")
	p("message. Redis CPU per revocation is the growth of INFO cpu's used_cpu_sys + used_cpu_user over the\n")
	p("timed phase divided by the revocations: the script, and the writes of its message to every subscriber's\n")
	p("socket, which happen after the script and are not in commandstats' time of the script. `PUBLISH` on the\n")
	p("one node; the cluster variants (`PUBLISH` forwarded over the cluster bus, `SPUBLISH` to a shard) are in\n")
	p("the next section. The subscribers' readers run in the suite's process, on the same two cores as\n")
	p("redis-server, so the latencies at 1,000 are an upper bound; the CPU per revocation is Redis's own.\n")
	p("%d rounds, the subscriber counts in an order rotated from round to round; medians over the rounds.\n\n", s.fanoutRounds())
	p("![fan-out scale](bench/fanout.png)\n\n")
	p("| subscribers | p50 | p99 | max | Redis CPU per revocation | added per subscriber since the row above | script µs (commandstats) | HGETALLs per revocation |\n|---|---|---|---|---|---|---|---|\n")
	prevN, prevCPU := 0, 0.0
	for _, n := range subs {
		var p50, p99, mx, cpu, script, reads []float64
		for _, pt := range s.fanout {
			if pt.Subscribers == n {
				p50, p99, mx = append(p50, float64(pt.P50)), append(p99, float64(pt.P99)), append(mx, float64(pt.Max))
				cpu, script, reads = append(cpu, float64(pt.CPUPerRevocation)), append(script, pt.ScriptUsec), append(reads, pt.ReadsPerRevocation)
			}
		}
		if len(p50) == 0 {
			p("| %s | n/a | | | | | | |\n", humanInt(n))
			continue
		}
		d := func(v []float64) string { return us(time.Duration(bench.Median(v))) }
		added := ""
		if prevN > 0 {
			added = fmt.Sprintf("%.2f µs", (bench.Median(cpu)-prevCPU)/1e3/float64(n-prevN))
		}
		prevN, prevCPU = n, bench.Median(cpu)
		p("| %s | %s | %s | %s | %s | %s | %.0f | %.2f |\n", humanInt(n), d(p50), d(p99), d(mx), d(cpu),
			added, bench.Median(script), bench.Median(reads))
	}
	p("\nPer round:\n\n| round | subscribers | p50 | p99 | Redis CPU per revocation |\n|---|---|---|---|---|\n")
	for i, pt := range s.fanout {
		p("| %d | %s | %s | %s | %s |\n", i/len(subs)+1, humanInt(pt.Subscribers), us(pt.P50), us(pt.P99), us(pt.CPUPerRevocation))
	}
	p("\n")
}

// reportClusterFanout writes the table of the fan-out curve on Redis
// Cluster.
func (s *suite) reportClusterFanout(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	subs, messages := s.clusterFanoutGrid()
	p("## Fan-out scale on Redis Cluster\n\n")
	p("`bench.RunClusterFanout`: raw pub/sub on a Redis Cluster of three masters without replicas, started for\n")
	p("the step on loopback (`redis-cli --cluster create`), with 10, 100 and 1,000 subscribers. No replica of the\n")
	p("library takes part: the library publishes with `PUBLISH` and does not implement sharded channels, so this\n")
	p("curve is what the cluster's two ways of fanning out cost, not the library's path. Two modes:\n\n")
	p("- `PUBLISH`: every subscriber is one connection that `SUBSCRIBE`s to `session_invalidation`, spread evenly\n")
	p("  over the three masters; the messages are `PUBLISH`ed on the first master, which delivers them to its\n")
	p("  own subscribers and forwards each over the cluster bus to the two others, which deliver it to theirs.\n")
	p("  (The library's subscribers, through go-redis's `ClusterClient`, all connect to the master serving the\n")
	p("  channel name's slot, which then delivers every message to every gateway, as the single node above does.)\n")
	p("- `SPUBLISH`: %d sharded channels, `session_invalidation:{s0}` to `session_invalidation:{s15}` (one per\n", bench.ShardedChannels)
	p("  stripe; CLUSTER KEYSLOT puts them on all three masters); every subscriber holds one connection per\n")
	p("  master, which `SSUBSCRIBE`s, one command per channel, to the channels of that master's slots. The\n")
	p("  messages go round-robin over the channels, each `SPUBLISH`ed to the master serving its slot, which\n")
	p("  alone delivers it.\n\n")
	p("The messages have a revocation message's fields and size (`{\"session\":…,\"seq\":…,\"stripe\":…,\"at_ms\":…}`)\n")
	p("and go one at a time, %s per point; each is timed from the publishing call until the last subscriber\n", grouped(float64(messages)))
	p("has read it, and every subscriber must receive every message. Redis CPU per message is the growth of\n")
	p("INFO cpu's used_cpu_sys + used_cpu_user over the timed phase, summed over the three masters, divided by\n")
	p("the messages; bus messages per message, the growth of CLUSTER INFO's cluster_stats_messages_publish_sent\n")
	p("and cluster_stats_messages_publishshard_sent, summed over the masters, divided by the messages. The\n")
	p("subscribers' readers run in the suite's process, on the same two cores as the three redis-server\n")
	p("processes, so the latencies at 1,000 are an upper bound. A message forwarded over the bus may wait for\n")
	p("the receiving node's delayed ACK, about 40 ms on Linux: Redis 7.0 sets TCP_NODELAY on the bus connections\n")
	p("a node accepts but not on those it opens (strace), which carry what it sends: a `PUBLISH` p99 near 40 ms\n")
	p("where the p50 is well under a millisecond is most likely that. The single node's curve above times the\n")
	p("library's script and three replicas' L1 flips: compare its CPU per revocation with these only for the\n")
	p("share that grows with the subscribers.\n")
	rounds := "1 round"
	if r := s.clusterFanoutRounds(); r > 1 {
		rounds = fmt.Sprintf("%d rounds, the subscriber counts in an order rotated from round to round; medians over the rounds", r)
	}
	if run := s.clusterRun; !run.start.IsZero() {
		p("%s; this step ran on %s, in %v (load average %s at its start).\n\n", rounds, run.start.UTC().Format("2006-01-02 15:04 MST"), run.elapsed.Round(time.Second), run.loadAvg)
	} else {
		p("%s.\n\n", rounds)
	}
	p("To run this step alone (in `bench/`; it writes the report and the plot only where `-out` and `-png` name them):\n\n")
	p("```\ngo run ./cmd/benchsuite -only 'Redis Cluster' -out /tmp/BENCHMARKS.md -png /tmp/scale.png\n```\n\n")
	p("![fan-out scale on Redis Cluster](bench/fanout_cluster.png)\n\n")
	p("| subscribers | mode | p50 | p99 | max | Redis CPU per message (3 masters) | bus messages per message |\n|---|---|---|---|---|---|---|\n")
	for _, n := range subs {
		for _, mode := range clusterModes {
			m, points := s.clusterMedians(n, mode)
			if points == 0 {
				p("| %s | %s | n/a | | | | |\n", humanInt(n), mode)
				continue
			}
			p("| %s | %s | %s | %s | %s | %s | %.1f |\n", humanInt(n), mode, us(m.P50), us(m.P99), us(m.Max), us(m.CPUPerMessage), m.BusPerMessage)
		}
	}
	if s.clusterFanoutRounds() > 1 {
		per := len(subs) * len(clusterModes)
		p("\nPer round:\n\n| round | subscribers | mode | p50 | p99 | Redis CPU per message |\n|---|---|---|---|---|---|\n")
		for i, pt := range s.cluster {
			p("| %d | %s | %s | %s | %s | %s |\n", i/per+1, humanInt(pt.Subscribers), pt.Mode, us(pt.P50), us(pt.P99), us(pt.CPUPerMessage))
		}
	}
	p("\n")
}

// reportStorms writes the per-round figures of the revocation storms.
func (s *suite) reportStorms(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Revocation storms\n\n")
	p("Each of %d rounds runs `rediscache`'s `BenchmarkRevokeUserStorm`, then `tiered`'s `BenchmarkMassRevocation`,\n", s.stormRounds())
	p("each for one iteration (`-test.benchtime 1x`: the iteration is the whole storm) and each on a redis-server\n")
	p("of its own. Targets 10a to 10f are judged on the medians over the rounds (10b on every round, 10d on the\n")
	p("median of the per-round ratios). From the repository root, one round of each:\n\n")
	p("```\ngo test -run '^$' -bench BenchmarkRevokeUserStorm -benchtime=1x ./rediscache/\n")
	p("go test -run '^$' -bench BenchmarkMassRevocation -benchtime=1x ./tiered/\n```\n\n")

	p("`BenchmarkRevokeUserStorm`: `RevokeUser` of a user with 100,000 active sessions (hashes and the user's\n")
	p("index written beforehand in pipelines), timed from the call to its return. A subscriber of the\n")
	p("invalidation channel counts the messages it receives until 2 s pass without one after the call returned.\n")
	p("The slowest command is the longest entry of SLOWLOG (`slowlog-log-slower-than 1000`, reset right before\n")
	p("the call; 0 when no command took 1 ms or more). Meanwhile one goroutine reads the 1,000 sessions of\n")
	p("another user one after another through a client and cache of its own, as another gateway would (`Get`,\n")
	p("Redis only); the p99 (nearest rank) of these reads during the call is set against the p99 of 2,000 such\n")
	p("reads just before it.\n\n")
	p("| round | RevokeUser | messages | slowest command | other lookups p99 during | before | ratio |\n|---|---|---|---|---|---|---|\n")
	for i, smp := range s.storm["BenchmarkRevokeUserStorm"] {
		ratio := "n/a"
		if smp["base-p99-us"] > 0 {
			ratio = fmt.Sprintf("%.2f×", smp["lookup-p99-us"]/smp["base-p99-us"])
		}
		p("| %d | %.0f ms | %g | %.1f ms | %.0f µs | %.0f µs | %s |\n", i+1, smp["revoke-ms"], smp["messages"], smp["slowest-ms"],
			smp["lookup-p99-us"], smp["base-p99-us"], ratio)
	}
	p("\n`BenchmarkMassRevocation`: four `tiered` replicas hold the same 10,000 sessions in L1; one of them\n")
	p("calls `MarkRevoked` for each from one goroutine. Held: revocations per second until Redis held them all\n")
	p("(none owed by the replica); applied: until the three other replicas had all applied them all. The fan-out\n")
	p("of a message runs from the Redis time it carries to its first application in a replica's L1; that time\n")
	p("has millisecond precision, so the fan-out may read up to 1 ms high. Beside it, before the revocations, the\n")
	p("same number of raw `PUBLISH` of the same size in pipelines of 128 from one client to three go-redis\n")
	p("subscribers: messages per second until all three received them all, and the p99 from each pipeline's\n")
	p("sending to each reception.\n\n")
	p("| round | held | applied | fan-out p50 | fan-out p99 | raw PUBLISH | raw p99 |\n|---|---|---|---|---|---|---|\n")
	for i, smp := range s.storm["BenchmarkMassRevocation"] {
		p("| %d | %s/s | %s/s | %.1f ms | %.1f ms | %s/s | %.1f ms |\n", i+1, grouped(smp["held-per-s"]), grouped(smp["applied-per-s"]),
			smp["fanout-p50-us"]/1e3, smp["fanout-p99-us"]/1e3, grouped(smp["raw-per-s"]), smp["raw-p99-us"]/1e3)
	}
	p("\n")
}

// grouped returns v rounded to an integer, its thousands separated by
// commas.
func grouped(v float64) string {
	digits := strconv.FormatInt(int64(math.Round(math.Abs(v))), 10)
	var b strings.Builder
	if v <= -0.5 {
		b.WriteByte('-')
	}
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func nsString(ns float64) string {
	if ns >= 10_000 {
		return fmt.Sprintf("%.1f µs", ns/1000)
	}
	return fmt.Sprintf("%.1f ns", ns)
}

func (s *suite) reportHitRatio(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## L1 hit ratio by policy\n\n`localcache`'s `BenchmarkHitRatio`: 100,000 sessions, 10,000 entries, 1,000,000 accesses to warm up,\n")
	p("2,000,000 measured. `localcache` is the segmented LRU it now uses (new entries on probation, entries read\n")
	p("again protected, up to 80%%); `lru` and `2q` are golang-lru/v2's LRU (localcache's policy before) and 2Q;\n")
	p("`oracle` holds the 10,000 most popular sessions and nothing else.\n\n")
	p("| Zipf s | localcache | lru | 2q | oracle |\n|---|---|---|---|---|\n")
	for _, z := range []string{"1.01", "1.1", "1.2"} {
		p("| %s |", z)
		for _, pol := range []string{"localcache", "lru", "2q", "oracle"} {
			v := s.hitRatio.values("BenchmarkHitRatio/s="+z+"/"+pol, "hit-%")
			if len(v) == 0 {
				p(" n/a |")
				continue
			}
			p(" %.2f%% |", v[0])
		}
		p("\n")
	}
	p("\n")
}

func (s *suite) reportMixed(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Mixed workload against the peers\n\n")
	p("`bench.RunMixed`: 16 goroutines walk one Zipf 1.1 trace over the 100,000 sessions from their own offsets;\n")
	p("every 100th operation of a goroutine revokes the session at that point of the trace, the others look it\n")
	p("up. Each system runs on a freshly flushed and loaded redis-server (the same process for all), with room\n")
	p("for 10,000 sessions in process memory and a local TTL of 30 s, warms up for at least 1,000,000 operations,\n")
	p("then is measured for 3 s; one lookup in 8 and every revocation are timed (two monotonic clock reads,\n")
	p("about 40 ns here, are included in the latencies).\n")
	p("The order of the systems rotates from round to round.\n\n")
	p("- **sessioncache**: `tiered.Cache` (L1 in process, L2 `rediscache`), `LookupTier` and `Revoke`.\n")
	p("- **rueidis** v1.0.79: `DoCache(HGETALL key, 30s)` (server-assisted client-side caching; Redis invalidates\n")
	p("  the cached reply when the hash changes), the reply decoded into a record without validation; a\n")
	p("  revocation is an `HSET` of status and time. Its cache is sized by bytes: 783 bytes per session by its own\n")
	p("  accounting (`TestRueidisCapacity` checks it), split over its two pipelined connections.\n")
	p("- **go-redis/cache** v9.0.0: `TinyLFU(10000, 30s)` in process over msgpack values in Redis strings\n")
	p("  (`Get` into a `session.Record`); a revocation `Set`s the revoked record. It has no invalidation: other\n")
	p("  processes keep their copy until it expires. Its TinyLFU (vmihailenco/go-tinylfu v0.2.2) `Set` of a key\n")
	p("  already cached adds a second entry instead of replacing the first, so revocations of cached sessions\n")
	p("  cost it capacity: its hit ratio is about 85%% on the same workload without revocations.\n\n")
	if len(s.mixedErr) > 0 {
		for name, err := range s.mixedErr {
			p("**%s could not be measured**: %v\n\n", name, err)
		}
	}
	p("Medians over the rounds (failed: operations that returned an error, such as a Redis read past its\n")
	p("timeout, which sessioncache answers by failing closed):\n\n")
	p("| system | ops/s | local hit ratio | hit p50 | hit p99 | lookup p50 | lookup p99 | revocation p50 | failed |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, name := range bench.Systems {
		var thr, hr, h50, h99, l50, l99, r50, failed []float64
		for _, round := range s.mixed {
			if r, ok := mixedRound(round, name); ok {
				thr, hr = append(thr, r.Throughput), append(hr, r.HitRatio)
				h50, h99 = append(h50, float64(r.HitP50)), append(h99, float64(r.HitP99))
				l50, l99 = append(l50, float64(r.LookupP50)), append(l99, float64(r.LookupP99))
				r50 = append(r50, float64(r.RevokeP50))
				failed = append(failed, float64(r.Errors)/float64(max(r.Ops, 1)))
			}
		}
		if len(thr) == 0 {
			p("| %s | n/a | | | | | | | |\n", name)
			continue
		}
		d := func(v []float64) string { return us(time.Duration(bench.Median(v))) }
		p("| %s | %.0f | %.1f%% | %s | %s | %s | %s | %s | %.3f%% |\n", name, bench.Median(thr), 100*bench.Median(hr), d(h50), d(h99), d(l50), d(l99), d(r50), 100*bench.Median(failed))
	}
	p("\nPer round (ops/s):\n\n| round |")
	for _, name := range bench.Systems {
		p(" %s |", name)
	}
	p("\n|---|---|---|---|\n")
	for i, round := range s.mixed {
		p("| %d |", i+1)
		for _, name := range bench.Systems {
			if r, ok := mixedRound(round, name); ok {
				p(" %.0f |", r.Throughput)
			} else {
				p(" n/a |")
			}
		}
		p("\n")
	}
	p("\n")
}

func (s *suite) reportProtectionMemory(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Backend protection and memory\n\n")
	p("`tiered`'s `BenchmarkBackendProtection` (3 iterations): 1,000 goroutines look up one id that only the backend\n")
	p("knows, the backend answering once all of them have read L2; then 10,000 distinct unknown ids are each looked\n")
	p("up three times by 64 goroutines within the negative TTL. Figures are backend calls per id.\n\n")
	if v := s.protection["BenchmarkBackendProtection"]; len(v) > 0 {
		p("| cold id, 1,000 concurrent lookups | unknown ids, 3 lookups each |\n|---|---|\n| %g | %g |\n\n", v[0]["cold-calls/id"], v[0]["unknown-calls/id"])
	}
	p("Memory: `localcache`'s `BenchmarkHeapPerEntry` (live heap growth per active entry of 10,000, strings\n")
	p("freshly allocated as a decoder would, the user index included) and `tiered`'s `BenchmarkRedisMemory`\n")
	p("(100,000 sessions loaded into an empty redis-server: `used_memory` growth per session, hashes, user\n")
	p("indexes and keyspace overhead included; and the mean `MEMORY USAGE` of a session hash).\n\n")
	if v := s.memory.values("BenchmarkHeapPerEntry", "heap-B/entry"); len(v) > 0 {
		p("| heap per L1 entry | Redis used_memory per session | MEMORY USAGE per session hash |\n|---|---|---|\n")
		u, h := s.memory.values("BenchmarkRedisMemory", "used-B/session"), s.memory.values("BenchmarkRedisMemory", "hash-B/session")
		p("| %.0f B (median of %d) | %.0f B | %.0f B |\n\n", bench.Median(v), len(v), bench.Median(u), bench.Median(h))
	}
}

func (s *suite) reportScale(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Scale curve\n\n`bench.RunScale`: lookups only, 16 goroutines, Zipf 1.1 over the sessions of the point, on a\n")
	p("redis-server holding 1,000,000 sessions; a new `tiered.Cache` per point warms up for at least 1 s and\n")
	p("10 × L1 lookups, then is measured for 3 s. \"Redis reads/s\" are the L1 misses per second at the\n")
	p("throughput the point reached: a closed loop, so where misses are fewer the lookups are more and the\n")
	p("reads stay near what Redis and the client can do together on this machine. \"At 100k lookups/s\" scales\n")
	p("the measured miss ratio to a fixed load of 100,000 lookups per second per replica, which is what a\n")
	p("capacity plan needs (the plot's right panel).\n\n")
	p("![scale curve](bench/scale.png)\n\n")
	p("| sessions | L1 entries | L1 hit ratio | lookups/s | Redis reads/s | Redis reads/s at 100k lookups/s | failed closed |\n|---|---|---|---|---|---|---|\n")
	for _, pt := range s.scale {
		p("| %s | %s | %.2f%% | %.0f | %.0f | %.0f | %.3f%% |\n", humanInt(pt.Sessions), humanInt(pt.L1), 100*pt.HitRatio, pt.LookupsPerSec, pt.L2PerSec, pt.L2Per100k, 100*pt.Failed)
	}
	p("\n")
}
