package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/galaxy-game/sessioncache/tiered"
)

// demoResult is the outcome of a run; --json prints it as is.
type demoResult struct {
	Redis      string  `json:"redis"`
	Sessions   int     `json:"sessions"`
	Users      int     `json:"users"`
	Workers    int     `json:"workers"`
	Seed       uint64  `json:"seed"`
	DurationMS float64 `json:"duration_ms"`

	Revocations []demoRevocation    `json:"revocations"`
	Replicas    []demoReplicaResult `json:"replicas"`
	Totals      demoTotals          `json:"totals"`

	// AllReached is true when every revocation reached every replica
	// within the reach timeout.
	AllReached bool `json:"all_reached"`
	// WronglyAccepted counts requests accepted although their Lookup began
	// after the session's revocation had reached that replica.
	WronglyAccepted int64 `json:"wrongly_accepted"`
	// StillActive counts lookups after the run, of every revoked session
	// on every replica, that did not answer revoked.
	StillActive int64 `json:"still_active_after_run"`
	ExitCode    int   `json:"exit_code"`
}

// demoRevocation describes one pushed revocation.
type demoRevocation struct {
	Kind     string  `json:"kind"` // "session" or "user"
	Sessions int     `json:"sessions"`
	Origin   string  `json:"origin"` // the replica that received the push
	AtMS     float64 `json:"at_ms"`  // since the start of the workload
	Reached  int     `json:"reached_replicas"`
}

// demoQuantiles summarises durations in microseconds.
type demoQuantiles struct {
	N     int64   `json:"n"`
	P50US float64 `json:"p50_us"`
	P99US float64 `json:"p99_us"`
	MaxUS float64 `json:"max_us"`
}

func demoQuant(n int64, p50, p99, maxd time.Duration) demoQuantiles {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return demoQuantiles{N: n, P50US: us(p50), P99US: us(p99), MaxUS: us(maxd)}
}

// demoReplicaResult is one replica's figures.
type demoReplicaResult struct {
	Name string `json:"name"`
	// Lookups by the tier that answered: l1, l2, backend, negative and
	// none (the lookup failed).
	Lookups int64            `json:"lookups"`
	Tiers   map[string]int64 `json:"tiers"`
	// SharePct is each tier's share of the lookups, in percent.
	SharePct        map[string]float64 `json:"share_pct"`
	Accepted        int64              `json:"accepted"`
	RejectedRevoked int64              `json:"rejected_revoked"`
	LookupErrors    int64              `json:"lookup_errors"`
	BadSignatures   int64              `json:"bad_signatures"`
	WrongRecords    int64              `json:"wrong_records"`
	// LatencyUS is the lookup latency by answering tier.
	LatencyUS map[string]demoQuantiles `json:"latency_us"`
	// FanoutPush is measured by the demo: from the push (backend revoke
	// and MarkRevoked on the origin replica) to this replica's subscriber
	// having applied the invalidation, one sample per revocation.
	FanoutPush demoQuantiles `json:"fanout_push_us"`
	// FanoutStats is tiered's own figure: from the Redis time in each
	// message (millisecond precision) to its application here, one sample
	// per message (a user revocation publishes one message, the user's,
	// whatever the number of sessions).
	FanoutStats        demoQuantiles `json:"fanout_stats_us"`
	RevocationsReached int           `json:"revocations_reached"`
	// AcceptedInWindow counts requests accepted after the push began but
	// before the revocation reached this replica: the fan-out window.
	AcceptedInWindow int64 `json:"accepted_in_window"`
	WronglyAccepted  int64 `json:"wrongly_accepted"`
	// Cache is a selection of tiered.Stats.
	Cache demoCacheStats `json:"cache"`
}

// demoCacheStats are the tiered.Stats counters worth a look after a run.
type demoCacheStats struct {
	BackendCalls         int64 `json:"backend_calls"`
	L2Errors             int64 `json:"l2_errors"`
	RevocationsPublished int64 `json:"revocations_published"`
	RevokeFailures       int64 `json:"revoke_failures"`
	InvalidationsApplied int64 `json:"invalidations_applied"`
	ChannelLost          int64 `json:"channel_lost"`
	Resyncs              int64 `json:"resyncs"`
}

