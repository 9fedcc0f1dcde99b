package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/internal/signing"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// Defaults of the gateway's flags.
const (
	defaultListen     = ":8080"
	defaultBackendURL = "http://127.0.0.1:8081"
	defaultMaxBody    = 1 << 20
	// healthTimeout bounds each check of /healthz.
	healthTimeout = time.Second
	// healthProbeID is the session id /healthz asks the backend for; any
	// answer but an error (a record or "not found") means reachable.
	healthProbeID = "gatewayd-healthz-probe"
	// maxPushBody bounds a push; session.ParseInvalidation refuses
	// anything above session.MaxInvalidationSize anyway.
	maxPushBody = 4 * session.MaxInvalidationSize
	pushPath    = "/internal/push"
)

// config is the gateway's configuration; registerFlags fills it from the
// command line.
type config struct {
	Listen      string
	Redis       redisconn.Config
	Prefix      string
	Stripes     int
	BackendURL  string
	Name        string
	PushToken   string
	Skew        time.Duration
	L1Size      int
	L1TTL       time.Duration
	StaleBound  time.Duration
	ReplayCache int
	MaxBody     int64
	SyncTimeout time.Duration
	LogLevel    string

	// Logger receives the gateway's log; newGateway's default is JSON on
	// stderr at LogLevel.
	Logger *slog.Logger
	// Now is the clock used to check request timestamps. Default time.Now.
	Now func() time.Time
}

func (c *config) registerFlags(fs *flag.FlagSet) {
	c.Redis.RegisterFlags(fs)
	host, _ := os.Hostname()
	fs.StringVar(&c.Listen, "listen", defaultListen, "HTTP listen address")
	fs.StringVar(&c.Prefix, "prefix", "", "key and channel prefix (rediscache Options.Prefix)")
	fs.IntVar(&c.Stripes, "stripes", 1, "keyspace stripes (rediscache Options.Stripes; the same on every replica)")
	fs.StringVar(&c.BackendURL, "backend", defaultBackendURL, "session backend base URL")
	fs.StringVar(&c.Name, "name", "gatewayd-"+sanitizeName(host), "replica name: Redis client name (CLIENT SETNAME) and metrics label")
	fs.StringVar(&c.PushToken, "push-token", "", "bearer token required on "+pushPath+" and "+debugSessionsPath+"{id} (empty: no authentication)")
	fs.DurationVar(&c.Skew, "skew", signing.DefaultWindow, "accepted difference between a request's timestamp and this clock, either way")
	fs.IntVar(&c.L1Size, "l1-size", localcache.DefaultSize, "L1 entries")
	fs.DurationVar(&c.L1TTL, "l1-ttl", localcache.DefaultTTL, "L1 entry lifetime")
	fs.DurationVar(&c.StaleBound, "stale-bound", tiered.DefaultStaleBound, "how long L1 may serve active entries while the invalidation channel is unhealthy")
	fs.IntVar(&c.ReplayCache, "replay-cache", signing.DefaultReplayCacheSize, "signatures remembered against replays: at least peak requests/s × 2 × skew")
	fs.Int64Var(&c.MaxBody, "max-body", defaultMaxBody, "largest request body accepted, in bytes")
	fs.DurationVar(&c.SyncTimeout, "sync-timeout", 5*time.Second, "how long start-up waits for the invalidation channel before serving anyway")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
}

// sanitizeName keeps the bytes a Redis client name may hold.
func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r > ' ' && r <= '~' {
			return r
		}
		return '-'
	}, s)
}

