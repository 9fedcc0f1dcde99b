package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// rawSubscriber subscribes a plain go-redis client to channel and returns
// once the subscription is confirmed.
func rawSubscriber(t *testing.T, rdb *redis.Client, channel string) *redis.PubSub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps := rdb.Subscribe(ctx, channel)
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	return ps
}

// nextMessage returns the next payload a subscriber receives.
func nextMessage(t *testing.T, ps *redis.PubSub) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatalf("no message: %v", err)
	}
	return m.Payload
}

// TestRevokeWritesAndPublishes checks that revoke writes revoked in Redis and
// publishes exactly the message it prints, which a raw subscriber receives.
func TestRevokeWritesAndPublishes(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	fillActive(t, e.cache, "dev-a", "u-7")
	ps := rawSubscriber(t, e.rdb, session.DefaultChannel)

	code, stdout, stderr := runCmd(t, "revoke", "-redis", e.url, "dev-a")
	if code != exitOK {
		t.Fatalf("revoke dev-a: exit %d, stderr %q", code, stderr)
	}
	got := nextMessage(t, ps)
	m, err := session.ParseInvalidation([]byte(got))
	if err != nil || m.SessionID != "dev-a" || m.Seq != 1 || m.AtMS == 0 {
		t.Errorf("subscriber received %q (%+v, %v), want the session message with seq 1", got, m, err)
	}
	for _, want := range []string{
		"revoked session dev-a\n",
		"published on session_invalidation: " + got + "\n",
		"receivers: every message reached at least one subscriber; 1 listening (PUBSUB NUMSUB)\n",
		"gateways: 1 subscribed\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("revoke stdout does not contain %q:\n%s", want, stdout)
		}
	}
	rec, err := e.cache.Get(ctx, "dev-a")
	if err != nil || rec.Status != session.StatusRevoked || rec.RevokedAtMS == nil || *rec.RevokedAtMS != m.AtMS {
		t.Errorf("Get(%q) = %+v, %v; want revoked at %d", "dev-a", rec, err, m.AtMS)
	}

	t.Run("again publishes nothing, JSON", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "revoke", "-json", "-redis", e.url, "dev-a")
		if code != exitOK {
			t.Fatalf("revoke again: exit %d, stderr %q", code, stderr)
		}
		var rep revokeReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("revoke -json output does not parse: %v\n%s", err, stdout)
		}
		if string(rep.Message) != got || rep.Published != 0 || !rep.AnnouncedBefore || rep.Unheard || rep.Exit != exitOK {
			t.Errorf("revoke -json = %+v, want the first message %s, announced before, nothing published, exit 0", rep, got)
		}
		code, stdout, _ = runCmd(t, "revoke", "-redis", e.url, "dev-a")
		if want := "session dev-a was revoked and announced already; nothing published again"; code != exitOK || !strings.Contains(stdout, want) {
			t.Errorf("revoke again: exit %d, stdout %q; want it to contain %q", code, stdout, want)
		}
		rec, _ := e.cache.Get(ctx, "dev-a")
		if *rec.RevokedAtMS != m.AtMS {
			t.Errorf("second revoke: revoked_at_ms %d; want the first revocation time %d kept", *rec.RevokedAtMS, m.AtMS)
		}
	})

	t.Run("unknown session writes a tombstone", func(t *testing.T) {
		code, stdout, _ := runCmd(t, "revoke", "-redis", e.url, "ghost-1")
		// The next message is this one: the repeated revocations above
		// published nothing.
		if m, err := session.ParseInvalidation([]byte(nextMessage(t, ps))); err != nil || m.SessionID != "ghost-1" {
			t.Errorf("next message = %+v, %v; want ghost-1's", m, err)
		}
		rec, err := e.cache.Get(ctx, "ghost-1")
		if code != exitOK || err != nil || rec.Status != session.StatusRevoked || rec.UserID != "" {
			t.Errorf("revoke ghost-1: exit %d, Get = %+v, %v; want a revoked tombstone\n%s", code, rec, err, stdout)
		}
	})

	t.Run("no subscriber", func(t *testing.T) {
		ps.Close()
		code, stdout, stderr := runCmd(t, "revoke", "-redis", e.url, "ghost-2")
		if code != exitUnheard || !strings.Contains(stdout, "1 of 1 messages reached NO subscriber") ||
			!strings.Contains(stdout, "gateways: NONE heard it (nobody is subscribed to session_invalidation)\n") ||
			!strings.HasPrefix(stderr, "sessionctl revoke: WARNING: no gateway subscriber heard this revocation (nobody is subscribed to session_invalidation)") {
			t.Errorf("revoke with nobody listening: exit %d, stdout %q, stderr %q; want %d and the no-receiver warnings", code, stdout, stderr, exitUnheard)
		}
	})
}

