package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/signing"
	"github.com/galaxy-game/sessioncache/session"
)

func TestMain(m *testing.M) {
	redistest.VerifyTestMain(m)
}

const testToken = "push-secret"

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is a gateway on miniredis and a backendtest server, served by an
// httptest server.
type fixture struct {
	mr      *miniredis.Miniredis
	backend *backendtest.Server
	gw      *gateway
	srv     *httptest.Server
	logs    *syncBuffer
}

func newFixture(t *testing.T, edit ...func(*config)) *fixture {
	t.Helper()
	mr := miniredis.RunT(t)
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	return startGateway(t, mr, be, "gw-test", edit...)
}

// startGateway starts one more replica on the same Redis and backend.
func startGateway(t *testing.T, mr *miniredis.Miniredis, be *backendtest.Server, name string, edit ...func(*config)) *fixture {
	t.Helper()
	logs := &syncBuffer{}
	cfg := config{
		Redis:       redisconn.Config{URL: "redis://" + mr.Addr()},
		Stripes:     1,
		BackendURL:  be.URL(),
		Name:        name,
		PushToken:   testToken,
		Skew:        signing.DefaultWindow,
		SyncTimeout: 5 * time.Second,
		MaxBody:     1 << 10,
		Logger:      slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range edit {
		f(&cfg)
	}
	gw, err := newGateway(cfg)
	if err != nil {
		t.Fatalf("newGateway = %v", err)
	}
	t.Cleanup(gw.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.cache.WaitSynced(ctx); err != nil {
		t.Fatalf("WaitSynced = %v", err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &fixture{mr: mr, backend: be, gw: gw, srv: srv, logs: logs}
}

// answer is a decoded response.
type answer struct {
	status int
	body   map[string]any
	raw    string
}

func (f *fixture) do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

// signed builds a request signed at ts.
func (f *fixture) signed(t *testing.T, id string, priv ed25519.PrivateKey, method, path string, body []byte, ts time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	signing.SignRequest(req, id, priv, ts, body)
	return req
}

func (f *fixture) push(t *testing.T, token, payload string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+pushPath, strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return f.do(t, req)
}

func wantAnswer(t *testing.T, what string, got answer, status int, reason string) {
	t.Helper()
	if got.status != status || (reason != "" && got.body["error"] != reason) {
		t.Errorf("%s = %d %s, want %d with error %q", what, got.status, strings.TrimSpace(got.raw), status, reason)
	}
}

func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	rec, priv := f.backend.NewSession("user-1")
	id := rec.DeviceSessionID
	_, otherPriv := f.backend.NewSession("user-2")
	revoked, revokedPriv := f.backend.NewSession("user-3")
	f.backend.Revoke(revoked.DeviceSessionID)
	now := time.Now()
	body := []byte(`{"amount":5}`)

	unsigned := func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/v1/me", nil)
		return req
	}
	tampered := f.signed(t, id, priv, http.MethodPost, "/v1/pay", body, now)
	tampered.Body = io.NopCloser(strings.NewReader(`{"amount":9}`)) // same length
	otherPath := f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, now)
	otherPath.URL.Path = "/v1/admin"

	tests := []struct {
		name   string
		req    *http.Request
		status int
		reason string
	}{
		{"valid GET", f.signed(t, id, priv, http.MethodGet, "/v1/me?x=1", nil, now), 200, ""},
		{"valid POST with body", f.signed(t, id, priv, http.MethodPost, "/v1/pay", body, now.Add(time.Millisecond)), 200, ""},
		{"no headers", unsigned(), 401, reasonNoSession},
		{"invalid session id", f.signed(t, "bad*id", priv, http.MethodGet, "/v1/me", nil, now), 401, reasonBadID},
		{"unknown session", f.signed(t, "unknown-session-1", priv, http.MethodGet, "/v1/me", nil, now), 401, reasonUnknown},
		{"revoked session", f.signed(t, revoked.DeviceSessionID, revokedPriv, http.MethodGet, "/v1/me", nil, now), 401, reasonRevoked},
		{"signed by another key", f.signed(t, id, otherPriv, http.MethodGet, "/v1/me", nil, now), 401, reasonBadSig},
		{"tampered body", tampered, 401, reasonBadSig},
		{"other path", otherPath, 401, reasonBadSig},
		{"stale timestamp", f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, now.Add(-time.Minute)), 401, reasonStale},
		{"future timestamp", f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, now.Add(time.Minute)), 401, reasonStale},
		{"body too large", f.signed(t, id, priv, http.MethodPost, "/v1/pay", bytes.Repeat([]byte("x"), 2<<10), now), 413, reasonTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.do(t, tt.req)
			wantAnswer(t, tt.name, got, tt.status, tt.reason)
			if tt.status == 200 {
				if got.body["user_id"] != "user-1" || got.body["device_session_id"] != session.Redact(id) {
					t.Errorf("%s body = %s, want user_id user-1 and the redacted id", tt.name, got.raw)
				}
			}
			if strings.Contains(got.raw, id) {
				t.Errorf("%s body %s holds the full session id", tt.name, got.raw)
			}
		})
	}
	// Bad input costs nothing: the invalid id and the stale request never
	// reached the backend.
	if n := f.backend.CallsFor("bad*id"); n != 0 {
		t.Errorf("backend calls for an invalid id = %d, want 0", n)
	}
}

