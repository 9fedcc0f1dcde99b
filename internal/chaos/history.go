package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// FaultKind names a fault a history may draw.
type FaultKind int

// The faults.
const (
	// FaultKill closes one replica's subscriber connection (CLIENT KILL).
	FaultKill FaultKind = iota + 1
	// FaultBlackhole drops everything on one replica's subscriber proxy,
	// both ways, for 0.5 to 3 s, without closing the connection.
	FaultBlackhole
	// FaultLatency delays Redis' replies on one replica's data proxy by 0
	// to 50 ms until the end of the history.
	FaultLatency
	// FaultBackend makes the backend answer 503, or slowly (50 to 400 ms),
	// for 0.2 to 0.8 s.
	FaultBackend
	// FaultRestart kills redis-server and starts it again, empty.
	FaultRestart
	// FaultBackendSlowAnswer delays the backend's answers by 50 to 300 ms
	// after it has read the record, for 0.2 to 0.8 s: the answer is
	// already stale when it arrives (a slow network between backend and
	// gateway), which widens the window in which a revocation can land
	// between the read and the fill.
	FaultBackendSlowAnswer
	// FaultFillRace forces the stale-fill race on a new session: a replica
	// misses it and asks the backend; the backend reads it active, and
	// before it answers, another replica revokes the session while the
	// revocation's message is lost at the first replica (as FaultDrop).
	// The answer then arrives active, after the revocation, at a replica
	// that does not know of it: only the guarded L2 fill stands between it
	// and an active record over the tombstone. 300 ms later a session
	// outside the history is revoked, so that a next message follows the
	// lost one. Not in DefaultFaults (it loses a message): see TestTeeth
	// and TestMessageDropHistories.
	FaultFillRace
	// FaultL1Race forces the L1 stale-set race on a new session: another
	// replica fills it into Redis; the replica's Redis replies are delayed
	// by 150 ms; it misses the session in L1 and reads it active from
	// Redis, and during the delay the other replica revokes it, so the
	// revocation's message reaches the replica between its read and its
	// L1 fill: only the L1 generation check keeps it from storing active.
	// Not in DefaultFaults (its latency is above their 50 ms): see
	// TestTeeth and TestTargetedFaultHistories.
	FaultL1Race
	// FaultDrop drops one numbered message on one replica's live
	// subscriber connection (a client-side loss that only the sequence
	// gap reveals): the replica looks up a session (caching it), the
	// drop is armed, another replica revokes the session, and 300 ms later
	// a session outside the history is revoked, so that a next message
	// follows. It is not in DefaultFaults: see TestMessageDropHistories.
	FaultDrop
	// FaultHandRevoke revokes a session at the backend and then, as an
	// operator would, with a hand HSET status revoked in Redis: no
	// library call and no message; only Redis's tracking carries it.
	FaultHandRevoke
	// FaultFlush runs FLUSHDB: every record, counter and log is gone.
	FaultFlush
	// FaultDelete deletes a quarter of the sessions' hashes, as an
	// eviction storm or an operator's DEL does.
	FaultDelete
	// FaultOOM lowers maxmemory below what Redis uses, with noeviction,
	// for Length: Redis refuses every write that may grow memory
	// (revocations and fills), and runs DEL and PUBLISH.
	FaultOOM
	// FaultLossFill forces a stale fill across a data loss on a new
	// session (chaos seed 527863804): a replica misses it and asks the
	// backend, which reads it active; before the answer arrives, the
	// backend revokes it, an operator puts the revocation in Redis by hand,
	// and Redis restarts empty. The answer then fills "active" into a Redis
	// that no longer holds the revocation: only the take-back after the
	// loss (tiered's recent fills) removes it. Not in DefaultFaults (it is
	// one restart more): see TestTeeth and TestTargetedFaultHistories.
	FaultLossFill
)

var faultNames = [...]string{"", "kill", "blackhole", "latency", "backend", "restart", "slow-answer", "fill-race", "l1-race", "drop",
	"hand-revoke", "flush", "delete", "oom", "loss-fill"}

func (k FaultKind) String() string {
	if k <= 0 || int(k) >= len(faultNames) {
		return fmt.Sprintf("FaultKind(%d)", int(k))
	}
	return faultNames[k]
}

// DefaultFaults are the faults histories draw from by default.
var DefaultFaults = []FaultKind{FaultKill, FaultBlackhole, FaultLatency, FaultBackend, FaultRestart, FaultBackendSlowAnswer,
	FaultHandRevoke, FaultFlush, FaultDelete, FaultOOM}