// demoTotals sums the replicas.
type demoTotals struct {
	Lookups          int64              `json:"lookups"`
	RequestsPerSec   float64            `json:"requests_per_sec"`
	SharePct         map[string]float64 `json:"share_pct"`
	Accepted         int64              `json:"accepted"`
	RejectedRevoked  int64              `json:"rejected_revoked"`
	LookupErrors     int64              `json:"lookup_errors"`
	BadSignatures    int64              `json:"bad_signatures"`
	WrongRecords     int64              `json:"wrong_records"`
	AcceptedInWindow int64              `json:"accepted_in_window"`
	WronglyAccepted  int64              `json:"wrongly_accepted"`
}

var demoTierNames = []tiered.Tier{tiered.TierL1, tiered.TierL2, tiered.TierBackend, tiered.TierNegative, tiered.TierNone}

// result merges the workers' figures and judges the run.
func (d *demoRun) result(elapsed time.Duration, stillActive int64) *demoResult {
	env := d.env
	res := &demoResult{
		Redis:       env.where,
		Sessions:    len(env.sessions),
		Users:       env.users,
		Workers:     len(d.workers),
		Seed:        d.cfg.seed,
		DurationMS:  float64(elapsed) / float64(time.Millisecond),
		AllReached:  true,
		StillActive: stillActive,
	}
	// Wrongly accepted, and accepted in the fan-out window, per replica.
	wrong := make([]int64, len(env.replicas))
	window := make([]int64, len(env.replicas))
	for _, w := range d.workers {
		for _, a := range w.accepts {
			reached := d.watch[a.session].reachedNS(a.replica)
			if reached != 0 && a.startNS > reached {
				wrong[a.replica]++
			} else {
				window[a.replica]++
			}
		}
	}
	// Revocations and the demo's own fan-out samples.
	pushSamples := make([][]time.Duration, len(env.replicas))
	reachedBy := make([]int, len(env.replicas))
	for _, t := range d.targets {
		rv := demoRevocation{Kind: "session", Sessions: len(t.ids), Origin: env.replicas[t.origin].name}
		if t.user != "" {
			rv.Kind = "user"
		}
		push := t.pushNS.Load()
		if push == 0 {
			res.AllReached = false // never pushed: the run was interrupted
			res.Revocations = append(res.Revocations, rv)
			continue
		}
		rv.AtMS = float64(push) / float64(time.Millisecond)
		for r := range env.replicas {
			if a := t.appliedNS[r].Load(); a != 0 {
				rv.Reached++
				reachedBy[r]++
				pushSamples[r] = append(pushSamples[r], time.Duration(a-push))
			}
		}
		if rv.Reached != len(env.replicas) {
			res.AllReached = false
		}
		res.Revocations = append(res.Revocations, rv)
	}

	var all demoCounts
	for ri, r := range env.replicas {
		var c demoCounts
		for _, w := range d.workers {
			c.merge(&w.counts[ri])
		}
		all.merge(&c)
		var st tiered.Stats
		if r.cache != nil {
			st = r.cache.Stats()
		}
		rr := demoReplicaResult{
			Name:               r.name,
			Lookups:            c.lookups,
			Tiers:              map[string]int64{},
			SharePct:           demoShares(&c),
			Accepted:           c.accepted,
			RejectedRevoked:    c.rejected,
			LookupErrors:       c.lookupErrors,
			BadSignatures:      c.badSignatures,
			WrongRecords:       c.wrongRecord,
			LatencyUS:          map[string]demoQuantiles{},
			FanoutPush:         demoSampleQuantiles(pushSamples[ri]),
			FanoutStats:        demoQuant(st.FanoutCount, st.FanoutP50, st.FanoutP99, st.FanoutMax),
			RevocationsReached: reachedBy[ri],
			AcceptedInWindow:   window[ri],
			WronglyAccepted:    wrong[ri],
			Cache: demoCacheStats{
				BackendCalls:         st.BackendCalls,
				L2Errors:             st.L2Errors,
				RevocationsPublished: st.RevocationsPublished,
				RevokeFailures:       st.RevokeFailures,
				InvalidationsApplied: st.InvalidationsApplied,
				ChannelLost:          st.ChannelLost,
				Resyncs:              st.Resyncs,
			},
		}
		for _, t := range demoTierNames {
			rr.Tiers[t.String()] = c.tiers[t]
			if h := &c.latency[t]; h.n > 0 && t != tiered.TierNone {
				rr.LatencyUS[t.String()] = demoQuant(int64(h.n), h.quantile(0.50), h.quantile(0.99), time.Duration(h.max))
			}
		}
		res.Replicas = append(res.Replicas, rr)
		res.WronglyAccepted += wrong[ri]
		res.Totals.AcceptedInWindow += window[ri]
	}
	res.Totals.Lookups = all.lookups
	res.Totals.RequestsPerSec = float64(all.lookups) / elapsed.Seconds()
	res.Totals.SharePct = demoShares(&all)
	res.Totals.Accepted = all.accepted
	res.Totals.RejectedRevoked = all.rejected
	res.Totals.LookupErrors = all.lookupErrors
	res.Totals.BadSignatures = all.badSignatures
	res.Totals.WrongRecords = all.wrongRecord
	res.Totals.WronglyAccepted = res.WronglyAccepted

	switch {
	case res.WronglyAccepted > 0 || res.StillActive > 0 || all.wrongRecord > 0:
		res.ExitCode = exitAccepted
	case !res.AllReached:
		res.ExitCode = exitFailure
	default:
		res.ExitCode = exitOK
	}
	return res
}

