package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/signing"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// commandLog records the commands Redis receives from one replica while it
// is on, from Redis's MONITOR feed: those of the connections named as the
// replica (all of its clients: the cache's, which tiered.Open owns, and
// gatewayd's own) and of connections gone by the end, scripts' commands
// included. Left out are the subscriber's heartbeat PINGs, which run on
// their own clock, and the handshake of a new connection.
type commandLog struct {
	t     *testing.T
	name  string        // the replica's connection name
	admin *redis.Client // marks the windows and lists the connections
	marks int

	mu    sync.Mutex // guards lines, more
	lines []string   // MONITOR lines read so far
	more  chan struct{}
	from  int // index in lines of the window's first line
}

// newCommandLog starts reading srv's MONITOR feed until the test ends.
func newCommandLog(t *testing.T, srv *redistest.Server, name string) *commandLog {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if ok, err := rd.ReadString('\n'); err != nil || ok != "+OK\r\n" {
		t.Fatalf("MONITOR = %q, %v", ok, err)
	}
	l := &commandLog{t: t, name: name, admin: srv.Client(t), more: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return // closed at cleanup, or Redis killed
			}
			l.mu.Lock()
			l.lines = append(l.lines, strings.TrimSuffix(strings.TrimPrefix(line, "+"), "\r\n"))
			close(l.more)
			l.more = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return l
}

// mark sends Redis an ECHO that no one else sends and returns the index of
// its line in the feed: Redis feeds commands in the order it runs them, so
// every command run before the ECHO is in the lines before it.
func (l *commandLog) mark() int {
	l.t.Helper()
	l.marks++
	m := fmt.Sprintf("gatewayd-test-mark-%d", l.marks)
	if err := l.admin.Echo(context.Background(), m).Err(); err != nil {
		l.t.Fatalf("ECHO: %v", err)
	}
	want := `"echo" "` + m + `"`
	deadline := time.After(5 * time.Second)
	for i := 0; ; {
		l.mu.Lock()
		lines, more := l.lines, l.more
		l.mu.Unlock()
		for ; i < len(lines); i++ {
			if strings.HasSuffix(lines[i], want) {
				return i
			}
		}
		select {
		case <-more:
		case <-deadline:
			l.t.Fatalf("MONITOR did not show %s within 5s", want)
		}
	}
}

// start starts recording; stop stops and returns what was recorded, each
// command as "name key".
func (l *commandLog) start() {
	l.t.Helper()
	l.from = l.mark() + 1
}

func (l *commandLog) stop() []string {
	l.t.Helper()
	end := l.mark()
	l.mu.Lock()
	window := slices.Clone(l.lines[l.from:end])
	l.mu.Unlock()
	list, err := l.admin.ClientList(context.Background()).Result()
	if err != nil {
		l.t.Fatalf("CLIENT LIST: %v", err)
	}
	names := map[string]string{} // addr -> name of the connections open now
	for _, c := range strings.Split(strings.TrimSpace(list), "\n") {
		var addr, name string
		for _, f := range strings.Fields(c) {
			if v, ok := strings.CutPrefix(f, "addr="); ok {
				addr = v
			} else if v, ok := strings.CutPrefix(f, "name="); ok {
				name = v
			}
		}
		names[addr] = name
	}
	var cmds []string
	for _, line := range window {
		addr, args, err := parseMonitorLine(line)
		if err != nil {
			l.t.Fatalf("MONITOR line %q: %v", line, err)
		}
		if name, open := names[addr]; open && name != l.name {
			continue // another client: the test's own, another replica
		}
		cmd := strings.ToLower(args[0])
		switch {
		case cmd == "ping" && len(args) > 1 && strings.HasPrefix(args[1], "rediscache-heartbeat-"):
			continue
		case cmd == "hello", cmd == "auth", cmd == "client" && len(args) > 1 &&
			slices.Contains([]string{"setname", "setinfo"}, strings.ToLower(args[1])):
			continue // a new connection's handshake
		}
		if len(args) > 1 {
			cmd += " " + args[1]
		}
		cmds = append(cmds, cmd)
	}
	return cmds
}