// TestRevokeUserWritesAndPublishes checks that revoke-user sets the user's
// marker, revokes every indexed session and publishes one message, the
// user message, however many sessions the user has.
func TestRevokeUserWritesAndPublishes(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	ids := []string{"dev-a", "dev-b", "dev-c"}
	for _, id := range ids {
		fillActive(t, e.cache, id, "u-7")
	}
	fillActive(t, e.cache, "dev-other", "u-8")
	ps := rawSubscriber(t, e.rdb, session.DefaultChannel)

	code, stdout, stderr := runCmd(t, "revoke-user", "-json", "-redis", e.url, "u-7")
	if code != exitOK {
		t.Fatalf("revoke-user u-7: exit %d, stderr %q", code, stderr)
	}
	var rep revokeReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("revoke-user -json output does not parse: %v\n%s", err, stdout)
	}
	first := nextMessage(t, ps)
	if string(rep.Message) != first {
		t.Errorf("revoke-user printed %s, subscriber received %s first", rep.Message, first)
	}
	if m, err := session.ParseInvalidation([]byte(first)); err != nil || m.UserID != "u-7" {
		t.Errorf("first message %q (%v), want the user message for u-7", first, err)
	}
	// Nothing followed the user message: a message published now is the
	// next one the subscriber receives.
	const after = `{"session":"dev-after"}`
	if err := e.rdb.Publish(ctx, session.DefaultChannel, after).Err(); err != nil {
		t.Fatal(err)
	}
	if next := nextMessage(t, ps); next != after {
		t.Errorf("after the user message the subscriber received %s, want no other message of revoke-user (next: %s)", next, after)
	}
	slices.Sort(rep.Sessions)
	if !slices.Equal(rep.Sessions, ids) || rep.Published != 1 {
		t.Errorf("revoke-user: reported sessions %v (%d messages); want %v and 1", rep.Sessions, rep.Published, ids)
	}
	for _, id := range ids {
		if rec, err := e.cache.Get(ctx, id); err != nil || rec.Status != session.StatusRevoked {
			t.Errorf("Get(%q) = %+v, %v; want revoked", id, rec, err)
		}
	}
	if rec, err := e.cache.Get(ctx, "dev-other"); err != nil || rec.Status != session.StatusActive {
		t.Errorf("Get(%q) = %+v, %v; want another user's session still active", "dev-other", rec, err)
	}
	if _, err := e.rdb.Get(ctx, "user:u-7:revoked_at_ms").Result(); errors.Is(err, redis.Nil) {
		t.Errorf("user:u-7:revoked_at_ms is absent, want the marker set")
	}

	t.Run("text", func(t *testing.T) {
		code, stdout, _ := runCmd(t, "revoke-user", "-redis", e.url, "u-7")
		for _, want := range []string{"revoked user u-7: marker set, then 3 session(s) revoked, then the user message published\n", "  dev-b\n", `published on session_invalidation: {"user":"u-7","seq":`} {
			if !strings.Contains(stdout, want) {
				t.Errorf("revoke-user (exit %d) stdout does not contain %q:\n%s", code, want, stdout)
			}
		}
		if strings.Contains(stdout, "messages in all") {
			t.Errorf("revoke-user (exit %d) stdout counts more than one message:\n%s", code, stdout)
		}
	})
}

// newBackend starts an in-memory backend, closed when the test ends.
func newBackend(t *testing.T) *backendtest.Server {
	t.Helper()
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	return be
}

// fillFrom writes a backend's record to Redis through the library, as a
// replica's lookup would.
func fillFrom(t *testing.T, c *rediscache.Cache, rec session.Record) {
	t.Helper()
	if _, err := c.Fill(context.Background(), rec); err != nil {
		t.Fatalf("Fill(%q): %v", rec.DeviceSessionID, err)
	}
}

