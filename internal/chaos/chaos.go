// Package chaos is the fault-injection harness of the session cache's
// reliability tests: real redis-server processes on loopback, the in-memory
// backend with its faults, and replicas of the tiered cache, each with its
// own in-process toxiproxy for its data connection and another for its
// subscriber connection.
//
// A replica's Redis client is split: its data commands go through one proxy,
// its SUBSCRIBE connection through the other (see splitClient), so that a
// blackhole or latency hits one path only. The subscriber connection is
// further wrapped by a SubControl, which can drop single pub/sub messages or
// stall reads. Every command a data client makes on a session hash is
// recorded (Recorder), and the subscriber's losses and syncs are read from
// its log (EventLog).
//
// On top of that, history.go generates randomized concurrent histories with
// faults, and check.go checks them: no active answer after revoked, no
// active answer beyond the staleness bound after a revocation returned, and
// the L2 register against a porcupine model.
//
// The package is test support: its constructors take a testing.TB, fail
// the test on setup errors and stop what they start at cleanup. Helpers
// that fail the test must be called from the test's goroutine.
package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/toxitest"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// Config configures an Env. Zero fields mean the defaults in brackets,
// chosen short so that histories run quickly.
type Config struct {
	Replicas         int           // [3]
	Heartbeat        time.Duration // subscriber HeartbeatInterval [100ms]; negative: off
	HeartbeatTimeout time.Duration // [3 × Heartbeat]
	StaleBound       time.Duration // tiered StaleBound [200ms]
	L1Size           int           // [64]
	L1TTL            time.Duration // [10s]
	FetchTimeout     time.Duration // tiered FetchTimeout [1s]
	BackendTimeout   time.Duration // backend.Options.Timeout [500ms]
	NegativeTTL      time.Duration // tiered NegativeTTL [its default]
	NegativeSize     int           // tiered NegativeSize [its default]
	LogMaxLen        int           // rediscache LogMaxLen [its default]
	CallTimeout      time.Duration // rediscache CallTimeout [its default]
	// Guard, when set, puts a backend.Guard with these options between
	// each replica and the backend.
	Guard *backend.GuardOptions
	// RedisConfig holds extra redis.conf lines.
	RedisConfig []string
	// Direct connects the replicas straight to the server, without
	// proxies (Replica.DataProxy and SubProxy are nil) and without
	// recording their commands: for load tests, where the proxies' copying
	// and the recorder would compete for the CPU.
	Direct bool
	// Cold starts the replicas on a Redis that has never carried an
	// invalidation. By default one revocation (of a session no test uses)
	// is written before the replicas start, so that each one's position
	// has a log entry to check on resync, as in any deployment that has
	// run for a while: from position 0 a replica cannot tell a Redis that
	// restarted empty from an intact log, so its resync drops L1's active
	// entries instead of replaying.
	Cold bool
	// Untracked gives the replicas' subscribers no server-assisted
	// invalidation (no CLIENT TRACKING), as on a Redis that refuses it:
	// only the channel and its log carry revocations, and a resync
	// replays instead of dropping L1's actives. For tests of the replay
	// path.
	Untracked bool
}

func (c *Config) setDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 100 * time.Millisecond
	}
	if c.HeartbeatTimeout == 0 && c.Heartbeat > 0 {
		c.HeartbeatTimeout = 3 * c.Heartbeat
	}
	if c.StaleBound == 0 {
		c.StaleBound = 200 * time.Millisecond
	}
	if c.L1Size == 0 {
		c.L1Size = 64
	}
	if c.L1TTL == 0 {
		c.L1TTL = 10 * time.Second
	}
	if c.FetchTimeout == 0 {
		c.FetchTimeout = time.Second
	}
	if c.BackendTimeout == 0 {
		c.BackendTimeout = 500 * time.Millisecond
	}
}

// Bound returns the longest time an L1 "active" may be served after a
// revocation returned, by design: a silent loss is noticed within
// Heartbeat + HeartbeatTimeout, and L1 is trusted for StaleBound more. The
// checker adds a margin for scheduling.
func (c Config) Bound() time.Duration {
	return max(c.Heartbeat, 0) + c.HeartbeatTimeout + c.StaleBound
}

// Env is one redis-server, one backend and the replicas.
type Env struct {
	tb       testing.TB
	Config   Config
	Redis    *redistest.Server
	Admin    *redis.Client // direct to the server, for faults and assertions
	Backend  *backendtest.Server
	Layout   rediscache.Layout
	Recorder *Recorder
	Replicas []*Replica
	Start    time.Time
}

