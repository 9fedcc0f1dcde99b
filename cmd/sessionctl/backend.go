package main

// sessionctl backend: a TEST session backend for trying the reference
// gateway (cmd/gatewayd) by hand and for the end-to-end test. It keeps
// sessions in memory (backendtest), serves the endpoint the library calls,
// and has admin endpoints that create sessions (handing out their private
// keys) and revoke them, pushing each revocation to every gateway. It has
// no authentication on its admin endpoints: never expose it.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/session"
)

func init() {
	register("backend", "serve a test session backend that pushes revocations to gateways", runBackend)
}

// Backend defaults.
const (
	backendDefaultListen = ":8081"
	// backendPushTimeout bounds one push to one gateway.
	backendPushTimeout = 5 * time.Second
	// backendMaxSessionsFile bounds the -sessions-file read.
	backendMaxSessionsFile = 64 << 20
	// backendPushPath is the gateways' push endpoint (cmd/gatewayd).
	backendPushPath = "/internal/push"
)

// backendOptions configures a testBackend.
type backendOptions struct {
	// Gateways are the base URLs (http://host:port) revocations are pushed to.
	Gateways []string
	// PushToken, when set, is sent as a bearer token with every push.
	PushToken string
	// Records are served from the start.
	Records []session.Record
	// HTTPClient sends the pushes. Default: a client with backendPushTimeout.
	HTTPClient *http.Client
	// Logger receives one line per admin action. Default: discard.
	Logger *slog.Logger
}

// testBackend is the in-memory backend with its admin endpoints.
type testBackend struct {
	store *backendtest.Server
	opts  backendOptions
	mux   *http.ServeMux
	// requests counts answers by route and status; pushes counts pushes
	// to gateways by result. Both are served on GET /metrics.
	requests *prometheus.CounterVec
	pushes   *prometheus.CounterVec
}

func newTestBackend(opts backendOptions) (*testBackend, error) {
	for _, g := range opts.Gateways {
		if !strings.HasPrefix(g, "http://") && !strings.HasPrefix(g, "https://") {
			return nil, fmt.Errorf("gateway %q: want an http:// or https:// base URL", g)
		}
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: backendPushTimeout}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	b := &testBackend{store: backendtest.NewServer(), opts: opts, mux: http.NewServeMux()}
	reg := prometheus.NewRegistry()
	b.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sessioncache_backend_requests_total",
		Help: "Requests the test backend answered, by route and HTTP status.",
	}, []string{"route", "code"})
	b.pushes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sessioncache_backend_pushes_total",
		Help: "Revocations pushed to gateways, by result (ok or error).",
	}, []string{"result"})
	reg.MustRegister(b.requests, b.pushes)
	b.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	for _, r := range opts.Records {
		b.store.Put(r)
	}
	b.mux.Handle("GET "+backend.PathPrefix+"{id}", b.store.Handler())
	b.mux.HandleFunc("POST /admin/sessions", b.createSession)
	b.mux.HandleFunc("POST /admin/sessions/{id}/revoke", b.revokeSession)
	b.mux.HandleFunc("POST /admin/users/{uid}/revoke", b.revokeUser)
	return b, nil
}

// Handler serves the session endpoint, the admin endpoints and /metrics,
// counting every answer by route and status.
func (b *testBackend) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		b.mux.ServeHTTP(sw, r)
		route := r.Pattern // set by the mux; "" when nothing matched
		if route == "" {
			route = "unmatched"
		}
		b.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
	})
}

// statusWriter remembers the status an answer was written with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Close releases the in-memory store (and its idle loopback listener).
func (b *testBackend) Close() { b.store.Close() }

// createdSession is the answer of POST /admin/sessions. PrivateKey is the
// session's Ed25519 private key (64 bytes, standard base64): a real backend
// never has it; this one hands it out so a person can sign requests.
type createdSession struct {
	DeviceSessionID string `json:"device_session_id"`
	UserID          string `json:"user_id"`
	ClientPublicKey string `json:"client_public_key"`
	PrivateKey      string `json:"private_key"`
}