// Fault is one fault of a history's plan.
type Fault struct {
	Kind    FaultKind
	Replica int           // kill, blackhole, latency, drop
	At      time.Duration // since the history's start
	Length  time.Duration // blackhole, backend
	Latency time.Duration // latency; backend when Status is 0
	Status  int           // backend: 503, or 0 for slow
}

func (f Fault) String() string {
	switch f.Kind {
	case FaultKill, FaultDrop, FaultFillRace, FaultL1Race:
		return fmt.Sprintf("%v(replica-%d)@%v", f.Kind, f.Replica, f.At)
	case FaultBlackhole:
		return fmt.Sprintf("blackhole(replica-%d, %v)@%v", f.Replica, f.Length, f.At)
	case FaultLatency:
		return fmt.Sprintf("latency(replica-%d, %v)@%v", f.Replica, f.Latency, f.At)
	case FaultBackend:
		if f.Status != 0 {
			return fmt.Sprintf("backend(%d, %v)@%v", f.Status, f.Length, f.At)
		}
		return fmt.Sprintf("backend(slow %v, %v)@%v", f.Latency, f.Length, f.At)
	case FaultBackendSlowAnswer:
		return fmt.Sprintf("slow-answer(%v, %v)@%v", f.Latency, f.Length, f.At)
	case FaultOOM:
		return fmt.Sprintf("oom(%v)@%v", f.Length, f.At)
	}
	return fmt.Sprintf("%v@%v", f.Kind, f.At)
}

// HistoryConfig shapes a history. Zero fields mean the defaults in
// brackets.
type HistoryConfig struct {
	Env      Config
	Clients  int           // concurrent clients [8]
	Sessions int           // sessions at the start [32]
	Users    int           // users owning them [8]
	Ops      int           // operations in all [100]
	Duration time.Duration // span of the operations without faults [1.2s]
	// Faults are the kinds drawn from [DefaultFaults]; each is drawn
	// with probability FaultRate [0.4], at least one per history.
	Faults    []FaultKind
	FaultRate float64
	// Settle is how long operations go on after the last fault ends [1s],
	// so that lookups beyond the staleness bound follow every fault.
	Settle time.Duration
	// MaxLatency bounds FaultLatency's delay [50ms].
	MaxLatency time.Duration
}

func (c *HistoryConfig) setDefaults() {
	c.Env.setDefaults()
	if c.Clients == 0 {
		c.Clients = 8
	}
	if c.Sessions == 0 {
		c.Sessions = 32
	}
	if c.Users == 0 {
		c.Users = 8
	}
	if c.Ops == 0 {
		c.Ops = 100
	}
	if c.Duration == 0 {
		c.Duration = 1200 * time.Millisecond
	}
	if c.Faults == nil {
		c.Faults = DefaultFaults
	}
	if c.FaultRate == 0 {
		c.FaultRate = 0.4
	}
	if c.Settle == 0 {
		c.Settle = time.Second
	}
	if c.MaxLatency == 0 {
		c.MaxLatency = 50 * time.Millisecond
	}
}

// Answer classifies a lookup's result.
type Answer int

// The answers.
const (
	AnswerActive Answer = iota + 1
	AnswerRevoked
	AnswerNotFound
	AnswerError // deny
)

func (a Answer) String() string {
	return [...]string{"", "active", "revoked", "not-found", "error"}[a]
}

// Lookup is one recorded lookup.
type Lookup struct {
	Replica      int
	Session      string
	Call, Return time.Time
	Answer       Answer
	Tier         tiered.Tier
	Err          error
}

// Revocation is one recorded revocation: the backend first, then the
// replica, retried until it returns nil. Return is the successful return;
// OK is false if it never succeeded.
type Revocation struct {
	Replica int
	User    string   // set for a user-wide revocation
	Covered []string // the sessions the backend revoked
	// Backend is when the backend began revoking Covered: no answer
	// that returned earlier can have come from this revocation.
	Backend      time.Time
	Call, Return time.Time
	Tries        int
	OK           bool
}

// backendRevoke revokes one session at the backend, the first step of a
// revocation by replica ri.
func backendRevoke(env *Env, ri int, id string) Revocation {
	rv := Revocation{Replica: ri, Covered: []string{id}, Backend: time.Now()}
	env.Backend.Revoke(id)
	return rv
}

