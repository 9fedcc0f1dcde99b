package tiered

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
)

// openTimeout bounds an Open in these tests: far above what a local
// redis-server needs, and reached only when something is broken.
const openTimeout = 10 * time.Second

func TestOpenConfigErrors(t *testing.T) {
	valid := Config{RedisURL: "redis://127.0.0.1:6379", BackendURL: "http://127.0.0.1:8080"}
	tests := []struct {
		name string
		edit func(*Config)
		want string // the whole error
	}{
		{"no RedisURL", func(c *Config) { c.RedisURL = "" }, "tiered: Config.RedisURL is required"},
		{"RedisURL unparsable", func(c *Config) { c.RedisURL = "redis://u:hunter2@[::1" },
			"tiered: Config.RedisURL is not a valid URL"},
		{"RedisURL scheme", func(c *Config) { c.RedisURL = "http://127.0.0.1:6379" },
			`tiered: Config.RedisURL has scheme "http"; want redis, rediss, unix, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster`},
		{"RedisURL sentinel scheme without TLS base", func(c *Config) { c.RedisURL = "unix+sentinel://h:1?master_name=m" },
			`tiered: Config.RedisURL has scheme "unix+sentinel"; want redis, rediss, unix, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster`},
		{"RedisURL unknown option", func(c *Config) { c.RedisURL = "redis://u:hunter2@127.0.0.1:6379?colour=blue" },
			"tiered: Config.RedisURL: redis: unexpected option: colour"},
		{"RedisURL bad database", func(c *Config) { c.RedisURL = "redis://u:hunter2@127.0.0.1:6379/zero" },
			`tiered: Config.RedisURL: redis: invalid database number: "zero"`},
		{"RedisURL skip_verify", func(c *Config) { c.RedisURL = "rediss://127.0.0.1:6379?skip_verify=true" },
			"tiered: Config.RedisURL: skip_verify is refused; verification changes only through Config.TLS"},
		{"RedisURL sentinel without master", func(c *Config) { c.RedisURL = "redis+sentinel://127.0.0.1:26379" },
			"tiered: Config.RedisURL: a Sentinel URL needs ?master_name="},
		{"RedisURL cluster with a database", func(c *Config) { c.RedisURL = "redis+cluster://127.0.0.1:7000/3" },
			"tiered: Config.RedisURL: Redis Cluster has database 0 only; remove the path"},
		{"RedisURL cluster bad addr", func(c *Config) { c.RedisURL = "redis+cluster://127.0.0.1:7000?addr=nohost" },
			"tiered: Config.RedisURL: redis: unable to parse addr param: nohost"},
		{"no BackendURL", func(c *Config) { c.BackendURL = "" }, "tiered: Config.BackendURL is required"},
		{"BackendURL unparsable", func(c *Config) { c.BackendURL = "http://[::1" }, "tiered: Config.BackendURL is not a valid URL"},
		{"BackendURL scheme", func(c *Config) { c.BackendURL = "ftp://sessions.internal" },
			"tiered: Config.BackendURL must be an http:// or https:// URL"},
		{"BackendURL host", func(c *Config) { c.BackendURL = "http:///api" }, "tiered: Config.BackendURL has no host"},
		{"BackendURL user", func(c *Config) { c.BackendURL = "http://u:hunter2@sessions.internal" },
			"tiered: Config.BackendURL must not contain user info"},
		{"BackendURL query", func(c *Config) { c.BackendURL = "http://sessions.internal/?x=1" },
			"tiered: Config.BackendURL must not have a query or a fragment"},
		{"Name", func(c *Config) { c.Name = "replica 1" }, "tiered: Config.Name has a disallowed byte 0x20 at offset 7"},
		{"KeyPrefix", func(c *Config) { c.KeyPrefix = "env*:" }, "tiered: Config.KeyPrefix has a disallowed byte 0x2a at offset 3"},
		{"Stripes negative", func(c *Config) { c.Stripes = -1 }, "tiered: Config.Stripes -1 is out of range 1..1024"},
		{"Stripes too many", func(c *Config) { c.Stripes = 1025 }, "tiered: Config.Stripes 1025 is out of range 1..1024"},
		{"SessionTTL negative", func(c *Config) { c.SessionTTL = -time.Second }, "tiered: negative Config.SessionTTL -1s"},
		{"SessionTTL short", func(c *Config) { c.SessionTTL = 500 * time.Millisecond },
			"tiered: Config.SessionTTL 500ms is shorter than 1s"},
		{"L1Size", func(c *Config) { c.L1Size = -1 }, "tiered: negative Config.L1Size -1"},
		{"L1TTL negative", func(c *Config) { c.L1TTL = -time.Second }, "tiered: negative Config.L1TTL -1s"},
		{"L1TTL above SessionTTL", func(c *Config) { c.SessionTTL, c.L1TTL = time.Minute, 2*time.Minute },
			"tiered: Config.L1TTL 2m0s must be at most Config.SessionTTL 1m0s"},
		{"L1TTL default above SessionTTL", func(c *Config) { c.SessionTTL = 10 * time.Second },
			"tiered: Config.L1TTL 30s must be at most Config.SessionTTL 10s"},
		{"StaleBound", func(c *Config) { c.StaleBound = -time.Second }, "tiered: negative Config.StaleBound -1s"},
		{"RedisTimeout negative", func(c *Config) { c.RedisTimeout = -time.Second }, "tiered: negative Config.RedisTimeout -1s"},
		{"BackendTimeout negative", func(c *Config) { c.BackendTimeout = -time.Second }, "tiered: negative Config.BackendTimeout -1s"},
		{"BackendTimeout above the fill window", func(c *Config) { c.BackendTimeout = 5 * time.Second },
			"tiered: Config.BackendTimeout 5s + 4 × Config.RedisTimeout 250ms = 6s must be at most half of the fill window 10s"},
		{"RedisTimeout above the fill window", func(c *Config) { c.RedisTimeout = time.Second },
			"tiered: Config.BackendTimeout 2s + 4 × Config.RedisTimeout 1s = 6s must be at most half of the fill window 10s"},
		{"TLSCAFile and TLS", func(c *Config) {
			c.RedisURL, c.TLSCAFile, c.TLS = "rediss://127.0.0.1:6379", "ca.crt", &tls.Config{}
		}, "tiered: Config.TLSCAFile and Config.TLS are both set; set one"},
		{"TLSCAFile without rediss", func(c *Config) { c.TLSCAFile = "ca.crt" },
			"tiered: Config.TLSCAFile is set but Config.RedisURL is not a rediss URL"},
		{"TLS without rediss", func(c *Config) { c.RedisURL, c.TLS = "redis+cluster://127.0.0.1:7000", &tls.Config{} },
			"tiered: Config.TLS is set but Config.RedisURL is not a rediss URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.edit(&cfg)
			err := cfg.validate()
			if err == nil || err.Error() != tt.want {
				t.Fatalf("validate() = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("validate() = %q: the error shows the password", err)
			}
			// Open refuses the same Config before any I/O.
			c, err := Open(context.Background(), cfg)
			if c != nil || err == nil || err.Error() != tt.want {
				t.Errorf("Open() = %v, %v; want nil, %q", c, err, tt.want)
			}
		})
	}
}

