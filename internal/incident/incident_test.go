package incident

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// observeExtra is how long past its bound the workload keeps running before
// answers are judged, so that a replica that never denies shows as one
// that did not within the window, not as a near miss.
const observeExtra = 400 * time.Millisecond

func concat(lists ...[]string) []string {
	var all []string
	for _, l := range lists {
		all = append(all, l...)
	}
	return all
}

// report logs how long the replicas took to deny ids after each
// revocation completed, and returns the 99th percentile over sessions of
// the slowest replica.
func report(t *testing.T, e *Env, what string, ids []string, replicas []*Replica) time.Duration {
	t.Helper()
	ds, notDenied := e.Checker.Denials(ids, replicas)
	n, _ := e.Checker.Violations(ids)
	answers, errs := e.Checker.Totals()
	p99 := Quantile(ds, 0.99)
	if notDenied > 0 {
		t.Logf("%s: %d of %d sessions still answered active by some replica at the end of the window; revoked sessions answered active beyond the bound: %d (%d answers, %d errors in all)",
			what, notDenied, len(ids), n, answers, errs)
		return p99
	}
	t.Logf("%s: denied on all %d replicas after p99 %v (p50 %v, max %v) over %d sessions; revoked sessions answered active beyond the bound: %d (%d answers, %d errors in all)",
		what, len(replicas), p99.Round(100*time.Microsecond), Quantile(ds, 0.5).Round(100*time.Microsecond),
		Quantile(ds, 1).Round(100*time.Microsecond), len(ids), n, answers, errs)
	return p99
}

// reportLost logs the measured exposure of cache-only revocations whose
// record was lost: active answers of the running replicas after the loss,
// and what a replica started afterwards answered (fresh, one record per id).
func reportLost(t *testing.T, e *Env, what string, ids []string, running []*Replica, fresh map[string]session.Record) {
	t.Helper()
	total, worst := 0, time.Duration(-1)
	onReplicas := 0
	for _, id := range ids {
		n, reps, first := e.Checker.Exposure(id, running)
		total += n
		onReplicas = max(onReplicas, reps)
		if first >= 0 && (worst < 0 || first < worst) {
			worst = first
		}
	}
	freshActive := 0
	for _, id := range ids {
		if fresh[id].Status == session.StatusActive {
			freshActive++
		}
	}
	firstMsg := "none"
	if worst >= 0 {
		firstMsg = worst.Round(time.Millisecond).String() + " after the loss"
	}
	t.Logf("%s (cache-only revocations, documented as lost with their record): running replicas answered active %d times on up to %d of %d replicas (first: %s); a replica started afterwards answered active for %d of %d sessions",
		what, total, onReplicas, len(running), firstMsg, freshActive, len(ids))
}

// lookupAll looks ids up once on r and returns the records (the zero
// record on error).
func lookupAll(e *Env, r *Replica, ids []string) map[string]session.Record {
	got := map[string]session.Record{}
	for _, id := range ids {
		rec, _, _ := e.Lookup(r, id)
		got[id] = rec
	}
	return got
}

// Case 1: `HSET session:<id> status revoked` typed by hand, without
// PUBLISH, is denied by every replica within 100 ms.
func TestHandHSET(t *testing.T) {
	e := NewEnv(t, Options{})
	ids, control := e.NewSessions(16), e.NewSessions(2)
	e.Warm(concat(ids, control))
	running := slices.Clone(e.Replicas)
	w := e.StartWorkload(concat(ids, control))
	var last time.Time
	for _, id := range ids {
		for _, r := range running {
			if active, tier, _ := e.Checker.Last(r.Index, id); !active || tier != tiered.TierL1 {
				t.Fatalf("before the HSET: Lookup(%q) on replica %d last answered active=%v from %v, want active from l1", id, r.Index, active, tier)
			}
		}
		_, done := e.CLI("HSET", e.Key(id), "status", "revoked")
		e.Checker.Revoked(id, "hand HSET", done, HandBound)
		last = done
	}
	e.WaitCovered(ids, running, last.Add(HandBound+observeExtra))
	w.Stop()

	p99 := report(t, e, "hand HSET", ids, running)
	e.Checker.Expect(t, ids)
	if _, notDenied := e.Checker.Denials(ids, running); notDenied == 0 && p99 > HandBound {
		t.Errorf("hand HSET: p99 %v over %d sessions until every replica denies, want <= %v", p99, len(ids), HandBound)
	}
	e.ExpectRevoked(t, ids, running)
	e.ExpectActive(t, control, running)
}

