package main

// sessionctl demo: the library's main job, in one process. Three tiered
// replicas share one Redis (embedded miniredis unless -redis is given) and
// one in-memory backend; a workload of Ed25519-signed requests, Zipf over
// the sessions, is authenticated by them while sessions are revoked through
// the backend push path. The run ends with a table per replica and exits 3
// if any request was accepted after its session's revocation had reached
// the replica that accepted it.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/internal/signing"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

func init() {
	register("demo", "run three replicas on an embedded Redis under a signed workload, with revocations", runDemo)
}

// Defaults and limits of the demo's flags.
const (
	demoDefaultReplicas = 3
	demoDefaultSessions = 10000
	demoDefaultDuration = 10 * time.Second
	demoSessionsPerUser = 4
	demoMinSessions     = 20
	demoMaxReplicas     = 64
	demoMaxSessions     = 1_000_000
	// demoSingles is how many single sessions are revoked at 40% of the run.
	demoSingles = 20
	// demoSetupTimeout bounds connecting, seeding and the first syncs.
	demoSetupTimeout = 30 * time.Second
	// demoReachTimeout bounds the wait for a revocation to reach every
	// replica; past it the revocation counts as not reached (exit 1).
	demoReachTimeout = 5 * time.Second
	// demoReplayCache bounds each replica's replay cache (about 200 bytes
	// an entry).
	demoReplayCache = 1 << 16
)

// demoConfig is the parsed command line.
type demoConfig struct {
	redisURL string
	caFile   string
	insecure bool
	replicas int
	sessions int
	duration time.Duration
	json     bool
	progress bool
	seed     uint64
	workers  int
}

