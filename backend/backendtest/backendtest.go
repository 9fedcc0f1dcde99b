// Package backendtest provides an in-memory session backend for tests, the
// demo and the reference gateway. It serves the endpoint that package
// backend calls,
//
//	GET /api/v1/internal/sessions/{device_session_id}
//
// with the JSON shape documented in package backend, from records held in
// memory: 200 with the record, or 404 with a small JSON error body for an
// unknown id. Faults (latency, an error status, a request that hangs,
// malformed JSON) and a hook that runs between reading a record and
// answering let tests force timeouts and fill-versus-revoke interleavings.
//
// A Server is safe for concurrent use by multiple goroutines. Close stops
// the listener and returns promptly even while requests hang: it unblocks
// them.
package backendtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"time"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/session"
)

// Fault changes how the server answers. The zero Fault means none. When
// several fields are set, Latency comes first, then Hang; otherwise Status
// takes precedence over BadJSON.
type Fault struct {
	// Latency delays every answer by this long (cut short when the
	// request's context ends or the server closes).
	Latency time.Duration
	// Status, when non-zero, replaces every answer with this HTTP status
	// (200 to 599) and a small JSON error body, for example 503.
	Status int
	// Hang blocks every request until its context ends or the server
	// closes; the server then drops the connection without an answer.
	Hang bool
	// BadJSON answers 200 with a body that is not valid JSON.
	BadJSON bool
}

// Server is an in-memory session backend listening on a loopback port.
type Server struct {
	srv     *httptest.Server
	handler http.Handler

	// closing is closed by Close to unblock hanging and delayed requests.
	closing   chan struct{}
	closeOnce sync.Once

	// mu guards the fields below.
	mu            sync.Mutex
	records       map[string]session.Record
	fault         Fault
	calls         int64
	callsFor      map[string]int64
	beforeRespond func(id string, rec session.Record, found bool)
	onWait        func() // test hook: a request starts a Latency or Hang wait
}

// NewServer starts a Server on a loopback port. The caller must Close it.
func NewServer() *Server {
	s := &Server{
		closing:  make(chan struct{}),
		records:  make(map[string]session.Record),
		callsFor: make(map[string]int64),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+backend.PathPrefix+"{id}", s.serveSession)
	s.handler = mux
	s.srv = httptest.NewServer(mux)
	return s
}

// URL returns the server's base URL, for backend.Options.BaseURL.
func (s *Server) URL() string { return s.srv.URL }

// Handler returns the server's HTTP handler, so that a command can serve
// the same records on a listener of its own. Requests it serves count in
// Calls, and Close unblocks them too.
func (s *Server) Handler() http.Handler { return s.handler }

// Close unblocks hanging and delayed requests, shuts the listener down and
// waits for the requests in flight to end. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.srv.Close()
}

// Put stores r under r.DeviceSessionID, replacing any record there. Put
// does not validate r, so a test can make the server send a record that
// clients must reject.
func (s *Server) Put(r session.Record) {
	r = clone(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[r.DeviceSessionID] = r
}

// NewSession stores and returns an active session of userID with a fresh
// Ed25519 key pair and a random id (22 characters of unpadded base64url).
// It panics if userID fails session.ValidateUserID or if the system's
// random source fails.
func (s *Server) NewSession(userID string) (session.Record, ed25519.PrivateKey) {
	if err := session.ValidateUserID(userID); err != nil {
		panic(fmt.Sprintf("backendtest: NewSession: %v", err))
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("backendtest: NewSession: %v", err))
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		panic(fmt.Sprintf("backendtest: NewSession: %v", err))
	}
	rec := session.Record{
		DeviceSessionID: base64.RawURLEncoding.EncodeToString(raw[:]),
		UserID:          userID,
		ClientPublicKey: base64.StdEncoding.EncodeToString(pub),
		Status:          session.StatusActive,
	}
	s.Put(rec)
	return rec, priv
}

// Revoke marks the session revoked with revoked_at_ms set to the current
// time, or keeps the revocation time of an already revoked session. It
// reports whether the session exists.
func (s *Server) Revoke(id string) bool {
	now := time.Now().UnixMilli()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.records[id]
	if !ok {
		return false
	}
	s.records[id] = rec.Revoked(now)
	return true
}