// History is what one run recorded.
type History struct {
	Seed        uint64
	Config      HistoryConfig
	Plan        []Fault
	Start       time.Time
	End         time.Duration
	Lookups     []Lookup
	Revocations []Revocation
	L2          []L2Op
	Dropped     int       // messages FaultDrop dropped
	Events      [][]Event // each replica's subscriber events
}

// plan draws the faults and the history's end from rng.
func plan(rng *rand.Rand, c HistoryConfig) ([]Fault, time.Duration) {
	d := c.Duration
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	var faults []Fault
	for len(faults) == 0 {
		blackholed := map[int]bool{} // a replica's proxy takes one blackhole at a time
		for _, k := range c.Faults {
			if rng.Float64() >= c.FaultRate {
				continue
			}
			f := Fault{Kind: k, Replica: rng.IntN(c.Env.Replicas)}
			if k == FaultBlackhole {
				if len(blackholed) == c.Env.Replicas {
					continue
				}
				for blackholed[f.Replica] {
					f.Replica = (f.Replica + 1) % c.Env.Replicas
				}
				blackholed[f.Replica] = true
			}
			switch k {
			case FaultKill:
				f.At = between(d/10, 7*d/10)
			case FaultDrop:
				f.At = between(d/10, 7*d/10)
				f.Length = 300 * time.Millisecond
			case FaultFillRace, FaultL1Race, FaultLossFill:
				f.At = between(d/10, 7*d/10)
				f.Length = 300 * time.Millisecond
			case FaultBlackhole:
				f.At = between(d/10, d/2)
				f.Length = between(500*time.Millisecond, 3*time.Second)
			case FaultLatency:
				f.At = between(0, d/2)
				f.Latency = between(0, c.MaxLatency)
			case FaultBackend:
				f.At = between(d/10, 6*d/10)
				f.Length = between(200*time.Millisecond, 800*time.Millisecond)
				if rng.IntN(2) == 0 {
					f.Status = 503
				} else {
					f.Latency = between(50*time.Millisecond, 400*time.Millisecond)
				}
			case FaultRestart, FaultFlush, FaultDelete, FaultHandRevoke:
				f.At = between(2*d/10, 7*d/10)
			case FaultOOM:
				f.At = between(d/10, d/2)
				f.Length = between(300*time.Millisecond, time.Second)
			case FaultBackendSlowAnswer:
				f.At = between(0, 6*d/10)
				f.Length = between(200*time.Millisecond, 800*time.Millisecond)
				f.Latency = between(50*time.Millisecond, 300*time.Millisecond)
			}
			faults = append(faults, f)
		}
	}
	end := d
	for _, f := range faults {
		end = max(end, f.At+f.Length+c.Settle)
	}
	return faults, end
}

// pool is the set of sessions a history works on; new sessions join it.
type pool struct {
	mu  sync.Mutex
	ids []string
}

func (p *pool) pick(rng *rand.Rand) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids[rng.IntN(len(p.ids))]
}

func (p *pool) add(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids = append(p.ids, id)
}

// recorder of lookups and revocations, shared by the clients.
type opLog struct {
	mu          sync.Mutex
	lookups     []Lookup
	revocations []Revocation
}

// RunHistory runs one history drawn from seed on a fresh Env and returns
// what it recorded. It must be called from the test's goroutine (a restart
// fails the test on error).
func RunHistory(t testing.TB, seed uint64, hc HistoryConfig) *History {
	t.Helper()
	hc.setDefaults()
	rng := rand.New(rand.NewPCG(seed, 0x5e551))
	faults, end := plan(rng, hc)
	env := NewEnv(t, hc.Env)
	p := &pool{}
	for _, r := range env.NewSessions(hc.Sessions, hc.Users) {
		p.ids = append(p.ids, r.DeviceSessionID)
	}
	h := &History{Seed: seed, Config: hc, Plan: faults, End: end}
	var lg opLog
	start := time.Now()
	h.Start = start
	var wg sync.WaitGroup
	for c := range hc.Clients {
		n := hc.Ops / hc.Clients
		if c < hc.Ops%hc.Clients {
			n++
		}
		crng := rand.New(rand.NewPCG(seed, uint64(c)+1))
		at := make([]time.Duration, n)
		for i := range at {
			at[i] = time.Duration(crng.Int64N(int64(end)))
		}
		slices.Sort(at)
		wg.Go(func() { runClient(env, hc, p, &lg, crng, start, at) })
	}
	injectFaults(t, env, faults, start, hc.Users, p, &lg, rand.New(rand.NewPCG(seed, 0xfa017)))
	wg.Wait()
	clearFaults(env)
	audit(env, p, &lg)
	h.Lookups, h.Revocations = lg.lookups, lg.revocations
	h.L2 = env.Recorder.Ops()
	for _, r := range env.Replicas {
		h.Dropped += r.Sub.Dropped()
		h.Events = append(h.Events, r.Events.Events())
	}
	return h
}