func TestReplayIsRejected(t *testing.T) {
	f := newFixture(t)
	rec, priv := f.backend.NewSession("user-1")
	req := f.signed(t, rec.DeviceSessionID, priv, http.MethodGet, "/v1/me", nil, time.Now())
	wantAnswer(t, "first request", f.do(t, req), 200, "")
	again := f.signed(t, rec.DeviceSessionID, priv, http.MethodGet, "/v1/me", nil, time.Now())
	again.Header = req.Header.Clone() // the captured request, sent again
	wantAnswer(t, "replayed request", f.do(t, again), 401, reasonReplay)
}

func TestLookupFailureFailsClosed(t *testing.T) {
	f := newFixture(t)
	rec, priv := f.backend.NewSession("user-1")
	f.mr.Close() // Redis down
	f.backend.SetFault(backendtest.Fault{Status: 503})
	got := f.do(t, f.signed(t, rec.DeviceSessionID, priv, http.MethodGet, "/v1/me", nil, time.Now()))
	wantAnswer(t, "lookup with Redis and the backend down", got, 503, resultUnavailable)
}

func TestPushRevokes(t *testing.T) {
	f := newFixture(t)
	other := startGateway(t, f.mr, f.backend, "gw-other")
	rec, priv := f.backend.NewSession("user-1")
	id := rec.DeviceSessionID
	userRec, userPriv := f.backend.NewSession("user-2")

	// Both replicas hold the sessions as active in L1.
	for _, g := range []*fixture{f, other} {
		for _, s := range []struct {
			id   string
			priv ed25519.PrivateKey
		}{{id, priv}, {userRec.DeviceSessionID, userPriv}} {
			wantAnswer(t, "before the push", g.do(t, g.signed(t, s.id, s.priv, http.MethodGet, "/v1/me", nil, time.Now())), 200, "")
		}
	}
	// Listen on the channel to know when the revocation was published.
	rdb := redis.NewClient(&redis.Options{Addr: f.mr.Addr()})
	defer rdb.Close()
	ps := rdb.Subscribe(context.Background(), session.DefaultChannel)
	defer ps.Close()
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}

	wantAnswer(t, "push without token", f.push(t, "", `{"session":"`+id+`"}`), 401, "bad push token")
	wantAnswer(t, "push with a wrong token", f.push(t, "nope", `{"session":"`+id+`"}`), 401, "bad push token")
	wantAnswer(t, "malformed push", f.push(t, testToken, `{"session":"a*b"}`), 400, "")
	wantAnswer(t, "push of a session", f.push(t, testToken, `{"session":"`+id+`"}`), 202, "")

	// The pushed replica rejects at once (L1 flipped before the answer).
	wantAnswer(t, "same replica after the push",
		f.do(t, f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, time.Now())), 401, reasonRevoked)

	// The revocation is written to Redis and published.
	select {
	case msg := <-ps.Channel():
		m, err := session.ParseInvalidation([]byte(msg.Payload))
		if err != nil || m.SessionID != id {
			t.Fatalf("published %q (%v), want a revocation of the pushed session", msg.Payload, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the pushed revocation was not published within 5s")
	}
	if got := f.mr.HGet("session:"+id, "status"); got != "revoked" {
		t.Errorf("Redis status of the pushed session = %q, want revoked", got)
	}
	// The other replica learns it from the channel. Its subscriber runs in
	// its own goroutine with no hook reachable from here, so poll with a
	// deadline.
	waitRejected(t, other, id, priv, reasonRevoked)

	// A user-wide push revokes the user's sessions everywhere.
	wantAnswer(t, "push of a user", f.push(t, testToken, `{"user":"user-2"}`), 202, "")
	wantAnswer(t, "user's session after the push",
		f.do(t, f.signed(t, userRec.DeviceSessionID, userPriv, http.MethodGet, "/v1/me", nil, time.Now())), 401, reasonRevoked)
	waitRejected(t, other, userRec.DeviceSessionID, userPriv, reasonRevoked)
}

// waitRejected sends fresh signed requests until g rejects them with reason.
func waitRejected(t *testing.T, g *fixture, id string, priv ed25519.PrivateKey, reason string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := g.do(t, g.signed(t, id, priv, http.MethodGet, "/v1/me", nil, time.Now()))
		if got.status == 401 && got.body["error"] == reason {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica still answers %d %s 5s after the revocation, want 401 %s", got.status, strings.TrimSpace(got.raw), reason)
		}
		tm := time.NewTimer(5 * time.Millisecond)
		<-tm.C
	}
}

