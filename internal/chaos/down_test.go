package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// TestRedisDown stops Redis (SIGSTOP: connections stay open and nothing is
// answered), then kills it (SIGKILL: connections refused), then also fails
// the backend. Throughout, a replica is asked for a session it holds
// active in L1, one it holds revoked, and sessions it has never seen:
//
//   - revoked-in-L1 is denied in every phase;
//   - the L1 active is served from L1 only by lookups that began within
//     the staleness bound of the stop (the heartbeat notices the loss,
//     then StaleBound passes); later ones go to Redis and then the backend;
//   - misses go to the backend;
//   - with the backend down too, no lookup that began after the bound is
//     answered active: 0 allows.
func TestRedisDown(t *testing.T) {
	env := NewEnv(t, Config{Replicas: 2})
	cfg := env.Config
	b := env.Replicas[1]
	recs := ids(env.NewSessions(12, 3))
	active, revoked, fresh := recs[0], recs[1], recs[2:]
	warm(t, b, []string{active, revoked})
	// Revoked through b itself, so that b's L1 holds it revoked at once.
	revokeVia(t, env, b, revoked)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, _ := b.Cache.Lookup(ctx, revoked); got.Status != session.StatusRevoked {
		t.Fatalf("setup: the revoked session is %v on the replica", got.Status)
	}
	bound := cfg.Bound() + margin

	p := startProbe(t, b, 1, []string{active, revoked}, 5*time.Millisecond)
	stopped := time.Now()
	env.Redis.Pause()
	lost, ok := b.Events.Wait(ctx, "lost", stopped)
	if !ok {
		t.Fatal("the stopped Redis was not noticed within 5s")
	}
	t.Logf("SIGSTOP noticed after %v (%s)", lost.At.Sub(stopped).Round(time.Millisecond), lost.Reason)
	waitUntil(stopped, bound+200*time.Millisecond)
	stoppedMisses := lookupEach(b, fresh[:5])

	killed := time.Now()
	env.Redis.Kill()
	waitUntil(killed, 300*time.Millisecond)
	killedMisses := lookupEach(b, fresh[5:8])

	bothDown := time.Now()
	env.Backend.SetFault(backendtest.Fault{Status: 503})
	waitUntil(bothDown, 300*time.Millisecond)
	bothMisses := lookupEach(b, fresh[8:])
	lookups := p.results()

	lastL1Active := time.Duration(-1)
	allows := 0
	for _, l := range lookups {
		switch {
		case l.Session == revoked && l.Answer != AnswerRevoked:
			t.Errorf("revoked-in-L1 session answered %v (tier %v) at %v after the stop, want revoked",
				l.Answer, l.Tier, l.Call.Sub(stopped))
		case l.Session == active && l.Answer == AnswerActive && l.Tier == tiered.TierL1 && l.Call.After(stopped):
			lastL1Active = max(lastL1Active, l.Call.Sub(stopped))
		}
		if l.Answer == AnswerActive && !l.Call.Before(bothDown) {
			allows++
		}
	}
	t.Logf("L1 active served until %v after SIGSTOP (bound %v); %d probe lookups", lastL1Active.Round(time.Millisecond), bound, len(lookups))
	if lastL1Active > bound {
		t.Errorf("L1 active served %v after Redis stopped, want at most the bound %v", lastL1Active, bound)
	}
	for _, phase := range []struct {
		name   string
		misses []Lookup
		want   Answer
	}{
		{"Redis stopped", stoppedMisses, AnswerActive},
		{"Redis killed", killedMisses, AnswerActive},
		{"Redis and backend down", bothMisses, AnswerError},
	} {
		for _, l := range phase.misses {
			wantTier := tiered.TierBackend
			if phase.want == AnswerError {
				wantTier = tiered.TierNone
			}
			if l.Answer != phase.want || l.Tier != wantTier {
				t.Errorf("%s: miss of %s = %v from %v (%v), want %v from %v",
					phase.name, session.Redact(l.Session), l.Answer, l.Tier, l.Err, phase.want, wantTier)
			}
		}
	}
	for _, l := range bothMisses {
		if l.Answer == AnswerActive {
			allows++
		}
	}
	t.Logf("both down: %d allows (probe and misses)", allows)
	if allows != 0 {
		t.Errorf("Redis and backend down: %d lookups answered active, want 0", allows)
	}
}

// lookupEach looks up every id on r in turn.
func lookupEach(r *Replica, list []string) []Lookup {
	out := make([]Lookup, 0, len(list))
	for _, id := range list {
		out = append(out, lookup(r, 1, id))
	}
	return out
}

