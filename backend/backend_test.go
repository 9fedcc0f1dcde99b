package backend_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/session"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testKey is the standard base64 of the 32 bytes 0, 1, ..., 31.
var testKey = func() string {
	var raw [session.PublicKeySize]byte
	for i := range raw {
		raw[i] = byte(i)
	}
	return base64.StdEncoding.EncodeToString(raw[:])
}()

func int64p(v int64) *int64 { return &v }

// newClient returns a client of baseURL whose idle connections are closed
// when the test ends.
func newClient(t *testing.T, opts backend.Options) *backend.Client {
	t.Helper()
	c, err := backend.New(opts)
	if err != nil {
		t.Fatalf("New(%+v) = %v", opts, err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// newBackend starts a backendtest.Server that is closed when the test ends.
func newBackend(t *testing.T) *backendtest.Server {
	t.Helper()
	s := backendtest.NewServer()
	t.Cleanup(s.Close)
	return s
}

// serveBody starts a server that answers every request with status and body,
// and returns a client of it with the default options.
func serveBody(t *testing.T, status int, body string) *backend.Client {
	t.Helper()
	return serveBodyMax(t, status, body, 0)
}

// serveBodyMax is serveBody with Options.MaxResponseBytes set to max.
func serveBodyMax(t *testing.T, status int, body string, max int64) *backend.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return newClient(t, backend.Options{BaseURL: srv.URL, MaxResponseBytes: max})
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		opts    backend.Options
		wantErr bool
	}{
		{"defaults", backend.Options{BaseURL: "http://127.0.0.1:8080"}, false},
		{"https with path and slash", backend.Options{BaseURL: "https://backend.internal/prefix/"}, false},
		{"all set", backend.Options{BaseURL: "http://h", HTTPClient: &http.Client{}, Timeout: time.Second, MaxResponseBytes: 1}, false},
		{"no base URL", backend.Options{}, true},
		{"no scheme", backend.Options{BaseURL: "127.0.0.1:8080"}, true},
		{"ftp", backend.Options{BaseURL: "ftp://h"}, true},
		{"no host", backend.Options{BaseURL: "http:///x"}, true},
		{"user info", backend.Options{BaseURL: "http://u:secret@h"}, true},
		{"query", backend.Options{BaseURL: "http://h/?a=1"}, true},
		{"fragment", backend.Options{BaseURL: "http://h/#f"}, true},
		{"unparsable", backend.Options{BaseURL: "http://h\x7f:secret"}, true},
		{"negative timeout", backend.Options{BaseURL: "http://h", Timeout: -1}, true},
		{"negative max bytes", backend.Options{BaseURL: "http://h", MaxResponseBytes: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := backend.New(tt.opts)
			if (err != nil) != tt.wantErr || (c == nil) != tt.wantErr {
				t.Fatalf("New(%+v) = %v, %v, want error: %v", tt.opts, c, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("New(%+v) error %q quotes the URL", tt.opts, err)
			}
		})
	}
}

func TestFetch(t *testing.T) {
	srv := newBackend(t)
	active := session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusActive}
	revoked := session.Record{DeviceSessionID: "dev-2", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusRevoked, RevokedAtMS: int64p(1764415200000)}
	tombstone := session.Record{DeviceSessionID: "dev-3", Status: session.StatusRevoked}
	for _, rec := range []session.Record{active, revoked, tombstone} {
		srv.Put(rec)
	}
	c := newClient(t, backend.Options{BaseURL: srv.URL()})
	for _, want := range []session.Record{active, revoked, tombstone} {
		t.Run(want.DeviceSessionID, func(t *testing.T) {
			got, err := c.Fetch(context.Background(), want.DeviceSessionID)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("Fetch(%q) = %+v, %v, want %+v, nil", want.DeviceSessionID, got, err, want)
			}
		})
	}
}

func TestFetchBaseURLWithPath(t *testing.T) {
	srv := newBackend(t)
	srv.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	mux := http.NewServeMux()
	mux.Handle("/prefix/", http.StripPrefix("/prefix", srv.Handler()))
	front := httptest.NewServer(mux)
	defer front.Close()
	c := newClient(t, backend.Options{BaseURL: front.URL + "/prefix/"})
	if _, err := c.Fetch(context.Background(), "dev-1"); err != nil {
		t.Fatalf("Fetch(%q) via %s/prefix/ = %v, want nil", "dev-1", front.URL, err)
	}
}

func TestFetchNotFound(t *testing.T) {
	srv := newBackend(t)
	c := newClient(t, backend.Options{BaseURL: srv.URL()})
	got, err := c.Fetch(context.Background(), "dev-unknown")
	if !errors.Is(err, session.ErrNotFound) || !reflect.DeepEqual(got, session.Record{}) {
		t.Fatalf("Fetch(%q) = %+v, %v, want a zero record and ErrNotFound", "dev-unknown", got, err)
	}
	var se *backend.StatusError
	if errors.As(err, &se) {
		t.Errorf("Fetch(%q) error %v is a *StatusError; 404 must be ErrNotFound only", "dev-unknown", err)
	}
}

