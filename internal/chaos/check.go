package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/galaxy-game/sessioncache/session"
)

// Violation is one breach the checker found.
type Violation struct {
	// Kind is "active-after-revoked" (a replica answered active after it
	// had answered revoked), "stale-active" (an active answer to a lookup
	// that began more than the bound after a revocation of the session
	// returned) or "l2-model" (the Redis register broke its model).
	Kind   string
	Detail string
}

func (v Violation) String() string { return v.Kind + ": " + v.Detail }

// Report is the verdict on one history.
type Report struct {
	Violations []Violation
	// Lookups counts lookups by answer.
	Lookups map[Answer]int
	// FalseRevoked counts revoked answers that no revocation explains
	// (failing closed, not a violation).
	FalseRevoked int
	// MaxStale is the longest time after a revocation returned at which
	// a lookup of a covered session began and was answered active (0 if
	// none was): how close the history came to the bound.
	MaxStale time.Duration
	L2       porcupine.CheckResult
	L2Ops    int
	// Visualization is the path of porcupine's HTML rendering when the
	// L2 check failed.
	Visualization string
}

// Check checks a history: per (replica, session), no active answer to a
// lookup that began after that replica had answered revoked (after the
// backend began revoking the session); no active answer to a lookup that
// began more than bound after a revocation covering the session returned;
// and the L2 operations against the register model (porcupine, with
// l2Timeout). A failing porcupine check writes its visualization under
// visDir.
func Check(h *History, bound, l2Timeout time.Duration, visDir string) Report {
	rep := Report{Lookups: map[Answer]int{}}
	lookups := slices.Clone(h.Lookups)
	slices.SortFunc(lookups, func(a, b Lookup) int { return a.Call.Compare(b.Call) })
	for _, l := range lookups {
		rep.Lookups[l.Answer]++
	}
	at := func(t time.Time) time.Duration { return t.Sub(h.Start).Round(time.Millisecond) }

	// (a) per replica and session, the first revoked answer that a
	// revocation can explain: one that returned after the backend began
	// revoking the session. Any other revoked answer was the cache failing
	// closed on a session nobody revoked (a user-wide revocation's message
	// cannot name the sessions its user opens after it); the session may
	// be answered active later, and such answers are only counted.
	revokedFrom := map[string]time.Time{}
	for _, rv := range h.Revocations {
		for _, id := range rv.Covered {
			if f, ok := revokedFrom[id]; !ok || rv.Backend.Before(f) {
				revokedFrom[id] = rv.Backend
			}
		}
	}
	type key struct {
		replica int
		session string
	}
	firstRevoked := map[key]Lookup{}
	for _, l := range lookups {
		if l.Answer != AnswerRevoked {
			continue
		}
		if from, ok := revokedFrom[l.Session]; !ok || l.Return.Before(from) {
			rep.FalseRevoked++
			continue
		}
		k := key{l.Replica, l.Session}
		if f, ok := firstRevoked[k]; !ok || l.Return.Before(f.Return) {
			firstRevoked[k] = l
		}
	}
	// A revocation that never got written to Redis (every retry failed)
	// leaves L2 active by design ("replicas rely on their L1 TTL"): its
	// sessions are exempt from (a).
	unwritten := map[string]bool{}
	for _, rv := range h.Revocations {
		if !rv.OK {
			for _, id := range rv.Covered {
				unwritten[id] = true
			}
		}
	}
	for _, l := range lookups {
		if l.Answer != AnswerActive || unwritten[l.Session] {
			continue
		}
		if f, ok := firstRevoked[key{l.Replica, l.Session}]; ok && l.Call.After(f.Return) {
			rep.Violations = append(rep.Violations, Violation{Kind: "active-after-revoked", Detail: fmt.Sprintf(
				"replica-%d answered %s active (tier %v) at %v, after answering revoked at %v (tier %v)",
				l.Replica, session.Redact(l.Session), l.Tier, at(l.Call), at(f.Return), f.Tier)})
		}
	}

	// (b) the staleness bound after each revocation that returned.
	for _, rv := range h.Revocations {
		if !rv.OK {
			continue
		}
		for _, id := range rv.Covered {
			for _, l := range lookups {
				if l.Session != id || l.Answer != AnswerActive || !l.Call.After(rv.Return) {
					continue
				}
				stale := l.Call.Sub(rv.Return)
				rep.MaxStale = max(rep.MaxStale, stale)
				if stale > bound {
					what := "session"
					if rv.User != "" {
						what = "user " + rv.User
					}
					rep.Violations = append(rep.Violations, Violation{Kind: "stale-active", Detail: fmt.Sprintf(
						"replica-%d answered %s active (tier %v) at %v, %v after the revocation (%s, via replica-%d, called at %v, %d tries) returned at %v; bound %v%s",
						l.Replica, session.Redact(id), l.Tier, at(l.Call), stale.Round(time.Millisecond), what, rv.Replica,
						at(rv.Call), rv.Tries, at(rv.Return), bound, l2Trace(h.L2, id))})
				}
			}
		}
	}

	// (c) the L2 register.
	rep.L2Ops = len(h.L2)
	l2 := CheckL2(h.L2, l2Timeout, visDir, fmt.Sprintf("sessioncache-chaos-l2-%d", h.Seed))
	rep.L2, rep.Visualization = l2.Result, l2.Visualization
	for id := range l2.Illegal {
		rep.Violations = append(rep.Violations, Violation{Kind: "l2-model", Detail: fmt.Sprintf(
			"porcupine: session %s broke the register model (visualization: %s)%s",
			session.Redact(id), rep.Visualization, l2Trace(h.L2, id))})
	}
	if l2.Result == porcupine.Unknown {
		rep.Violations = append(rep.Violations, Violation{Kind: "l2-model", Detail: fmt.Sprintf(
			"porcupine: no verdict within %v over %d operations", l2Timeout, rep.L2Ops)})
	}
	return rep
}

// l2Trace lists the recorded L2 operations on session id, and the
// restarts, in call order.
func l2Trace(ops []L2Op, id string) string {
	var b strings.Builder
	b.WriteString("; its L2 operations:")
	for _, op := range ops {
		if op.Session != id && op.Kind != L2Flush {
			continue
		}
		fmt.Fprintf(&b, "\n      %v..%v %s", time.Duration(op.Call).Round(time.Millisecond),
			retString(op), l2Model.DescribeOperation(op, op.Out))
	}
	return b.String()
}

func retString(op L2Op) string {
	if op.Unknown {
		return "?"
	}
	return time.Duration(op.Return).Round(time.Millisecond).String()
}