// TestRevokeAsksBackend checks that revoke, after writing the revocation in
// Redis, asks the backend about the session: still active there is one
// warning line and exit status 4 (revoked in Redis only); revoked or
// unknown there is success; no answer is a failure; no backend at all is
// one note line and success.
func TestRevokeAsksBackend(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	be := newBackend(t)
	down := newBackend(t)
	down.SetFault(backendtest.Fault{Status: 503})
	t.Setenv(backendEnv, "")
	gatewaySubscriber(t, e.rdb, session.DefaultChannel)

	tests := []struct {
		name       string
		state      string // at the backend: active, revoked or absent
		args       []string
		env        string // SESSIONCTL_BACKEND
		wantCode   int
		wantStdout string
		wantStderr string // the one line on stderr; "" for none
	}{
		{"active", "active", []string{"-backend", be.URL()}, "", exitRedisOnly,
			"backend: ACTIVE: revoked in Redis only\n",
			"sessionctl revoke: WARNING: the backend still answers active for <id>: this revocation lives only in Redis and is lost with the record (flush, eviction, restart without persistence, DEL) until the backend revokes the session too\n"},
		{"active from the environment", "active", nil, be.URL(), exitRedisOnly,
			"backend: ACTIVE: revoked in Redis only\n", "WARNING: the backend still answers active for <id>"},
		{"revoked", "revoked", []string{"-backend", be.URL()}, "", exitOK,
			"backend: revoked: the revocation survives any loss of Redis data\n", ""},
		{"unknown", "absent", []string{"-backend", be.URL()}, "", exitOK,
			"backend: not found: a lookup that finds no Redis record is refused\n", ""},
		{"backend down", "active", []string{"-backend", down.URL()}, "", exitFailure,
			"backend: no answer: backend: unexpected HTTP status 503\n",
			"sessionctl revoke: the revocation is written in Redis, but the backend could not be asked whether 1 of the 1 revoked session(s) are still active there: backend: unexpected HTTP status 503\n"},
		{"flag overrides the environment", "revoked", []string{"-backend", be.URL()}, down.URL(), exitOK,
			"backend: revoked:", ""},
		{"no backend", "active", nil, "", exitOK, "published on session_invalidation: ",
			"sessionctl revoke: note: no backend configured (-backend or $SESSIONCTL_BACKEND), so the backend was not asked: unless it revoked the session too, this revocation lives only in Redis and is lost with the record (flush, eviction, restart without persistence, DEL)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(backendEnv, tt.env)
			var rec session.Record
			if tt.state == "absent" {
				rec = session.Record{DeviceSessionID: "absent-1", UserID: "u-absent", ClientPublicKey: testKey(1), Status: session.StatusActive}
			} else {
				rec, _ = be.NewSession("u-" + strings.ReplaceAll(tt.name, " ", "-"))
			}
			fillFrom(t, e.cache, rec)
			id := rec.DeviceSessionID
			if tt.state == "revoked" {
				be.Revoke(id)
			}
			args := append(append([]string{"revoke", "-redis", e.url}, tt.args...), id)
			code, stdout, stderr := runCmd(t, args...)
			if code != tt.wantCode {
				t.Errorf("revoke %v: exit %d, want %d; stderr %q", tt.args, code, tt.wantCode, stderr)
			}
			if !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("revoke %v: stdout does not contain %q:\n%s", tt.args, tt.wantStdout, stdout)
			}
			wantErr := strings.ReplaceAll(tt.wantStderr, "<id>", id)
			switch {
			case wantErr == "" && stderr != "":
				t.Errorf("revoke %v: stderr %q, want nothing", tt.args, stderr)
			case wantErr != "" && (!strings.Contains(stderr, wantErr) || strings.Count(stderr, "\n") != 1):
				t.Errorf("revoke %v: stderr %q, want one line containing %q", tt.args, stderr, wantErr)
			}
			if got, err := e.cache.Get(ctx, id); err != nil || got.Status != session.StatusRevoked {
				t.Errorf("Get(%q) = %+v, %v; want revoked in Redis whatever the backend says", id, got, err)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		rec, _ := be.NewSession("u-json")
		fillFrom(t, e.cache, rec)
		code, stdout, _ := runCmd(t, "revoke", "-json", "-redis", e.url, "-backend", be.URL(), rec.DeviceSessionID)
		var rep revokeReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("revoke -json output does not parse: %v\n%s", err, stdout)
		}
		want := backendReport{Checked: 1, Active: []string{rec.DeviceSessionID}}
		if code != exitRedisOnly || rep.Backend == nil || !slices.Equal(rep.Backend.Active, want.Active) || rep.Backend.Checked != 1 {
			t.Errorf("revoke -json: exit %d, backend %+v; want %d and %+v", code, rep.Backend, exitRedisOnly, want)
		}
	})

	t.Run("bad backend URL connects nowhere", func(t *testing.T) {
		l := listenCounting(t)
		calls := be.Calls()
		for _, u := range []string{"ftp://host", "http://user:pw@host", "http://"} {
			code, stdout, stderr := runCmd(t, "revoke", "-redis", l.url(), "-backend", u, "dev-1")
			if code != exitUsage || !strings.HasPrefix(stderr, "sessionctl revoke: -backend: backend: ") || strings.Count(stderr, "\n") != 1 || stdout != "" {
				t.Errorf("revoke -backend %q: exit %d, stdout %q, stderr %q; want %d and one -backend line", u, code, stdout, stderr, exitUsage)
			}
			if strings.Contains(stderr, "pw") {
				t.Errorf("revoke -backend %q: stderr shows the URL's password: %q", u, stderr)
			}
		}
		if n := l.conns.Load(); n != 0 || be.Calls() != calls {
			t.Errorf("a bad -backend opened %d Redis connections and made %d backend calls, want none", n, be.Calls()-calls)
		}
	})
}