func TestOpenConfigAccepts(t *testing.T) {
	for _, cfg := range []Config{
		{RedisURL: "redis://127.0.0.1:6379", BackendURL: "http://127.0.0.1:8080"},
		{RedisURL: "rediss://u:pw@redis.internal:6380/2?dial_timeout=3s", BackendURL: "https://sessions.internal/base/", TLSCAFile: "ca.crt"},
		{RedisURL: "unix:///run/redis.sock?db=1", BackendURL: "http://127.0.0.1:8080"},
		{RedisURL: "redis+sentinel://s1:26379/1?master_name=mymaster&addr=s2:26379", BackendURL: "http://127.0.0.1:8080"},
		{RedisURL: "rediss+sentinel://s1:26379?master_name=mymaster", BackendURL: "http://127.0.0.1:8080", TLS: &tls.Config{}},
		{RedisURL: "redis+cluster://n1:7000?addr=n2:7000&addr=n3:7000", BackendURL: "http://127.0.0.1:8080", Stripes: 16},
		{RedisURL: "rediss+cluster://n1:7000", BackendURL: "http://127.0.0.1:8080"},
		{
			RedisURL: "redis://127.0.0.1:6379", BackendURL: "http://127.0.0.1:8080", Name: "gw-1", KeyPrefix: "staging:",
			Stripes: 1024, SessionTTL: time.Second, L1Size: 1, L1TTL: time.Second, StaleBound: time.Millisecond,
			RedisTimeout: time.Second, BackendTimeout: time.Second,
		},
	} {
		if err := cfg.validate(); err != nil {
			t.Errorf("validate(%s) = %v, want nil", cfg.RedisURL, err)
		}
	}
}