// Cases 2, 3 and 4: an operator removes the record, or its status, of a
// session the backend has revoked: HDEL of status on a record still active
// in Redis; DEL and PEXPIRE 1 of a record revoked with the library. The
// next lookup must reach the backend, which knows.
func TestRemovedRecord(t *testing.T) {
	cases := []struct {
		name string
		// libRevoke revokes the session in Redis with the library (as
		// `sessionctl revoke` does) before the command.
		libRevoke bool
		cmd       func(key string) []string
	}{
		{"HDEL status", false, func(k string) []string { return []string{"HDEL", k, rediscache.FieldStatus} }},
		{"DEL", true, func(k string) []string { return []string{"DEL", k} }},
		{"PEXPIRE 1", true, func(k string) []string { return []string{"PEXPIRE", k, "1"} }},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			e := NewEnv(t, Options{})
			ids, control := e.NewSessions(6), e.NewSessions(2)
			e.Warm(concat(ids, control))
			running := slices.Clone(e.Replicas)
			w := e.StartWorkload(concat(ids, control))
			for _, id := range ids {
				e.Backend.Revoke(id)
				if c.libRevoke {
					e.Checker.Revoked(id, "library revocation", e.RevokeLib(id), Bound)
				}
			}
			var last time.Time
			for _, id := range ids {
				_, done := e.CLI(c.cmd(e.Key(id))...)
				e.Checker.Revoked(id, c.name+" of a backend-revoked session", done, Bound)
				last = done
			}
			e.WaitCovered(ids, running, last.Add(Bound+observeExtra))
			fresh := e.NewReplica()
			e.ExpectRevoked(t, ids, []*Replica{fresh})
			w.Stop()

			report(t, e, c.name, ids, running)
			e.Checker.Expect(t, ids)
			e.ExpectRevoked(t, ids, running)
			e.ExpectNotActiveInRedis(t, ids, "after the lookups")
			e.ExpectActive(t, control, running)
		})
	}
}

// Case 3, second half: DEL of a record revoked with the library only (the
// backend still calls the session active). The revocation must hold while
// the record exists; after the DEL it is documented as lost, and the
// exposure is measured.
func TestDELCacheOnly(t *testing.T) {
	e := NewEnv(t, Options{})
	ids, control := e.NewSessions(4), e.NewSessions(2)
	e.Warm(concat(ids, control))
	running := slices.Clone(e.Replicas)
	w := e.StartWorkload(concat(ids, control))
	var last time.Time
	for _, id := range ids {
		last = e.RevokeLib(id)
		e.Checker.Revoked(id, "library revocation (cache only)", last, Bound)
	}
	e.WaitCovered(ids, running, last.Add(Bound+observeExtra))
	report(t, e, "cache-only revocation while the record exists", ids, running)
	var lost time.Time
	for _, id := range ids {
		_, lost = e.CLI("DEL", e.Key(id))
		e.Checker.Lost(id, lost)
	}
	e.WaitCovered(ids, running, lost.Add(Bound+observeExtra))
	fresh := lookupAll(e, e.NewReplica(), ids)
	w.Stop()

	reportLost(t, e, "DEL", ids, running, fresh)
	e.Checker.Expect(t, ids)
	e.ExpectActive(t, control, running)
}