// RevokeUser revokes every session of userID as Revoke does and returns
// their ids, sorted; sessions that were already revoked are included.
// An empty userID matches nothing.
func (s *Server) RevokeUser(userID string) []string {
	if userID == "" {
		return nil
	}
	now := time.Now().UnixMilli()
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, rec := range s.records {
		if rec.UserID == userID {
			s.records[id] = rec.Revoked(now)
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Get returns a copy of the record stored under id.
func (s *Server) Get(id string) (session.Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.records[id]
	return clone(rec), ok
}

// SetFault applies f to every request that arrives from now on, until the
// next SetFault; SetFault(Fault{}) clears it. Requests already in flight
// keep the fault they arrived with. It panics if f.Status is neither 0 nor
// between 200 and 599.
func (s *Server) SetFault(f Fault) {
	if f.Status != 0 && (f.Status < 200 || f.Status > 599) {
		panic(fmt.Sprintf("backendtest: SetFault: Status %d is not between 200 and 599", f.Status))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Calls returns the number of requests that reached the session endpoint,
// whatever the answer (faults and 404s included).
func (s *Server) Calls() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// CallsFor returns the number of requests to the session endpoint for id.
func (s *Server) CallsFor(id string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callsFor[id]
}

// SetBeforeRespond installs a test hook that every request runs after it
// has read the record (rec and found as Get returned them) and before it
// writes the answer; nil removes it. The hook runs on the request's
// goroutine without the server's lock held, so it may call Revoke, Put and
// the other methods, or block to hold the answer back. It does not run for
// requests that hang or whose context ends during Latency.
func (s *Server) SetBeforeRespond(fn func(id string, rec session.Record, found bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeRespond = fn
}

func (s *Server) serveSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	s.calls++
	s.callsFor[id]++
	f := s.fault
	onWait := s.onWait
	s.mu.Unlock()

	if f.Latency > 0 {
		if onWait != nil {
			onWait()
		}
		if !s.wait(r.Context(), f.Latency) {
			return
		}
	}
	if f.Hang {
		if onWait != nil {
			onWait()
		}
		s.wait(r.Context(), -1)
		return
	}

	s.mu.Lock()
	stored, found := s.records[id]
	rec := clone(stored)
	hook := s.beforeRespond
	s.mu.Unlock()
	if hook != nil {
		hook(id, rec, found)
	}

	switch {
	case f.Status != 0:
		writeJSON(w, f.Status, []byte(`{"error":"injected fault"}`))
	case f.BadJSON:
		writeJSON(w, http.StatusOK, []byte(`{"device_session_id":`))
	case !found:
		writeJSON(w, http.StatusNotFound, []byte(`{"error":"session not found"}`))
	default:
		writeJSON(w, http.StatusOK, encode(rec))
	}
}

// wait blocks for d (forever if d is negative) or until ctx ends, and
// reports whether d elapsed. When the server closes first, it aborts the
// request: the connection is dropped without an answer.
func (s *Server) wait(ctx context.Context, d time.Duration) bool {
	var elapsed <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		elapsed = t.C
	}
	select {
	case <-elapsed:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		panic(http.ErrAbortHandler)
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// encode returns rec as backend.EncodeRecord does. A record that fails
// validation (stored by Put on purpose) is sent field by field as it is.
func encode(rec session.Record) []byte {
	if b, err := backend.EncodeRecord(rec); err == nil {
		return b
	}
	b, _ := json.Marshal(struct {
		DeviceSessionID string `json:"device_session_id"`
		UserID          string `json:"user_id,omitempty"`
		ClientPublicKey string `json:"client_public_key,omitempty"`
		Status          string `json:"status"`
		RevokedAtMS     *int64 `json:"revoked_at_ms,omitempty"`
	}{rec.DeviceSessionID, rec.UserID, rec.ClientPublicKey, string(rec.Status), rec.RevokedAtMS})
	return b
}

// clone returns r with its own copy of RevokedAtMS.
func clone(r session.Record) session.Record {
	if r.RevokedAtMS != nil {
		at := *r.RevokedAtMS
		r.RevokedAtMS = &at
	}
	return r
}
