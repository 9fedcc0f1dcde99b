package incident

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/testenv"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

const (
	// HandBound is how long after a hand-typed `HSET session:<id> status
	// revoked` returned a replica may still answer the session active
	// (issue 9, item 2: 100 ms p99 on every replica).
	HandBound = 100 * time.Millisecond
	// Bound is the fan-out bound for every other change: a revocation
	// pushed or written by the library, and a record removed or lost by
	// DEL, expiry, eviction, a flush or a restart. The replicas here run
	// with a heartbeat of 100 ms, a heartbeat timeout of 300 ms and a
	// StaleBound of 200 ms, so the library's own staleness bound (600 ms)
	// fits within it.
	Bound = time.Second

	// L1TTL is the replicas' L1 entry lifetime: longer than any test, so
	// that an L1 expiry never hides a missing invalidation.
	L1TTL = time.Minute

	heartbeat        = 100 * time.Millisecond
	heartbeatTimeout = 300 * time.Millisecond
	staleBound       = 200 * time.Millisecond

	// lookupTimeout bounds one lookup of the workload or of a check.
	lookupTimeout = 2 * time.Second
	// cliTimeout bounds one redis-cli run.
	cliTimeout = 30 * time.Second
	// coverFor is how long WaitCovered waits past its instant for every
	// replica to have begun a lookup of every session.
	coverFor = 10 * time.Second
)

// Options configures an Env. Zero fields mean the defaults in brackets.
type Options struct {
	// RedisConfig holds extra redis.conf lines, such as
	// "maxmemory-policy noeviction" or "appendonly yes".
	RedisConfig []string
	// Replicas is the number of replicas started with the Env [3].
	Replicas int
}

// Env is one redis-server, one backend, the replicas and their checker.
type Env struct {
	t        *testing.T
	Redis    *redistest.Server
	Admin    *redis.Client     // direct to the server, for the library's own calls
	Lib      *rediscache.Cache // the library on Admin, as `sessionctl revoke` uses it
	Backend  *backendtest.Server
	Layout   rediscache.Layout
	Replicas []*Replica // the replicas started by NewEnv and NewReplica, by index
	Checker  *Checker
	env      *testenv.Env
	cli      string // path of redis-cli
	logs     *logBuffer
	users    int // users created by NewSessions
}

// Replica is one tiered cache with its own Redis client and backend client.
type Replica struct {
	Index int
	Name  string
	Cache *tiered.Cache
}

// NewEnv starts the server, the backend and the replicas, writes one
// revocation of a session no test uses (so that each replica's position in
// the invalidation log has an entry to check on resync, as in a deployment
// that has run for a while), and waits until every replica is synced.
func NewEnv(t *testing.T, opts Options) *Env {
	t.Helper()
	if opts.Replicas == 0 {
		opts.Replicas = 3
	}
	e := &Env{
		t:       t,
		cli:     redistest.Binary(t, "redis-cli"),
		Checker: NewChecker(t),
		logs:    &logBuffer{},
	}
	e.env = testenv.New(t, testenv.Options{RedisConfig: opts.RedisConfig})
	e.Redis, e.Backend = e.env.Redis, e.env.Backend
	e.Admin = e.Redis.Client(t)
	var err error
	e.Lib, err = rediscache.New(e.Admin, rediscache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.Layout = e.Lib.Layout()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.Lib.RevokeSession(ctx, "incident-warm-up"); err != nil {
		t.Fatalf("warm-up revocation: %v", err)
	}
	t.Cleanup(func() {
		if w := e.logs.warnings(40); t.Failed() && w != "" {
			t.Logf("replica warnings and errors (the last 40):\n%s", w)
		}
	})
	for range opts.Replicas {
		e.NewReplica()
	}
	return e
}

// NewReplica starts one more replica, appends it to e.Replicas and waits
// until its subscription is synced. A replica started after a fault shows
// what a gateway deployed afterwards would answer.
func (e *Env) NewReplica() *Replica {
	e.t.Helper()
	t := e.t
	r := &Replica{Index: len(e.Replicas), Name: fmt.Sprintf("replica-%d", len(e.Replicas))}
	spec := e.env.Replica(r.Name)
	spec.Backend.Timeout = 500 * time.Millisecond
	r.Cache = testenv.Start(t, spec, func(l2 *rediscache.Cache, be *backend.Client) (*tiered.Cache, error) {
		return tiered.New(tiered.Options{
			Redis:             l2,
			Backend:           be,
			Local:             localcache.Options{TTL: L1TTL},
			StaleBound:        staleBound,
			FetchTimeout:      time.Second,
			SubscriberName:    r.Name,
			HeartbeatInterval: heartbeat,
			HeartbeatTimeout:  heartbeatTimeout,
			Logger:            slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", r.Name),
		})
	})
	e.Replicas = append(e.Replicas, r)
	return r
}

// Key returns the Redis key of session id.
func (e *Env) Key(id string) string { return e.Layout.SessionKey(id) }

// NewSessions creates n active sessions at the backend, each of a user of
// its own, and returns their ids.
func (e *Env) NewSessions(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		e.users++
		rec, _ := e.Backend.NewSession(fmt.Sprintf("user-%d", e.users))
		ids[i] = rec.DeviceSessionID
	}
	return ids
}