// waitUntil blocks until start+at.
func waitUntil(start time.Time, at time.Duration) {
	if d := time.Until(start.Add(at)); d > 0 {
		t := time.NewTimer(d)
		<-t.C
	}
}

func runClient(env *Env, hc HistoryConfig, p *pool, lg *opLog, rng *rand.Rand, start time.Time, at []time.Duration) {
	for _, a := range at {
		waitUntil(start, a)
		ri := rng.IntN(len(env.Replicas))
		r := env.Replicas[ri]
		switch x := rng.Float64(); {
		case x < 0.85:
			l := lookup(r, ri, p.pick(rng))
			lg.mu.Lock()
			lg.lookups = append(lg.lookups, l)
			lg.mu.Unlock()
		case x < 0.95:
			var rv Revocation
			var revoke1 func(context.Context) error
			if rng.IntN(10) < 7 {
				id := p.pick(rng)
				rv = backendRevoke(env, ri, id)
				revoke1 = func(ctx context.Context) error { return r.Cache.Revoke(ctx, id) }
			} else {
				rv = Revocation{Replica: ri, User: fmt.Sprintf("user-%d", rng.IntN(hc.Users)), Backend: time.Now()}
				rv.Covered = env.Backend.RevokeUser(rv.User)
				revoke1 = func(ctx context.Context) error { return r.Cache.RevokeUser(ctx, rv.User) }
			}
			rv = revoke(rv, revoke1)
			lg.mu.Lock()
			lg.revocations = append(lg.revocations, rv)
			lg.mu.Unlock()
		default:
			rec, _ := env.Backend.NewSession(fmt.Sprintf("user-%d", rng.IntN(hc.Users)))
			p.add(rec.DeviceSessionID)
		}
	}
}

// revoke calls do until it returns nil, for up to 5 s, and records the
// attempts in rv: the caller of a revocation (the backend's push) retries
// until the cache has it.
func revoke(rv Revocation, do func(context.Context) error) Revocation {
	rv.Call = time.Now()
	deadline := rv.Call.Add(5 * time.Second)
	for time.Now().Before(deadline) {
		rv.Tries++
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := do(ctx)
		cancel()
		if err == nil {
			rv.OK, rv.Return = true, time.Now()
			break
		}
		waitUntil(time.Now(), 50*time.Millisecond)
	}
	return rv
}

// audit looks up every session on every replica once the faults are over:
// a last read of each replica's state, so that a stale entry is found even
// if no client happened to read it again (the checker applies the same
// rules to these lookups).
func audit(env *Env, p *pool, lg *opLog) {
	p.mu.Lock()
	ids := slices.Clone(p.ids)
	p.mu.Unlock()
	for ri, r := range env.Replicas {
		for _, id := range ids {
			lg.lookups = append(lg.lookups, lookup(r, ri, id))
		}
	}
}

// lookup makes one lookup and records it.
func lookup(r *Replica, ri int, id string) Lookup {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l := Lookup{Replica: ri, Session: id, Call: time.Now()}
	rec, tier, err := r.Cache.LookupTier(ctx, id)
	l.Return = time.Now()
	l.Tier, l.Err = tier, err
	switch {
	case err == nil && rec.Status == session.StatusActive:
		l.Answer = AnswerActive
	case err == nil:
		l.Answer = AnswerRevoked
	case errors.Is(err, session.ErrNotFound):
		l.Answer = AnswerNotFound
	default:
		l.Answer = AnswerError
	}
	return l
}

// handRevoke returns an operator's revocation of id: a hand HSET status
// revoked, recorded as an operator's L2 write.
func handRevoke(env *Env, id string) func(context.Context) error {
	return func(ctx context.Context) error {
		call := time.Now()
		err := env.Admin.HSet(ctx, env.Layout.SessionKey(id), "status", "revoked").Err()
		if err == nil {
			env.Recorder.Operator(L2Revoke, id, call, time.Now())
		}
		return err
	}
}

