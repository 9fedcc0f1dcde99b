package tiered

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// clusterStateReload is how often Open's cluster clients may reload their
// slot map: go-redis's 60 s default leaves a dead master's slots
// unreachable for as long after a replica took them over.
const clusterStateReload = 250 * time.Millisecond

// Config configures Open. RedisURL and BackendURL are required; every
// other zero field means the documented default. Open checks the whole
// Config before it connects to anything, and each error names the field.
type Config struct {
	// RedisURL names the Redis deployment: the shared L2 and the
	// invalidation channel. Required. The forms, parsed by go-redis's own
	// redis.ParseURL, redis.ParseFailoverURL and redis.ParseClusterURL
	// (whose query options, such as dial_timeout=3s or pool_size=20, they
	// accept):
	//
	//	redis://[user:password@]host[:port][/db]          one Redis (port 6379, db 0)
	//	rediss://[user:password@]host[:port][/db]         the same over TLS
	//	unix://[user:password@]/path/to/redis.sock[?db=N] one Redis on a Unix socket
	//	redis+sentinel://[user:password@]host:port[/db]?master_name=NAME[&addr=host:port...]
	//	redis+cluster://[user:password@]host:port[?addr=host:port...]
	//
	// and rediss+sentinel:// and rediss+cluster:// over TLS. A Sentinel
	// URL names one sentinel as its host and the others with addr=; its
	// user info authenticates to the sentinels and, unless the URL has a
	// username= or password= option for the master, to the master too. A
	// Cluster URL names seed nodes the same way. skip_verify= is refused:
	// certificate verification changes only through TLS.
	RedisURL string
	// BackendURL is the session backend's http:// or https:// base URL,
	// for example "http://sessions.internal:8080" (see package backend).
	// Required.
	BackendURL string
	// Name names this replica's Redis connections, as CLIENT LIST shows
	// them; the subscriber's connection keeps it across reconnects. It
	// must consist of the bytes '!' to '~'. Default "": the URL's
	// client_name= option, if any.
	Name string
	// KeyPrefix is put in front of every Redis key and of the channel, so
	// that two environments can share one Redis. Default "".
	KeyPrefix string
	// Stripes is the number of keyspace stripes (see rediscache.Layout):
	// 1 on one Redis or Sentinel, at least 4 × the number of masters on
	// Redis Cluster. Every replica of a deployment must use the same
	// value. Default 1.
	Stripes int
	// SessionTTL is the lifetime of a session in Redis, renewed by every
	// fill; a revoked record is kept at least this long. At least 1s.
	// Default rediscache.DefaultSessionTTL (24h).
	SessionTTL time.Duration
	// L1Size bounds the sessions held in this process. Default
	// localcache.DefaultSize (10,000).
	L1Size int
	// L1TTL is the lifetime of a session in this process, at most
	// SessionTTL. Default localcache.DefaultTTL (30s).
	L1TTL time.Duration
	// StaleBound is how long L1 may keep serving "active" after the
	// invalidation channel was found unhealthy (see Options.StaleBound).
	// Default DefaultStaleBound (1s).
	StaleBound time.Duration
	// RedisTimeout bounds each Redis call, within the caller's context.
	// Default rediscache.DefaultCallTimeout (250ms).
	RedisTimeout time.Duration
	// BackendTimeout bounds each backend request. A shared backend call
	// and the Redis writes after it are bounded by BackendTimeout +
	// 4 × RedisTimeout, which must be at most half of the fill window
	// (rediscache.DefaultFillWindow, 10s). Default backend.DefaultTimeout
	// (2s).
	BackendTimeout time.Duration
	// TLSCAFile is a PEM file of the certificate authorities to trust for
	// a rediss URL, instead of the system's. Only one of TLSCAFile and TLS
	// may be set, and only with a rediss URL.
	TLSCAFile string
	// TLS is the TLS configuration for a rediss URL, for what TLSCAFile
	// cannot say (client certificates, a server name). Open uses a clone;
	// an empty ServerName becomes the URL's host. Default: verify the
	// server against the system's roots, TLS 1.2 or later.
	TLS *tls.Config
	// Logger receives failures; never a full session id, a password or a
	// URL. Default: discard.
	Logger *slog.Logger
	// NoWait makes Open return without contacting Redis, so that a
	// replica can start while Redis is down: Open checks the Config
	// (reading TLSCAFile) and builds the Cache, but neither pings Redis
	// nor waits for the invalidation channel. The Cache starts as one
	// from New does: its subscriber connects in the background, retrying
	// until Redis answers; until the channel is first synced, L1's
	// "active" entries are subject to StaleBound as if the channel were
	// unhealthy, and lookups that L1 does not answer go to Redis, then to
	// the backend, which answers them while Redis is down.
	// Cache.WaitSynced tells when the channel is synced. Default false:
	// Open fails unless Redis answers and the channel is subscribed.
	NoWait bool
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Stripes == 0 {
		c.Stripes = 1
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = rediscache.DefaultSessionTTL
	}
	if c.L1Size == 0 {
		c.L1Size = localcache.DefaultSize
	}
	if c.L1TTL == 0 {
		c.L1TTL = localcache.DefaultTTL
	}
	if c.StaleBound == 0 {
		c.StaleBound = DefaultStaleBound
	}
	if c.RedisTimeout == 0 {
		c.RedisTimeout = rediscache.DefaultCallTimeout
	}
	if c.BackendTimeout == 0 {
		c.BackendTimeout = backend.DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// fetchTimeout is Options.FetchTimeout for c after defaults: one backend
// request and the Redis calls of the fill after it.
func (c Config) fetchTimeout() time.Duration {
	return c.BackendTimeout + 4*c.RedisTimeout
}

// validate checks every rule of Config, those of the packages Open wires
// together included, with the defaults applied. It does no I/O.
func (c Config) validate() error {
	if c.RedisURL == "" {
		return errors.New("tiered: Config.RedisURL is required")
	}
	target, err := parseRedisURL(c.RedisURL)
	if err != nil {
		return err
	}
	if err := checkBackendURL(c.BackendURL); err != nil {
		return err
	}
	for i := 0; i < len(c.Name); i++ {
		if b := c.Name[i]; b < '!' || b > '~' {
			return fmt.Errorf("tiered: Config.Name has a disallowed byte 0x%02x at offset %d", b, i)
		}
	}
	for i := 0; i < len(c.KeyPrefix); i++ {
		if b := c.KeyPrefix[i]; b != ':' && session.ValidateID(string(b)) != nil {
			return fmt.Errorf("tiered: Config.KeyPrefix has a disallowed byte 0x%02x at offset %d", b, i)
		}
	}
	switch {
	case c.Stripes < 0 || c.Stripes > session.MaxStripes:
		return fmt.Errorf("tiered: Config.Stripes %d is out of range 1..%d", c.Stripes, session.MaxStripes)
	case c.SessionTTL < 0:
		return fmt.Errorf("tiered: negative Config.SessionTTL %v", c.SessionTTL)
	case c.L1Size < 0:
		return fmt.Errorf("tiered: negative Config.L1Size %d", c.L1Size)
	case c.L1TTL < 0:
		return fmt.Errorf("tiered: negative Config.L1TTL %v", c.L1TTL)
	case c.StaleBound < 0:
		return fmt.Errorf("tiered: negative Config.StaleBound %v", c.StaleBound)
	case c.RedisTimeout < 0:
		return fmt.Errorf("tiered: negative Config.RedisTimeout %v", c.RedisTimeout)
	case c.BackendTimeout < 0:
		return fmt.Errorf("tiered: negative Config.BackendTimeout %v", c.BackendTimeout)
	case c.TLSCAFile != "" && c.TLS != nil:
		return errors.New("tiered: Config.TLSCAFile and Config.TLS are both set; set one")
	case c.TLSCAFile != "" && !target.usesTLS():
		return errors.New("tiered: Config.TLSCAFile is set but Config.RedisURL is not a rediss URL")
	case c.TLS != nil && !target.usesTLS():
		return errors.New("tiered: Config.TLS is set but Config.RedisURL is not a rediss URL")
	}
	d := c.withDefaults()
	switch window := rediscache.DefaultFillWindow; {
	case d.SessionTTL < time.Second:
		return fmt.Errorf("tiered: Config.SessionTTL %v is shorter than 1s", d.SessionTTL)
	case d.L1TTL > d.SessionTTL:
		return fmt.Errorf("tiered: Config.L1TTL %v must be at most Config.SessionTTL %v", d.L1TTL, d.SessionTTL)
	case 2*d.fetchTimeout() > window:
		// Options.FetchTimeout <= FillWindow/2, which also keeps
		// rediscache's 4 × CallTimeout < FillWindow.
		return fmt.Errorf("tiered: Config.BackendTimeout %v + 4 × Config.RedisTimeout %v = %v must be at most half of the fill window %v",
			d.BackendTimeout, d.RedisTimeout, d.fetchTimeout(), window)
	}
	return nil
}

// checkBackendURL applies backend.Options.BaseURL's rules to
// Config.BackendURL. Its errors never quote the URL.
func checkBackendURL(raw string) error {
	if raw == "" {
		return errors.New("tiered: Config.BackendURL is required")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("tiered: Config.BackendURL is not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("tiered: Config.BackendURL must be an http:// or https:// URL")
	case u.Host == "":
		return errors.New("tiered: Config.BackendURL has no host")
	case u.User != nil:
		return errors.New("tiered: Config.BackendURL must not contain user info")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return errors.New("tiered: Config.BackendURL must not have a query or a fragment")
	}
	return nil
}

// Open connects to Redis, builds the tiers from cfg and returns a Cache
// whose invalidation channel is subscribed and synced (with cfg.NoWait, a
// Cache that connects in the background): the path to take unless a tier
// needs a setting Config does not have (then build them with
// rediscache.New, backend.New and New).
//
// Open first checks cfg (no I/O), then pings Redis once, without retries;
// then it waits for the subscription. ctx bounds all of it: give it a
// deadline, since a Redis that accepts connections but refuses to
// subscribe keeps Open waiting until ctx ends. The backend is not called:
// while it is down, lookups that L1 or Redis answer still work.
//
// With cfg.NoWait, Open neither pings Redis nor waits for the
// subscription: it returns the Cache at once, whether Redis is up or not,
// and fails only on cfg (an unreadable TLSCAFile included); ctx is not
// used. Cache.WaitSynced tells when the channel is synced.
//
// Every error is one line naming what failed, such as
//
//	tiered: Config.BackendTimeout 5s + 4 × Config.RedisTimeout 250ms = 6s must be at most half of the fill window 10s
//	tiered: redis at 127.0.0.1:6390: connection refused
//
// and wraps the cause (syscall.ECONNREFUSED, a TLS verification error,
// ctx's error). On error, Open has closed everything it opened. The
// returned Cache owns its Redis clients and the backend's connections:
// Close closes them.
func Open(ctx context.Context, cfg Config) (*Cache, error) {
	return open(ctx, cfg, testHooks{})
}

func open(ctx context.Context, cfg Config, hooks testHooks) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	target, err := parseRedisURL(cfg.RedisURL)
	if err != nil {
		return nil, err
	}
	if err := target.setTLS(cfg.TLSCAFile, cfg.TLS); err != nil {
		return nil, err
	}
	target.setCommon(cfg.Name)

	if !cfg.NoWait {
		if err := target.ping(ctx); err != nil {
			return nil, err
		}
	}
	rdb := target.client()
	l2, err := rediscache.New(rdb, rediscache.Options{
		Prefix:      cfg.KeyPrefix,
		Stripes:     cfg.Stripes,
		SessionTTL:  cfg.SessionTTL,
		CallTimeout: cfg.RedisTimeout,
		Logger:      cfg.Logger,
	})
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("tiered: %w", err)
	}
	be, err := backend.New(backend.Options{BaseURL: cfg.BackendURL, Timeout: cfg.BackendTimeout})
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("tiered: %w", err)
	}
	c, err := newCache(Options{
		Redis:          l2,
		Backend:        be,
		Local:          localcache.Options{Size: cfg.L1Size, TTL: cfg.L1TTL},
		StaleBound:     cfg.StaleBound,
		FetchTimeout:   cfg.fetchTimeout(),
		SubscriberName: cfg.Name,
		Logger:         cfg.Logger,
	}, hooks)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	c.owned = []io.Closer{rdb, closerFunc(func() error {
		be.CloseIdleConnections()
		return nil
	})}
	if cfg.NoWait {
		return c, nil
	}
	if err := c.WaitSynced(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("tiered: %s: invalidation channel not subscribed: %w", target.where, err)
	}
	return c, nil
}

