package security

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/toxitest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// logBuffer collects JSON log lines from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the log lines written so far.
func (b *logBuffer) lines() []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestLogsCarryNoSecrets captures everything tiered, its subscriber and
// rediscache log at debug level, as JSON, while replicas on a
// password-protected Redis (the gateway ACL user) look up and revoke
// sessions and run into failures: a wrong password, a failing backend,
// malformed messages carrying ids and passwords, revocations retried
// through a blackhole, invalid ids. No line may carry a password or a full
// session or user id; the failures must have been logged (so the check has
// something to read).
func TestLogsCarryNoSecrets(t *testing.T) {
	srv, admin := startACLServer(t)
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	var logs logBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	wrongPassword := "wrong-" + gatewayPassword
	proxy := toxitest.Start(t, srv.Addr)
	fast := func(o *tiered.Options) {
		o.RevokeRetryFor = 500 * time.Millisecond
		o.HeartbeatInterval = 100 * time.Millisecond
	}
	a := startReplica(t, replicaConfig{name: "logs-a", client: userClient(t, "gateway", gatewayPassword, proxy.Addr(), "logs-a"),
		backendURL: be.URL(), logger: logger, edit: fast})
	b := startReplica(t, replicaConfig{name: "logs-b", client: userClient(t, "gateway", gatewayPassword, srv.Addr, "logs-b"),
		backendURL: be.URL(), logger: logger, edit: fast})
	wrongClient := userClient(t, "gateway", wrongPassword, srv.Addr, "logs-w")
	w := startReplica(t, replicaConfig{name: "logs-w", client: wrongClient, backendURL: be.URL(), logger: logger, edit: fast, noWait: true})
	wrongL2, err := rediscache.New(wrongClient, rediscache.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}

	// Long random user ids, so that no redacted prefix is the whole id.
	users := []string{randomHex(t, 12), randomHex(t, 12), randomHex(t, 12)}
	var ids []string
	for _, u := range users {
		for range 6 {
			rec, _ := be.NewSession(u)
			ids = append(ids, rec.DeviceSessionID)
		}
	}
	for _, r := range []*tiered.Cache{a, b, w} {
		for _, id := range ids {
			if _, err := r.Lookup(ctx, id); err != nil {
				t.Fatalf("Lookup(%q): %v", id, err)
			}
		}
	}
	// Revocations of every kind.
	if err := a.Revoke(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	b.MarkRevoked(ids[1])
	if err := b.RevokeUser(ctx, users[1]); err != nil {
		t.Fatal(err)
	}
	a.MarkAllRevokedForUser(users[2])
	if err := w.Revoke(ctx, ids[2]); err == nil {
		t.Fatal("Revoke with the wrong password succeeded")
	}
	w.MarkRevoked(ids[3])
	w.MarkAllRevokedForUser(users[0])
	wrongL2.MarkRevoked(ids[4])
	wrongL2.MarkAllRevokedForUser(users[0])

	// The backend fails.
	be.SetFault(backendtest.Fault{Status: 503})
	fresh, _ := be.NewSession(users[0])
	ids = append(ids, fresh.DeviceSessionID)
	for _, r := range []*tiered.Cache{a, b, w} {
		if _, err := r.Lookup(ctx, fresh.DeviceSessionID); err == nil {
			t.Fatal("Lookup with the backend failing succeeded")
		}
	}
	be.SetFault(backendtest.Fault{})

	// Malformed messages that carry ids and passwords.
	for _, payload := range []string{
		`{"session":"` + ids[5] + `","status":"active"`,
		`{"session":"` + ids[5] + `","user":"` + users[0] + `"}`,
		`{"user":"` + users[0] + `","password":"` + gatewayPassword + `"`,
		`{"session":"` + ids[6] + ` ` + adminPassword + `"}`,
		ids[7] + "\r\n" + wrongPassword,
	} {
		if err := admin.Publish(ctx, session.DefaultChannel, payload).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// Invalid ids built from real ones.
	for _, bad := range []string{ids[8] + " ", "*" + ids[9], ids[10] + ":" + gatewayPassword, users[0] + "{x}"} {
		a.MarkRevoked(bad)
		a.MarkAllRevokedForUser(bad)
		if _, err := a.Lookup(ctx, bad); err == nil {
			t.Fatalf("Lookup of an invalid id succeeded")
		}
	}

	// Revocations retried while replica a's link is a blackhole; its
	// lookups time out in Redis and go to the backend.
	proxy.Blackhole()
	a.MarkRevoked(ids[11])
	a.MarkAllRevokedForUser(users[0])
	late, _ := be.NewSession(users[0]) // not in any L1: its lookup reads Redis
	ids = append(ids, late.DeviceSessionID)
	_, _ = a.Lookup(ctx, late.DeviceSessionID)
	givenUp := func(what, id string) func() bool {
		return func() bool {
			for _, line := range logs.lines() {
				if strings.Contains(line, "revocation not written to Redis") && strings.Contains(line, `"`+what+`":"`+session.Redact(id)+`"`) {
					return true
				}
			}
			return false
		}
	}
	eventually(t, 20*time.Second, givenUp("id", ids[11]), "the retried session revocation was not given up and logged")
	eventually(t, 20*time.Second, givenUp("user", users[0]), "the retried user revocation was not given up and logged")
	proxy.Clear()

	for _, want := range []string{
		"dropped a malformed invalidation message",
		"revocation not written to Redis",
		"invalidation channel lost",
		"session L2 read failed",
		"mark revoked failed",
		"invalid session id",
		"context deadline exceeded",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line contains %q: the scenario did not log what this test checks", want)
		}
	}
	secrets := map[string]string{"the gateway password": gatewayPassword, "the wrong password": wrongPassword, "the admin password": adminPassword}
	for _, id := range ids {
		secrets["session id "+session.Redact(id)] = id
	}
	for _, u := range users {
		secrets["user id "+session.Redact(u)] = u
	}
	lines := logs.lines()
	for _, line := range lines {
		for what, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("a log line carries %s: %s", what, line)
			}
		}
	}
	t.Logf("%d log lines checked for %d secrets", len(lines), len(secrets))
}