// answerLate opens a session and looks it up on replica r (index ri) with
// the backend's answer, read active, held until during(id) has run: the
// answer arrives after whatever during does. It records the lookup and the
// revocation during returns.
func answerLate(env *Env, r *Replica, ri int, rng *rand.Rand, users int, p *pool, lg *opLog, during func(id string) Revocation) {
	rec, _ := env.Backend.NewSession(fmt.Sprintf("user-%d", rng.IntN(users)))
	id := rec.DeviceSessionID
	p.add(id)
	revoked := make(chan Revocation, 1)
	var once sync.Once
	env.Backend.SetBeforeRespond(func(got string, _ session.Record, _ bool) {
		if got == id {
			once.Do(func() { revoked <- during(id) })
		}
	})
	l := lookup(r, ri, id)
	env.Backend.SetBeforeRespond(nil)
	lg.mu.Lock()
	defer lg.mu.Unlock()
	lg.lookups = append(lg.lookups, l)
	select {
	case rv := <-revoked:
		lg.revocations = append(lg.revocations, rv)
	default: // the backend was not asked (a fault made the lookup fail first)
	}
}

// action is one step of the fault schedule.
type action struct {
	at time.Duration
	do func()
}

func injectFaults(t testing.TB, env *Env, faults []Fault, start time.Time, users int, p *pool, lg *opLog, rng *rand.Rand) {
	t.Helper()
	var acts []action
	for _, f := range faults {
		r := env.Replicas[f.Replica]
		switch f.Kind {
		case FaultKill:
			acts = append(acts, action{f.At, func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				if _, err := env.KillSubscriber(ctx, r); err != nil {
					t.Logf("CLIENT KILL %s: %v", r.Name, err)
				}
			}})
		case FaultBlackhole:
			acts = append(acts, action{f.At, r.SubProxy.Blackhole}, action{f.At + f.Length, r.SubProxy.Clear})
		case FaultLatency:
			acts = append(acts, action{f.At, func() { r.DataProxy.Latency(f.Latency) }})
		case FaultBackend:
			acts = append(acts,
				action{f.At, func() { env.Backend.SetFault(backendtest.Fault{Status: f.Status, Latency: f.Latency}) }},
				action{f.At + f.Length, func() { env.Backend.SetFault(backendtest.Fault{}) }})
		case FaultRestart:
			acts = append(acts, action{f.At, func() {
				call := time.Now()
				env.Restart()
				env.Recorder.Flush(call, time.Now())
			}})
		case FaultFlush:
			acts = append(acts, action{f.At, func() {
				call := time.Now()
				if err := env.Admin.FlushDB(context.Background()).Err(); err != nil {
					t.Logf("FLUSHDB: %v", err)
					return
				}
				env.Recorder.Flush(call, time.Now())
			}})
		case FaultDelete:
			acts = append(acts, action{f.At, func() {
				p.mu.Lock()
				ids := slices.Clone(p.ids)
				p.mu.Unlock()
				for _, id := range ids {
					if rng.IntN(4) != 0 {
						continue
					}
					call := time.Now()
					if err := env.Admin.Del(context.Background(), env.Layout.SessionKey(id)).Err(); err == nil {
						env.Recorder.Operator(L2Delete, id, call, time.Now())
					}
				}
			}})
		case FaultHandRevoke:
			id, ri := p.pick(rng), f.Replica
			acts = append(acts, action{f.At, func() {
				rv := revoke(backendRevoke(env, ri, id), handRevoke(env, id))
				lg.mu.Lock()
				lg.revocations = append(lg.revocations, rv)
				lg.mu.Unlock()
			}})
		case FaultOOM:
			acts = append(acts, action{f.At, func() { env.SetOOM(true) }}, action{f.At + f.Length, func() { env.SetOOM(false) }})
		case FaultBackendSlowAnswer:
			acts = append(acts,
				action{f.At, func() {
					env.Backend.SetBeforeRespond(func(string, session.Record, bool) { waitUntil(time.Now(), f.Latency) })
				}},
				action{f.At + f.Length, func() { env.Backend.SetBeforeRespond(nil) }})
		case FaultFillRace:
			ri := (f.Replica + 1) % len(env.Replicas)
			other := env.Replicas[ri]
			acts = append(acts, action{f.At, func() {
				answerLate(env, r, f.Replica, rng, users, p, lg, func(id string) Revocation {
					r.Sub.DropNext(1)
					return revoke(backendRevoke(env, ri, id),
						func(ctx context.Context) error { return other.Cache.Revoke(ctx, id) })
				})
			}}, action{f.At + f.Length, func() {
				// The drop may have taken a client's message instead: a
				// next message lets the gap be seen.
				revoke(Revocation{}, func(ctx context.Context) error { return other.Cache.Revoke(ctx, "chaos-next-message") })
			}})
		case FaultLossFill:
			acts = append(acts, action{f.At, func() {
				answerLate(env, r, f.Replica, rng, users, p, lg, func(id string) Revocation {
					rv := revoke(backendRevoke(env, f.Replica, id), handRevoke(env, id))
					call := time.Now()
					env.Restart()
					env.Recorder.Flush(call, time.Now())
					return rv
				})
			}})
		case FaultL1Race:
			ri := (f.Replica + 1) % len(env.Replicas)
			other := env.Replicas[ri]
			acts = append(acts, action{f.At, func() {
				rec, _ := env.Backend.NewSession(fmt.Sprintf("user-%d", rng.IntN(users)))
				id := rec.DeviceSessionID
				p.add(id)
				first := lookup(other, ri, id) // fills Redis and the other L1
				r.DataProxy.Latency(150 * time.Millisecond)
				done := make(chan Lookup)
				go func() { done <- lookup(r, f.Replica, id) }()
				waitUntil(time.Now(), 50*time.Millisecond)
				rv := revoke(backendRevoke(env, ri, id),
					func(ctx context.Context) error { return other.Cache.Revoke(ctx, id) })
				l := <-done
				r.DataProxy.Latency(0)
				lg.mu.Lock()
				lg.lookups = append(lg.lookups, first, l)
				lg.revocations = append(lg.revocations, rv)
				lg.mu.Unlock()
			}})
		case FaultDrop:
			other := env.Replicas[(f.Replica+1)%len(env.Replicas)]
			id, ri := p.pick(rng), (f.Replica+1)%len(env.Replicas)
			acts = append(acts, action{f.At, func() {
				l := lookup(r, f.Replica, id)
				r.Sub.DropNext(1)
				rv := revoke(backendRevoke(env, ri, id),
					func(ctx context.Context) error { return other.Cache.Revoke(ctx, id) })
				lg.mu.Lock()
				lg.lookups = append(lg.lookups, l)
				lg.revocations = append(lg.revocations, rv)
				lg.mu.Unlock()
			}}, action{f.At + f.Length, func() {
				revoke(Revocation{}, func(ctx context.Context) error { return other.Cache.Revoke(ctx, "chaos-next-message") })
			}})
		}
	}
	slices.SortStableFunc(acts, func(a, b action) int { return int(a.at - b.at) })
	for _, a := range acts {
		waitUntil(start, a.at)
		a.do()
	}
}