// parseMonitorLine splits a MONITOR line, such as
// `1700000000.123456 [0 127.0.0.1:5000] "hgetall" "session:abc"`, into the
// client's address ("lua" for a script's commands) and the arguments.
func parseMonitorLine(line string) (string, []string, error) {
	_, rest, ok := strings.Cut(line, " [")
	if !ok {
		return "", nil, errors.New("no client")
	}
	client, rest, ok := strings.Cut(rest, "] ")
	if !ok {
		return "", nil, errors.New("no end of client")
	}
	_, addr, _ := strings.Cut(client, " ")
	var args []string
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		if rest[0] != '"' {
			return "", nil, errors.New("argument not quoted")
		}
		end := 1
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(rest) {
			return "", nil, errors.New("argument not closed")
		}
		arg, err := strconv.Unquote(rest[:end+1])
		if err != nil {
			return "", nil, err
		}
		args = append(args, arg)
		rest = rest[end+1:]
	}
	if len(args) == 0 {
		return "", nil, errors.New("no command")
	}
	return addr, args, nil
}

// realFixture is a fixture on a real redis-server, whose Redis commands
// are recorded on demand.
type realFixture struct {
	*fixture
	redis *redistest.Server
	cmds  *commandLog
}

// startRealGateway starts a replica on srv and be, served by an httptest
// server, and waits until its invalidation channel is synced.
func startRealGateway(t *testing.T, srv *redistest.Server, be *backendtest.Server, name string, edit ...func(*config)) *realFixture {
	t.Helper()
	logs := &syncBuffer{}
	cfg := config{
		Redis:       redisconn.Config{URL: "redis://" + srv.Addr},
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
	cmds := newCommandLog(t, srv, name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.cache.WaitSynced(ctx); err != nil {
		t.Fatalf("WaitSynced = %v", err)
	}
	hs := httptest.NewServer(gw.Handler())
	t.Cleanup(hs.Close)
	return &realFixture{fixture: &fixture{backend: be, gw: gw, srv: hs, logs: logs}, redis: srv, cmds: cmds}
}

// debugGet sends GET /debug/sessions/<id> with token (none if empty).
func (f *fixture) debugGet(t *testing.T, token, id string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+debugSessionsPath+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return f.do(t, req)
}

// snapshot is the state the debug endpoint must leave alone.
type snapshot struct {
	l1Len   int
	l1      localcache.Stats
	tiered  tiered.Stats
	metrics string // the counters of the cache's L2 among them
	backend int64
}

func (f *realFixture) snapshot(t *testing.T) snapshot {
	t.Helper()
	st := f.gw.cache.Stats()
	// Heartbeats move with the clock alone.
	st.Channel.HeartbeatsSent, st.Channel.LastHeartbeatUnixMs = 0, 0
	return snapshot{
		l1Len:   st.L1Entries,
		l1:      st.L1,
		tiered:  st,
		metrics: f.cacheMetrics(t),
		backend: f.backend.Calls(),
	}
}

// cacheMetrics returns the replica's sessioncache_ series, the cache's and
// its L2's counters (rediscache.Stats) and the gateway's among them, one a
// line; left out are those that move with the clock alone (heartbeats,
// ages).
func (f *realFixture) cacheMetrics(t *testing.T) string {
	t.Helper()
	families, err := f.gw.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range families {
		name := mf.GetName()
		if !strings.HasPrefix(name, "sessioncache_") || strings.Contains(name, "heartbeat") || strings.HasSuffix(name, "_age_seconds") {
			continue
		}
		for _, m := range mf.GetMetric() {
			b.WriteString(name)
			for _, l := range m.GetLabel() {
				fmt.Fprintf(&b, " %s=%q", l.GetName(), l.GetValue())
			}
			fmt.Fprintf(&b, " %v %v %v %v\n", m.GetCounter().GetValue(), m.GetGauge().GetValue(),
				m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum())
		}
	}
	return b.String()
}

// inspectState calls the debug endpoint for id and checks that it changed
// no cache and sent Redis nothing but reads of the session's hash.
func (f *realFixture) inspectState(t *testing.T, id string) (sessionState, []string) {
	t.Helper()
	before := f.snapshot(t)
	beforePeek, beforeHeld, _ := f.gw.cache.Peek(id)
	f.cmds.start()
	got := f.debugGet(t, testToken, id)
	cmds := f.cmds.stop()
	if got.status != http.StatusOK {
		t.Fatalf("GET %s%s = %d %s, want 200", debugSessionsPath, id, got.status, got.raw)
	}
	var st sessionState
	if err := json.Unmarshal([]byte(got.raw), &st); err != nil {
		t.Fatalf("GET %s%s: %v in %s", debugSessionsPath, id, err, got.raw)
	}
	after := f.snapshot(t)
	// The backend's call count is checked by each case: asking it is
	// allowed, and counts there.
	before.backend, after.backend = 0, 0
	if after != before {
		t.Errorf("GET %s%s changed the caches:\nbefore %+v\nafter  %+v", debugSessionsPath, id, before, after)
	}
	afterPeek, afterHeld, _ := f.gw.cache.Peek(id)
	if afterHeld != beforeHeld || afterPeek.Status != beforePeek.Status {
		t.Errorf("L1 held %v %q before GET %s%s and %v %q after, want unchanged",
			beforeHeld, beforePeek.Status, debugSessionsPath, id, afterHeld, afterPeek.Status)
	}
	for _, c := range cmds {
		if c != "hgetall session:"+id {
			t.Errorf("GET %s%s sent Redis %q; want nothing but HGETALL of the session", debugSessionsPath, id, c)
		}
	}
	if strings.Contains(got.raw, id) {
		t.Errorf("GET %s%s: the body %s holds the full session id", debugSessionsPath, id, got.raw)
	}
	return st, cmds
}

// lookup sends one authenticated request of id to the replica, which
// looks it up through every tier and fills L1.
func (f *fixture) lookup(t *testing.T, id string, priv ed25519.PrivateKey) answer {
	t.Helper()
	return f.do(t, f.signed(t, id, priv, http.MethodGet, "/v1/me", nil, time.Now()))
}

// awaitL1 polls L1 until it holds id with status: the subscriber applies a
// hand edit of Redis on its own goroutine, with no hook reachable from
// here.
func awaitL1(t *testing.T, c *tiered.Cache, id string, status session.Status) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if rec, ok, _ := c.Peek(id); ok && rec.Status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("L1 does not hold %q %s 5s after the change", id, status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDebugSession asks the debug endpoint about sessions in every state a
// tier can hold, on a real redis-server, and checks each answer and that
// the endpoint changed nothing: L1's length, entries and counters, the
// cache's and L2's counters, and no Redis command but HGETALL.
func TestDebugSession(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	f := startRealGateway(t, srv, be, "gw-debug")
	other := startRealGateway(t, srv, be, "gw-other")
	admin := srv.Client(t)
	ctx := context.Background()

	newSession := func(user string) (string, ed25519.PrivateKey) {
		rec, priv := be.NewSession(user)
		return rec.DeviceSessionID, priv
	}
	// In L1, active.
	l1Active, l1ActivePriv := newSession("user-1")
	wantAnswer(t, "lookup", f.lookup(t, l1Active, l1ActivePriv), 200, "")
	// In L1, revoked by a push.
	l1Pushed, l1PushedPriv := newSession("user-1")
	wantAnswer(t, "lookup", f.lookup(t, l1Pushed, l1PushedPriv), 200, "")
	wantAnswer(t, "push", f.push(t, testToken, `{"session":"`+l1Pushed+`"}`), 202, "")
	l1Hand, l1HandPriv := newSession("user-2")
	wantAnswer(t, "lookup", f.lookup(t, l1Hand, l1HandPriv), 200, "")
	// In Redis only (another replica filled it), active, revoked, and
	// revoked with a typo.
	l2Active, l2ActivePriv := newSession("user-3")
	l2Revoked, l2RevokedPriv := newSession("user-3")
	l2Typo, l2TypoPriv := newSession("user-3")
	for _, s := range []struct {
		id   string
		priv ed25519.PrivateKey
	}{{l2Active, l2ActivePriv}, {l2Revoked, l2RevokedPriv}, {l2Typo, l2TypoPriv}} {
		wantAnswer(t, "lookup on the other replica", other.lookup(t, s.id, s.priv), 200, "")
	}
	if err := admin.HSet(ctx, "session:"+l2Revoked, "status", "revoked").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.HSet(ctx, "session:"+l2Typo, "status", "Revoked").Err(); err != nil {
		t.Fatal(err)
	}
	// Known to the backend only: active, revoked; and an unknown id.
	beActive, _ := newSession("user-4")
	beRevoked, _ := newSession("user-4")
	be.Revoke(beRevoked)
	// In L1, revoked by hand in Redis: tracking flips L1. This is the last
	// write to Redis: Redis reports changes of keys in order, so once L1
	// has flipped, the subscriber has handled every earlier one, and no
	// counter moves during the checks below.
	if err := admin.HSet(ctx, "session:"+l1Hand, "status", "revoked").Err(); err != nil {
		t.Fatal(err)
	}
	awaitL1(t, f.gw.cache, l1Hand, session.StatusRevoked)

	tests := []struct {
		name        string
		id          string
		decision    string
		tier        string
		l1, l2, bck string
		irregular   bool
		askBackend  bool
	}{
		{"l1 active", l1Active, decisionAccept, "l1", heldActive, "", "", false, false},
		{"l1 revoked by a push", l1Pushed, decisionRevoked, "l1", heldRevoked, "", "", false, false},
		{"l1 revoked by hand in redis", l1Hand, decisionRevoked, "l1", heldRevoked, "", "", false, false},
		{"redis active", l2Active, decisionAccept, "l2", heldAbsent, heldActive, "", false, false},
		{"redis revoked by hand", l2Revoked, decisionRevoked, "l2", heldAbsent, heldRevoked, "", false, false},
		{"redis status typo", l2Typo, decisionRevoked, "l2", heldAbsent, heldRevoked, "", true, false},
		{"backend active", beActive, decisionAccept, "backend", heldAbsent, heldNotFound, heldActive, false, true},
		{"backend revoked", beRevoked, decisionRevoked, "backend", heldAbsent, heldNotFound, heldRevoked, false, true},
		{"unknown", "nobody-1", decisionUnknown, "backend", heldAbsent, heldNotFound, heldNotFound, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := be.CallsFor(tt.id)
			st, cmds := f.inspectState(t, tt.id)
			if st.Decision != tt.decision || st.Tier != tt.tier || st.L1 != tt.l1 || st.L2 != tt.l2 || st.Backend != tt.bck {
				t.Errorf("state = %s from %s, l1 %q, l2 %q, backend %q; want %s from %s, l1 %q, l2 %q, backend %q",
					st.Decision, st.Tier, st.L1, st.L2, st.Backend, tt.decision, tt.tier, tt.l1, tt.l2, tt.bck)
			}
			if (st.L2Irregular != "") != tt.irregular {
				t.Errorf("l2_irregular = %q, want it set: %v", st.L2Irregular, tt.irregular)
			}
			if st.Replica != "gw-debug" || !st.Subscribed || !st.Tracking || len(st.Errors) != 0 || st.L1Distrusted {
				t.Errorf("state = %+v, want replica gw-debug, subscribed and tracking, no errors", st)
			}
			if wantCmds := min(len(tt.l2), 1); len(cmds) != wantCmds {
				t.Errorf("Redis commands = %q, want %d HGETALL", cmds, wantCmds)
			}
			want := int64(0)
			if tt.askBackend {
				want = 1
			}
			if n := be.CallsFor(tt.id) - calls; n != want {
				t.Errorf("backend calls for the session = %d, want %d", n, want)
			}
		})
	}

	// The lookup path agrees with each answer once it runs (and fills).
	wantAnswer(t, "lookup of the session revoked by hand in Redis", f.lookup(t, l2Revoked, l2RevokedPriv), 401, reasonRevoked)
	wantAnswer(t, "lookup of the session active in Redis", f.lookup(t, l2Active, l2ActivePriv), 200, "")
	// An id asked about while unknown is not cached as unknown: once the
	// backend knows it, the next lookup finds it.
	st, _ := f.inspectState(t, "late-session-1")
	if st.Decision != decisionUnknown {
		t.Fatalf("state of an unknown id = %+v, want %s", st, decisionUnknown)
	}
	late, latePriv := be.NewSession("user-5")
	late.DeviceSessionID = "late-session-1"
	be.Put(late)
	wantAnswer(t, "lookup of an id the backend learnt after the debug answer", f.lookup(t, late.DeviceSessionID, latePriv), 200, "")
}

// TestDebugSessionTiersDown checks the answers while Redis is down: an L1
// active entry is not trusted once the channel is lost (with a stale bound
// of 1 ns: at once), so the backend decides; with the backend failing too,
// the lookup would deny.
func TestDebugSessionTiersDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	f := startRealGateway(t, srv, be, "gw-down", func(c *config) { c.StaleBound = time.Nanosecond })
	rec, priv := be.NewSession("user-1")
	id := rec.DeviceSessionID
	// The record reaches Redis through another replica's fill, and this
	// replica has applied Redis's report of that write before its lookup,
	// an L2 hit that writes nothing: no report of a write is in flight
	// when Redis is killed (one would have L1 read the key again, and
	// drop the entry when that read fails).
	other, err := rediscache.New(srv.Client(t), rediscache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Fill(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); f.gw.cache.Stats().KeysChanged == 0; {
		if time.Now().After(deadline) {
			t.Fatal("Redis's report of the other replica's fill did not arrive within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantAnswer(t, "lookup", f.lookup(t, id, priv), 200, "")
	if _, held, _ := f.gw.cache.Peek(id); !held {
		t.Fatal("L1 does not hold the session after its lookup")
	}
	be.Revoke(id) // at the backend only: L1 and Redis still say active

	srv.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for f.gw.cache.Stats().Channel.Subscribed {
		if time.Now().After(deadline) {
			t.Fatal("the subscriber still reports subscribed 10s after Redis was killed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l1Len, l1Stats := f.gw.cache.Stats().L1Entries, f.gw.cache.Stats().L1

	get := func(t *testing.T) sessionState {
		t.Helper()
		got := f.debugGet(t, testToken, id)
		var st sessionState
		if err := json.Unmarshal([]byte(got.raw), &st); got.status != http.StatusOK || err != nil {
			t.Fatalf("GET %s%s = %d %s (%v), want 200 and a state", debugSessionsPath, id, got.status, got.raw, err)
		}
		return st
	}
	st := get(t)
	if st.Decision != decisionRevoked || st.Tier != "backend" || st.L1 != heldActive || !st.L1Distrusted ||
		st.L2 != heldError || st.Backend != heldRevoked || st.Subscribed || len(st.Errors) != 1 || !strings.HasPrefix(st.Errors[0], "redis: ") {
		t.Errorf("state with Redis down = %+v; want reject_revoked from the backend, L1 active and distrusted, a Redis error", st)
	}

	be.SetFault(backendtest.Fault{Status: http.StatusServiceUnavailable})
	st = get(t)
	if st.Decision != decisionError || st.Tier != "none" || st.Backend != heldError || len(st.Errors) != 2 {
		t.Errorf("state with Redis and the backend down = %+v; want deny_error from no tier, with both errors", st)
	}
	if n, s := f.gw.cache.Stats().L1Entries, f.gw.cache.Stats().L1; n != l1Len || s != l1Stats {
		t.Errorf("L1 after the debug requests: %d entries, %+v; want %d, %+v", n, s, l1Len, l1Stats)
	}
	if st.Decision == decisionError {
		// The lookup path agrees: it fails closed.
		wantAnswer(t, "lookup with both tiers down", f.lookup(t, id, priv), 503, resultUnavailable)
	}
}

// TestDebugSessionRefuses checks the endpoint's authentication and input
// checks: the push token as a bearer token, a valid id, GET only.
func TestDebugSessionRefuses(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	f := startRealGateway(t, srv, be, "gw-auth")
	rec, priv := be.NewSession("user-1")
	wantAnswer(t, "lookup", f.lookup(t, rec.DeviceSessionID, priv), 200, "")

	// The lookup's fill comes back as a key change, which the gateway may
	// verify with an HGETALL of rec's key while a subtest records: commands
	// naming rec are not the subtests', and the refused ids are others.
	const unseen = "dev-never-looked-up"
	tests := []struct {
		name, token, id string
		status          int
		errPrefix       string
	}{
		{"no token", "", unseen, 401, "bad push token"},
		{"wrong token", "nope", unseen, 401, "bad push token"},
		{"empty id", testToken, "", 400, "session: invalid identifier: device session id is empty"},
		{"disallowed byte", testToken, "a*b", 400, "session: invalid identifier: device session id has a disallowed byte"},
		{"escaped space", testToken, "a%20b", 400, "session: invalid identifier"},
		{"two segments", testToken, "abcd/efgh", 400, "session: invalid identifier"},
		{"too long", testToken, strings.Repeat("a", session.MaxIDLength+1), 400, "session: invalid identifier: device session id is 129 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := be.Calls()
			f.cmds.start()
			got := f.debugGet(t, tt.token, tt.id)
			cmds := slices.DeleteFunc(f.cmds.stop(), func(c string) bool { return strings.Contains(c, rec.DeviceSessionID) })
			msg, _ := got.body["error"].(string)
			if got.status != tt.status || !strings.HasPrefix(msg, tt.errPrefix) {
				t.Errorf("GET %s%s = %d %s, want %d with an error starting %q", debugSessionsPath, tt.id, got.status, got.raw, tt.status, tt.errPrefix)
			}
			if len(cmds) != 0 || be.Calls() != calls {
				t.Errorf("a refused request sent Redis %q and the backend %d requests; want nothing", cmds, be.Calls()-calls)
			}
			if strings.Contains(got.raw, "decision") {
				t.Errorf("a refused request was answered %s", got.raw)
			}
		})
	}
	t.Run("POST", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+debugSessionsPath+rec.DeviceSessionID, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		got := f.do(t, req)
		if got.status != http.StatusMethodNotAllowed {
			t.Errorf("POST %s<id> = %d %s, want 405", debugSessionsPath, got.status, got.raw)
		}
	})
	t.Run("no token configured", func(t *testing.T) {
		open := startRealGateway(t, srv, be, "gw-open", func(c *config) { c.PushToken = "" })
		got := open.debugGet(t, "", rec.DeviceSessionID)
		if got.status != http.StatusOK || got.body["decision"] != decisionAccept || got.body["tier"] != "l2" {
			t.Errorf("GET without a token on a replica without -push-token = %d %s, want 200 accept from l2", got.status, got.raw)
		}
	})
	if logs := f.logs.String(); strings.Contains(logs, rec.DeviceSessionID) || !strings.Contains(logs, "debug request refused") {
		t.Errorf("logs hold the full session id or lack the refusals:\n%s", logs)
	}
}