func (c *config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("-name is required")
	case sanitizeName(c.Name) != c.Name:
		return fmt.Errorf("-name %q: only printable ASCII without spaces", c.Name)
	case c.Skew <= 0:
		return fmt.Errorf("-skew %v: must be positive", c.Skew)
	case c.MaxBody <= 0:
		return fmt.Errorf("-max-body %d: must be positive", c.MaxBody)
	case c.SyncTimeout < 0:
		return fmt.Errorf("-sync-timeout %v: must not be negative", c.SyncTimeout)
	case !strings.HasPrefix(c.BackendURL, "http://") && !strings.HasPrefix(c.BackendURL, "https://"):
		return fmt.Errorf("-backend %q: want an http:// or https:// URL", c.BackendURL)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("-log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// gateway is one replica: the tiered cache, the signature verifier and the
// HTTP handler. Create it with newGateway and Close it.
type gateway struct {
	cfg   config
	log   *slog.Logger
	cache *tiered.Cache // made by tiered.Open, which owns its clients
	// rdb, layout and backend serve /healthz (PING, a probe lookup) and
	// /debug/sessions (HGETALL of the session's key, one GET): the
	// operator's probes, on a small client and a backend client of their
	// own, independent of the cache's pools.
	rdb      redis.UniversalClient
	layout   rediscache.Layout
	backend  *backend.Client
	verifier *signing.Verifier
	reg      *prometheus.Registry
	requests *prometheus.CounterVec // by result
	mux      *http.ServeMux

	closeOnce sync.Once
}

// newGateway validates cfg and builds the replica. Its cache comes from
// tiered.Open with NoWait: newGateway does not wait for Redis, and a Redis
// that is down makes lookups fall back to the backend and /healthz answer
// 503; it does not stop the gateway (serve waits -sync-timeout for the
// invalidation channel, then serves anyway).
func newGateway(cfg config) (*gateway, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		level, err := parseLevel(cfg.LogLevel)
		if err != nil {
			return nil, err
		}
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &gateway{cfg: cfg, log: cfg.Logger.With("replica", cfg.Name)}
	var err error
	g.verifier, err = signing.NewVerifier(signing.VerifierOptions{Window: cfg.Skew, ReplayCacheSize: cfg.ReplayCache})
	if err != nil {
		return nil, err
	}
	redisURL, caFile, tlsConf, err := cfg.Redis.OpenConfig()
	if err != nil {
		return nil, err
	}
	g.layout, err = rediscache.NewLayout(cfg.Prefix, "", cfg.Stripes)
	if err != nil {
		return nil, err
	}
	g.backend, err = backend.New(backend.Options{BaseURL: cfg.BackendURL})
	if err != nil {
		return nil, err
	}
	// The operator's probe, from the same flags: a client of gatewayd's
	// own, independent of the cache's pools (see gateway.rdb).
	rconf := cfg.Redis
	rconf.ClientName = cfg.Name
	g.rdb, err = rconf.NewClient()
	if err != nil {
		return nil, err
	}
	g.cache, err = tiered.Open(context.Background(), tiered.Config{
		RedisURL:   redisURL,
		TLSCAFile:  caFile,
		TLS:        tlsConf,
		BackendURL: cfg.BackendURL,
		Name:       cfg.Name,
		KeyPrefix:  cfg.Prefix,
		Stripes:    cfg.Stripes,
		L1Size:     cfg.L1Size,
		L1TTL:      cfg.L1TTL,
		StaleBound: cfg.StaleBound,
		Logger:     g.log,
		NoWait:     true,
	})
	if err != nil {
		g.backend.CloseIdleConnections()
		_ = g.rdb.Close()
		return nil, err
	}
	if err := g.registerMetrics(); err != nil {
		g.Close()
		return nil, err
	}
	g.mux = http.NewServeMux()
	g.mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{Registry: g.reg}))
	g.mux.HandleFunc("GET /healthz", g.serveHealth)
	g.mux.HandleFunc("POST "+pushPath, g.servePush)
	g.mux.HandleFunc(debugSessionsPath+"{id...}", g.serveDebugSession)
	g.mux.HandleFunc("/", g.serveAuthenticated)
	return g, nil
}

func (g *gateway) registerMetrics() error {
	g.reg = prometheus.NewRegistry()
	labels := prometheus.Labels{"replica": g.cfg.Name}
	if err := g.cache.RegisterMetrics(g.reg, labels); err != nil {
		return err
	}
	g.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "sessioncache_gateway_requests_total",
		Help:        "Authenticated requests by result: ok, a rejection reason, or unavailable.",
		ConstLabels: labels,
	}, []string{"result"})
	for _, c := range []prometheus.Collector{
		g.requests,
		&verifierCollector{v: g.verifier,
			desc: prometheus.NewDesc("sessioncache_gateway_signatures_total",
				"Signature checks by outcome; the outcomes partition the checks.", []string{"outcome"}, labels),
			evictionsLive: prometheus.NewDesc("sessioncache_gateway_replay_cache_live_evictions_total",
				"Replay-cache entries evicted while their signature could still be replayed: raise -replay-cache.", nil, labels)},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := g.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// verifierCollector exports signing.Stats at scrape time: the outcomes of
// signature checks, which partition them, and apart from them the live
// entries the replay cache had to evict (a sizing signal, not an outcome).
type verifierCollector struct {
	v             *signing.Verifier
	desc          *prometheus.Desc
	evictionsLive *prometheus.Desc
}

func (c *verifierCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.evictionsLive
}

func (c *verifierCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.v.Stats()
	for _, o := range []struct {
		name string
		n    uint64
	}{
		{"accepted", st.Accepted}, {"malformed", st.Malformed}, {"stale", st.Stale},
		{"bad_signature", st.BadSignatures}, {"replay", st.Replays},
	} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(o.n), o.name)
	}
	ch <- prometheus.MustNewConstMetric(c.evictionsLive, prometheus.CounterValue, float64(st.ReplayEvictionsLive))
}