// Each URL form becomes the go-redis options its own parser makes, with
// what Open adds: context deadlines, the name, the master's credentials
// from a Sentinel URL's user info.
func TestOpenURLForms(t *testing.T) {
	tests := []struct {
		url, where string
		check      func(t *testing.T, r redisTarget)
	}{
		{"redis://127.0.0.1:6390/2", "redis at 127.0.0.1:6390", func(t *testing.T, r redisTarget) {
			if o := r.simple; o == nil || o.DB != 2 || o.TLSConfig != nil || !o.ContextTimeoutEnabled || o.ClientName != "gw-1" {
				t.Errorf("options = %+v; want db 2, no TLS, context deadlines, name gw-1", o)
			}
		}},
		{"rediss://redis.internal", "redis at redis.internal:6379", func(t *testing.T, r redisTarget) {
			if o := r.simple; o == nil || o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.internal" || o.TLSConfig.MinVersion != tls.VersionTLS12 {
				t.Errorf("TLS = %+v; want server name redis.internal, TLS 1.2 or later", o.TLSConfig)
			}
		}},
		{"redis+sentinel://u:pw@s1:26379/1?master_name=mymaster&addr=s2:26379", "redis sentinel at s1:26379,s2:26379 (master mymaster)", func(t *testing.T, r redisTarget) {
			o := r.failover
			if o == nil || o.DB != 1 || o.SentinelUsername != "u" || o.SentinelPassword != "pw" || o.Username != "u" || o.Password != "pw" ||
				!o.ContextTimeoutEnabled || o.ClientName != "gw-1" || o.TLSConfig != nil {
				t.Errorf("options = %+v; want db 1, user u for sentinels and master, context deadlines, name gw-1", o)
			}
		}},
		{"rediss+sentinel://u:pw@s1:26379?master_name=m&password=other", "redis sentinel at s1:26379 (master m)", func(t *testing.T, r redisTarget) {
			if o := r.failover; o == nil || o.Password != "other" || o.SentinelPassword != "pw" || o.TLSConfig == nil {
				t.Errorf("options = %+v; want the master's own password and TLS", o)
			}
		}},
		{"redis+cluster://n1:7000?addr=n2:7001", "redis cluster at n1:7000,n2:7001", func(t *testing.T, r redisTarget) {
			if o := r.cluster; o == nil || !o.ContextTimeoutEnabled || o.ClusterStateReloadInterval != clusterStateReload || o.ClientName != "gw-1" {
				t.Errorf("options = %+v; want context deadlines, slot map reload %v, name gw-1", o, clusterStateReload)
			}
		}},
		{"rediss+cluster://n1:7000", "redis cluster at n1:7000", func(t *testing.T, r redisTarget) {
			if o := r.cluster; o == nil || o.TLSConfig == nil || o.TLSConfig.MinVersion != tls.VersionTLS12 {
				t.Errorf("options = %+v; want TLS 1.2 or later", o)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			r, err := parseRedisURL(tt.url)
			if err != nil {
				t.Fatalf("parseRedisURL(%q) = %v", tt.url, err)
			}
			if err := r.setTLS("", nil); err != nil {
				t.Fatal(err)
			}
			r.setCommon("gw-1")
			if r.where != tt.where {
				t.Errorf("where = %q, want %q", r.where, tt.where)
			}
			tt.check(t, r)
		})
	}
}

// openEnv is a redis-server and a backend for caches made by Open.
type openEnv struct {
	srv     *redistest.Server
	backend *backendtest.Server
}

func newOpenEnv(t *testing.T, opts redistest.Options) *openEnv {
	t.Helper()
	srv := redistest.Start(t, opts)
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	return &openEnv{srv: srv, backend: be}
}

func (e *openEnv) config(name string) Config {
	return Config{RedisURL: "redis://" + e.srv.Addr, BackendURL: e.backend.URL(), Name: name}
}