func clearFaults(env *Env) {
	env.SetOOM(false)
	env.Backend.SetFault(backendtest.Fault{})
	env.Backend.SetBeforeRespond(nil)
	for _, r := range env.Replicas {
		if r.DataProxy != nil {
			r.DataProxy.Clear()
			r.SubProxy.Clear()
		}
	}
}

// DescribeEvents returns each replica's subscriber events, one line each,
// with times since the history's start.
func (h *History) DescribeEvents() []string {
	var out []string
	for i, evs := range h.Events {
		var b strings.Builder
		fmt.Fprintf(&b, "replica-%d:", i)
		for _, e := range evs {
			fmt.Fprintf(&b, " %s(%s", e.Kind, e.Reason)
			if e.Kind == "synced" {
				fmt.Fprintf(&b, ", replayed %d, drop %v", e.Replayed, e.DropActive)
			}
			fmt.Fprintf(&b, ")@%v", e.At.Sub(h.Start).Round(time.Millisecond))
		}
		out = append(out, b.String())
	}
	return out
}

// Describe returns the plan in one line.
func (h *History) Describe() string {
	parts := make([]string, len(h.Plan))
	for i, f := range h.Plan {
		parts[i] = f.String()
	}
	return fmt.Sprintf("seed %d, %d lookups, %d revocations, span %v, faults [%s]",
		h.Seed, len(h.Lookups), len(h.Revocations), h.End, strings.Join(parts, " "))
}