// Handler returns the gateway's HTTP handler.
func (g *gateway) Handler() http.Handler { return g.mux }

// waitSynced waits up to SyncTimeout for the invalidation channel; until
// it is synced, L1 "active" entries are revalidated rather than served.
func (g *gateway) waitSynced(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SyncTimeout)
	defer cancel()
	if err := g.cache.WaitSynced(ctx); err != nil {
		g.log.Warn("invalidation channel not synced yet; serving anyway (L1 revalidates until it is)",
			"timeout", g.cfg.SyncTimeout.String())
	}
}

// Close closes the cache (its goroutines and the clients tiered.Open
// made) and the probes' clients. It is idempotent.
func (g *gateway) Close() {
	g.closeOnce.Do(func() {
		_ = g.cache.Close()
		g.backend.CloseIdleConnections()
		_ = g.rdb.Close()
	})
}

// Rejection reasons, in the JSON body of a 401 and in
// sessioncache_gateway_requests_total. A production gateway might answer
// all of them alike; this reference gateway names them to help people
// trying it.
const (
	resultOK          = "ok"
	reasonNoSession   = "missing_session"
	reasonBadID       = "invalid_session_id"
	reasonMalformed   = "malformed_signature"
	reasonStale       = "stale_timestamp"
	reasonUnknown     = "unknown_session"
	reasonRevoked     = "revoked"
	reasonBadSig      = "bad_signature"
	reasonReplay      = "replay"
	reasonTooLarge    = "body_too_large"
	resultUnavailable = "unavailable"
)

// authResponse is the body of a 200.
type authResponse struct {
	UserID          string `json:"user_id"`
	DeviceSessionID string `json:"device_session_id"` // redacted
}

// serveAuthenticated authenticates any request: session id, signature
// headers, lookup, revocation, signature. Checks that need no I/O come
// first, so junk costs no lookup.
func (g *gateway) serveAuthenticated(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(signing.HeaderSessionID)
	if id == "" {
		g.reject(w, r, http.StatusUnauthorized, reasonNoSession, id, nil)
		return
	}
	if err := session.ValidateID(id); err != nil {
		g.reject(w, r, http.StatusUnauthorized, reasonBadID, id, err)
		return
	}
	tsHeader, sigHeader := r.Header.Get(signing.HeaderTimestamp), r.Header.Get(signing.HeaderSignature)
	if err := g.verifier.Precheck(tsHeader, sigHeader, g.cfg.Now()); err != nil {
		g.reject(w, r, http.StatusUnauthorized, signatureReason(err), id, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			g.reject(w, r, http.StatusRequestEntityTooLarge, reasonTooLarge, id, err)
			return
		}
		g.reject(w, r, http.StatusBadRequest, "unreadable_body", id, err)
		return
	}
	rec, err := g.cache.Lookup(r.Context(), id)
	switch {
	case errors.Is(err, session.ErrNotFound), errors.Is(err, session.ErrInvalidID):
		g.reject(w, r, http.StatusUnauthorized, reasonUnknown, id, nil)
		return
	case err != nil:
		// Fail closed: no tier could answer safely.
		g.requests.WithLabelValues(resultUnavailable).Inc()
		g.log.Warn("session lookup failed; request denied", "id", session.Redact(id), "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": resultUnavailable})
		return
	case rec.Status != session.StatusActive:
		g.reject(w, r, http.StatusUnauthorized, reasonRevoked, id, nil)
		return
	}
	if err := g.verifier.Verify(rec.ClientPublicKey, r.Method, r.RequestURI, tsHeader, sigHeader, body, g.cfg.Now()); err != nil {
		g.reject(w, r, http.StatusUnauthorized, signatureReason(err), id, err)
		return
	}
	g.requests.WithLabelValues(resultOK).Inc()
	g.log.Debug("request authenticated", "id", session.Redact(id), "method", r.Method)
	writeJSON(w, http.StatusOK, authResponse{UserID: rec.UserID, DeviceSessionID: session.Redact(id)})
}

