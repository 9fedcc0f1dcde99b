package backendtest_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
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

func newServer(t *testing.T) *backendtest.Server {
	t.Helper()
	s := backendtest.NewServer()
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, baseURL string) *backend.Client {
	t.Helper()
	c, err := backend.New(backend.Options{BaseURL: baseURL})
	if err != nil {
		t.Fatalf("backend.New(%q) = %v", baseURL, err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// get sends a plain GET for id and returns the status, content type and body.
func get(t *testing.T, baseURL, id string) (int, string, []byte) {
	t.Helper()
	resp, err := http.Get(baseURL + backend.PathPrefix + id)
	if err != nil {
		t.Fatalf("GET %s = %v", id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", id, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}

func TestNewSession(t *testing.T) {
	s := newServer(t)
	rec, priv := s.NewSession("u-1")
	if err := rec.Validate(); err != nil {
		t.Fatalf("NewSession(%q) = %+v, which fails Validate: %v", "u-1", rec, err)
	}
	if len(rec.DeviceSessionID) < 22 || rec.UserID != "u-1" || rec.Status != session.StatusActive || rec.RevokedAtMS != nil {
		t.Errorf("NewSession(%q) = %+v, want an active record of u-1 with an id of 22+ characters", "u-1", rec)
	}
	pub, err := base64.StdEncoding.DecodeString(rec.ClientPublicKey)
	if err != nil {
		t.Fatalf("NewSession(%q) key %q: %v", "u-1", rec.ClientPublicKey, err)
	}
	msg := []byte("GET /x")
	if !ed25519.Verify(pub, msg, ed25519.Sign(priv, msg)) {
		t.Errorf("NewSession(%q): a signature by the private key does not verify with ClientPublicKey", "u-1")
	}
	if got, ok := s.Get(rec.DeviceSessionID); !ok || !reflect.DeepEqual(got, rec) {
		t.Errorf("Get(%q) = %+v, %v, want %+v, true", rec.DeviceSessionID, got, ok, rec)
	}
	got, err := newClient(t, s.URL()).Fetch(context.Background(), rec.DeviceSessionID)
	if err != nil || !reflect.DeepEqual(got, rec) {
		t.Errorf("Fetch(%q) = %+v, %v, want %+v, nil", rec.DeviceSessionID, got, err, rec)
	}
	if other, _ := s.NewSession("u-1"); other.DeviceSessionID == rec.DeviceSessionID || other.ClientPublicKey == rec.ClientPublicKey {
		t.Errorf("two NewSession calls returned the same id or key")
	}
}

func TestNewSessionPanicsOnInvalidUser(t *testing.T) {
	s := newServer(t)
	for _, userID := range []string{"", "u 1", "{x}"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewSession(%q) did not panic", userID)
				}
			}()
			s.NewSession(userID)
		}()
	}
}

func TestRevoke(t *testing.T) {
	s := newServer(t)
	rec, _ := s.NewSession("u-1")
	before := time.Now().UnixMilli()
	if !s.Revoke(rec.DeviceSessionID) {
		t.Fatalf("Revoke(%q) = false, want true", rec.DeviceSessionID)
	}
	after := time.Now().UnixMilli()
	got, _ := s.Get(rec.DeviceSessionID)
	if got.Status != session.StatusRevoked || got.RevokedAtMS == nil || *got.RevokedAtMS < before || *got.RevokedAtMS > after {
		t.Fatalf("Get(%q) after Revoke = %+v, want revoked with revoked_at_ms in [%d, %d]", rec.DeviceSessionID, got, before, after)
	}
	if got.UserID != rec.UserID || got.ClientPublicKey != rec.ClientPublicKey {
		t.Errorf("Get(%q) after Revoke = %+v, want user and key kept", rec.DeviceSessionID, got)
	}
	first := *got.RevokedAtMS
	s.Revoke(rec.DeviceSessionID)
	if again, _ := s.Get(rec.DeviceSessionID); *again.RevokedAtMS != first {
		t.Errorf("second Revoke(%q) changed revoked_at_ms from %d to %d", rec.DeviceSessionID, first, *again.RevokedAtMS)
	}
	if s.Revoke("dev-unknown") {
		t.Errorf("Revoke(%q) = true, want false", "dev-unknown")
	}
	if _, ok := s.Get("dev-unknown"); ok {
		t.Errorf("Revoke(%q) created a record", "dev-unknown")
	}
}

func TestRevokeUser(t *testing.T) {
	s := newServer(t)
	a, _ := s.NewSession("u-1")
	b, _ := s.NewSession("u-1")
	other, _ := s.NewSession("u-2")
	s.Revoke(a.DeviceSessionID)

	got := s.RevokeUser("u-1")
	want := []string{a.DeviceSessionID, b.DeviceSessionID}
	slices.Sort(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("RevokeUser(%q) = %q, want %q", "u-1", got, want)
	}
	for _, id := range want {
		if rec, _ := s.Get(id); rec.Status != session.StatusRevoked || rec.RevokedAtMS == nil {
			t.Errorf("Get(%q) after RevokeUser = %+v, want revoked with a time", id, rec)
		}
	}
	if rec, _ := s.Get(other.DeviceSessionID); rec.Status != session.StatusActive {
		t.Errorf("Get(%q) of another user after RevokeUser = %+v, want active", other.DeviceSessionID, rec)
	}
	if got := s.RevokeUser("u-none"); len(got) != 0 {
		t.Errorf("RevokeUser(%q) = %q, want none", "u-none", got)
	}
	s.Put(session.Record{DeviceSessionID: "tomb", Status: session.StatusRevoked})
	if got := s.RevokeUser(""); len(got) != 0 {
		t.Errorf("RevokeUser(%q) = %q, want none", "", got)
	}
}

func TestGetReturnsCopy(t *testing.T) {
	s := newServer(t)
	at := int64(5)
	s.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked, RevokedAtMS: &at})
	at = 6
	got, _ := s.Get("dev-1")
	*got.RevokedAtMS = 7
	if again, _ := s.Get("dev-1"); *again.RevokedAtMS != 5 {
		t.Errorf("Get(%q).RevokedAtMS = %d after the caller changed its copies, want 5", "dev-1", *again.RevokedAtMS)
	}
}

func TestServesEncodeRecordShape(t *testing.T) {
	s := newServer(t)
	records := []session.Record{
		{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusActive},
		{DeviceSessionID: "dev-2", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusRevoked, RevokedAtMS: int64p(1764415200000)},
		{DeviceSessionID: "dev-3", Status: session.StatusRevoked},
	}
	for _, rec := range records {
		s.Put(rec)
		want, err := backend.EncodeRecord(rec)
		if err != nil {
			t.Fatalf("EncodeRecord(%+v) = %v", rec, err)
		}
		status, ctype, body := get(t, s.URL(), rec.DeviceSessionID)
		if status != http.StatusOK || ctype != "application/json" || string(body) != string(want) {
			t.Errorf("GET %s = %d %q %s, want 200 application/json %s", rec.DeviceSessionID, status, ctype, body, want)
		}
	}
}

func TestNotFound(t *testing.T) {
	s := newServer(t)
	const id = "dev-unknown-0123456789"
	status, ctype, body := get(t, s.URL(), id)
	var msg struct{ Error string }
	if status != http.StatusNotFound || ctype != "application/json" || json.Unmarshal(body, &msg) != nil || msg.Error == "" {
		t.Fatalf("GET %s = %d %q %s, want 404 application/json with an \"error\" field", id, status, ctype, body)
	}
	if strings.Contains(string(body), id) {
		t.Errorf("GET %s: 404 body %s contains the id", id, body)
	}
	if n := s.CallsFor(id); n != 1 {
		t.Errorf("CallsFor(%q) = %d after one 404, want 1", id, n)
	}
}

func TestPutInvalidRecordIsServed(t *testing.T) {
	s := newServer(t)
	bad := session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: "AAAA", Status: "suspended"}
	s.Put(bad)
	_, _, body := get(t, s.URL(), "dev-1")
	want := `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"AAAA","status":"suspended"}`
	if string(body) != want {
		t.Errorf("GET dev-1 of an invalid record = %s, want %s", body, want)
	}
	if _, err := newClient(t, s.URL()).Fetch(context.Background(), "dev-1"); !errors.Is(err, backend.ErrInvalidResponse) {
		t.Errorf("Fetch(%q) of an invalid record = %v, want ErrInvalidResponse", "dev-1", err)
	}
}