// open opens a cache that reports what it applies to obs, and closes it at
// the end of the test.
func (e *openEnv) open(t *testing.T, cfg Config) (*Cache, *observer) {
	t.Helper()
	obs := newObserver()
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	c, err := open(ctx, cfg, testHooks{applied: obs.applied, event: obs.event})
	if err != nil {
		t.Fatalf("Open(%s) = %v", cfg.Name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, obs
}

func TestOpenLooksUpThroughTiersAndFansOut(t *testing.T) {
	e := newOpenEnv(t, redistest.Options{})
	a, aObs := e.open(t, e.config("a"))
	b, bObs := e.open(t, e.config("b"))
	rec, _ := e.backend.NewSession("user-1")
	id := rec.DeviceSessionID

	lookup := func(c *Cache, want Tier, status session.Status) {
		t.Helper()
		got, tier, err := c.LookupTier(ctx, id)
		if err != nil || tier != want || got.Status != status || got.ClientPublicKey != rec.ClientPublicKey {
			t.Fatalf("LookupTier(%q) = %+v, %v, %v; want %v from %v", id, got, tier, err, status, want)
		}
	}
	lookup(a, TierBackend, session.StatusActive)
	lookup(a, TierL1, session.StatusActive)
	lookup(b, TierL2, session.StatusActive)
	lookup(b, TierL1, session.StatusActive)

	a.MarkRevoked(id)
	lookup(a, TierL1, session.StatusRevoked)
	aObs.wait(t, id, openTimeout) // written, published and back on a's own channel
	bObs.wait(t, id, openTimeout)
	lookup(b, TierL1, session.StatusRevoked)
	if s, err := e.srv.Client(t).HGet(ctx, "session:"+id, "status").Result(); err != nil || s != "revoked" {
		t.Errorf("HGET session:%s status = %q, %v; want revoked", id, s, err)
	}
	if got := e.backend.Calls(); got != 1 {
		t.Errorf("backend calls = %d, want 1", got)
	}
}

// Close closes what Open made: Redis sees the named connections go, and no
// goroutine is left.
func TestOpenCloseClosesClients(t *testing.T) {
	e := newOpenEnv(t, redistest.Options{})
	admin := e.srv.Client(t)
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	before := goleak.IgnoreCurrent()

	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	c, err := Open(ctx, e.config("closer"))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := e.backend.NewSession("user-1")
	if _, err := c.Lookup(ctx, rec.DeviceSessionID); err != nil {
		t.Fatal(err)
	}
	if n := namedClients(t, e, "closer"); n == 0 {
		t.Fatal("CLIENT LIST shows no connection named closer while the cache is open")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
	// Nothing signals the end of a go-redis or net/http goroutine, nor
	// Redis's reaping of a closed connection: poll, as
	// redistest.VerifyTestMain does.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := namedClients(t, e, "closer")
		leak := goleak.Find(before)
		if n == 0 && leak == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Close: %d connections named closer; goroutines: %v", n, leak)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// namedClients counts the connections CLIENT LIST shows with the name.
func namedClients(t *testing.T, e *openEnv, name string) int {
	t.Helper()
	list, err := e.srv.Client(t).ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		if strings.Contains(sc.Text(), " name="+name+" ") {
			n++
		}
	}
	return n
}

// A port that refuses connections fails Open at once, with one line that
// names the address, for every URL form.
func TestOpenClosedPortFailsFast(t *testing.T) {
	addr := redistest.ClosedAddr(t)
	tests := []struct{ url, want string }{
		{"redis://" + addr, "tiered: redis at " + addr + ": connection refused"},
		{"redis+sentinel://" + addr + "?master_name=mymaster", "tiered: redis sentinel at " + addr + " (master mymaster): connection refused"},
		{"redis+cluster://" + addr, "tiered: redis cluster at " + addr + ": connection refused"},
	}
	for _, tt := range tests {
		t.Run(strings.SplitN(tt.url, ":", 2)[0], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
			defer cancel()
			start := time.Now()
			c, err := Open(ctx, Config{RedisURL: tt.url, BackendURL: "http://127.0.0.1:1"})
			took := time.Since(start)
			if c != nil || err == nil || err.Error() != tt.want {
				t.Fatalf("Open() = %v, %v; want nil, %q", c, err, tt.want)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("Open() = %v, does not wrap ECONNREFUSED", err)
			}
			// go-redis's own retries take about 2s; Open does not retry.
			if took > time.Second {
				t.Errorf("Open() took %v, want under 1s", took)
			}
		})
	}
}

// A Redis that answers PING but refuses SUBSCRIBE fails Open when ctx ends,
// with what failed, and leaves nothing running.
func TestOpenNotSubscribedClosesEverything(t *testing.T) {
	e := newOpenEnv(t, redistest.Options{ACLFile: "user default on nopass ~* &* +@all -subscribe"})
	before := goleak.IgnoreCurrent()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := Open(ctx, e.config("unsubscribed"))
	want := "tiered: redis at " + e.srv.Addr + ": invalidation channel not subscribed: context deadline exceeded"
	if c != nil || err == nil || err.Error() != want {
		t.Fatalf("Open() = %v, %v; want nil, %q", c, err, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open() = %v, does not wrap context.DeadlineExceeded", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := goleak.Find(before)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left by a failed Open: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOpenTLS(t *testing.T) {
	ca := redistest.NewTestCA(t)
	e := newOpenEnv(t, redistest.Options{TLS: ca})
	url := "rediss://" + e.srv.Addr

	for _, tt := range []struct {
		name string
		edit func(*Config)
	}{
		{"TLSCAFile", func(c *Config) { c.TLSCAFile = ca.CAFile() }},
		{"TLS", func(c *Config) { c.TLS = &tls.Config{RootCAs: ca.CertPool()} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config("tls-" + tt.name)
			cfg.RedisURL = url
			tt.edit(&cfg)
			c, _ := e.open(t, cfg)
			rec, _ := e.backend.NewSession("user-1")
			if got, err := c.Lookup(ctx, rec.DeviceSessionID); err != nil || got.Status != session.StatusActive {
				t.Fatalf("Lookup(%q) = %v, %v; want active", rec.DeviceSessionID, got.Status, err)
			}
			if err := c.Revoke(ctx, rec.DeviceSessionID); err != nil {
				t.Fatalf("Revoke(%q) = %v", rec.DeviceSessionID, err)
			}
		})
	}
	t.Run("SystemRoots", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
		defer cancel()
		c, err := Open(ctx, Config{RedisURL: url, BackendURL: e.backend.URL()})
		want := "tiered: redis at " + e.srv.Addr + ": TLS certificate not trusted: x509: certificate signed by unknown authority"
		if c != nil || err == nil || err.Error() != want {
			t.Fatalf("Open() = %v, %v; want nil, %q", c, err, want)
		}
	})
	t.Run("MissingCAFile", func(t *testing.T) {
		c, err := Open(ctx, Config{RedisURL: url, BackendURL: e.backend.URL(), TLSCAFile: "/nonexistent/ca.crt"})
		if c != nil || err == nil || !strings.HasPrefix(err.Error(), "tiered: Config.TLSCAFile: ") {
			t.Fatalf("Open() = %v, %v; want an error naming Config.TLSCAFile", c, err)
		}
	})
}

func TestOpenSentinelAndClusterURLs(t *testing.T) {
	t.Run("Sentinel", func(t *testing.T) {
		sg := redistest.StartSentinel(t, redistest.SentinelOptions{})
		e := &openEnv{srv: sg.Primary(), backend: backendtest.NewServer()}
		t.Cleanup(e.backend.Close)
		addrs := sg.SentinelAddrs()
		cfg := e.config("sentinel")
		cfg.RedisURL = "redis+sentinel://" + addrs[0] + "?master_name=" + sg.MasterName() + "&addr=" + strings.Join(addrs[1:], "&addr=")
		openAndRevoke(t, e, cfg)
	})
	t.Run("Cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, redistest.ClusterOptions{})
		be := backendtest.NewServer()
		t.Cleanup(be.Close)
		addrs := cl.Addrs()
		cfg := Config{
			RedisURL:   "redis+cluster://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr="),
			BackendURL: be.URL(),
			Name:       "cluster",
			Stripes:    16,
		}
		openAndRevoke(t, &openEnv{backend: be}, cfg)
	})
}

// openAndRevoke opens two caches with cfg and checks that a session filled
// by one is read from Redis by the other, and that a revocation reaches it.
func openAndRevoke(t *testing.T, e *openEnv, cfg Config) {
	t.Helper()
	a, _ := e.open(t, cfg)
	b, bObs := e.open(t, cfg)
	rec, _ := e.backend.NewSession("user-1")
	id := rec.DeviceSessionID
	for _, step := range []struct {
		c    *Cache
		tier Tier
	}{{a, TierBackend}, {b, TierL2}, {b, TierL1}} {
		if got, tier, err := step.c.LookupTier(ctx, id); err != nil || tier != step.tier || got.Status != session.StatusActive {
			t.Fatalf("LookupTier(%q) = %v, %v, %v; want active from %v", id, got.Status, tier, err, step.tier)
		}
	}
	if err := a.Revoke(ctx, id); err != nil {
		t.Fatalf("Revoke(%q) = %v", id, err)
	}
	bObs.wait(t, id, openTimeout)
	if got, tier, err := b.LookupTier(ctx, id); err != nil || got.Status != session.StatusRevoked {
		t.Fatalf("LookupTier(%q) after the revocation = %v, %v, %v; want revoked", id, got.Status, tier, err)
	}
}

// With NoWait, Open contacts no Redis: where nothing listens it returns a
// Cache at once, even with its context already ended; lookups answer from
// the backend and WaitSynced waits. Once a redis-server listens there, the
// subscriber connects on its own, and a revocation goes through Redis and
// back on the channel.
func TestOpenNoWaitStartsWithoutRedis(t *testing.T) {
	e := newOpenEnv(t, redistest.Options{})
	e.srv.Kill() // its port stays reserved: connections are refused
	cfg := e.config("nowait")
	cfg.NoWait = true
	obs := newObserver()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	c, err := open(ended, cfg, testHooks{applied: obs.applied, event: obs.event})
	if err != nil {
		t.Fatalf("Open() with NoWait and Redis down = %v, want a Cache", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if took := time.Since(start); took > time.Second {
		t.Errorf("Open() with NoWait took %v, want under 1s", took)
	}

	rec, _ := e.backend.NewSession("user-1")
	id := rec.DeviceSessionID
	if got, tier, err := c.LookupTier(ctx, id); err != nil || tier != TierBackend || got.Status != session.StatusActive {
		t.Fatalf("LookupTier(%q) with Redis down = %v, %v, %v; want active from the backend", id, got.Status, tier, err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if err := c.WaitSynced(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSynced() with Redis down = %v, want context.DeadlineExceeded", err)
	}
	if c.Stats().Channel.Subscribed {
		t.Fatal("Stats().Channel.Subscribed with Redis down, want false")
	}

	e.srv.Restart()
	synced, cancelSynced := context.WithTimeout(context.Background(), openTimeout)
	defer cancelSynced()
	if err := c.WaitSynced(synced); err != nil {
		t.Fatalf("WaitSynced() after Redis started = %v", err)
	}
	if err := c.Revoke(ctx, id); err != nil {
		t.Fatalf("Revoke(%q) = %v", id, err)
	}
	obs.wait(t, id, openTimeout) // written, published and back on the channel
	if s, err := e.srv.Client(t).HGet(ctx, "session:"+id, "status").Result(); err != nil || s != "revoked" {
		t.Errorf("HGET session:%s status = %q, %v; want revoked", id, s, err)
	}
	if got, err := c.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
		t.Errorf("Lookup(%q) after the revocation = %v, %v; want revoked", id, got.Status, err)
	}
}

// NoWait changes only the I/O: Open still checks the whole Config first.
func TestOpenNoWaitChecksConfig(t *testing.T) {
	c, err := Open(context.Background(), Config{RedisURL: "redis://127.0.0.1:6379", BackendURL: "ftp://x", NoWait: true})
	if want := "tiered: Config.BackendURL must be an http:// or https:// URL"; c != nil || err == nil || err.Error() != want {
		t.Fatalf("Open() = %v, %v; want nil, %q", c, err, want)
	}
	c, err = Open(context.Background(), Config{RedisURL: "rediss://127.0.0.1:6379", BackendURL: "http://127.0.0.1:1",
		TLSCAFile: "/nonexistent/ca.crt", NoWait: true})
	if c != nil || err == nil || !strings.HasPrefix(err.Error(), "tiered: Config.TLSCAFile: ") {
		t.Fatalf("Open() = %v, %v; want an error naming Config.TLSCAFile", c, err)
	}
}