// closerFunc adapts a function to io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// redisTarget is a parsed Config.RedisURL: the options of exactly one of
// the three kinds of client.
type redisTarget struct {
	where    string // "redis at host:port", for errors
	simple   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// parseRedisURL parses Config.RedisURL with go-redis's parser for its
// scheme. Its errors never quote the URL, which may hold a password.
func parseRedisURL(raw string) (redisTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return redisTarget{}, errors.New("tiered: Config.RedisURL is not a valid URL")
	}
	if u.Query().Has("skip_verify") {
		return redisTarget{}, errors.New("tiered: Config.RedisURL: skip_verify is refused; verification changes only through Config.TLS")
	}
	base, kind, _ := strings.Cut(u.Scheme, "+")
	plain := *u
	plain.Scheme = base
	var t redisTarget
	switch {
	case kind == "" && (base == "redis" || base == "rediss" || base == "unix"):
		t.simple, err = redis.ParseURL(raw)
		if err == nil {
			t.where = "redis at " + t.simple.Addr
		}
	case kind == "sentinel" && (base == "redis" || base == "rediss"):
		t.failover, err = redis.ParseFailoverURL(plain.String())
		switch {
		case err != nil:
		case t.failover.MasterName == "":
			return redisTarget{}, errors.New("tiered: Config.RedisURL: a Sentinel URL needs ?master_name=")
		default:
			if t.failover.Username == "" && t.failover.Password == "" {
				t.failover.Username, t.failover.Password = t.failover.SentinelUsername, t.failover.SentinelPassword
			}
			t.where = fmt.Sprintf("redis sentinel at %s (master %s)", strings.Join(t.failover.SentinelAddrs, ","), t.failover.MasterName)
		}
	case kind == "cluster" && (base == "redis" || base == "rediss"):
		if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
			return redisTarget{}, errors.New("tiered: Config.RedisURL: Redis Cluster has database 0 only; remove the path")
		}
		t.cluster, err = redis.ParseClusterURL(plain.String())
		if err == nil {
			t.where = "redis cluster at " + strings.Join(t.cluster.Addrs, ",")
		}
	default:
		return redisTarget{}, fmt.Errorf("tiered: Config.RedisURL has scheme %q; want redis, rediss, unix, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster", u.Scheme)
	}
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "://") || strings.Contains(msg, "@") {
			msg = "malformed URL"
		}
		return redisTarget{}, fmt.Errorf("tiered: Config.RedisURL: %s", msg)
	}
	return t, nil
}