// Lookup looks id up on r, records the answer in the Checker and returns
// it with the tier that answered.
func (e *Env) Lookup(r *Replica, id string) (session.Record, tiered.Tier, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	began := time.Now()
	rec, tier, err := r.Cache.LookupTier(ctx, id)
	e.Checker.Record(r.Index, id, began, rec, tier, err)
	return rec, tier, err
}

// Warm looks every id up on every replica until each replica holds it in
// L1 as active: one pass in which every lookup is an active L1 hit. It
// fails the test after 5 s.
func (e *Env) Warm(ids []string) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var miss string
		for _, r := range e.Replicas {
			for _, id := range ids {
				rec, tier, err := e.Lookup(r, id)
				if err != nil || rec.Status != session.StatusActive || tier != tiered.TierL1 {
					if miss == "" {
						miss = fmt.Sprintf("Lookup(%q) on replica %d = %q from %v, err %v; want active from l1", id, r.Index, rec.Status, tier, err)
					}
				}
			}
		}
		if miss == "" {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("warm-up: %s", miss)
		}
	}
}

// Push revokes id at the backend and then pushes the revocation to r with
// MarkRevoked, as gatewayd's push endpoint does, and returns when
// MarkRevoked returned: r's L1 is revoked then, Redis and the other
// replicas follow from r's background worker.
func (e *Env) Push(r *Replica, id string) time.Time {
	e.t.Helper()
	if !e.Backend.Revoke(id) {
		e.t.Fatalf("backend: no session %q to revoke", id)
	}
	r.Cache.MarkRevoked(id)
	return time.Now()
}

// RevokeLib revokes id in Redis with the library, as `sessionctl revoke`
// does, and returns when the call returned. The backend is not told.
func (e *Env) RevokeLib(id string) time.Time {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.Lib.RevokeSession(ctx, id); err != nil {
		e.t.Fatalf("RevokeSession(%q): %v", id, err)
	}
	return time.Now()
}

// CLI runs redis-cli against the server with args (each one argument, no
// shell) and returns its output, without the final newline, and the time
// it returned. An error reply, a non-zero exit or anything on stderr fails
// the test.
func (e *Env) CLI(args ...string) (string, time.Time) {
	e.t.Helper()
	out, err := e.cliRun(nil, args...)
	done := time.Now()
	if err != nil {
		e.t.Fatalf("redis-cli %s: %v", quoteArgs(args), err)
	}
	return out, done
}

// CLIErr is CLI for commands that may be refused: it returns the error
// instead of failing the test.
func (e *Env) CLIErr(args ...string) (string, error) {
	return e.cliRun(nil, args...)
}