func TestPushWithoutTokenConfigured(t *testing.T) {
	f := newFixture(t, func(c *config) { c.PushToken = "" })
	rec, priv := f.backend.NewSession("user-1")
	wantAnswer(t, "push with no token configured", f.push(t, "", `{"session":"`+rec.DeviceSessionID+`"}`), 202, "")
	wantAnswer(t, "request after the push",
		f.do(t, f.signed(t, rec.DeviceSessionID, priv, http.MethodGet, "/v1/me", nil, time.Now())), 401, reasonRevoked)
}

func TestHealthz(t *testing.T) {
	get := func(t *testing.T, f *fixture) (int, health) {
		t.Helper()
		resp, err := f.srv.Client().Get(f.srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h health
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			t.Fatalf("/healthz body: %v", err)
		}
		return resp.StatusCode, h
	}
	t.Run("all up", func(t *testing.T) {
		f := newFixture(t)
		status, h := get(t, f)
		if status != 200 || h.Status != "ok" || !h.Redis.OK || !h.Subscriber.OK || !h.Backend.OK {
			t.Errorf("/healthz = %d %+v, want 200 with every check OK", status, h)
		}
	})
	t.Run("backend down", func(t *testing.T) {
		f := newFixture(t)
		f.backend.SetFault(backendtest.Fault{Status: 500})
		status, h := get(t, f)
		if status != 503 || h.Backend.OK || !h.Redis.OK || h.Backend.Error == "" {
			t.Errorf("/healthz = %d %+v, want 503 with only the backend failing", status, h)
		}
	})
	t.Run("redis down", func(t *testing.T) {
		f := newFixture(t)
		f.mr.Close()
		status, h := get(t, f)
		if status != 503 || h.Redis.OK || !h.Backend.OK || h.Redis.Error == "" {
			t.Errorf("/healthz = %d %+v, want 503 with Redis failing", status, h)
		}
	})
}

func TestMetricsEndpoint(t *testing.T) {
	f := newFixture(t)
	rec, priv := f.backend.NewSession("user-1")
	for range 2 {
		wantAnswer(t, "request", f.do(t, f.signed(t, rec.DeviceSessionID, priv, http.MethodGet, "/v1/me", nil, time.Now())), 200, "")
	}
	wantAnswer(t, "unknown", f.do(t, f.signed(t, "nobody-1", priv, http.MethodGet, "/v1/me", nil, time.Now())), 401, reasonUnknown)
	resp, err := f.srv.Client().Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	text := string(raw)
	for _, want := range []string{
		`sessioncache_lookups_total{replica="gw-test",result="found",tier="l1"} 1`,
		`sessioncache_backend_calls_total{replica="gw-test"} 2`,
		`sessioncache_gateway_requests_total{replica="gw-test",result="ok"} 2`,
		`sessioncache_gateway_requests_total{replica="gw-test",result="unknown_session"} 1`,
		`sessioncache_gateway_signatures_total{outcome="accepted",replica="gw-test"} 2`,
		`sessioncache_subscriber_up{replica="gw-test"} 1`,
		`sessioncache_gateway_replay_cache_live_evictions_total{replica="gw-test"} 0`,
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The outcomes partition the checks: no sizing signal among them.
	if strings.Contains(text, "replay_cache_evicted_live") {
		t.Errorf("/metrics has replay_cache_evicted_live among the signature outcomes")
	}
}

func TestLogsNeverHoldFullSessionID(t *testing.T) {
	f := newFixture(t)
	rec, priv := f.backend.NewSession("user-1")
	id := rec.DeviceSessionID
	now := time.Now()
	f.do(t, f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, now))
	f.do(t, f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, now)) // replay
	f.do(t, f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, now.Add(-time.Hour)))
	f.do(t, f.signed(t, "unknown-session-1", priv, http.MethodGet, "/v1/me", nil, now))
	f.push(t, testToken, `{"session":"`+id+`"}`)
	f.do(t, f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, now.Add(time.Millisecond)))
	logs := f.logs.String()
	if !strings.Contains(logs, session.Redact(id)) {
		t.Fatalf("logs do not mention the redacted id %q; the test checks nothing:\n%s", session.Redact(id), logs)
	}
	for _, secret := range []string{id, "unknown-session-1", rec.ClientPublicKey} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs hold %q:\n%s", secret, logs)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	base := func() config {
		return config{Redis: redisconn.Config{URL: "redis://127.0.0.1:1"}, BackendURL: "http://127.0.0.1:1", Name: "gw",
			Skew: time.Second, MaxBody: 1, LogLevel: "info"}
	}
	tests := []struct {
		name string
		edit func(*config)
	}{
		{"no name", func(c *config) { c.Name = "" }},
		{"name with a space", func(c *config) { c.Name = "gw 1" }},
		{"zero skew", func(c *config) { c.Skew = 0 }},
		{"zero max body", func(c *config) { c.MaxBody = 0 }},
		{"backend not http", func(c *config) { c.BackendURL = "ftp://x" }},
		{"bad log level", func(c *config) { c.LogLevel = "loud" }},
		{"bad redis URL", func(c *config) { c.Redis.URL = "nope://x" }},
		{"negative stripes", func(c *config) { c.Stripes = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.edit(&cfg)
			if g, err := newGateway(cfg); err == nil {
				g.Close()
				t.Errorf("newGateway(%s) = nil error, want an error", tt.name)
			}
		})
	}
}