// usesTLS reports whether the URL asks for TLS.
func (t redisTarget) usesTLS() bool { return t.tlsConfig() != nil }

func (t redisTarget) tlsConfig() *tls.Config {
	switch {
	case t.simple != nil:
		return t.simple.TLSConfig
	case t.failover != nil:
		return t.failover.TLSConfig
	default:
		return t.cluster.TLSConfig
	}
}

// setTLS replaces go-redis's TLS configuration with one that trusts the
// authorities of caFile, or with a clone of conf.
func (t *redisTarget) setTLS(caFile string, conf *tls.Config) error {
	parsed := t.tlsConfig()
	if parsed == nil {
		return nil
	}
	switch {
	case conf != nil:
		conf = conf.Clone()
		if conf.ServerName == "" {
			conf.ServerName = parsed.ServerName
		}
	case caFile != "":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("tiered: Config.TLSCAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tiered: Config.TLSCAFile: no PEM certificate in %s", caFile)
		}
		conf = parsed.Clone()
		conf.RootCAs = pool
	default:
		conf = parsed.Clone()
	}
	if conf.MinVersion == 0 {
		conf.MinVersion = tls.VersionTLS12
	}
	switch {
	case t.simple != nil:
		t.simple.TLSConfig = conf
	case t.failover != nil:
		t.failover.TLSConfig = conf
	default:
		t.cluster.TLSConfig = conf
	}
	return nil
}

