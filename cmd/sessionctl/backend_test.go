package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/session"
)

// fakeGateway records the pushes it receives and answers status.
type fakeGateway struct {
	srv    *httptest.Server
	mu     sync.Mutex // guards pushes
	pushes []recordedPush
}

type recordedPush struct {
	path, auth string
	msg        session.Invalidation
	err        error
}

func newFakeGateway(t *testing.T, status int) *fakeGateway {
	t.Helper()
	g := &fakeGateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m, err := session.ParseInvalidation(body)
		g.mu.Lock()
		g.pushes = append(g.pushes, recordedPush{path: r.Method + " " + r.URL.Path, auth: r.Header.Get("Authorization"), msg: m, err: err})
		g.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) received() []recordedPush {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]recordedPush(nil), g.pushes...)
}

// adminCall sends a request to the backend's handler and decodes the JSON
// answer into out (when not nil).
func adminCall(t *testing.T, srv *httptest.Server, method, path string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func newBackendFixture(t *testing.T, opts backendOptions) (*testBackend, *httptest.Server) {
	t.Helper()
	b, err := newTestBackend(opts)
	if err != nil {
		t.Fatalf("newTestBackend = %v", err)
	}
	t.Cleanup(b.Close)
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(srv.Close)
	return b, srv
}

func TestBackendCreateSessionServesItWithAUsableKey(t *testing.T) {
	_, srv := newBackendFixture(t, backendOptions{})
	var c createdSession
	if code := adminCall(t, srv, http.MethodPost, "/admin/sessions?user=user-1", &c); code != http.StatusCreated {
		t.Fatalf("POST /admin/sessions = %d, want 201", code)
	}
	if c.UserID != "user-1" || session.ValidateID(c.DeviceSessionID) != nil || session.ValidatePublicKey(c.ClientPublicKey) != nil {
		t.Fatalf("created session = %+v, want a valid id and key for user-1", c)
	}
	priv, err := base64.StdEncoding.DecodeString(c.PrivateKey)
	if err != nil || len(priv) != ed25519.PrivateKeySize {
		t.Fatalf("private_key is not base64 of %d bytes: %v", ed25519.PrivateKeySize, err)
	}
	if got := base64.StdEncoding.EncodeToString(ed25519.PrivateKey(priv).Public().(ed25519.PublicKey)); got != c.ClientPublicKey {
		t.Errorf("public half of private_key = %q, want client_public_key %q", got, c.ClientPublicKey)
	}

	// The library's client reads it back through the session endpoint.
	client, err := backend.New(backend.Options{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	rec, err := client.Fetch(context.Background(), c.DeviceSessionID)
	if err != nil || rec.Status != session.StatusActive || rec.ClientPublicKey != c.ClientPublicKey {
		t.Errorf("Fetch(%q) = %+v, %v; want the active session", c.DeviceSessionID, rec, err)
	}
	if _, err := client.Fetch(context.Background(), "nobody-1"); err == nil {
		t.Errorf("Fetch(%q) = nil error, want ErrNotFound", "nobody-1")
	}

	for _, bad := range []string{"", "a*b", strings.Repeat("u", 200)} {
		if code := adminCall(t, srv, http.MethodPost, "/admin/sessions?user="+bad, nil); code != http.StatusBadRequest {
			t.Errorf("POST /admin/sessions?user=%.20q = %d, want 400", bad, code)
		}
	}
}

func TestBackendRevokePushesToEveryGateway(t *testing.T) {
	gwA, gwB := newFakeGateway(t, http.StatusAccepted), newFakeGateway(t, http.StatusAccepted)
	b, srv := newBackendFixture(t, backendOptions{Gateways: []string{gwA.srv.URL, gwB.srv.URL + "/"}, PushToken: "tok"})
	rec1, _ := b.store.NewSession("user-1")
	rec2, _ := b.store.NewSession("user-2")
	rec3, _ := b.store.NewSession("user-2")

	var res adminRevokeResult
	if code := adminCall(t, srv, http.MethodPost, "/admin/sessions/"+rec1.DeviceSessionID+"/revoke", &res); code != http.StatusOK {
		t.Fatalf("revoke session = %d (%+v), want 200", code, res)
	}
	if got, _ := b.store.Get(rec1.DeviceSessionID); got.Status != session.StatusRevoked {
		t.Errorf("backend status after revoke = %q, want revoked", got.Status)
	}
	if len(res.Pushes) != 2 || res.Pushes[0].Status != http.StatusAccepted || res.Pushes[1].Error != "" {
		t.Errorf("revoke answer pushes = %+v, want two accepted pushes", res.Pushes)
	}

	if code := adminCall(t, srv, http.MethodPost, "/admin/users/user-2/revoke", &res); code != http.StatusOK {
		t.Fatalf("revoke user = %d, want 200", code)
	}
	if len(res.Revoked) != 2 {
		t.Errorf("revoke user revoked %v, want the user's 2 sessions", res.Revoked)
	}
	for _, id := range []string{rec2.DeviceSessionID, rec3.DeviceSessionID} {
		if got, _ := b.store.Get(id); got.Status != session.StatusRevoked {
			t.Errorf("backend status of a user-2 session = %q, want revoked", got.Status)
		}
	}

	for name, g := range map[string]*fakeGateway{"a": gwA, "b": gwB} {
		pushes := g.received()
		if len(pushes) != 2 {
			t.Fatalf("gateway %s received %d pushes, want 2", name, len(pushes))
		}
		for _, p := range pushes {
			if p.path != "POST "+backendPushPath || p.auth != "Bearer tok" || p.err != nil {
				t.Errorf("gateway %s push = %+v, want POST %s with the bearer token and a valid message", name, p, backendPushPath)
			}
		}
		if pushes[0].msg.SessionID != rec1.DeviceSessionID || pushes[0].msg.AtMS == 0 {
			t.Errorf("gateway %s first push = %+v, want the session with its revocation time", name, pushes[0].msg)
		}
		if pushes[1].msg.UserID != "user-2" {
			t.Errorf("gateway %s second push = %+v, want user-2", name, pushes[1].msg)
		}
	}

	// Unknown or invalid ids: no push.
	for _, tt := range []struct {
		path string
		want int
	}{
		{"/admin/sessions/nobody-1/revoke", http.StatusNotFound},
		{"/admin/users/nobody/revoke", http.StatusNotFound},
		{"/admin/sessions/a*b/revoke", http.StatusBadRequest},
		{"/admin/users/a%20b/revoke", http.StatusBadRequest},
	} {
		if code := adminCall(t, srv, http.MethodPost, tt.path, nil); code != tt.want {
			t.Errorf("POST %s = %d, want %d", tt.path, code, tt.want)
		}
	}
	if n := len(gwA.received()); n != 2 {
		t.Errorf("gateway received %d pushes after refused revocations, want still 2", n)
	}
}

func TestBackendReportsFailedPush(t *testing.T) {
	up, down := newFakeGateway(t, http.StatusAccepted), newFakeGateway(t, http.StatusInternalServerError)
	closed := newFakeGateway(t, http.StatusAccepted)
	closed.srv.Close()
	b, srv := newBackendFixture(t, backendOptions{Gateways: []string{up.srv.URL, down.srv.URL, closed.srv.URL}})
	rec, _ := b.store.NewSession("user-1")
	var res adminRevokeResult
	if code := adminCall(t, srv, http.MethodPost, "/admin/sessions/"+rec.DeviceSessionID+"/revoke", &res); code != http.StatusBadGateway {
		t.Fatalf("revoke with failing gateways = %d, want 502", code)
	}
	if len(res.Pushes) != 3 || res.Pushes[0].Error != "" || res.Pushes[1].Status != 500 || res.Pushes[1].Error == "" || res.Pushes[2].Error == "" {
		t.Errorf("pushes = %+v, want ok, 500, unreachable", res.Pushes)
	}
	if got, _ := b.store.Get(rec.DeviceSessionID); got.Status != session.StatusRevoked {
		t.Errorf("backend status = %q, want revoked even when pushes fail", got.Status)
	}
}

func TestLoadSessionsFile(t *testing.T) {
	dir := t.TempDir()
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `[
		{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"`+key+`","status":"active"},
		{"device_session_id":"dev-2","status":"revoked","revoked_at_ms":1700000000000}
	]`)
	recs, err := loadSessionsFile(good)
	if err != nil || len(recs) != 2 || recs[0].Status != session.StatusActive || recs[1].RevokedAtMS == nil {
		t.Fatalf("loadSessionsFile(good) = %+v, %v; want 2 records", recs, err)
	}
	for name, content := range map[string]string{
		"not an array":   `{"device_session_id":"dev-1"}`,
		"unknown field":  `[{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + key + `","status":"active","x":1}]`,
		"unknown status": `[{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + key + `","status":"paused"}]`,
		"bad key":        `[{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"abc","status":"active"}]`,
		"bad id":         `[{"device_session_id":"a*b","user_id":"u-1","client_public_key":"` + key + `","status":"active"}]`,
	} {
		if _, err := loadSessionsFile(write("bad.json", content)); err == nil {
			t.Errorf("loadSessionsFile(%s) = nil error, want an error", name)
		}
	}
	if _, err := loadSessionsFile(filepath.Join(dir, "missing.json")); err == nil {
		t.Errorf("loadSessionsFile(missing) = nil error, want an error")
	}

	// The command serves the file's records.
	_, srv := newBackendFixture(t, backendOptions{Records: recs})
	client, err := backend.New(backend.Options{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	if rec, err := client.Fetch(context.Background(), "dev-2"); err != nil || rec.Status != session.StatusRevoked {
		t.Errorf("Fetch(dev-2) = %+v, %v; want the file's revoked record", rec, err)
	}
}

// TestRunBackendServesUntilCancelled runs the command itself on a free port.
func TestRunBackendServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		// Its JSON log lines go to stderr from request goroutines.
		done <- dispatch(ctx, []string{"backend", "-listen", "127.0.0.1:0"}, pw, &lockedWriter{w: io.Discard})
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no start-up line: %v", err)
	}
	// "test backend listening on 127.0.0.1:PORT (...)"
	fields := strings.Fields(line)
	if len(fields) < 5 {
		t.Fatalf("start-up line %q", line)
	}
	addr := fields[4]
	resp, err := http.Post("http://"+addr+"/admin/sessions?user=user-1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("POST /admin/sessions on the running command = %d, want 201", resp.StatusCode)
	}
	cancel()
	go io.Copy(io.Discard, pr)
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("backend after cancel: exit %d, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend did not stop after its context was cancelled")
	}
}

func TestRunBackendUsage(t *testing.T) {
	for _, args := range [][]string{
		{"backend", "-gateways", "ftp://x"},
		{"backend", "-sessions-file", filepath.Join(t.TempDir(), "missing.json")},
		{"backend", "extra"},
		{"backend", "-no-such-flag"},
	} {
		var stdout, stderr bytes.Buffer
		if code := dispatch(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("sessionctl %v: exit %d, want %d (stderr %q)", args, code, exitUsage, stderr.String())
		}
	}
}

// TestBackendServesMetrics checks that the test backend's /metrics counts
// its answers by route and status, and its pushes by result.
func TestBackendServesMetrics(t *testing.T) {
	up, down := newFakeGateway(t, http.StatusAccepted), newFakeGateway(t, http.StatusInternalServerError)
	b, srv := newBackendFixture(t, backendOptions{Gateways: []string{up.srv.URL, down.srv.URL}})
	rec, _ := b.store.NewSession("user-1")
	// One gateway fails the push: the revocation answers 502.
	if code := adminCall(t, srv, http.MethodPost, "/admin/sessions/"+rec.DeviceSessionID+"/revoke", nil); code != http.StatusBadGateway {
		t.Fatalf("revoke = %d, want 502", code)
	}
	if code := adminCall(t, srv, http.MethodPost, "/admin/sessions/nobody-1/revoke", nil); code != http.StatusNotFound {
		t.Fatalf("revoke of an unknown id = %d, want 404", code)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200", resp.StatusCode)
	}
	for _, want := range []string{
		`sessioncache_backend_requests_total{code="502",route="POST /admin/sessions/{id}/revoke"} 1`,
		`sessioncache_backend_requests_total{code="404",route="POST /admin/sessions/{id}/revoke"} 1`,
		`sessioncache_backend_pushes_total{result="ok"} 1`,
		`sessioncache_backend_pushes_total{result="error"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("GET /metrics lacks %q:\n%s", want, body)
		}
	}
}