// TestRevokeUserAsksBackend checks that revoke-user asks the backend about
// every session it revoked and reports how many are still active there.
func TestRevokeUserAsksBackend(t *testing.T) {
	e := newTestEnv(t, rediscache.Options{})
	be := newBackend(t)
	t.Setenv(backendEnv, "")
	var ids []string
	for range 3 {
		rec, _ := be.NewSession("u-7")
		fillFrom(t, e.cache, rec)
		ids = append(ids, rec.DeviceSessionID)
	}
	slices.Sort(ids)
	be.Revoke(ids[0])
	gatewaySubscriber(t, e.rdb, session.DefaultChannel)

	code, stdout, stderr := runCmd(t, "revoke-user", "-redis", e.url, "-backend", be.URL(), "u-7")
	if code != exitRedisOnly {
		t.Errorf("revoke-user with 2 sessions active at the backend: exit %d, want %d; stderr %q", code, exitRedisOnly, stderr)
	}
	wantOut := "backend: 2 of 3 revoked session(s) still active there (" + ids[1] + " " + ids[2] + "); 1 revoked, 0 not found, 0 not answered\n"
	if !strings.Contains(stdout, wantOut) {
		t.Errorf("revoke-user stdout does not contain %q:\n%s", wantOut, stdout)
	}
	wantErr := "sessionctl revoke-user: WARNING: the backend still answers active for 2 of the 3 revoked session(s) (" + ids[1] + " " + ids[2] + "): these revocations live only in Redis"
	if !strings.HasPrefix(stderr, wantErr) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("revoke-user stderr %q, want one line starting %q", stderr, wantErr)
	}
	for _, id := range ids {
		if n := be.CallsFor(id); n != 1 {
			t.Errorf("the backend was asked about %s %d times, want once", id, n)
		}
	}

	be.RevokeUser("u-7")
	code, stdout, stderr = runCmd(t, "revoke-user", "-redis", e.url, "-backend", be.URL(), "u-7")
	if code != exitOK || stderr != "" || !strings.Contains(stdout, "backend: 0 of 3 revoked session(s) still active there; 3 revoked, 0 not found, 0 not answered\n") {
		t.Errorf("revoke-user after the backend revoked the user: exit %d, stderr %q, stdout:\n%s\nwant 0, nothing on stderr, 0 of 3 active", code, stderr, stdout)
	}

	code, _, stderr = runCmd(t, "revoke-user", "-redis", e.url, "u-7")
	if code != exitOK || !strings.Contains(stderr, "note: no backend configured") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("revoke-user without a backend: exit %d, stderr %q; want 0 and one note line", code, stderr)
	}
}