// cliRun runs redis-cli with -e, so that an error reply makes it exit with
// status 1 and print the error on stderr.
func (e *Env) cliRun(stdin io.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	full := append([]string{"-e", "-p", strconv.Itoa(e.Redis.Port)}, args...)
	cmd := exec.CommandContext(ctx, e.cli, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err := cmd.Run()
	out := strings.TrimSuffix(stdout.String(), "\n")
	if err != nil || stderr.Len() > 0 {
		return out, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// HGet returns a field of session id's hash as redis-cli prints it (""
// when the field or the hash is missing).
func (e *Env) HGet(id, field string) string {
	e.t.Helper()
	out, _ := e.CLI("HGET", e.Key(id), field)
	return out
}

// HGetAll returns session id's hash as redis-cli prints it.
func (e *Env) HGetAll(id string) map[string]string {
	e.t.Helper()
	out, _ := e.CLI("HGETALL", e.Key(id))
	h := map[string]string{}
	if out == "" {
		return h
	}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		h[lines[i]] = lines[i+1]
	}
	return h
}

// HGetAlls reads the session hashes of ids in one pipeline on Admin, as
// HGetAll reads one: a missing hash is an empty map. One round trip keeps
// the time between the first read and the last short on a loaded machine,
// where a redis-cli per id takes a process start each.
func (e *Env) HGetAlls(ids []string) []map[string]string {
	e.t.Helper()
	ctx := context.Background()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if _, err := e.Admin.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, e.Key(id))
		}
		return nil
	}); err != nil {
		e.t.Fatalf("HGETALL of %d sessions: %v", len(ids), err)
	}
	out := make([]map[string]string, len(ids))
	for i, cmd := range cmds {
		out[i] = cmd.Val()
	}
	return out
}

// ReadsActive reports whether hash h, as read from Redis, is an active
// record: status exactly "active" and no revoked_at_ms.
func ReadsActive(h map[string]string) bool {
	_, revokedAt := h[rediscache.FieldRevokedAtMS]
	return h[rediscache.FieldStatus] == string(session.StatusActive) && !revokedAt
}

// WaitStatus polls session id's status in Redis with redis-cli until it is
// want or timeout passes, and returns how long it took and whether it got
// there. Every status it reads is passed to seen, if not nil.
func (e *Env) WaitStatus(id, want string, timeout time.Duration, seen func(string)) (time.Duration, bool) {
	e.t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got := e.HGet(id, rediscache.FieldStatus)
		if seen != nil {
			seen(got)
		}
		if got == want {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		<-tick.C
	}
}

// Info returns an integer field of INFO section, read with redis-cli.
func (e *Env) Info(section, field string) int64 {
	e.t.Helper()
	out, _ := e.CLI("INFO", section)
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				e.t.Fatalf("INFO %s: %s: %v", section, field, err)
			}
			return n
		}
	}
	e.t.Fatalf("INFO %s has no %s", section, field)
	return 0
}

// Junk writes n string keys prefix<i> of size bytes each through
// `redis-cli --pipe`, as an operator loading data by hand would, and
// returns redis-cli's summary line. Refused writes (OOM) are not an error
// here: the caller checks the state it wanted.
func (e *Env) Junk(prefix string, n, size int) string {
	e.t.Helper()
	var b bytes.Buffer
	val := strings.Repeat("x", size)
	for i := range n {
		key := prefix + strconv.Itoa(i)
		fmt.Fprintf(&b, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(key), key, len(val), val)
	}
	out, err := e.cliRun(&b, "--pipe")
	summary := out
	if i := strings.LastIndex(out, "errors:"); i >= 0 {
		summary = out[i:]
	}
	if err != nil && !strings.Contains(out, "errors:") {
		e.t.Fatalf("redis-cli --pipe: %v\n%s", err, out)
	}
	return summary
}

// Restart kills the server and starts it again on the same port with the
// same configuration (it reloads its AOF when "appendonly yes" is set), and
// checks that the process answering is this Env's.
func (e *Env) Restart() time.Time {
	e.t.Helper()
	e.Redis.Restart()
	done := time.Now()
	out, _ := e.CLI("CONFIG", "GET", "dir")
	if got := strings.Split(out, "\n"); len(got) != 2 || got[1] != e.Redis.Dir() {
		e.t.Fatalf("the server on %s runs in %q, not in this test's %q: another test took the port", e.Redis.Addr, out, e.Redis.Dir())
	}
	return done
}