func TestFaults(t *testing.T) {
	s := newServer(t)
	s.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	c := newClient(t, s.URL())
	var se *backend.StatusError
	tests := []struct {
		name  string
		fault backendtest.Fault
		check func(error) bool
	}{
		{"status 503", backendtest.Fault{Status: 503}, func(err error) bool { return errors.As(err, &se) && se.StatusCode == 503 }},
		{"status 500 wins over BadJSON", backendtest.Fault{Status: 500, BadJSON: true}, func(err error) bool { return errors.As(err, &se) && se.StatusCode == 500 }},
		{"bad JSON", backendtest.Fault{BadJSON: true}, func(err error) bool { return errors.Is(err, backend.ErrInvalidResponse) }},
		{"latency", backendtest.Fault{Latency: time.Millisecond}, func(err error) bool { return err == nil }},
		{"cleared", backendtest.Fault{}, func(err error) bool { return err == nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetFault(tt.fault)
			if _, err := c.Fetch(context.Background(), "dev-1"); !tt.check(err) {
				t.Fatalf("Fetch(%q) with fault %+v = %v", "dev-1", tt.fault, err)
			}
		})
	}
}

func TestLatency(t *testing.T) {
	const latency = 100 * time.Millisecond
	s := newServer(t)
	s.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	s.SetFault(backendtest.Fault{Latency: latency})
	start := time.Now()
	_, err := newClient(t, s.URL()).Fetch(context.Background(), "dev-1")
	if elapsed := time.Since(start); err != nil || elapsed < latency {
		t.Fatalf("Fetch(%q) with Latency %v = %v after %v, want nil after at least %v", "dev-1", latency, err, elapsed, latency)
	}
}