// NewEnv starts the server, the backend and cfg.Replicas replicas, and
// waits until every replica's subscription is synced.
func NewEnv(tb testing.TB, cfg Config) *Env {
	tb.Helper()
	cfg.setDefaults()
	e := &Env{tb: tb, Config: cfg, Start: time.Now()}
	e.Redis = redistest.Start(tb, redistest.Options{Config: cfg.RedisConfig})
	e.Admin = e.Redis.Client(tb)
	e.checkServer()
	e.Backend = backendtest.NewServer()
	tb.Cleanup(e.Backend.Close)
	layout, err := rediscache.NewLayout("", "", 1)
	if err != nil {
		tb.Fatal(err)
	}
	e.Layout = layout
	e.Recorder = NewRecorder(e.Start, layout.SessionKey(""))
	if !cfg.Cold {
		l2, err := rediscache.New(e.Admin, rediscache.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := l2.RevokeSession(context.Background(), "chaos-warm-up"); err != nil {
			tb.Fatalf("warm-up revocation: %v", err)
		}
	}
	for i := range cfg.Replicas {
		e.Replicas = append(e.Replicas, e.newReplica(fmt.Sprintf("replica-%d", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, r := range e.Replicas {
		if err := r.Cache.WaitSynced(ctx); err != nil {
			tb.Fatalf("%s: WaitSynced: %v", r.Name, err)
		}
	}
	return e
}

// Restart restarts the server, empty (see redistest.Server.Restart), and
// checks that the process answering is this Env's.
func (e *Env) Restart() {
	e.tb.Helper()
	e.Redis.Restart()
	e.checkServer()
}

// SetOOM makes Redis refuse writes for lack of memory, as a full Redis
// under noeviction does (on: maxmemory 64 KB below used_memory), or lifts
// that (off: maxmemory 0). Errors are logged: a restart may be under way,
// and a restarted server has no limit.
func (e *Env) SetOOM(on bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	limit := "0"
	if on {
		used, err := e.Admin.Info(ctx, "memory").Result()
		if err != nil {
			e.tb.Logf("chaos: INFO memory: %v", err)
			return
		}
		for line := range strings.Lines(used) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				limit = strconv.FormatInt(max(n-64<<10, 1), 10)
			}
		}
	}
	if err := e.Admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		e.tb.Logf("chaos: CONFIG SET maxmemory-policy: %v", err)
		return
	}
	if err := e.Admin.ConfigSet(ctx, "maxmemory", limit).Err(); err != nil {
		e.tb.Logf("chaos: CONFIG SET maxmemory: %v", err)
	}
}

// checkServer fails the test unless the server on e.Redis.Addr is the one
// started for this Env (its working directory is ours).
func (e *Env) checkServer() {
	e.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dir, err := e.Admin.ConfigGet(ctx, "dir").Result()
	if err != nil {
		e.tb.Fatalf("chaos: CONFIG GET dir: %v", err)
	}
	if got, want := dir["dir"], e.Redis.Dir(); got != want {
		e.tb.Fatalf("chaos: the server on %s runs in %q, not in this test's %q: another test took the port", e.Redis.Addr, got, want)
	}
}

// Replica is one tiered cache with its proxies and observers.
type Replica struct {
	Name  string
	Cache *tiered.Cache
	// DataProxy carries the data commands (and the subscriber's reads of
	// counters and logs); SubProxy carries the SUBSCRIBE connection. Both
	// are nil with Config.Direct.
	DataProxy, SubProxy *toxitest.Proxy
	Sub                 *SubControl
	Events              *EventLog
	Guard               *backend.Guard // nil unless Config.Guard
	Data                *redis.Client  // through DataProxy, recorded
}

// splitClient sends SUBSCRIBE over its own client and everything else over
// the embedded data client. rediscache's subscriber calls only Subscribe on
// the client for its connection, so this splits the two paths without a
// library option.
type splitClient struct {
	*redis.Client
	sub *redis.Client
}

func (s splitClient) Subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return s.sub.Subscribe(ctx, channels...)
}

func (e *Env) newReplica(name string) *Replica {
	tb, cfg := e.tb, e.Config
	tb.Helper()
	r := &Replica{Name: name, Events: NewEventLog(), Sub: NewSubControl(e.Layout.Channel())}
	dataAddr, subAddr := e.Redis.Addr, e.Redis.Addr
	if !cfg.Direct {
		r.DataProxy = toxitest.Start(tb, e.Redis.Addr)
		r.SubProxy = toxitest.Start(tb, e.Redis.Addr)
		dataAddr, subAddr = r.DataProxy.Addr(), r.SubProxy.Addr()
	}
	r.Data = redis.NewClient(&redis.Options{Addr: dataAddr, ClientName: name, ContextTimeoutEnabled: true})
	if !cfg.Direct {
		r.Data.AddHook(e.Recorder.Hook(name))
	}
	subClient := redis.NewClient(&redis.Options{Addr: subAddr, Dialer: r.Sub.Dial, ContextTimeoutEnabled: true})
	l2, err := rediscache.New(splitClient{Client: r.Data, sub: subClient}, rediscache.Options{LogMaxLen: cfg.LogMaxLen, CallTimeout: cfg.CallTimeout})
	if err != nil {
		tb.Fatal(err)
	}
	client, err := backend.New(backend.Options{BaseURL: e.Backend.URL(), Timeout: cfg.BackendTimeout})
	if err != nil {
		tb.Fatal(err)
	}
	var fetcher backend.Fetcher = client
	if cfg.Guard != nil {
		r.Guard, err = backend.NewGuard(client, *cfg.Guard)
		if err != nil {
			tb.Fatal(err)
		}
		fetcher = r.Guard
	}
	opts := tiered.Options{
		Redis:            l2,
		Backend:          fetcher,
		Local:            localcache.Options{Size: cfg.L1Size, TTL: cfg.L1TTL},
		StaleBound:       cfg.StaleBound,
		FetchTimeout:     cfg.FetchTimeout,
		NegativeTTL:      cfg.NegativeTTL,
		NegativeSize:     cfg.NegativeSize,
		SubscriberName:   name,
		SubscriberClient: subClient,
		Logger:           slog.New(r.Events.Handler()),
	}
	if cfg.Untracked {
		// A client of a type the subscriber cannot copy options from:
		// it subscribes through it as it is, without tracking.
		opts.SubscriberClient = splitClient{Client: subClient, sub: subClient}
	}
	if cfg.Heartbeat < 0 {
		opts.HeartbeatInterval = -1
	} else {
		opts.HeartbeatInterval, opts.HeartbeatTimeout = cfg.Heartbeat, cfg.HeartbeatTimeout
	}
	r.Cache, err = tiered.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		r.Cache.Close()
		client.CloseIdleConnections()
		_ = r.Data.Close()
		_ = subClient.Close()
	})
	return r
}