// TestBackendDownOrHung fails the backend under a replica whose backend
// calls go through a backend.Guard (breaker after 5 consecutive failures,
// open for 1 s; client timeout 200 ms):
//
//   - hung: each miss is denied within the client timeout + 50 ms (plus CI
//     slack), and after 5 the breaker opens: later misses are denied at
//     once with no backend call while it is open;
//   - 503: misses are denied at once, and the breaker opens the same way;
//   - 404s (unknown ids) never trip it;
//   - once the backend is back, the breaker's probe closes it.
func TestBackendDownOrHung(t *testing.T) {
	const timeout = 200 * time.Millisecond
	// CI slack on top of timeout + 50 ms: the race detector on two
	// shared cores.
	const slack = 200 * time.Millisecond
	for _, fault := range []struct {
		name  string
		fault backendtest.Fault
	}{
		{"hung", backendtest.Fault{Hang: true}},
		{"503", backendtest.Fault{Status: 503}},
	} {
		t.Run(fault.name, func(t *testing.T) {
			env := NewEnv(t, Config{Replicas: 1, BackendTimeout: timeout,
				Guard: &backend.GuardOptions{Rate: 1000, Failures: 5, OpenTimeout: time.Second}})
			r := env.Replicas[0]
			recs := ids(env.NewSessions(60, 6))
			env.Backend.SetFault(fault.fault)

			var took []time.Duration
			for i, id := range recs[:5] {
				l := lookup(r, 0, id)
				took = append(took, l.Return.Sub(l.Call))
				if l.Answer != AnswerError {
					t.Fatalf("miss %d with the backend %s = %v, want denied", i, fault.name, l.Answer)
				}
			}
			slices.Sort(took)
			t.Logf("backend %s: 5 misses denied in %v to %v (client timeout %v)", fault.name,
				took[0].Round(time.Millisecond), took[4].Round(time.Millisecond), timeout)
			if limit := timeout + 50*time.Millisecond + slack; took[4] > limit {
				t.Errorf("a miss was denied after %v, want within %v (timeout + 50 ms + %v CI slack)", took[4], limit, slack)
			}
			if s := r.Guard.BreakerState(); s != "open" {
				t.Fatalf("breaker after 5 failures = %q, want open", s)
			}

			calls := env.Backend.Calls()
			opened := time.Now()
			var openTook time.Duration
			for i, id := range recs[5:55] {
				l := lookup(r, 0, id)
				openTook = max(openTook, l.Return.Sub(l.Call))
				if l.Answer != AnswerError || !errors.Is(l.Err, backend.ErrBreakerOpen) {
					t.Fatalf("miss %d while the breaker is open = %v (%v), want denied with ErrBreakerOpen", i, l.Answer, l.Err)
				}
			}
			if time.Since(opened) < time.Second {
				if n := env.Backend.Calls() - calls; n != 0 {
					t.Errorf("backend calls while the breaker was open = %d, want 0", n)
				}
			}
			t.Logf("breaker open: 50 misses denied, slowest in %v, with %d backend calls", openTook.Round(time.Microsecond), env.Backend.Calls()-calls)

			// Back up: after OpenTimeout one probe goes through and
			// closes the breaker.
			env.Backend.SetFault(backendtest.Fault{})
			waitUntil(opened, time.Second+50*time.Millisecond)
			if l := lookup(r, 0, recs[55]); l.Answer != AnswerActive {
				t.Fatalf("first miss after the backend recovered = %v (%v), want active", l.Answer, l.Err)
			}
			if s := r.Guard.BreakerState(); s != "closed" {
				t.Errorf("breaker after a successful probe = %q, want closed", s)
			}
		})
	}

	t.Run("404 never trips", func(t *testing.T) {
		env := NewEnv(t, Config{Replicas: 1, BackendTimeout: timeout,
			Guard: &backend.GuardOptions{Rate: 1000, Failures: 5, OpenTimeout: time.Second}})
		r := env.Replicas[0]
		for i := range 200 {
			id := fmt.Sprintf("unknown-%d", i)
			if l := lookup(r, 0, id); l.Answer != AnswerNotFound {
				t.Fatalf("Lookup(%q) = %v (%v), want not found", id, l.Answer, l.Err)
			}
		}
		st := r.Guard.Stats()
		t.Logf("200 unknown ids: breaker %s, guard %+v", r.Guard.BreakerState(), st)
		if r.Guard.BreakerState() != "closed" || st.Failures != 0 || st.Calls != 200 {
			t.Errorf("after 200 unknown ids: breaker %s, %+v; want closed, 200 calls, 0 failures", r.Guard.BreakerState(), st)
		}
	})
}