func TestSetFaultRejectsBadStatus(t *testing.T) {
	s := newServer(t)
	for _, status := range []int{-1, 1, 100, 199, 600} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("SetFault(Fault{Status: %d}) did not panic", status)
				}
			}()
			s.SetFault(backendtest.Fault{Status: status})
		}()
	}
}

func TestCalls(t *testing.T) {
	s := newServer(t)
	s.Put(session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked})
	c := newClient(t, s.URL())
	ctx := context.Background()
	_, _ = c.Fetch(ctx, "dev-1")
	_, _ = c.Fetch(ctx, "dev-1")
	_, _ = c.Fetch(ctx, "dev-2") // 404
	s.SetFault(backendtest.Fault{Status: 503})
	_, _ = c.Fetch(ctx, "dev-1")
	_, _ = c.Fetch(ctx, "{x}") // rejected by the client: never arrives
	if resp, err := http.Get(s.URL() + "/api/v1/other"); err == nil {
		resp.Body.Close()
	}
	if s.Calls() != 4 {
		t.Errorf("Calls() = %d, want 4 (other paths do not count)", s.Calls())
	}
	for id, want := range map[string]int64{"dev-1": 3, "dev-2": 1, "dev-3": 0} {
		if got := s.CallsFor(id); got != want {
			t.Errorf("CallsFor(%q) = %d, want %d", id, got, want)
		}
	}
}

// TestBeforeRespond forces the interleaving a cache must survive: the
// backend reads "active", the session is revoked, and only then does the
// stale "active" answer go out.
func TestBeforeRespond(t *testing.T) {
	s := newServer(t)
	rec, _ := s.NewSession("u-1")
	type call struct {
		id    string
		rec   session.Record
		found bool
	}
	var calls []call
	s.SetBeforeRespond(func(id string, got session.Record, found bool) {
		calls = append(calls, call{id, got, found})
		s.Revoke(id) // may call back into the server
	})
	c := newClient(t, s.URL())
	got, err := c.Fetch(context.Background(), rec.DeviceSessionID)
	if err != nil || got.Status != session.StatusActive {
		t.Fatalf("Fetch(%q) revoked by the hook = %+v, %v, want the active record read before the hook", rec.DeviceSessionID, got, err)
	}
	if now, _ := s.Get(rec.DeviceSessionID); now.Status != session.StatusRevoked {
		t.Errorf("Get(%q) after the hook revoked it = %+v, want revoked", rec.DeviceSessionID, now)
	}
	_, _ = c.Fetch(context.Background(), "dev-unknown")
	want := []call{{rec.DeviceSessionID, rec, true}, {"dev-unknown", session.Record{}, false}}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("hook calls = %+v, want %+v", calls, want)
	}

	s.SetBeforeRespond(nil)
	_, _ = c.Fetch(context.Background(), rec.DeviceSessionID)
	if len(calls) != 2 {
		t.Errorf("hook ran %d times after SetBeforeRespond(nil), want 2 (no more)", len(calls))
	}
}

func TestHandlerOnOwnListener(t *testing.T) {
	s := newServer(t)
	rec, _ := s.NewSession("u-1")
	own := httptest.NewServer(s.Handler())
	defer own.Close()
	got, err := newClient(t, own.URL).Fetch(context.Background(), rec.DeviceSessionID)
	if err != nil || !reflect.DeepEqual(got, rec) {
		t.Fatalf("Fetch(%q) via Handler on another listener = %+v, %v, want %+v, nil", rec.DeviceSessionID, got, err, rec)
	}
	if n := s.Calls(); n != 1 {
		t.Errorf("Calls() = %d after one request via Handler, want 1", n)
	}
}

func TestHangEndsWithRequest(t *testing.T) {
	s := newServer(t)
	s.SetFault(backendtest.Fault{Hang: true})
	c, err := backend.New(backend.Options{BaseURL: s.URL(), Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if _, err := c.Fetch(context.Background(), "dev-1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch(%q) against Hang = %v, want context.DeadlineExceeded", "dev-1", err)
	}
	// The hung handler must end with its request, not with Close: a
	// request that arrives after the fault is cleared is answered, and
	// goleak (TestMain) would report a handler still blocked.
	s.SetFault(backendtest.Fault{})
	if _, err := c.Fetch(context.Background(), "dev-1"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Fetch(%q) after clearing Hang = %v, want ErrNotFound", "dev-1", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s.URL())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				rec, _ := s.NewSession("u-1")
				_, _ = c.Fetch(context.Background(), rec.DeviceSessionID)
				s.Revoke(rec.DeviceSessionID)
				s.Get(rec.DeviceSessionID)
				s.Calls()
				s.CallsFor(rec.DeviceSessionID)
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			s.RevokeUser("u-1")
			s.SetFault(backendtest.Fault{})
			s.SetBeforeRespond(nil)
		}
	})
	wg.Wait()
	if ids := s.RevokeUser("u-1"); len(ids) != 80 {
		t.Errorf("RevokeUser(%q) = %d ids, want 80", "u-1", len(ids))
	}
}

func TestCloseIdempotent(t *testing.T) {
	s := backendtest.NewServer()
	s.Close()
	s.Close()
}