// SubscriberClient returns the fields of the replica's subscriber
// connection in CLIENT LIST TYPE pubsub ("id", "omem", ...), or nil if
// Redis lists none.
func (e *Env) SubscriberClient(ctx context.Context, r *Replica) (map[string]string, error) {
	list, err := e.Admin.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		return nil, err
	}
	for line := range strings.Lines(list) {
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		if fields["name"] == r.Name {
			return fields, nil
		}
	}
	return nil, nil
}

// SubscriberID returns the CLIENT ID of the replica's subscriber
// connection, or 0 if Redis lists none.
func (e *Env) SubscriberID(ctx context.Context, r *Replica) (int64, error) {
	fields, err := e.SubscriberClient(ctx, r)
	if err != nil || fields == nil {
		return 0, err
	}
	return strconv.ParseInt(fields["id"], 10, 64)
}

// KillSubscriber closes the replica's subscriber connection on the server
// side (CLIENT KILL ID). It reports whether there was one.
func (e *Env) KillSubscriber(ctx context.Context, r *Replica) (bool, error) {
	id, err := e.SubscriberID(ctx, r)
	if err != nil || id == 0 {
		return false, err
	}
	if err := e.Admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		return false, err
	}
	return true, nil
}

// NewSessions creates n active sessions in the backend, for users
// user-0 ... user-(users-1) in turn.
func (e *Env) NewSessions(n, users int) []session.Record {
	recs := make([]session.Record, n)
	for i := range recs {
		recs[i], _ = e.Backend.NewSession(fmt.Sprintf("user-%d", i%users))
	}
	return recs
}

// UsedMemory returns the server's used_memory in bytes.
func (e *Env) UsedMemory(ctx context.Context) (int64, error) {
	info, err := e.Admin.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return infoField(info, "used_memory")
}

// InfoInt returns one integer field of INFO section.
func (e *Env) InfoInt(ctx context.Context, section, field string) (int64, error) {
	info, err := e.Admin.Info(ctx, section).Result()
	if err != nil {
		return 0, err
	}
	return infoField(info, field)
}

func infoField(info, field string) (int64, error) {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			var n int64
			_, err := fmt.Sscan(v, &n)
			return n, err
		}
	}
	return 0, fmt.Errorf("chaos: INFO has no %s", field)
}
