package main

import (
	"context"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/galaxy-game/sessioncache/internal/signing"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// The request every worker sends, signed with the session's key.
const (
	demoMethod = "POST"
	demoPath   = "/v1/ping"
)

// demoZipfS is the Zipf exponent of the session popularity.
const demoZipfS = 1.1

// demoTiers is the number of tiered.Tier values (none, l1, negative, l2,
// backend).
const demoTiers = int(tiered.TierBackend) + 1

// demoTarget is one revocation: a single session or all of a user's.
type demoTarget struct {
	user   string // "" for a single session
	ids    []int  // indexes into demoEnv.sessions
	origin int    // the replica that received the push
	at     float64

	// pushNS is when the push began (before the backend revoked), in
	// nanoseconds since the run's start; 0 until then. Workers read it.
	pushNS atomic.Int64
	// appliedNS[r] is when replica r's subscriber was first seen to have
	// applied the invalidation; 0 if it never was.
	appliedNS []atomic.Int64
	// markedNS is when MarkRevoked (or MarkAllRevokedForUser) returned on
	// the origin: its L1 was flipped by then. Read after the run only.
	markedNS int64
}

// demoWatch follows one revoked session on every replica.
type demoWatch struct {
	target *demoTarget
	// firstRevokedNS[r] is the end of the earliest lookup on replica r
	// that answered "revoked"; 0 if none did.
	firstRevokedNS []atomic.Int64
}

// reachedNS returns when the revocation had certainly reached replica r:
// the earliest of its subscriber applying it, the origin's MarkRevoked
// returning, and a lookup there answering revoked; 0 if none happened.
func (w *demoWatch) reachedNS(r int) int64 {
	var best int64
	consider := func(v int64) {
		if v != 0 && (best == 0 || v < best) {
			best = v
		}
	}
	consider(w.target.appliedNS[r].Load())
	if r == w.target.origin {
		consider(w.target.markedNS)
	}
	consider(w.firstRevokedNS[r].Load())
	return best
}

// demoAccept is a request accepted after its session's push began.
type demoAccept struct {
	replica int
	session int
	startNS int64
}

// demoHistBuckets covers durations up to 2^40 ns with 1/16 precision.
const demoHistBuckets = 37 * 16

// demoHist is a log-linear latency histogram (6% wide buckets) owned by one
// goroutine.
type demoHist struct {
	counts [demoHistBuckets]uint64
	n      uint64
	max    int64
}

func demoHistIndex(v int64) int {
	if v < 32 {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 5 // v>>e is in [16, 32)
	return min(e*16+int(v>>e), demoHistBuckets-1)
}

// demoHistUpper returns the largest value of bucket i.
func demoHistUpper(i int) int64 {
	if i < 32 {
		return int64(i)
	}
	e := i/16 - 1
	m := int64(i%16 + 16)
	return (m+1)<<e - 1
}

func (h *demoHist) add(d int64) {
	h.counts[demoHistIndex(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *demoHist) merge(o *demoHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the upper bound of the bucket holding quantile q,
// capped at the maximum seen.
func (h *demoHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(demoHistUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}

// demoCounts are one worker's figures for one replica.
type demoCounts struct {
	lookups, accepted, rejected, lookupErrors, badSignatures, wrongRecord int64
	tiers                                                                 [demoTiers]int64
	latency                                                               [demoTiers]demoHist
}

func (c *demoCounts) merge(o *demoCounts) {
	c.lookups += o.lookups
	c.accepted += o.accepted
	c.rejected += o.rejected
	c.lookupErrors += o.lookupErrors
	c.badSignatures += o.badSignatures
	c.wrongRecord += o.wrongRecord
	for i := range c.tiers {
		c.tiers[i] += o.tiers[i]
		c.latency[i].merge(&o.latency[i])
	}
}

// demoWorker is one goroutine of the workload and what it measured.
type demoWorker struct {
	counts  []demoCounts // per replica
	accepts []demoAccept
	// done counts requests, for the progress line; written by the worker
	// only.
	done atomic.Int64
	_    [56]byte // keep workers' counters off each other's cache line
}

// demoRun is the state shared by the workload's goroutines.
type demoRun struct {
	env     *demoEnv
	cfg     demoConfig
	start   time.Time
	stop    atomic.Bool
	perm    []int        // Zipf rank -> session index
	watch   []*demoWatch // by session index; nil for sessions never revoked
	targets []*demoTarget
	workers []*demoWorker
	// phase is shown on the progress line.
	phase atomic.Pointer[string]
}

func (d *demoRun) sinceNS() int64 {
	return max(int64(time.Since(d.start)), 1)
}

// runDemoWorkload runs the workload and the revocations for cfg.duration
// (or until ctx ends) and returns the result.
func runDemoWorkload(ctx context.Context, env *demoEnv, cfg demoConfig, stderr io.Writer) *demoResult {
	d := &demoRun{env: env, cfg: cfg}
	d.planRevocations()
	d.workers = make([]*demoWorker, cfg.workers)
	for i := range d.workers {
		d.workers[i] = &demoWorker{counts: make([]demoCounts, len(env.replicas))}
	}
	phase := "warming up"
	d.phase.Store(&phase)

	var wg sync.WaitGroup
	d.start = time.Now()
	for i, w := range d.workers {
		wg.Go(func() { d.work(ctx, i, w) })
	}
	stopProgress := func() {}
	if cfg.progress {
		stopProgress = d.showProgress(stderr)
	}
	d.revokeOnSchedule(ctx)
	d.sleepUntil(ctx, cfg.duration)
	d.stop.Store(true)
	wg.Wait()
	elapsed := time.Since(d.start)
	stopProgress()
	stillActive := d.checkStillRevoked(ctx)
	return d.result(elapsed, stillActive)
}

// planRevocations picks, from the seed, the Zipf ranking of the sessions,
// the single sessions to revoke (among the most popular, so that they are
// asked for afterwards) and the user whose sessions are revoked.
func (d *demoRun) planRevocations() {
	n := len(d.env.sessions)
	replicas := len(d.env.replicas)
	rng := rand.New(rand.NewPCG(d.cfg.seed, 0x5e551011))
	d.perm = rng.Perm(n)
	d.watch = make([]*demoWatch, n)

	singles := min(demoSingles, n/5)
	pool := d.perm[:3*singles]
	chosen := make([]int, len(pool))
	copy(chosen, pool)
	rng.Shuffle(len(chosen), func(i, j int) { chosen[i], chosen[j] = chosen[j], chosen[i] })
	revokedUsers := map[string]bool{}
	newTarget := func(user string, ids []int, at float64) {
		t := &demoTarget{user: user, ids: ids, origin: len(d.targets) % replicas, at: at,
			appliedNS: make([]atomic.Int64, replicas)}
		d.targets = append(d.targets, t)
		for _, si := range ids {
			d.watch[si] = &demoWatch{target: t, firstRevokedNS: make([]atomic.Int64, replicas)}
		}
	}
	for _, si := range chosen[:singles] {
		revokedUsers[d.env.sessions[si].user] = true
		newTarget("", []int{si}, 0.4)
	}
	for _, si := range d.perm {
		user := d.env.sessions[si].user
		if revokedUsers[user] {
			continue
		}
		var ids []int
		first := si / demoSessionsPerUser * demoSessionsPerUser
		for j := first; j < min(first+demoSessionsPerUser, n); j++ {
			ids = append(ids, j)
		}
		newTarget(user, ids, 0.6)
		break
	}
}

// work sends signed requests until the run stops.
func (d *demoRun) work(ctx context.Context, wi int, w *demoWorker) {
	rng := rand.New(rand.NewPCG(d.cfg.seed, uint64(wi)+1))
	zipf := rand.NewZipf(rng, demoZipfS, 1, uint64(len(d.env.sessions)-1))
	replicas := d.env.replicas
	body := make([]byte, 0, 64)
	var seq uint64
	for !d.stop.Load() && ctx.Err() == nil {
		si := d.perm[zipf.Uint64()]
		s := &d.env.sessions[si]
		ri := rng.IntN(len(replicas))
		r := replicas[ri]
		c := &w.counts[ri]
		seq++

		// The client signs; this is not part of the measured lookup.
		now := time.Now()
		body = fmt.Appendf(body[:0], `{"op":"ping","worker":%d,"n":%d}`, wi, seq)
		ts := signing.FormatTimestamp(now)
		sig := signing.Sign(s.priv, demoMethod, demoPath, now, body)

		// The gateway authenticates.
		start := d.sinceNS()
		rec, tier, err := r.cache.LookupTier(ctx, s.id)
		end := d.sinceNS()
		c.lookups++
		c.tiers[tier]++
		c.latency[tier].add(end - start)
		w.done.Add(1)
		switch {
		case err != nil:
			c.lookupErrors++
			continue
		case !demoCheckRecord(rec, s.id):
			c.wrongRecord++
			continue
		case rec.Status != session.StatusActive:
			c.rejected++
			if wt := d.watch[si]; wt != nil {
				demoStoreMin(&wt.firstRevokedNS[ri], end)
			}
			continue
		}
		if err := r.verifier.Verify(rec.ClientPublicKey, demoMethod, demoPath, ts, sig, body, time.Now()); err != nil {
			c.badSignatures++
			continue
		}
		c.accepted++
		if wt := d.watch[si]; wt != nil {
			if p := wt.target.pushNS.Load(); p != 0 && start >= p {
				w.accepts = append(w.accepts, demoAccept{replica: ri, session: si, startNS: start})
			}
		}
	}
}

// demoStoreMin lowers a to v if a is 0 or larger.
func demoStoreMin(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if old != 0 && old <= v {
			return
		}
		if a.CompareAndSwap(old, v) {
			return
		}
	}
}

// sleepUntil waits until the run has lasted at, or ctx ends.
func (d *demoRun) sleepUntil(ctx context.Context, at time.Duration) {
	wait := time.Until(d.start.Add(at))
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// revokeOnSchedule pushes each planned revocation at its time, one after
// the other, each once the previous one has reached every replica.
func (d *demoRun) revokeOnSchedule(ctx context.Context) {
	for i, t := range d.targets {
		d.sleepUntil(ctx, time.Duration(t.at*float64(d.cfg.duration)))
		if ctx.Err() != nil {
			return
		}
		phase := fmt.Sprintf("revoking %d/%d", i+1, len(d.targets))
		d.phase.Store(&phase)
		d.revoke(ctx, t)
	}
	phase := fmt.Sprintf("%d revocations pushed", len(d.targets))
	d.phase.Store(&phase)
}

// revoke pushes one revocation as a backend would (revoke in the backend,
// then tell one replica) and waits until every replica's subscriber has
// applied the invalidation, recording when each did. A replica's applied
// count going past its value before the push is the signal: revocations
// are pushed one at a time, so the next message a replica applies is this
// one's (for a user, the user message, its only one).
func (d *demoRun) revoke(ctx context.Context, t *demoTarget) {
	replicas := d.env.replicas
	base := make([]int64, len(replicas))
	for i, r := range replicas {
		base[i] = r.cache.Stats().InvalidationsApplied
	}
	origin := replicas[t.origin].cache
	t.pushNS.Store(d.sinceNS())
	if t.user != "" {
		d.env.backend.RevokeUser(t.user)
		origin.MarkAllRevokedForUser(t.user)
	} else {
		d.env.backend.Revoke(d.env.sessions[t.ids[0]].id)
		origin.MarkRevoked(d.env.sessions[t.ids[0]].id)
	}
	t.markedNS = d.sinceNS()

	// Spin (yielding) for the first 50 ms, when the message is expected,
	// then poll every millisecond until demoReachTimeout.
	begin := time.Now()
	for {
		pending := 0
		for i, r := range replicas {
			if t.appliedNS[i].Load() != 0 {
				continue
			}
			if r.cache.Stats().InvalidationsApplied > base[i] {
				t.appliedNS[i].Store(d.sinceNS())
				continue
			}
			pending++
		}
		waited := time.Since(begin)
		if pending == 0 || waited > demoReachTimeout || ctx.Err() != nil {
			return
		}
		if waited < 50*time.Millisecond {
			runtime.Gosched()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

// showProgress starts the progress line and returns the function that
// stops it and clears the line.
func (d *demoRun) showProgress(w io.Writer) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	width := 0
	wg.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			var n int64
			for _, wk := range d.workers {
				n += wk.done.Load()
			}
			el := time.Since(d.start)
			line := fmt.Sprintf("\r  %4.1fs / %v  %s requests  %s/s  %s",
				el.Seconds(), d.cfg.duration, demoComma(n), demoComma(int64(float64(n)/el.Seconds())), *d.phase.Load())
			pad := max(width-len(line), 0)
			width = len(line)
			fmt.Fprint(w, line+strings.Repeat(" ", pad))
		}
	})
	return func() {
		close(done)
		wg.Wait()
		if width > 0 {
			fmt.Fprint(w, "\r"+strings.Repeat(" ", width)+"\r")
		}
	}
}

// checkStillRevoked looks every revoked session up on every replica after
// the workload and counts the answers that are not "revoked".
func (d *demoRun) checkStillRevoked(ctx context.Context) int64 {
	var n int64
	for si, wt := range d.watch {
		if wt == nil {
			continue
		}
		for _, r := range d.env.replicas {
			rec, err := r.cache.Lookup(ctx, d.env.sessions[si].id)
			if err == nil && rec.Status == session.StatusActive {
				n++
			}
		}
	}
	return n
}