func TestFetchStatusError(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusBadRequest, http.StatusFound} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			c := serveBody(t, status, `{"error":"x"}`)
			got, err := c.Fetch(context.Background(), "dev-1")
			var se *backend.StatusError
			if !errors.As(err, &se) || se.StatusCode != status || !reflect.DeepEqual(got, session.Record{}) {
				t.Fatalf("Fetch(%q) = %+v, %v, want a zero record and *StatusError{%d}", "dev-1", got, err, status)
			}
			if want := fmt.Sprintf("backend: unexpected HTTP status %d", status); err.Error() != want {
				t.Errorf("Fetch(%q) error = %q, want %q", "dev-1", err, want)
			}
			if errors.Is(err, session.ErrNotFound) {
				t.Errorf("Fetch(%q) error %v wraps ErrNotFound", "dev-1", err)
			}
		})
	}
}

func TestFetchStatusErrorFromFault(t *testing.T) {
	srv := newBackend(t)
	srv.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	srv.SetFault(backendtest.Fault{Status: http.StatusServiceUnavailable})
	c := newClient(t, backend.Options{BaseURL: srv.URL()})
	_, err := c.Fetch(context.Background(), "dev-1")
	var se *backend.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("Fetch(%q) with a 503 fault = %v, want *StatusError{503}", "dev-1", err)
	}
}

func TestFetchInvalidResponse(t *testing.T) {
	const max = 512
	okRecord := `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"active"`
	tests := []struct {
		name string
		body string
	}{
		{"bad JSON", `{"device_session_id":"dev-1",`},
		{"empty body", ``},
		{"unknown status", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"suspended"}`},
		{"key of 31 bytes", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` +
			base64.StdEncoding.EncodeToString(make([]byte, 31)) + `","status":"active"}`},
		{"key not standard base64", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` +
			strings.Repeat("-_", 21) + `A=","status":"active"}`},
		{"key not base64 at all", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"not a key","status":"active"}`},
		{"id mismatch", `{"device_session_id":"dev-2","user_id":"u-1","client_public_key":"` + testKey + `","status":"active"}`},
		{"id differs in case", `{"device_session_id":"DEV-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"active"}`},
		{"oversize body", okRecord + `,"pad":"` + strings.Repeat("x", max) + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serveBodyMax(t, http.StatusOK, tt.body, max)
			got, err := c.Fetch(context.Background(), "dev-1")
			if !errors.Is(err, backend.ErrInvalidResponse) || !reflect.DeepEqual(got, session.Record{}) {
				t.Fatalf("Fetch(%q) = %+v, %v, want a zero record and ErrInvalidResponse", "dev-1", got, err)
			}
		})
	}
}

func TestFetchMaxResponseBytes(t *testing.T) {
	body := `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"active"}`
	tests := []struct {
		max     int64
		wantErr bool
	}{
		{int64(len(body)), false},
		{int64(len(body)) - 1, true},
		{0, false}, // the 64 KiB default
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.max), func(t *testing.T) {
			c := serveBodyMax(t, http.StatusOK, body, tt.max)
			_, err := c.Fetch(context.Background(), "dev-1")
			if gotErr := errors.Is(err, backend.ErrInvalidResponse); gotErr != tt.wantErr || (err != nil && !gotErr) {
				t.Fatalf("Fetch(%q) of a %d-byte body with MaxResponseBytes %d = %v, want ErrInvalidResponse: %v",
					"dev-1", len(body), tt.max, err, tt.wantErr)
			}
		})
	}
}

func TestFetchDefaultMaxResponseBytes(t *testing.T) {
	body := `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey +
		`","status":"active","pad":"` + strings.Repeat("x", backend.DefaultMaxResponseBytes) + `"}`
	c := serveBody(t, http.StatusOK, body)
	if _, err := c.Fetch(context.Background(), "dev-1"); !errors.Is(err, backend.ErrInvalidResponse) {
		t.Fatalf("Fetch(%q) of a %d-byte body with the default limit = %v, want ErrInvalidResponse", "dev-1", len(body), err)
	}
}

func TestFetchBadJSONFault(t *testing.T) {
	srv := newBackend(t)
	srv.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	srv.SetFault(backendtest.Fault{BadJSON: true})
	c := newClient(t, backend.Options{BaseURL: srv.URL()})
	got, err := c.Fetch(context.Background(), "dev-1")
	if !errors.Is(err, backend.ErrInvalidResponse) || !reflect.DeepEqual(got, session.Record{}) {
		t.Fatalf("Fetch(%q) with a BadJSON fault = %+v, %v, want a zero record and ErrInvalidResponse", "dev-1", got, err)
	}
}