func signatureReason(err error) string {
	switch {
	case errors.Is(err, signing.ErrStale):
		return reasonStale
	case errors.Is(err, signing.ErrReplay):
		return reasonReplay
	case errors.Is(err, signing.ErrBadSignature):
		return reasonBadSig
	}
	return reasonMalformed
}

// reject answers status with the reason, counts and logs it. Errors logged
// here never hold a full session id or a key (see package session and
// signing).
func (g *gateway) reject(w http.ResponseWriter, r *http.Request, status int, reason, id string, err error) {
	g.requests.WithLabelValues(reason).Inc()
	attrs := []any{"reason", reason, "method", r.Method, "remote", r.RemoteAddr}
	if id != "" {
		attrs = append(attrs, "id", session.Redact(id))
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	g.log.Info("request rejected", attrs...)
	writeJSON(w, status, map[string]string{"error": reason})
}

// servePush takes one session_invalidation event in the channel's JSON form
// and revokes in this replica (L1 at once, then Redis and the channel).
func (g *gateway) servePush(w http.ResponseWriter, r *http.Request) {
	if g.cfg.PushToken != "" && !bearerOK(r, g.cfg.PushToken) {
		g.log.Warn("push refused: missing or wrong bearer token", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="gatewayd push"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "bad push token"})
		return
	}
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPushBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "push body too large"})
		return
	}
	m, err := session.ParseInvalidation(payload)
	if err != nil {
		g.log.Warn("push refused: malformed invalidation", "err", err)
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if m.SessionID != "" {
		g.cache.MarkRevoked(m.SessionID)
		g.log.Info("push: session revoked", "id", session.Redact(m.SessionID))
		writeJSON(w, http.StatusAccepted, map[string]string{"revoked": "session"})
		return
	}
	g.cache.MarkAllRevokedForUser(m.UserID)
	g.log.Info("push: user's sessions revoked", "user", session.Redact(m.UserID))
	writeJSON(w, http.StatusAccepted, map[string]string{"revoked": "user"})
}

// bearerOK reports whether r carries "Authorization: Bearer <token>".
func bearerOK(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// check is one part of /healthz.
type check struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// health is the body of /healthz.
type health struct {
	Status     string `json:"status"` // "ok" or "unhealthy"
	Redis      check  `json:"redis"`
	Subscriber struct {
		check
		LastMessageAgeMS *int64 `json:"last_message_age_ms,omitempty"`
	} `json:"subscriber"`
	Backend check `json:"backend"`
}

// serveHealth checks Redis (PING), the invalidation subscription and the
// backend (a lookup of a probe id that must answer, found or not), each
// within healthTimeout. It answers 200 only when all three are OK.
func (g *gateway) serveHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	var h health
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := redisconn.Ping(ctx, g.rdb); err != nil {
			h.Redis.Error = redisconn.Explain(err)
			return
		}
		h.Redis.OK = true
	})
	wg.Go(func() {
		_, err := g.backend.Fetch(ctx, healthProbeID)
		if err != nil && !errors.Is(err, session.ErrNotFound) {
			h.Backend.Error = err.Error()
			return
		}
		h.Backend.OK = true
	})
	st := g.cache.Stats().Channel
	h.Subscriber.OK = st.Subscribed
	if !st.Subscribed {
		h.Subscriber.Error = "not subscribed to the invalidation channel"
	}
	if st.LastMessageUnixMs > 0 {
		age := g.cfg.Now().UnixMilli() - st.LastMessageUnixMs
		h.Subscriber.LastMessageAgeMS = &age
	}
	wg.Wait()
	status := http.StatusOK
	h.Status = "ok"
	if !h.Redis.OK || !h.Subscriber.OK || !h.Backend.OK {
		status, h.Status = http.StatusServiceUnavailable, "unhealthy"
	}
	writeJSON(w, status, h)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