// Case 5: FLUSHDB and FLUSHALL after revocations the backend knows: pushed
// ones (Redis held them) and ones whose push had not arrived yet (the
// backend revoked, Redis and L1 still active). Every replica drops its L1
// active entries, and the next lookup asks Redis, then the backend.
func TestFlush(t *testing.T) {
	for _, flush := range []string{"FLUSHDB", "FLUSHALL"} {
		t.Run(flush, func(t *testing.T) {
			e := NewEnv(t, Options{})
			pushed, unpushed := e.NewSessions(3), e.NewSessions(4)
			cacheOnly, control := e.NewSessions(2), e.NewSessions(2)
			probe := e.NewSessions(1)[0] // active, in L1, looked up only after the flush
			all := concat(pushed, unpushed, cacheOnly, control)
			e.Warm(append(all, probe))
			running := slices.Clone(e.Replicas)
			w := e.StartWorkload(all)
			for _, id := range pushed {
				e.Checker.Revoked(id, "pushed revocation", e.Push(running[0], id), Bound)
			}
			for _, id := range pushed {
				if d, ok := e.WaitStatus(id, "revoked", 5*time.Second, nil); !ok {
					t.Fatalf("pushed revocation of %q not in Redis %v later", id, d)
				}
			}
			for _, id := range cacheOnly {
				e.Checker.Revoked(id, "library revocation (cache only)", e.RevokeLib(id), Bound)
			}
			for _, id := range unpushed {
				e.Backend.Revoke(id)
			}
			_, done := e.CLI(flush)
			for _, id := range unpushed {
				e.Checker.Revoked(id, flush+" of a backend-revoked session's record", done, Bound)
			}
			for _, id := range cacheOnly {
				e.Checker.Lost(id, done)
			}
			var drops []time.Duration
			kept := 0
			for _, r := range running {
				d, ok := e.WaitLeftL1(r, probe, done, Bound)
				if !ok {
					kept++
					t.Errorf("after %s: Lookup(%q) on replica %d still answered from l1 %v later, want L1's active entries dropped within %v",
						flush, probe, r.Index, d.Round(time.Millisecond), Bound)
				}
				drops = append(drops, d)
			}
			revoked := concat(pushed, unpushed)
			e.WaitCovered(concat(revoked, cacheOnly), running, done.Add(Bound+observeExtra))
			fr := e.NewReplica()
			e.ExpectRevoked(t, revoked, []*Replica{fr})
			fresh := lookupAll(e, fr, cacheOnly)
			w.Stop()

			if kept == 0 {
				t.Logf("%s: L1 active entries dropped on every replica: the next lookup of an active session left L1 within %v (slowest replica)",
					flush, Quantile(drops, 1).Round(time.Millisecond))
			} else {
				t.Logf("%s: %d of %d replicas still answered an active session from L1 %v after the flush", flush, kept, len(running), Bound)
			}
			report(t, e, flush+", backend-known revocations", revoked, running)
			reportLost(t, e, flush, cacheOnly, running, fresh)
			e.Checker.Expect(t, concat(revoked, cacheOnly))
			e.ExpectRevoked(t, revoked, running)
			e.ExpectActive(t, control, running)
		})
	}
}