// TestServeShutsDownGracefully runs the real server on a port and checks
// that cancelling its context (what SIGTERM does in main) stops it and
// closes the cache.
func TestServeShutsDownGracefully(t *testing.T) {
	mr := miniredis.RunT(t)
	be := backendtest.NewServer()
	defer be.Close()
	rec, priv := be.NewSession("user-1")
	gw, err := newGateway(config{
		Redis: redisconn.Config{URL: "redis://" + mr.Addr()}, BackendURL: be.URL(), Name: "gw-serve",
		Skew: signing.DefaultWindow, MaxBody: 1 << 10, SyncTimeout: 5 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.serve(ctx, ln) }()

	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/me", nil)
	signing.SignRequest(req, rec.DeviceSessionID, priv, time.Now(), nil)
	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()
	if resp.StatusCode != 200 {
		t.Fatalf("request to the served gateway = %d, want 200", resp.StatusCode)
	}
	cancel()
	awaitServeReturn(t, done)
	if gw.cache.Stats().Channel.Subscribed {
		t.Errorf("subscriber still subscribed after shutdown, want the cache closed")
	}
}

// TestStartsWhileRedisDown starts the gateway with nothing listening at
// the Redis address: newGateway returns, serve waits -sync-timeout for the
// invalidation channel and serves anyway, lookups fall back to the backend
// and /healthz answers 503 for Redis and the subscriber.
func TestStartsWhileRedisDown(t *testing.T) {
	be := backendtest.NewServer()
	defer be.Close()
	rec, priv := be.NewSession("user-1")
	logs := &syncBuffer{}
	const syncTimeout = 300 * time.Millisecond
	gw, err := newGateway(config{
		Redis: redisconn.Config{URL: "redis://" + redistest.ClosedAddr(t)}, BackendURL: be.URL(), Name: "gw-redis-down",
		Skew: signing.DefaultWindow, MaxBody: 1 << 10, SyncTimeout: syncTimeout,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("newGateway with Redis down = %v, want a gateway", err)
	}
	defer gw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- gw.serve(ctx, ln) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/me", nil)
	signing.SignRequest(req, rec.DeviceSessionID, priv, time.Now(), nil)
	resp, err := client.Do(req) // answered once serve serves
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if took := time.Since(start); took < syncTimeout {
		t.Errorf("served after %v, before -sync-timeout %v", took, syncTimeout)
	}
	if resp.StatusCode != 200 {
		t.Errorf("request with Redis down = %d, want 200 from the backend", resp.StatusCode)
	}
	if n := be.CallsFor(rec.DeviceSessionID); n != 1 {
		t.Errorf("backend calls for the session = %d, want 1", n)
	}
	if !strings.Contains(logs.String(), "invalidation channel not synced yet") {
		t.Errorf("no warning that start-up served unsynced:\n%s", logs)
	}

	resp, err = client.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h health
	err = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 503 || h.Redis.OK || h.Subscriber.OK || !h.Backend.OK || h.Redis.Error == "" {
		t.Errorf("/healthz = %d %+v (%v), want 503 with Redis and the subscriber failing", resp.StatusCode, h, err)
	}

	cancel()
	awaitServeReturn(t, done)
}

// awaitServeReturn waits for serve, whose context was cancelled, to return
// nil on done.
func awaitServeReturn(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel = %v, want nil", err)
		}
	case <-time.After(shutdownTimeout):
		t.Fatal("serve did not return after its context was cancelled")
	}
}

func TestRunUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-no-such-flag"}, &stdout, &stderr); code != 2 {
		t.Errorf("run(-no-such-flag) = %d, want 2", code)
	}
	if code := run(context.Background(), []string{"-name", ""}, &stdout, &stderr); code != 2 {
		t.Errorf("run(-name '') = %d, want 2", code)
	}
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 {
		t.Errorf("run(-h) = %d, want 0", code)
	}
}