// TestRevokeHelpDocumentsBackend checks that revoke's and revoke-user's -h
// document -backend, its environment variable and exit status 4.
func TestRevokeHelpDocumentsBackend(t *testing.T) {
	for _, name := range []string{"revoke", "revoke-user"} {
		code, _, stderr := runCmd(t, name, "-h")
		for _, want := range []string{"-backend", backendEnv, "4  revoked in Redis only: the backend still answers active"} {
			if code != exitOK || !strings.Contains(stderr, want) {
				t.Errorf("%s -h (exit %d) does not mention %q:\n%s", name, code, want, stderr)
			}
		}
	}
	_, _, stderr := runCmd(t)
	for _, want := range []string{"4  revoke, revoke-user: revoked in Redis only: the backend still answers", "5  revoke, revoke-user: written and published, but no gateway subscriber"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("sessionctl's usage does not contain %q:\n%s", want, stderr)
		}
	}
}

// runningWatch runs `sessionctl watch` until the test ends.
func runningWatch(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	_, wait := startWatch(t, ctx, args...)
	t.Cleanup(func() {
		cancel()
		wait()
	})
}

// TestRevokeCountsGatewaysNotWatchers checks exit status 5 when no gateway
// subscriber heard a revocation, nobody or only sessionctl watch
// listening, and 0 when a gateway did; with CLIENT LIST refused, watchers
// cannot be told apart and count as gateways.
func TestRevokeCountsGatewaysNotWatchers(t *testing.T) {
	t.Setenv(backendEnv, "")
	const noList = "user nolist on >nolist-pw ~* &* +@all -client|list\n"
	tests := []struct {
		name      string
		acl       string
		user      string // in the URL of sessionctl's commands
		gateway   bool
		watch     bool
		code      int
		stdout    []string
		gateways  int64
		watchers  int64
		stderrHas string
	}{
		{"nobody", "", "", false, false, exitUnheard,
			[]string{"0 listening (PUBSUB NUMSUB)\n", "gateways: NONE heard it (nobody is subscribed to session_invalidation)\n"}, 0, 0,
			"sessionctl revoke: WARNING: no gateway subscriber heard this revocation (nobody is subscribed to session_invalidation)"},
		{"only a watch", "", "", false, true, exitUnheard,
			[]string{"receivers: every message reached at least one subscriber; 1 listening (PUBSUB NUMSUB), 1 of them sessionctl watch\n",
				"gateways: NONE heard it (the 1 subscriber(s) are all sessionctl watch)\n"}, 0, 1,
			"WARNING: no gateway subscriber heard this revocation (the 1 subscriber(s) are all sessionctl watch)"},
		{"a gateway", "", "", true, false, exitOK, []string{"gateways: 1 subscribed\n"}, 1, 0, ""},
		{"a gateway and a watch", "", "", true, true, exitOK,
			[]string{"2 listening (PUBSUB NUMSUB), 1 of them sessionctl watch\n", "gateways: 1 subscribed\n"}, 1, 1, ""},
		{"CLIENT LIST refused", noList, "nolist:nolist-pw@", false, true, exitOK,
			[]string{"1 listening (PUBSUB NUMSUB; CLIENT LIST refused, so watchers count as gateways)\n", "gateways: 1 subscribed\n"}, 1, -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{ACLFile: tt.acl})
			url := "redis://" + tt.user + srv.Addr
			if tt.gateway {
				gatewaySubscriber(t, srv.Client(t), session.DefaultChannel)
			}
			if tt.watch {
				runningWatch(t, "-redis", url)
			}
			code, stdout, stderr := runCmd(t, "revoke", "-redis", url, "dev-1")
			if code != tt.code {
				t.Errorf("revoke: exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("revoke stdout lacks %q:\n%s", want, stdout)
				}
			}
			if tt.stderrHas != "" && !strings.Contains(stderr, tt.stderrHas) || tt.stderrHas == "" && strings.Contains(stderr, "WARNING") {
				t.Errorf("revoke stderr %q, want it to contain %q", stderr, tt.stderrHas)
			}
			code, stdout, _ = runCmd(t, "revoke", "-json", "-redis", url, "dev-2")
			var rep revokeReport
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("revoke -json: %v\n%s", err, stdout)
			}
			if rep.Gateways != tt.gateways || rep.Watchers != tt.watchers || rep.Unheard != (tt.code == exitUnheard) || rep.Exit != tt.code || code != tt.code {
				t.Errorf("revoke -json: exit %d, gateway_subscribers %d, watchers %d, unheard %v, exit %d; want %d, %d, %v, %d",
					code, rep.Gateways, rep.Watchers, rep.Unheard, rep.Exit, tt.gateways, tt.watchers, tt.code == exitUnheard, tt.code)
			}
		})
	}
}