// Case 6: a restart without persistence loses every record; one with AOF
// (appendfsync always) keeps them. Backend-known revocations hold either
// way; cache-only ones hold with AOF and are measured without.
func TestRestart(t *testing.T) {
	cases := []struct {
		name       string
		config     []string
		persistent bool
	}{
		{"without persistence", []string{`save ""`, "appendonly no"}, false},
		{"with AOF", []string{"appendonly yes", "appendfsync always"}, true},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			e := NewEnv(t, Options{RedisConfig: c.config})
			pushed, cacheOnly, control := e.NewSessions(3), e.NewSessions(2), e.NewSessions(2)
			var unpushed []string // backend revoked, push not arrived: only a lost record reveals it
			if !c.persistent {
				unpushed = e.NewSessions(3)
			}
			all := concat(pushed, unpushed, cacheOnly, control)
			e.Warm(all)
			running := slices.Clone(e.Replicas)
			w := e.StartWorkload(all)
			for _, id := range pushed {
				e.Checker.Revoked(id, "pushed revocation", e.Push(running[0], id), Bound)
			}
			for _, id := range pushed {
				if d, ok := e.WaitStatus(id, "revoked", 5*time.Second, nil); !ok {
					t.Fatalf("pushed revocation of %q not in Redis %v later", id, d)
				}
			}
			for _, id := range cacheOnly {
				e.Checker.Revoked(id, "library revocation (cache only)", e.RevokeLib(id), Bound)
			}
			for _, id := range unpushed {
				e.Backend.Revoke(id)
			}
			done := e.Restart()
			for _, id := range unpushed {
				e.Checker.Revoked(id, "restart "+c.name+" of a backend-revoked session", done, Bound)
			}
			if !c.persistent {
				for _, id := range cacheOnly {
					e.Checker.Lost(id, done)
				}
			}
			revoked := concat(pushed, unpushed)
			e.WaitCovered(concat(revoked, cacheOnly), running, done.Add(Bound+observeExtra))
			fr := e.NewReplica()
			e.ExpectRevoked(t, revoked, []*Replica{fr})
			var fresh map[string]session.Record
			statuses := map[string]string{}
			if c.persistent {
				e.ExpectRevoked(t, cacheOnly, []*Replica{fr})
				for _, id := range cacheOnly {
					statuses[id] = e.HGet(id, rediscache.FieldStatus)
				}
			} else {
				fresh = lookupAll(e, fr, cacheOnly)
			}
			w.Stop()

			report(t, e, "restart "+c.name+", backend-known revocations", revoked, running)
			if c.persistent {
				report(t, e, "restart "+c.name+", cache-only revocations", cacheOnly, running)
				for id, s := range statuses {
					if s != string(session.StatusRevoked) {
						t.Errorf("after a restart with AOF: HGET %s status = %q, want %q", e.Key(id), s, session.StatusRevoked)
					}
				}
				e.ExpectRevoked(t, cacheOnly, running)
			} else {
				reportLost(t, e, "restart "+c.name, cacheOnly, running, fresh)
			}
			e.Checker.Expect(t, concat(revoked, cacheOnly))
			e.ExpectRevoked(t, revoked, running)
			e.ExpectActive(t, control, running)
		})
	}
}

// Case 7: maxmemory with allkeys-lru, then an eviction storm of junk keys
// written with redis-cli. Sessions whose record was evicted are looked up
// again in Redis, then at the backend, which knows.
func TestEvictionStorm(t *testing.T) {
	e := NewEnv(t, Options{RedisConfig: []string{"maxmemory-policy allkeys-lru"}})
	pushed, unpushed, control := e.NewSessions(3), e.NewSessions(8), e.NewSessions(2)
	all := concat(pushed, unpushed, control)
	e.Warm(all)
	running := slices.Clone(e.Replicas)
	w := e.StartWorkload(all)
	for _, id := range pushed {
		e.Checker.Revoked(id, "pushed revocation", e.Push(running[0], id), Bound)
	}
	for _, id := range pushed {
		if d, ok := e.WaitStatus(id, "revoked", 5*time.Second, nil); !ok {
			t.Fatalf("pushed revocation of %q not in Redis %v later", id, d)
		}
	}
	for _, id := range unpushed {
		e.Backend.Revoke(id)
	}
	used := e.Info("memory", "used_memory")
	e.CLI("CONFIG", "SET", "maxmemory", strconv.FormatInt(used+2<<20, 10))
	summary := e.Junk("junk:", 12000, 1024)
	stormEnd := time.Now()
	// A record that no longer reads active was evicted (and perhaps
	// filled again from the backend, revoked, since).
	var evicted []string
	for i, h := range e.HGetAlls(unpushed) {
		if !ReadsActive(h) {
			evicted = append(evicted, unpushed[i])
			e.Checker.Revoked(unpushed[i], "eviction of a backend-revoked session's record", stormEnd, Bound)
		}
	}
	evictedKeys := e.Info("stats", "evicted_keys")
	seq, _ := e.CLI("EXISTS", e.Layout.SeqKey(0), e.Layout.LogKey(0))
	if len(evicted) == 0 {
		t.Fatalf("the storm (%s, %d keys evicted) evicted none of the %d backend-revoked session records: nothing to check", summary, evictedKeys, len(unpushed))
	}
	revoked := concat(pushed, evicted)
	e.WaitCovered(revoked, running, stormEnd.Add(Bound+observeExtra))
	fr := e.NewReplica()
	e.ExpectRevoked(t, revoked, []*Replica{fr})
	w.Stop()

	t.Logf("eviction storm: %s; %d keys evicted, %d of %d backend-revoked session records among them, %s of the seq and log keys left",
		summary, evictedKeys, len(evicted), len(unpushed), seq)
	report(t, e, "allkeys-lru eviction storm, backend-known revocations", revoked, running)
	e.Checker.Expect(t, revoked)
	e.ExpectRevoked(t, revoked, running)
	e.ExpectActive(t, control, running)
}