func demoShares(c *demoCounts) map[string]float64 {
	m := map[string]float64{}
	for _, t := range demoTierNames {
		if c.lookups > 0 {
			m[t.String()] = 100 * float64(c.tiers[t]) / float64(c.lookups)
		}
	}
	return m
}

// demoSampleQuantiles summarises a few samples exactly (nearest rank).
func demoSampleQuantiles(s []time.Duration) demoQuantiles {
	if len(s) == 0 {
		return demoQuantiles{}
	}
	s = slices.Clone(s)
	slices.Sort(s)
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return demoQuant(int64(len(s)), rank(0.50), rank(0.99), s[len(s)-1])
}

func (r *demoResult) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeTable prints the result for a person, within 80 columns.
func (r *demoResult) writeTable(w io.Writer) {
	singles, user := 0, demoRevocation{}
	for _, rv := range r.Revocations {
		if rv.Kind == "user" {
			user = rv
		} else {
			singles++
		}
	}
	fmt.Fprintf(w, "sessionctl demo: %d replicas, %s sessions of %s users, %s\n",
		len(r.Replicas), demoComma(int64(r.Sessions)), demoComma(int64(r.Users)),
		demoFmtDur(time.Duration(r.DurationMS*float64(time.Millisecond))))
	fmt.Fprintf(w, "redis: %s\n", r.Redis)
	fmt.Fprintf(w, "%s signed requests (%s/s), Zipf s=%.1f, %d workers\n",
		demoComma(r.Totals.Lookups), demoComma(int64(r.Totals.RequestsPerSec)), demoZipfS, r.Workers)
	fmt.Fprintf(w, "revoked: %d single sessions and 1 user (%d sessions), each pushed to one replica\n\n",
		singles, user.Sessions)

	fmt.Fprintf(w, "%-14s %9s %6s %6s %6s %9s %6s %6s %7s\n", "", "", "", "", "", "rejected", "lookup", "bad", "wrongly")
	fmt.Fprintf(w, "%-14s %9s %6s %6s %6s %9s %6s %6s %7s\n", "replica", "lookups", "L1", "L2", "backnd", "revoked", "errors", "sig", "accept")
	for _, rr := range r.Replicas {
		fmt.Fprintf(w, "%-14s %9s %6s %6s %6s %9s %6d %6d %7d\n", rr.Name, demoComma(rr.Lookups),
			demoPct(rr.SharePct["l1"]), demoPct(rr.SharePct["l2"]), demoPct(rr.SharePct["backend"]),
			demoComma(rr.RejectedRevoked), rr.LookupErrors, rr.BadSignatures, rr.WronglyAccepted)
	}
	t := r.Totals
	fmt.Fprintf(w, "%-14s %9s %6s %6s %6s %9s %6d %6d %7d\n\n", "total", demoComma(t.Lookups),
		demoPct(t.SharePct["l1"]), demoPct(t.SharePct["l2"]), demoPct(t.SharePct["backend"]),
		demoComma(t.RejectedRevoked), t.LookupErrors, t.BadSignatures, t.WronglyAccepted)

	fmt.Fprintf(w, "%-14s %8s %8s %8s %8s %8s %8s\n", "lookup latency", "L1 p50", "L1 p99", "L2 p50", "L2 p99", "back p50", "back p99")
	for _, rr := range r.Replicas {
		l1, l2, be := rr.LatencyUS["l1"], rr.LatencyUS["l2"], rr.LatencyUS["backend"]
		fmt.Fprintf(w, "%-14s %8s %8s %8s %8s %8s %8s\n", rr.Name,
			demoFmtUS(l1.N, l1.P50US), demoFmtUS(l1.N, l1.P99US), demoFmtUS(l2.N, l2.P50US),
			demoFmtUS(l2.N, l2.P99US), demoFmtUS(be.N, be.P50US), demoFmtUS(be.N, be.P99US))
	}

	fmt.Fprintf(w, "\n%-14s %-31s %s\n", "fan-out", "  push -> applied here (demo)", "  publish -> applied (Stats)")
	fmt.Fprintf(w, "%-14s %4s %8s %8s %8s  %4s %8s %8s %8s\n", "replica", "n", "p50", "p99", "max", "n", "p50", "p99", "max")
	for _, rr := range r.Replicas {
		p, s := rr.FanoutPush, rr.FanoutStats
		fmt.Fprintf(w, "%-14s %4d %8s %8s %8s  %4d %8s %8s %8s\n", rr.Name,
			p.N, demoFmtUS(p.N, p.P50US), demoFmtUS(p.N, p.P99US), demoFmtUS(p.N, p.MaxUS),
			s.N, demoFmtUS(s.N, s.P50US), demoFmtUS(s.N, s.P99US), demoFmtUS(s.N, s.MaxUS))
	}
	fmt.Fprint(w, `
push -> applied: from the backend's revoke and the MarkRevoked call on one
  replica to this replica's subscriber applying the message (polled).
publish -> applied: tiered.Stats, from the Redis time in each message (ms
  precision) to its application; a user revocation sends one message.
wrongly accepted: accepted although the Lookup began after the revocation
  reached that replica (message applied, MarkRevoked returned there, or an
  earlier lookup there answered revoked).
`)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "accepted in the fan-out window (after the push, before it reached the\n"+
		"  replica): %s request(s)\n", demoComma(t.AcceptedInWindow))
	notes := r.notes()
	for _, n := range notes {
		fmt.Fprintln(w, "note: "+n)
	}
	if r.ExitCode == exitOK {
		fmt.Fprintf(w, "OK: every revocation reached all %d replicas; 0 requests wrongly accepted\n", len(r.Replicas))
	} else {
		fmt.Fprintf(w, "FAILED (exit status %d): %d wrongly accepted, %d still active after the run\n",
			r.ExitCode, r.WronglyAccepted, r.StillActive)
	}
}