// Workload looks a fixed set of sessions up on a fixed set of replicas,
// one goroutine per replica, recording every answer in the Env's Checker.
// It stops by itself after workloadFor or maxPasses passes, or at Stop.
type Workload struct {
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

const (
	// workloadFor bounds a workload's life.
	workloadFor = 40 * time.Second
	// maxPasses bounds the passes over the ids each goroutine makes.
	maxPasses = 200000
	// workloadEvery is the time between two passes of one goroutine:
	// every session is looked up about once a millisecond per replica.
	workloadEvery = time.Millisecond
)

// StartWorkload starts a workload over ids on the replicas started so far.
// It is stopped at cleanup if the test has not stopped it.
func (e *Env) StartWorkload(ids []string) *Workload {
	w := &Workload{stop: make(chan struct{})}
	end := time.Now().Add(workloadFor)
	for _, r := range e.Replicas {
		w.wg.Go(func() {
			tick := time.NewTicker(workloadEvery)
			defer tick.Stop()
			for pass := 0; pass < maxPasses && time.Now().Before(end); pass++ {
				for _, id := range ids {
					select {
					case <-w.stop:
						return
					default:
					}
					e.Lookup(r, id)
				}
				select {
				case <-w.stop:
					return
				case <-tick.C:
				}
			}
		})
	}
	e.t.Cleanup(w.Stop)
	return w
}

// Stop ends the workload and waits for its goroutines. It is idempotent.
func (w *Workload) Stop() {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
}

// WaitCovered waits until every replica in replicas has begun a lookup of
// every id after instant at, so that the Checker has seen what each one
// answers from then on. It fails the test when that takes more than
// coverFor past at.
func (e *Env) WaitCovered(ids []string, replicas []*Replica, at time.Time) {
	e.t.Helper()
	deadline := at.Add(coverFor)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := ""
		for _, r := range replicas {
			for _, id := range ids {
				if !e.Checker.BeganAfter(r.Index, id, at) {
					missing = fmt.Sprintf("replica %d began no lookup of %q", r.Index, id)
					break
				}
			}
			if missing != "" {
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("workload stalled: %s within %v after %s", missing, coverFor, at.Format("15:04:05.000"))
		}
		<-tick.C
	}
}

// ExpectRevoked looks every id up once on each replica in replicas and
// reports every answer that is not revoked.
func (e *Env) ExpectRevoked(t testing.TB, ids []string, replicas []*Replica) {
	t.Helper()
	for _, r := range replicas {
		for _, id := range ids {
			rec, tier, err := e.Lookup(r, id)
			switch {
			case err != nil:
				t.Errorf("Lookup(%q) on replica %d: %v, want revoked", id, r.Index, err)
			case rec.Status != session.StatusRevoked:
				t.Errorf("Lookup(%q) on replica %d = %q from %v, want revoked", id, r.Index, rec.Status, tier)
			}
		}
	}
}

// ExpectActive checks that every control session (never revoked) was last
// answered active by every replica in replicas: a replica that denied
// everything would pass every other check.
func (e *Env) ExpectActive(t testing.TB, ids []string, replicas []*Replica) {
	t.Helper()
	for _, r := range replicas {
		for _, id := range ids {
			rec, tier, err := e.Lookup(r, id)
			if err != nil || rec.Status != session.StatusActive {
				t.Errorf("Lookup(%q) of a control session on replica %d = %q from %v, err %v; want active", id, r.Index, rec.Status, tier, err)
			}
		}
	}
}

// ExpectNotActiveInRedis reports every session whose hash reads as active
// in Redis (HGETALL with redis-cli).
func (e *Env) ExpectNotActiveInRedis(t testing.TB, ids []string, when string) {
	t.Helper()
	for _, id := range ids {
		if h := e.HGetAll(id); ReadsActive(h) {
			t.Errorf("%s: HGETALL %s = %v, want a record that does not read active", when, e.Key(id), h)
		}
	}
}

// quoteArgs renders redis-cli arguments for a message.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if a == "" || strings.ContainsAny(a, " \"'") {
			q[i] = strconv.Quote(a)
		}
	}
	return strings.Join(q, " ")
}

// logBuffer collects the replicas' log lines.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// warnings returns the last n lines at WARN or ERROR.
func (l *logBuffer) warnings(n int) string {
	l.mu.Lock()
	text := l.buf.String()
	l.mu.Unlock()
	var lines []string
	for line := range strings.Lines(text) {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			lines = append(lines, line)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// WaitLeftL1 looks id up on r until a lookup is not answered from L1, and
// returns how long after since that lookup began. It gives up at
// since+bound and then reports false: r still served id from L1.
func (e *Env) WaitLeftL1(r *Replica, id string, since time.Time, bound time.Duration) (time.Duration, bool) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		began := time.Now()
		if _, tier, _ := e.Lookup(r, id); tier != tiered.TierL1 {
			return began.Sub(since), true
		}
		if began.After(since.Add(bound)) {
			return began.Sub(since), false
		}
		<-tick.C
	}
}