// TestRevokeUserOfAnUnknownUser checks that revoke-user of a user with no
// indexed session (a misspelled id) says so, naming the id in full, and
// exits 1.
func TestRevokeUserOfAnUnknownUser(t *testing.T) {
	t.Setenv(backendEnv, "")
	e := newTestEnv(t, rediscache.Options{})
	gatewaySubscriber(t, e.rdb, session.DefaultChannel)
	fillActive(t, e.cache, "dev-a", "user-alice")

	code, stdout, stderr := runCmd(t, "revoke-user", "-redis", e.url, "user-alcie")
	want := "sessionctl revoke-user: user user-alcie has no session in its index (user:user-alcie:sessions): nothing revoked but the user message and the marker; a misspelled user id, another -prefix, or sessions that expired?\n"
	if code != exitFailure || stderr != want {
		t.Errorf("revoke-user user-alcie: exit %d, stderr %q; want %d and %q", code, stderr, exitFailure, want)
	}
	if !strings.Contains(stdout, "revoked user user-alcie: marker set, then 0 session(s) revoked, then the user message published\n") {
		t.Errorf("revoke-user user-alcie stdout:\n%s", stdout)
	}
	code, stdout, _ = runCmd(t, "revoke-user", "-json", "-redis", e.url, "user-alcie")
	var rep revokeReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != exitFailure || rep.Exit != exitFailure || len(rep.Sessions) != 0 {
		t.Errorf("revoke-user -json user-alcie: exit %d, %+v, %v; want %d in both and no session", code, rep, err, exitFailure)
	}
}

// TestRevokeUserProgressAndLimit checks revoke-user's progress on stderr
// (sessions marked of the index, elapsed, ETA) with -progress, run as the
// operator user of the shipped ACL file, and that the text lists -limit
// sessions. The index is larger than the library reads inline, so it is
// scanned, and its sessions are marked in pipelines of at most 256.
func TestRevokeUserProgressAndLimit(t *testing.T) {
	ctx := context.Background()
	t.Setenv(backendEnv, "")
	b, err := os.ReadFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := func(pw string) string { s := sha256.Sum256([]byte(pw)); return hex.EncodeToString(s[:]) }
	acl := strings.NewReplacer("GATEWAY_PASSWORD_SHA256", sum(gatewayPassword), "OPERATOR_PASSWORD_SHA256", sum(operatorPassword)).Replace(string(b))
	srv := redistest.Start(t, redistest.Options{ACLFile: acl + "user test-admin on >admin-pw ~* &* +@all\n"})
	admin := srv.ClientWith(t, &redis.Options{Username: "test-admin", Password: "admin-pw"})
	c, err := rediscache.New(admin, rediscache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gatewaySubscriber(t, admin, session.DefaultChannel)
	const n = 2500
	pipe := admin.Pipeline()
	for i := range n {
		id := fmt.Sprintf("dev-%04d", i)
		pipe.HSet(ctx, c.Layout().SessionKey(id), "status", "active", "user_id", "u-big", "client_public_key", testKey(1))
		pipe.PExpire(ctx, c.Layout().SessionKey(id), time.Hour)
		pipe.SAdd(ctx, c.Layout().UserSessionsKey("u-big", c.Layout().Stripe(id)), id)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	operator := "redis://operator:" + operatorPassword + "@" + srv.Addr

	code, stdout, stderr := runCmd(t, "revoke-user", "-progress", "-limit", "3", "-redis", operator, "u-big")
	if code != exitOK {
		t.Fatalf("revoke-user -progress: exit %d, stderr %q", code, stderr)
	}
	line := regexp.MustCompile(`(?m)^revoked (\d+) of 2500 sessions \((\d+)%\), \d+\.\ds elapsed(, ETA \d+\.\ds)?$`)
	progress := line.FindAllStringSubmatch(stderr, -1)
	if len(progress) != 3 {
		t.Fatalf("revoke-user -progress printed %d progress lines, want 3 (1000s crossed twice, then the end); stderr:\n%s", len(progress), stderr)
	}
	// A line as the count crosses 1000 and 2000, at most one pipeline
	// (256 sessions) later, and the last one at 2500.
	for i, want := range []struct{ from, below int }{{1000, 1000 + 256}, {2000, 2000 + 256}, {2500, 2501}} {
		got := progress[i]
		done, _ := strconv.Atoi(got[1])
		pct, _ := strconv.Atoi(got[2])
		if done < want.from || done >= want.below || pct != done*100/n || (got[3] == "") != (i == 2) {
			t.Errorf("progress line %d = %q, want %d to %d sessions, their percentage of %d, and an ETA unless it is the last",
				i, got[0], want.from, want.below-1, n)
		}
	}
	for _, want := range []string{"then 2500 session(s) revoked, then the user message published\n  dev-0000\n  dev-0001\n  dev-0002\n  … and 2497 more (-limit 0 lists them all)\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("revoke-user -limit 3 stdout lacks %q:\n%s", want, stdout)
		}
	}
	if _, _, stderr := runCmd(t, "revoke-user", "-redis", operator, "u-big"); strings.Contains(stderr, "revoked 2500 of") {
		t.Errorf("revoke-user without -progress wrote progress to a non-terminal stderr: %q", stderr)
	}
}

// TestRevokeErrorNamesTheTypedID checks that a failed revocation names the
// id the operator typed in full (the library's message shortens it), in
// text and in -json.
func TestRevokeErrorNamesTheTypedID(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{ACLFile: "user noeval on >noeval-pw ~* &* +@all -eval -evalsha\n"})
	url := "redis://noeval:noeval-pw@" + srv.Addr
	const id = "dev-abcdef123456"
	code, stdout, stderr := runCmd(t, "revoke", "-redis", url, id)
	if code != exitFailure || !strings.Contains(stderr, "rediscache: revoke session "+id+": NOPERM") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("revoke as a user without EVAL: exit %d, stderr %q; want %d and the full id in one line", code, stderr, exitFailure)
	}
	if strings.Contains(stdout, "revoked session") {
		t.Errorf("revoke as a user without EVAL printed %q", stdout)
	}
	code, stdout, stderr = runCmd(t, "revoke", "-json", "-redis", url, id)
	var rep revokeReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != exitFailure || rep.Exit != exitFailure || !strings.Contains(rep.Error, "revoke session "+id+": NOPERM") {
		t.Errorf("revoke -json as a user without EVAL: exit %d, %+v, %v; want %d and the full id in the error", code, rep, err, exitFailure)
	}
	if !strings.Contains(stderr, id) {
		t.Errorf("revoke -json: stderr %q, want the error line with the full id", stderr)
	}
}