// Case 8: Redis full under noeviction while the backend pushes
// revocations. Every replica denies, a replica started afterwards denies,
// Redis never holds "active" for those sessions, and once memory is freed
// Redis ends up holding the revocations.
func TestOOMPushedRevocations(t *testing.T) {
	e := NewEnv(t, Options{RedisConfig: []string{"maxmemory-policy noeviction"}})
	ids, control := e.NewSessions(5), e.NewSessions(2)
	e.Warm(concat(ids, control))
	running := slices.Clone(e.Replicas)
	w := e.StartWorkload(concat(ids, control))

	used := e.Info("memory", "used_memory")
	e.CLI("CONFIG", "SET", "maxmemory", strconv.FormatInt(used+1<<20, 10))
	summary := e.Junk("junk:", 4000, 1024)
	// Filled to the limit, used_memory hovers around it as client buffers
	// come and go, and a small write may pass now and then: pin the limit
	// below what the data takes, so that every write is refused.
	full := e.Info("memory", "used_memory")
	e.CLI("CONFIG", "SET", "maxmemory", strconv.FormatInt(full-256<<10, 10))
	if out, err := e.CLIErr("SET", "incident:oom-probe", "x"); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("after filling Redis (%s): SET answered %q, %v; want an OOM error", summary, out, err)
	}
	var last time.Time
	for _, id := range ids {
		last = e.Push(running[0], id)
		e.Checker.Revoked(id, "pushed revocation under OOM", last, Bound)
	}
	e.WaitCovered(ids, running, last.Add(Bound+observeExtra))
	fr := e.NewReplica()
	e.ExpectRevoked(t, ids, []*Replica{fr})
	underOOM := map[string]string{}
	for _, id := range ids {
		underOOM[id] = e.HGet(id, rediscache.FieldStatus)
	}

	_, freed := e.CLI("CONFIG", "SET", "maxmemory", "0")
	sawActive := map[string]bool{}
	var held time.Duration // when Redis held every revocation, after freed
	notHeld := map[string]string{}
	for _, id := range ids {
		_, ok := e.WaitStatus(id, "revoked", 10*time.Second-time.Since(freed), func(s string) {
			if s == string(session.StatusActive) {
				sawActive[id] = true
			}
		})
		if !ok {
			notHeld[id] = e.HGet(id, rediscache.FieldStatus)
		}
		held = time.Since(freed)
	}
	w.Stop()

	held0 := map[string]int{}
	for _, s := range underOOM {
		if s == "" {
			s = "(nothing)"
		}
		held0[s]++
	}
	st := running[0].Cache.Stats()
	t.Logf("noeviction OOM (%s): replica 0 retried %d times, gave up %d times; status of the %d sessions in Redis under OOM: %v",
		summary, st.RevokeRetries, st.RevokeFailures, len(ids), held0)
	report(t, e, "noeviction OOM, pushed revocations", ids, running)
	e.Checker.Expect(t, ids)
	e.ExpectRevoked(t, ids, running)
	for _, id := range ids {
		if s := underOOM[id]; s != "" && s != string(session.StatusRevoked) {
			t.Errorf("under OOM: HGET %s status = %q, want %q or nothing", e.Key(id), s, session.StatusRevoked)
		}
	}
	for id := range sawActive {
		t.Errorf("after memory was freed: HGET %s status read %q, want never active", e.Key(id), session.StatusActive)
	}
	for id, s := range notHeld {
		t.Errorf("after memory was freed: HGET %s status = %q 10s later, want %q (the revocation is owed to Redis until it holds it)", e.Key(id), s, session.StatusRevoked)
	}
	if len(notHeld) == 0 {
		t.Logf("noeviction OOM: Redis held every revocation %v after memory was freed", held.Round(time.Millisecond))
	}
	e.ExpectActive(t, control, running)
}