func TestFetchToleratesExtraFields(t *testing.T) {
	c := serveBody(t, http.StatusOK, `{"device_session_id":"dev-1","created_at_ms":1,"user_id":"u-1",`+
		`"client_public_key":"`+testKey+`","status":"revoked","revoked_at_ms":7,"labels":{"a":["b"]},"next":null}`)
	want := session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusRevoked, RevokedAtMS: int64p(7)}
	got, err := c.Fetch(context.Background(), "dev-1")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Fetch(%q) = %+v, %v, want %+v, nil", "dev-1", got, err, want)
	}
}

func TestFetchTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	// The target is 50 ms over the timeout (measured: 0.4–1.4 ms); the test
	// allows 150 ms because CI runs packages side by side on two cores.
	const slack = 150 * time.Millisecond
	srv := newBackend(t)
	srv.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	srv.SetFault(backendtest.Fault{Hang: true})
	c := newClient(t, backend.Options{BaseURL: srv.URL(), Timeout: timeout})

	start := time.Now()
	got, err := c.Fetch(context.Background(), "dev-1")
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || !reflect.DeepEqual(got, session.Record{}) {
		t.Fatalf("Fetch(%q) against a hanging server = %+v, %v, want a zero record and context.DeadlineExceeded", "dev-1", got, err)
	}
	if elapsed < timeout || elapsed > timeout+slack {
		t.Errorf("Fetch(%q) with Timeout %v returned after %v, want within [%v, %v]", "dev-1", timeout, elapsed, timeout, timeout+slack)
	}
	t.Logf("Fetch with Timeout %v against a hanging server returned after %v", timeout, elapsed)
}

func TestFetchCallerContext(t *testing.T) {
	srv := newBackend(t)
	srv.SetFault(backendtest.Fault{Hang: true})
	c := newClient(t, backend.Options{BaseURL: srv.URL(), Timeout: time.Minute})

	t.Run("deadline shorter than Timeout", func(t *testing.T) {
		const deadline = 100 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		_, err := c.Fetch(ctx, "dev-1")
		if elapsed := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || elapsed > deadline+time.Second {
			t.Fatalf("Fetch(%q) with a %v context = %v after %v, want context.DeadlineExceeded soon after %v", "dev-1", deadline, err, elapsed, deadline)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		held := newBackend(t)
		held.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
		arrived, release := make(chan struct{}), make(chan struct{})
		held.SetBeforeRespond(func(string, session.Record, bool) {
			close(arrived)
			<-release
		})
		defer close(release)
		hc := newClient(t, backend.Options{BaseURL: held.URL(), Timeout: time.Minute})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := hc.Fetch(ctx, "dev-1")
			done <- err
		}()
		<-arrived
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Fetch(%q) after cancel = %v, want context.Canceled", "dev-1", err)
		}
	})
	t.Run("already canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Fetch(ctx, "dev-1"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Fetch(%q) with a canceled context = %v, want context.Canceled", "dev-1", err)
		}
	})
}

func TestFetchInvalidID(t *testing.T) {
	srv := newBackend(t)
	c := newClient(t, backend.Options{BaseURL: srv.URL()})
	ids := []string{
		"", strings.Repeat("a", session.MaxIDLength+1), "*", "?", "[a]", "{x}", "a b", "a\x00b", "../x", "a/b",
		"a%2Fb", "a:b", "dev\r\n", "\xff\xfe", "dév", strings.Repeat("a", 10<<10), ".", "..",
	}
	for _, id := range ids {
		got, err := c.Fetch(context.Background(), id)
		if !errors.Is(err, session.ErrInvalidID) || !reflect.DeepEqual(got, session.Record{}) {
			t.Errorf("Fetch(%q) = %+v, %v, want a zero record and ErrInvalidID", id, got, err)
		}
	}
	if n := srv.Calls(); n != 0 {
		t.Errorf("server Calls() = %d after only invalid ids, want 0", n)
	}
}