// setCommon sets what every client of Open needs: per-call deadlines from
// the context (without ContextTimeoutEnabled go-redis bounds socket reads
// by ReadTimeout only), the connection name, and, on a cluster, a slot
// map that follows a failover within clusterStateReload.
func (t *redisTarget) setCommon(name string) {
	switch {
	case t.simple != nil:
		t.simple.ContextTimeoutEnabled = true
		if name != "" {
			t.simple.ClientName = name
		}
	case t.failover != nil:
		t.failover.ContextTimeoutEnabled = true
		if name != "" {
			t.failover.ClientName = name
		}
	default:
		t.cluster.ContextTimeoutEnabled = true
		t.cluster.ClusterStateReloadInterval = clusterStateReload
		if name != "" {
			t.cluster.ClientName = name
		}
	}
}

// client returns a new client for the target.
func (t redisTarget) client() redis.UniversalClient {
	switch {
	case t.simple != nil:
		o := *t.simple
		return redis.NewClient(&o)
	case t.failover != nil:
		o := *t.failover
		return redis.NewFailoverClient(&o)
	default:
		o := *t.cluster
		return redis.NewClusterClient(&o)
	}
}

// ping checks once, on a client of its own that neither retries commands
// nor dials again, that Redis answers, so that a refused connection fails
// Open at once with a one-line error.
func (t redisTarget) ping(ctx context.Context) error {
	var probe redis.UniversalClient
	switch {
	case t.simple != nil:
		o := *t.simple
		o.MaxRetries, o.DialerRetries = -1, 1
		probe = redis.NewClient(&o)
	case t.failover != nil:
		o := *t.failover
		o.MaxRetries, o.DialerRetries = -1, 1
		probe = redis.NewFailoverClient(&o)
	default:
		o := *t.cluster
		o.MaxRetries, o.DialerRetries = -1, 1
		probe = redis.NewClusterClient(&o)
	}
	defer probe.Close()
	if err := probe.Ping(ctx).Err(); err != nil {
		return &connError{where: t.where, err: err}
	}
	return nil
}

// connError is a failure to reach Redis: one line that names the
// deployment and the reason, wrapping go-redis's error.
type connError struct {
	where string
	err   error
}

func (e *connError) Error() string {
	var certErr *tls.CertificateVerificationError
	var errno syscall.Errno
	var opErr *net.OpError
	reason := e.err.Error()
	switch {
	case errors.As(e.err, &certErr):
		reason = "TLS certificate not trusted: " + certErr.Err.Error()
	case errors.As(e.err, &errno):
		reason = errno.Error()
	case errors.As(e.err, &opErr):
		reason = opErr.Err.Error()
	}
	return "tiered: " + e.where + ": " + reason
}

func (e *connError) Unwrap() error { return e.err }