func (c *demoConfig) validate() error {
	switch {
	case c.replicas < 1 || c.replicas > demoMaxReplicas:
		return fmt.Errorf("-replicas %d: want 1 to %d", c.replicas, demoMaxReplicas)
	case c.sessions < demoMinSessions || c.sessions > demoMaxSessions:
		return fmt.Errorf("-sessions %d: want %d to %d", c.sessions, demoMinSessions, demoMaxSessions)
	case c.duration < 100*time.Millisecond || c.duration > 24*time.Hour:
		return fmt.Errorf("-duration %v: want 100ms to 24h", c.duration)
	case c.redisURL == "" && (c.caFile != "" || c.insecure):
		return errors.New("-tls-ca and -tls-insecure-skip-verify need -redis")
	}
	return nil
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := demoConfig{workers: runtime.GOMAXPROCS(0)}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.StringVar(&cfg.redisURL, "redis", "", "run against this Redis (redis:// or rediss://) instead of an embedded one; keys get a unique prefix and are deleted at the end")
	fs.StringVar(&cfg.caFile, "tls-ca", "", "PEM file of CA certificates to trust for a rediss:// -redis")
	fs.BoolVar(&cfg.insecure, "tls-insecure-skip-verify", false, "DANGEROUS: do not verify the -redis server's TLS certificate")
	fs.IntVar(&cfg.replicas, "replicas", demoDefaultReplicas, "number of tiered replicas in the process")
	fs.IntVar(&cfg.sessions, "sessions", demoDefaultSessions, fmt.Sprintf("number of seeded sessions (%d per user)", demoSessionsPerUser))
	fs.DurationVar(&cfg.duration, "duration", demoDefaultDuration, "length of the workload")
	fs.BoolVar(&cfg.json, "json", false, jsonUsage+" (no progress line)")
	fs.BoolVar(&cfg.progress, "progress", false, "show the progress line even when stderr is not a terminal")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seed of the workload: which sessions are asked for and which are revoked")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, `usage: sessionctl demo [flags]

Starts an embedded Redis (or uses -redis), an in-memory session backend with
seeded sessions and Ed25519 key pairs, and several tiered cache replicas in
this process. Workers send signed requests, Zipf-distributed over the
sessions, to the replicas, which authenticate each one: look up the session,
reject it if revoked, verify the signature with the cached public key. At 40%
of the run single sessions are revoked, at 60% all sessions of one user, each
through the backend push path (the backend revokes, then one replica's
MarkRevoked or MarkAllRevokedForUser). The run ends with a table per replica.

flags:
`)
		printDefaults(w, fs)
		fmt.Fprint(w, `
exit status:
  0  every revocation reached every replica and no request was wrongly accepted
  1  setup failed (Redis unreachable, ...) or a revocation did not reach a replica
  2  bad usage
  3  a request was accepted after its session's revocation reached the replica
`)
	}
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if err := cfg.validate(); err != nil {
		report(stderr, "demo", exitUsage, err.Error())
		return exitUsage
	}
	if cfg.json {
		cfg.progress = false
	} else if !cfg.progress {
		cfg.progress = isTerminal(stderr)
	}

	env, err := startDemoEnv(ctx, cfg)
	if err != nil {
		report(stderr, "demo", exitFailure, demoOneLine(err))
		return exitFailure
	}
	res := runDemoWorkload(ctx, env, cfg, stderr)
	if err := env.close(); err != nil {
		fmt.Fprintf(stderr, "sessionctl demo: cleanup: %s\n", demoOneLine(err))
	}
	if cfg.json {
		if err := res.writeJSON(stdout); err != nil {
			report(stderr, "demo", exitFailure, err.Error())
			return exitFailure
		}
	} else {
		res.writeTable(stdout)
	}
	if ctx.Err() != nil {
		report(stderr, "demo", exitFailure, "interrupted")
		return exitFailure
	}
	return res.ExitCode
}

// demoSession is a seeded session and the key its client signs with.
type demoSession struct {
	id   string
	user string
	priv []byte // ed25519.PrivateKey
}

// demoReplica is one gateway replica: its cache and its request verifier.
type demoReplica struct {
	name     string
	cache    *tiered.Cache
	verifier *signing.Verifier
}

// demoEnv is everything the demo starts; close stops it all.
type demoEnv struct {
	mr       *miniredis.Miniredis  // nil with -redis
	where    string                // "embedded Redis" or "Redis at host:port"
	prefix   string                // key prefix; "" on the embedded Redis
	rdb      redis.UniversalClient // with -redis: deletes the run's keys at the end
	backend  *backendtest.Server
	client   *backend.Client
	replicas []*demoReplica
	sessions []demoSession
	users    int
}

// startDemoEnv starts Redis (or connects), the backend with its sessions,
// and the replicas, and waits until every replica's subscriber is synced.
func startDemoEnv(ctx context.Context, cfg demoConfig) (_ *demoEnv, err error) {
	ctx, cancel := context.WithTimeout(ctx, demoSetupTimeout)
	defer cancel()
	env := &demoEnv{}
	defer func() {
		if err != nil {
			_ = env.close()
		}
	}()

	redisURL := cfg.redisURL
	if redisURL == "" {
		env.mr, err = miniredis.Run()
		if err != nil {
			return nil, fmt.Errorf("start embedded Redis: %w", err)
		}
		redisURL = "redis://" + env.mr.Addr()
		env.where = "embedded Redis (miniredis)"
	} else {
		var raw [6]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, err
		}
		env.prefix = "sessionctl-demo:" + hex.EncodeToString(raw[:]) + ":"
		env.where = "Redis at " + demoRedisHost(cfg.redisURL) + ", key prefix " + env.prefix
		// One client of its own deletes the run's keys at the end.
		conf := redisconn.Config{URL: cfg.redisURL, CAFile: cfg.caFile, InsecureSkipTLSVerify: cfg.insecure, ClientName: "demo-cleanup"}
		if env.rdb, err = conf.NewClient(); err != nil {
			return nil, err
		}
	}
	env.backend = backendtest.NewServer()
	env.client, err = backend.New(backend.Options{BaseURL: env.backend.URL()})
	if err != nil {
		return nil, err
	}

	// The replicas before the sessions: an unreachable Redis fails before
	// any seeding. Open returns once the replica is subscribed and synced.
	for i := range cfg.replicas {
		r := &demoReplica{name: fmt.Sprintf("demo-replica-%d", i+1)}
		conf := tiered.Config{RedisURL: redisURL, BackendURL: env.backend.URL(), Name: r.name, KeyPrefix: env.prefix, TLSCAFile: cfg.caFile}
		if cfg.insecure {
			conf.TLSCAFile, conf.TLS = "", &tls.Config{InsecureSkipVerify: true} // -tls-insecure-skip-verify, said on the command line
		}
		if r.cache, err = tiered.Open(ctx, conf); err != nil {
			return nil, err
		}
		env.replicas = append(env.replicas, r)
		r.verifier, err = signing.NewVerifier(signing.VerifierOptions{ReplayCacheSize: demoReplayCache})
		if err != nil {
			return nil, err
		}
	}
	env.sessions = make([]demoSession, cfg.sessions)
	for i := range env.sessions {
		user := fmt.Sprintf("u-%06d", i/demoSessionsPerUser)
		rec, priv := env.backend.NewSession(user)
		env.sessions[i] = demoSession{id: rec.DeviceSessionID, user: user, priv: priv}
	}
	env.users = (cfg.sessions + demoSessionsPerUser - 1) / demoSessionsPerUser
	return env, nil
}

// close stops the replicas, deletes the run's keys from an external Redis,
// and stops the backend and the embedded Redis. It returns the cleanup's
// error.
func (e *demoEnv) close() error {
	var err error
	for _, r := range e.replicas {
		if r.cache != nil {
			_ = r.cache.Close()
		}
	}
	e.replicas = nil
	if e.rdb != nil {
		ctx, cancel := context.WithTimeout(context.Background(), demoSetupTimeout)
		err = demoDeleteKeys(ctx, e.rdb, e.prefix)
		cancel()
		_ = e.rdb.Close()
		e.rdb = nil
	}
	if e.client != nil {
		e.client.CloseIdleConnections()
	}
	if e.backend != nil {
		e.backend.Close()
		e.backend = nil
	}
	if e.mr != nil {
		e.mr.Close()
		e.mr = nil
	}
	return err
}

// demoDeleteKeys deletes every key under prefix (SCAN and UNLINK).
func demoDeleteKeys(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return errors.New(redisconn.Explain(err))
		}
		if len(keys) > 0 {
			if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
				return errors.New(redisconn.Explain(err))
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// demoRedisHost returns the host:port of a Redis URL, without credentials.
func demoRedisHost(raw string) string {
	o, err := redis.ParseURL(raw)
	if err != nil {
		return "(unparsed URL)"
	}
	return o.Addr
}

// demoOneLine keeps an error message on one line.
func demoOneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// demoCheckRecord is a sanity check used by the workload: the record the
// replica answered must be the session asked for.
func demoCheckRecord(rec session.Record, id string) bool {
	return rec.DeviceSessionID == id
}