func TestFetchReusesConnection(t *testing.T) {
	const max = 1024
	good := `{"device_session_id":"ok","user_id":"u-1","client_public_key":"` + testKey + `","status":"active"}`
	var (
		mu       sync.Mutex
		newConns int
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimPrefix(r.URL.Path, backend.PathPrefix) {
		case "ok":
			_, _ = w.Write([]byte(good))
		case "missing":
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		case "fail":
			http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
		case "bad":
			_, _ = w.Write([]byte(`{"device_session_id":`))
		case "big":
			_, _ = w.Write([]byte(strings.Repeat(" ", 10*max)))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			newConns++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	c := newClient(t, backend.Options{BaseURL: srv.URL, MaxResponseBytes: max})
	for range 3 {
		for _, id := range []string{"ok", "missing", "fail", "bad", "big"} {
			_, _ = c.Fetch(context.Background(), id)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if newConns != 1 {
		t.Errorf("15 sequential Fetch calls (200, 404, 503, bad JSON, oversize) opened %d connections, want 1", newConns)
	}
}

// TestErrorsOmitIDAndKey checks every kind of Fetch error for the full
// session id and the public key.
func TestErrorsOmitIDAndKey(t *testing.T) {
	const id = "dev-0123456789abcdefghij"
	record := func(id, status string) string {
		return `{"device_session_id":"` + id + `","user_id":"u-1","client_public_key":"` + testKey + `","status":"` + status + `"}`
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	hanging := newBackend(t)
	hanging.SetFault(backendtest.Fault{Hang: true})

	clients := map[string]*backend.Client{
		"not found":        serveBody(t, http.StatusNotFound, `{"error":"`+id+`"}`),
		"503":              serveBody(t, http.StatusServiceUnavailable, record(id, "active")),
		"bad JSON":         serveBody(t, http.StatusOK, `{"device_session_id":"`+id+`",`),
		"unknown status":   serveBody(t, http.StatusOK, record(id, "suspended")),
		"status is key":    serveBody(t, http.StatusOK, record(id, testKey)),
		"id mismatch":      serveBody(t, http.StatusOK, record(id+"x", "active")),
		"bad key":          serveBody(t, http.StatusOK, `{"device_session_id":"`+id+`","user_id":"u-1","client_public_key":"`+testKey[:43]+`","status":"active"}`),
		"wrong type":       serveBody(t, http.StatusOK, `{"device_session_id":"`+id+`","revoked_at_ms":"`+testKey+`"}`),
		"connection error": newClient(t, backend.Options{BaseURL: closedURL}),
		"timeout":          newClient(t, backend.Options{BaseURL: hanging.URL(), Timeout: 20 * time.Millisecond}),
	}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			_, err := c.Fetch(context.Background(), id)
			if err == nil {
				t.Fatalf("Fetch(%q) = nil error, want one", id)
			}
			if msg := err.Error(); strings.Contains(msg, id) || strings.Contains(msg, testKey) || strings.Contains(msg, testKey[:43]) {
				t.Errorf("Fetch(%q) error %q contains the id or the key", id, msg)
			}
		})
	}
}

func TestFetchConcurrent(t *testing.T) {
	srv := newBackend(t)
	c := newClient(t, backend.Options{BaseURL: srv.URL()})
	var recs []session.Record
	for range 8 {
		rec, _ := srv.NewSession("u-1")
		recs = append(recs, rec)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for _, rec := range recs {
		wg.Go(func() {
			for range 20 {
				got, err := c.Fetch(context.Background(), rec.DeviceSessionID)
				if err != nil || got.DeviceSessionID != rec.DeviceSessionID {
					errs <- fmt.Errorf("Fetch(%q) = %+v, %v", rec.DeviceSessionID, got, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := srv.Calls(); n != 8*20 {
		t.Errorf("server Calls() = %d, want %d", n, 8*20)
	}
}

// FuzzFetchID checks that Fetch sends exactly the ids that ValidateID
// accepts, except the dot segments "." and "..", unchanged through path
// escaping, and nothing else.
func FuzzFetchID(f *testing.F) {
	for _, id := range []string{
		"dev-1", "a.b_c-D", "..", ".", "...", "-", "*", "?", "[a]", "{x}", strings.Repeat("a", 10<<10), "a\x00", "a\r\nb",
		"\xff", "../x", "a/b", "a%2Fb", "a%", "a b", "a+b", "a;b", "a#b", "a?b=c",
	} {
		f.Add(id)
	}
	srv := backendtest.NewServer()
	f.Cleanup(srv.Close)
	c, err := backend.New(backend.Options{BaseURL: srv.URL()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(c.CloseIdleConnections)
	f.Fuzz(func(t *testing.T, id string) {
		before, beforeID := srv.Calls(), srv.CallsFor(id)
		_, err := c.Fetch(context.Background(), id)
		if session.ValidateID(id) != nil || id == "." || id == ".." {
			if !errors.Is(err, session.ErrInvalidID) {
				t.Fatalf("Fetch(%q) = %v, want ErrInvalidID", id, err)
			}
			if n := srv.Calls() - before; n != 0 {
				t.Fatalf("Fetch(%q) of an invalid id made %d calls, want 0", id, n)
			}
			return
		}
		if !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Fetch(%q) of an unknown valid id = %v, want ErrNotFound", id, err)
		}
		if n := srv.CallsFor(id) - beforeID; n != 1 {
			t.Fatalf("Fetch(%q) reached the server as that id %d times, want 1", id, n)
		}
	})
}