// notes lists what deserves a look in a run: anything not reached, any
// channel trouble, any failure to write a revocation.
func (r *demoResult) notes() []string {
	var notes []string
	for i, rv := range r.Revocations {
		if rv.Reached != len(r.Replicas) {
			notes = append(notes, fmt.Sprintf("revocation %d (%s, pushed to %s) reached %d of %d replicas",
				i+1, rv.Kind, rv.Origin, rv.Reached, len(r.Replicas)))
		}
	}
	for _, rr := range r.Replicas {
		c := rr.Cache
		if c.ChannelLost > 0 || c.RevokeFailures > 0 || c.L2Errors > 0 {
			notes = append(notes, fmt.Sprintf("%s: channel lost %d, unwritten revocations %d, Redis errors %d",
				rr.Name, c.ChannelLost, c.RevokeFailures, c.L2Errors))
		}
		if rr.WrongRecords > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d lookups answered another session's record", rr.Name, rr.WrongRecords))
		}
	}
	if r.StillActive > 0 {
		notes = append(notes, fmt.Sprintf("%d lookups of revoked sessions after the run answered active", r.StillActive))
	}
	return notes
}

// demoComma formats n with thousands separators.
func demoComma(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func demoPct(p float64) string {
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// demoFmtUS formats microseconds compactly, or "-" when there are no
// samples.
func demoFmtUS(n int64, us float64) string {
	if n == 0 {
		return "-"
	}
	return demoFmtDur(time.Duration(us * float64(time.Microsecond)))
}

// demoFmtDur formats a duration in at most 7 columns.
func demoFmtDur(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	switch {
	case d < 10*time.Microsecond:
		return fmt.Sprintf("%.1fµs", us)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", us)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", us/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", us/1e3)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
