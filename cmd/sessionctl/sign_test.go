package main

import (
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
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/signing"
)

// verifyingServer answers 200 "hello <user>" to requests that verify with
// pub for session id, and 401 with the reason otherwise.
func verifyingServer(t *testing.T, id, pubB64 string) *httptest.Server {
	t.Helper()
	v, err := signing.NewVerifier(signing.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := v.Verify(pubB64, r.Method, r.RequestURI, r.Header.Get(signing.HeaderTimestamp),
			r.Header.Get(signing.HeaderSignature), body, time.Now())
		if r.Header.Get(signing.HeaderSessionID) != id || err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "denied")
			return
		}
		io.WriteString(w, "hello "+r.Method+" "+string(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func runSessionctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := dispatch(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestSignSendsAVerifiableRequest(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	pub := base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
	srv := verifyingServer(t, "dev-1", pub)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(priv)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bodyFile := filepath.Join(dir, "body")
	if err := os.WriteFile(bodyFile, []byte(`{"from":"file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	created, _ := json.Marshal(createdSession{DeviceSessionID: "dev-1", UserID: "u", ClientPublicKey: pub,
		PrivateKey: base64.StdEncoding.EncodeToString(priv)})
	jsonFile := filepath.Join(dir, "session.json")
	if err := os.WriteFile(jsonFile, created, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"base64 private key", []string{"-key", base64.StdEncoding.EncodeToString(priv), "-session", "dev-1", "-url", srv.URL + "/v1/me?x=1"}, exitOK, "hello GET "},
		{"seed", []string{"-key", base64.StdEncoding.EncodeToString(seed), "-session", "dev-1", "-url", srv.URL + "/v1/me"}, exitOK, "hello GET "},
		{"key file and POST body", []string{"-key", "@" + keyFile, "-session", "dev-1", "-url", srv.URL + "/v1/pay", "-method", "POST", "-data", `{"a":1}`}, exitOK, `hello POST {"a":1}`},
		{"body file", []string{"-key", "@" + keyFile, "-session", "dev-1", "-url", srv.URL + "/v1/pay", "-method", "PUT", "-data", "@" + bodyFile}, exitOK, `hello PUT {"from":"file"}`},
		{"backend answer as key file", []string{"-key", "@" + jsonFile, "-url", srv.URL + "/v1/me"}, exitOK, "hello GET "},
		{"wrong session: 401", []string{"-key", "@" + keyFile, "-session", "dev-2", "-url", srv.URL + "/v1/me"}, exitFailure, "401 Unauthorized\ndenied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runSessionctl(t, append([]string{"sign"}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(stdout, tt.wantOut) {
				t.Errorf("sign %s: exit %d, stdout %q, stderr %q; want exit %d and %q", tt.name, code, stdout, stderr, tt.wantCode, tt.wantOut)
			}
		})
	}
}

func TestSignUsageAndFailures(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	unreachable := httptest.NewServer(http.NotFoundHandler())
	deadURL := unreachable.URL
	unreachable.Close()
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no key", []string{"-session", "dev-1", "-url", "http://127.0.0.1:1/"}, exitUsage},
		{"key not base64", []string{"-key", "!!", "-session", "dev-1", "-url", "http://127.0.0.1:1/"}, exitUsage},
		{"key of the wrong size", []string{"-key", base64.StdEncoding.EncodeToString(make([]byte, 16)), "-session", "dev-1", "-url", "http://127.0.0.1:1/"}, exitUsage},
		{"missing key file", []string{"-key", "@/nonexistent/key", "-session", "dev-1", "-url", "http://127.0.0.1:1/"}, exitUsage},
		{"no session", []string{"-key", key, "-url", "http://127.0.0.1:1/"}, exitUsage},
		{"invalid session id", []string{"-key", key, "-session", "a*b", "-url", "http://127.0.0.1:1/"}, exitUsage},
		{"relative url", []string{"-key", key, "-session", "dev-1", "-url", "/v1/me"}, exitUsage},
		{"bad method", []string{"-key", key, "-session", "dev-1", "-url", "http://127.0.0.1:1/", "-method", "GE T"}, exitUsage},
		{"unreachable gateway", []string{"-key", key, "-session", "dev-1", "-url", deadURL + "/v1/me"}, exitFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runSessionctl(t, append([]string{"sign"}, tt.args...)...)
			if code != tt.want || (code != exitOK && !strings.HasPrefix(stderr, "sessionctl sign: ")) {
				t.Errorf("sign %s: exit %d, stderr %q; want exit %d with a sessionctl sign: message", tt.name, code, stderr, tt.want)
			}
		})
	}
}

// TestSignAgainstTestBackendSession ties the two commands together: a
// session created by the backend's admin endpoint signs a request that a
// verifier with the backend's record of the key accepts.
func TestSignAgainstTestBackendSession(t *testing.T) {
	b, srv := newBackendFixture(t, backendOptions{})
	var c createdSession
	if code := adminCall(t, srv, http.MethodPost, "/admin/sessions?user=user-9", &c); code != http.StatusCreated {
		t.Fatalf("POST /admin/sessions = %d", code)
	}
	rec, ok := b.store.Get(c.DeviceSessionID)
	if !ok {
		t.Fatal("created session not stored")
	}
	gw := verifyingServer(t, rec.DeviceSessionID, rec.ClientPublicKey)
	code, stdout, stderr := runSessionctl(t, "sign", "-key", c.PrivateKey, "-session", c.DeviceSessionID, "-url", gw.URL+"/v1/me")
	if code != exitOK || !strings.Contains(stdout, "200 OK") {
		t.Errorf("sign with the backend's key: exit %d, stdout %q, stderr %q; want 0 and 200 OK", code, stdout, stderr)
	}
}