func (b *testBackend) createSession(w http.ResponseWriter, r *http.Request) {
	uid := r.URL.Query().Get("user")
	if err := session.ValidateUserID(uid); err != nil {
		writeAdminError(w, http.StatusBadRequest, "query parameter user: "+err.Error())
		return
	}
	rec, priv := b.store.NewSession(uid)
	b.opts.Logger.Info("session created", "id", session.Redact(rec.DeviceSessionID), "user", session.Redact(uid))
	writeAdminJSON(w, http.StatusCreated, createdSession{
		DeviceSessionID: rec.DeviceSessionID,
		UserID:          rec.UserID,
		ClientPublicKey: rec.ClientPublicKey,
		PrivateKey:      base64.StdEncoding.EncodeToString(priv),
	})
}

// adminRevokeResult is the answer of the revoke endpoints.
type adminRevokeResult struct {
	Revoked []string     `json:"revoked"`
	Pushes  []pushResult `json:"pushes"`
}

// pushResult is the outcome of one push to one gateway.
type pushResult struct {
	Gateway string `json:"gateway"`
	Status  int    `json:"status,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (b *testBackend) revokeSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := session.ValidateID(id); err != nil {
		writeAdminError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !b.store.Revoke(id) {
		writeAdminError(w, http.StatusNotFound, "session not found")
		return
	}
	rec, _ := b.store.Get(id)
	b.revoked(r.Context(), w, []string{id}, session.Invalidation{SessionID: id, AtMS: backendRevokedAt(rec)})
}

func (b *testBackend) revokeUser(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	if err := session.ValidateUserID(uid); err != nil {
		writeAdminError(w, http.StatusBadRequest, err.Error())
		return
	}
	ids := b.store.RevokeUser(uid)
	if len(ids) == 0 {
		writeAdminError(w, http.StatusNotFound, "user has no sessions")
		return
	}
	b.revoked(r.Context(), w, ids, session.Invalidation{UserID: uid, AtMS: time.Now().UnixMilli()})
}

// revoked pushes m to every gateway and answers 200 when every push got a
// 2xx answer, 502 otherwise; the backend's revocation stands either way.
func (b *testBackend) revoked(ctx context.Context, w http.ResponseWriter, ids []string, m session.Invalidation) {
	pushes := b.push(ctx, m)
	status := http.StatusOK
	for _, p := range pushes {
		if p.Error != "" {
			status = http.StatusBadGateway
		}
	}
	b.opts.Logger.Info("revoked", "sessions", len(ids), "user", session.Redact(m.UserID),
		"id", session.Redact(m.SessionID), "gateways", len(pushes), "status", status)
	writeAdminJSON(w, status, adminRevokeResult{Revoked: ids, Pushes: pushes})
}

// push sends m to every gateway's push endpoint, concurrently.
func (b *testBackend) push(ctx context.Context, m session.Invalidation) []pushResult {
	payload, err := m.MarshalJSON()
	if err != nil {
		// The ids were validated: this is a bug.
		panic(fmt.Sprintf("sessionctl backend: %v", err))
	}
	results := make([]pushResult, len(b.opts.Gateways))
	var wg sync.WaitGroup
	for i, gw := range b.opts.Gateways {
		wg.Go(func() { results[i] = b.pushOne(ctx, gw, payload) })
	}
	wg.Wait()
	for _, r := range results {
		if r.Error != "" {
			b.pushes.WithLabelValues("error").Inc()
		} else {
			b.pushes.WithLabelValues("ok").Inc()
		}
	}
	return results
}

func (b *testBackend) pushOne(ctx context.Context, gateway string, payload []byte) pushResult {
	res := pushResult{Gateway: gateway}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(gateway, "/")+backendPushPath, bytes.NewReader(payload))
	if err != nil {
		res.Error = err.Error()
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	if b.opts.PushToken != "" {
		req.Header.Set("Authorization", "Bearer "+b.opts.PushToken)
	}
	resp, err := b.opts.HTTPClient.Do(req)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	res.Status = resp.StatusCode
	if resp.StatusCode/100 != 2 {
		res.Error = resp.Status
	}
	return res
}

func backendRevokedAt(r session.Record) int64 {
	if r.RevokedAtMS != nil {
		return *r.RevokedAtMS
	}
	return time.Now().UnixMilli()
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeAdminError(w http.ResponseWriter, status int, msg string) {
	writeAdminJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

// sessionsFileRecord is one session of a -sessions-file, in the backend's JSON
// shape (see package backend).
type sessionsFileRecord struct {
	DeviceSessionID string `json:"device_session_id"`
	UserID          string `json:"user_id"`
	ClientPublicKey string `json:"client_public_key"`
	Status          string `json:"status"`
	RevokedAtMS     *int64 `json:"revoked_at_ms"`
}

// loadSessions reads a JSON array of session records; each must pass
// session.Record.Validate.
func loadSessionsFile(path string) ([]session.Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, backendMaxSessionsFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > backendMaxSessionsFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, backendMaxSessionsFile)
	}
	var raw []sessionsFileRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of session records: %w", path, err)
	}
	recs := make([]session.Record, 0, len(raw))
	for i, fr := range raw {
		st, err := session.ParseStatus(fr.Status)
		if err != nil {
			return nil, fmt.Errorf("%s: record %d: %w", path, i, err)
		}
		r := session.Record{
			DeviceSessionID: fr.DeviceSessionID,
			UserID:          fr.UserID,
			ClientPublicKey: fr.ClientPublicKey,
			Status:          st,
			RevokedAtMS:     fr.RevokedAtMS,
		}
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("%s: record %d: %w", path, i, err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// splitGateways splits a comma-separated flag value, dropping empty items.
func splitGateways(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runBackend(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	listen := fs.String("listen", backendDefaultListen, "address to listen on")
	gateways := fs.String("gateways", "", "comma-separated gateway base URLs to push revocations to (http://a:8080,http://b:8080)")
	file := fs.String("sessions-file", "", "JSON array of session records to serve from the start (read once)")
	token := fs.String("push-token", "", "bearer token sent with every push (the gateways' -push-token)")
	asJSON := fs.Bool("json", false, jsonUsage+`; the start line is {"listening":...}, and the log lines on stderr are JSON either way`)
	setUsageStatuses(fs, "backend [flags]", `A TEST session backend, in memory, without authentication: never expose it.

  GET  /api/v1/internal/sessions/{id}   the endpoint the library calls
  POST /admin/sessions?user=U           create a session; the answer holds its
                                        PRIVATE key (base64) for sessionctl sign
  POST /admin/sessions/{id}/revoke      revoke one session, push it to every gateway
  POST /admin/users/{uid}/revoke        revoke a user's sessions, push to every gateway

A revoke answers 200 when every gateway accepted the push, 502 otherwise.
It serves until interrupted.`, `
exit status:
  0  interrupted, and shut down cleanly
  1  it could not listen, or serving failed
  2  bad usage or input (a bad -gateways URL, an unreadable -sessions-file)
`)
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	opts := backendOptions{Gateways: splitGateways(*gateways), PushToken: *token, Logger: logger}
	if *file != "" {
		recs, err := loadSessionsFile(*file)
		if err != nil {
			report(stderr, "backend", exitUsage, err.Error())
			return exitUsage
		}
		opts.Records = recs
	}
	b, err := newTestBackend(opts)
	if err != nil {
		report(stderr, "backend", exitUsage, err.Error())
		return exitUsage
	}
	defer b.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		report(stderr, "backend", exitFailure, err.Error())
		return exitFailure
	}
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if *asJSON {
		line, _ := json.Marshal(map[string]any{"listening": ln.Addr().String(), "sessions": len(opts.Records), "gateways": len(opts.Gateways)}) // always encodes
		fmt.Fprintf(stdout, "%s\n", line)
	} else {
		fmt.Fprintf(stdout, "test backend listening on %s (%d sessions, %d gateways)\n", ln.Addr(), len(opts.Records), len(opts.Gateways))
	}
	return serveBackend(ctx, srv, ln, stderr)
}

// serveBackend serves on ln until ctx ends, then shuts down gracefully.
func serveBackend(ctx context.Context, srv *http.Server, ln net.Listener, stderr io.Writer) int {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		report(stderr, "backend", exitFailure, err.Error())
		return exitFailure
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "sessionctl backend: shutdown: %v\n", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		report(stderr, "backend", exitFailure, err.Error())
		return exitFailure
	}
	return exitOK
}