// TestRevokeCounterCountsMarkedSessions checks what revoke-user's progress
// hook counts: the keys of a script that succeeded on session hashes only
// (mark_revoked, EVALSHA or EVAL), and nothing for the user's other
// scripts, a failed script or another command.
func TestRevokeCounterCountsMarkedSessions(t *testing.T) {
	ctx := context.Background()
	l, err := rediscache.NewLayout("", session.DefaultChannel, 16)
	if err != nil {
		t.Fatal(err)
	}
	h := revokeCounter{layout: l}
	const sha = "0000000000000000000000000000000000000000"
	failed := redis.NewCmd(ctx, "evalsha", sha, 2, l.SessionKey("dev-a"), l.SessionKey("dev-b"), 1000)
	failed.SetErr(errors.New("NOSCRIPT No matching script"))
	tests := []struct {
		name string
		cmd  redis.Cmder
		want int64
	}{
		{"mark_revoked by EVALSHA", redis.NewCmd(ctx, "evalsha", sha, 2, l.SessionKey("dev-a"), l.SessionKey("dev-b"), 1000), 2},
		{"mark_revoked by EVAL", redis.NewCmd(ctx, "eval", "return 0", 1, l.SessionKey("dev-c"), 1000), 1},
		{"failed", failed, 0},
		{"revoke_user", redis.NewCmd(ctx, "evalsha", sha, 2, l.UserSessionsKey("u-7", 0), l.UserRevokedKey("u-7", 0), 20000, 1000), 0},
		{"announce_user", redis.NewCmd(ctx, "evalsha", sha, 2, l.SeqKey(3), l.LogKey(3), "u-7", 3), 0},
		{"a session and another key", redis.NewCmd(ctx, "evalsha", sha, 2, l.SessionKey("dev-a"), l.SeqKey(3), 1000), 0},
		{"another command", redis.NewCmd(ctx, "hgetall", l.SessionKey("dev-a")), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := h.marked(tt.cmd); got != tt.want {
				t.Errorf("marked(%v) = %d, want %d", tt.cmd.Args(), got, tt.want)
			}
		})
	}
}