// Case 9: CLIENT KILL TYPE pubsub closes every subscriber (and tracking)
// connection; a hand HSET typed right after must still reach every
// replica: a lost channel is resynced.
func TestClientKillPubsub(t *testing.T) {
	e := NewEnv(t, Options{})
	ids, control := e.NewSessions(8), e.NewSessions(2)
	e.Warm(concat(ids, control))
	running := slices.Clone(e.Replicas)
	w := e.StartWorkload(concat(ids, control))
	killed, _ := e.CLI("CLIENT", "KILL", "TYPE", "pubsub")
	var last time.Time
	for _, id := range ids {
		_, last = e.CLI("HSET", e.Key(id), "status", "revoked")
		e.Checker.Revoked(id, "hand HSET right after CLIENT KILL TYPE pubsub", last, Bound)
	}
	e.WaitCovered(ids, running, last.Add(Bound+observeExtra))
	w.Stop()
	numsub, _ := e.CLI("PUBSUB", "NUMSUB", e.Layout.Channel())

	t.Logf("CLIENT KILL TYPE pubsub: %s connections killed; PUBSUB NUMSUB afterwards: %s", killed, strings.ReplaceAll(numsub, "\n", " "))
	report(t, e, "hand HSET after CLIENT KILL TYPE pubsub", ids, running)
	e.Checker.Expect(t, ids)
	e.ExpectRevoked(t, ids, running)
	e.ExpectActive(t, control, running)
}

// Case 10: typos in a hand edit. A status other than exactly "active", or
// a revoked_at_ms that is not a number, is served as revoked on every
// replica within the hand-edit bound, and a later fill (by a replica
// started afterwards) never makes the record read active in Redis.
func TestTypos(t *testing.T) {
	variants := []struct{ name, field, value string }{
		{"status Revoked", rediscache.FieldStatus, "Revoked"},
		{"status REVOKED", rediscache.FieldStatus, "REVOKED"},
		{"status revokd", rediscache.FieldStatus, "revokd"},
		{`status ""`, rediscache.FieldStatus, ""},
		{"revoked_at_ms notanumber", rediscache.FieldRevokedAtMS, "notanumber"},
	}
	e := NewEnv(t, Options{})
	ids, control := e.NewSessions(len(variants)), e.NewSessions(2)
	e.Warm(concat(ids, control))
	running := slices.Clone(e.Replicas)
	w := e.StartWorkload(concat(ids, control))
	var last time.Time
	for i, v := range variants {
		_, last = e.CLI("HSET", e.Key(ids[i]), v.field, v.value)
		e.Checker.Revoked(ids[i], "hand HSET "+v.name, last, HandBound)
	}
	e.WaitCovered(ids, running, last.Add(HandBound+observeExtra))
	fr := e.NewReplica()
	fresh := lookupAll(e, fr, ids)
	w.Stop()
	hashes := map[string]map[string]string{}
	for _, id := range ids {
		hashes[id] = e.HGetAll(id)
	}

	for i, v := range variants {
		id := ids[i]
		t.Run(strings.NewReplacer(" ", "_", `"`, "").Replace(v.name), func(t *testing.T) {
			if d, denied := e.Checker.Denial(id, running); denied {
				t.Logf("hand HSET %s: denied on all %d replicas %v after the HSET returned", v.name, len(running), d.Round(100*time.Microsecond))
			} else {
				t.Logf("hand HSET %s: still answered active at the end of the window (%v after)", v.name, d.Round(time.Millisecond))
			}
			e.Checker.Expect(t, []string{id})
			if rec := fresh[id]; rec.Status != session.StatusRevoked {
				t.Errorf("Lookup(%q) on replica %d, started after the HSET, = %q, want revoked", id, fr.Index, rec.Status)
			}
			if h := hashes[id]; ReadsActive(h) {
				t.Errorf("after a fill: HGETALL %s = %v, want a record that does not read active", e.Key(id), h)
			} else {
				t.Logf("hand HSET %s: Redis holds %s=%q after the fill", v.name, rediscache.FieldStatus, h[rediscache.FieldStatus])
			}
			e.ExpectRevoked(t, []string{id}, running)
		})
	}
	e.ExpectActive(t, control, running)
}
