package security

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/toxitest"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// Test-only credentials. The documented ACL file holds placeholders in
// their place.
const (
	gatewayPassword  = "gw-test-pw-8e1f0c27"
	operatorPassword = "op-test-pw-51aa2d90"
	adminUser        = "test-admin"
	adminPassword    = "admin-test-pw-0b7c"
)

// aclPath is the documented least-privilege ACL file.
var aclPath = filepath.Join("..", "..", "deploy", "redis", "gateway.acl")

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// aclFile returns deploy/redis/gateway.acl with the SHA-256 of the test
// passwords in place of its placeholders, as an operator deploys it, plus
// a test-only administrator that sets up and inspects the server.
func aclFile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(aclPath)
	if err != nil {
		t.Fatalf("read the ACL file: %v", err)
	}
	s := strings.NewReplacer(
		"GATEWAY_PASSWORD_SHA256", sha256Hex(gatewayPassword),
		"OPERATOR_PASSWORD_SHA256", sha256Hex(operatorPassword),
	).Replace(string(b))
	if strings.Contains(s, "_SHA256") {
		t.Fatalf("%s has a placeholder this test does not fill", aclPath)
	}
	return s + "user " + adminUser + " on >" + adminPassword + " ~* &* +@all\n"
}

// startACLServer starts a redis-server with the documented ACL file. DEBUG
// is enabled in its configuration, so that only the ACL can refuse it.
func startACLServer(t *testing.T) (*redistest.Server, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{ACLFile: aclFile(t), Config: []string{"enable-debug-command yes"}})
	admin := srv.ClientWith(t, &redis.Options{Username: adminUser, Password: adminPassword})
	return srv, admin
}

// userClient returns a client for user at addr, built the way the commands
// build theirs (internal/redisconn), named name.
func userClient(t *testing.T, user, password, addr, name string) redis.UniversalClient {
	t.Helper()
	cfg := redisconn.Config{URL: fmt.Sprintf("redis://%s:%s@%s", user, password, addr), ClientName: name}
	rdb, err := cfg.NewClient()
	if err != nil {
		t.Fatalf("redisconn: %v", err)
	}
	return rdb
}

// TestShippedACLFileDoesNotStart checks that the documented file, with its
// placeholders left in, makes redis-server refuse to start: it cannot be
// deployed with a known password by mistake.
func TestShippedACLFileDoesNotStart(t *testing.T) {
	bin := redistest.Binary(t, "redis-server")
	dir := t.TempDir()
	acl, err := os.ReadFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(path, acl, 0o600); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	port := strconv.Itoa(redistest.FreePort(t))
	out, err := exec.CommandContext(rctx, bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", dir, "--aclfile", path).CombinedOutput()
	if rctx.Err() != nil || err == nil {
		t.Fatalf("redis-server with the shipped ACL file: %v, want it to refuse to start\n%s", err, out)
	}
	if !strings.Contains(string(out), "password hash must be exactly 64 characters") {
		t.Fatalf("redis-server refused the shipped ACL file for another reason:\n%s", out)
	}
}

// TestGatewayUserRunsInvariantScenario runs the replica scenario under the
// gateway user: lookups that fill Redis, session and user-wide
// revocations (synchronous and background), and a subscriber that loses
// its connection and replays what it missed from the log. Every answer is
// as without an ACL, and Redis denied the gateway user nothing (ACL LOG).
func TestGatewayUserRunsInvariantScenario(t *testing.T) {
	srv, admin := startACLServer(t)
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	proxy := toxitest.Start(t, srv.Addr) // replica 3 reaches Redis through it
	replicas := make([]*tiered.Cache, 3)
	for i := range replicas {
		name := fmt.Sprintf("gw-%d", i+1)
		addr := srv.Addr
		if i == 2 {
			addr = proxy.Addr()
		}
		replicas[i] = startReplica(t, replicaConfig{
			name: name, client: userClient(t, "gateway", gatewayPassword, addr, name), backendURL: be.URL(),
			edit: func(o *tiered.Options) { o.HeartbeatInterval = 100 * time.Millisecond },
		})
	}

	// 3 users with 8 sessions each, looked up on every replica.
	users := []string{"user-a", "user-b", "user-c"}
	var ids []string
	userOf := map[string]string{}
	for _, u := range users {
		for range 8 {
			rec, _ := be.NewSession(u)
			ids = append(ids, rec.DeviceSessionID)
			userOf[rec.DeviceSessionID] = u
		}
	}
	for _, r := range replicas {
		for _, id := range ids {
			if got, err := r.Lookup(ctx, id); err != nil || got.Status != session.StatusActive {
				t.Fatalf("Lookup(%q) = %v, %v; want active", id, got.Status, err)
			}
		}
	}
	revoked := map[string]bool{}
	revokeSession := func(r *tiered.Cache, id string, background bool) {
		t.Helper()
		be.Revoke(id)
		revoked[id] = true
		if background {
			r.MarkRevoked(id)
			return
		}
		if err := r.Revoke(ctx, id); err != nil {
			t.Fatalf("Revoke(%q): %v", id, err)
		}
	}
	revokeUser := func(r *tiered.Cache, u string, background bool) {
		t.Helper()
		for _, id := range be.RevokeUser(u) {
			revoked[id] = true
		}
		if background {
			r.MarkAllRevokedForUser(u)
			return
		}
		if err := r.RevokeUser(ctx, u); err != nil {
			t.Fatalf("RevokeUser(%q): %v", u, err)
		}
	}
	revokeSession(replicas[0], ids[16], false)
	revokeSession(replicas[1], ids[17], true)
	revokeUser(replicas[2], "user-a", false)
	revokeUser(replicas[0], "user-b", true)
	checkAll := func(step string) {
		t.Helper()
		for i, r := range replicas {
			for _, id := range ids {
				want := session.StatusActive
				if revoked[id] {
					want = session.StatusRevoked
				}
				eventually(t, 5*time.Second, func() bool {
					got, err := r.Lookup(ctx, id)
					return err == nil && got.Status == want
				}, "%s: replica %d: Lookup(%q) never answered %v", step, i, id, want)
			}
		}
	}
	checkAll("after the revocations")

	// Replica 3 loses its connection (a blackhole its heartbeat notices)
	// while a session is revoked; when the link is back it replays the
	// revocation from the log.
	victim := replicas[2]
	lostBefore, replayedBefore := victim.Stats().ChannelLost, victim.Stats().Channel.Replayed
	proxy.Blackhole()
	eventually(t, 5*time.Second, func() bool { return victim.Stats().ChannelLost > lostBefore }, "the blackhole was not noticed")
	revokeSession(replicas[0], ids[20], false)
	proxy.Clear()
	eventually(t, 10*time.Second, func() bool { return victim.Stats().Channel.Replayed > replayedBefore },
		"replica 3 did not replay the revocation it missed")
	checkAll("after the replay")
	if got, _, _ := victim.Peek(ids[20]); got.Status != session.StatusRevoked {
		t.Errorf("replica 3's L1 holds %v for the replayed revocation, want revoked", got.Status)
	}

	// Nothing was denied to the gateway user, not even an optional command.
	log, err := admin.ACLLog(ctx, 100).Result()
	if err != nil {
		t.Fatalf("ACL LOG: %v", err)
	}
	for _, e := range log {
		if e.Username == "gateway" {
			t.Errorf("ACL LOG: gateway was denied %q (%s, %s) %d times", e.Object, e.Reason, e.Context, e.Count)
		}
	}
	list, err := admin.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	for i := range replicas {
		if name := fmt.Sprintf("name=gw-%d ", i+1); !strings.Contains(list, name) {
			t.Errorf("CLIENT LIST TYPE pubsub has no %q: the subscriber could not name its connection\n%s", name, list)
		}
	}
}

// probe is one command sent as a user, with the reply prefix expected:
// "" for success (a nil reply counts), else an error prefix.
type probe struct {
	user string
	cmd  []any
	want string
}

// TestACLProbes sends commands outside each user's needs and checks that
// Redis refuses them, and that the commands the user needs pass.
func TestACLProbes(t *testing.T) {
	srv, _ := startACLServer(t)
	const (
		noperm  = "NOPERM"
		noauth  = "NOAUTH"
		noKeys  = "ERR The user executing the script can't access at least one of the keys"
		noCmd   = "ERR The user executing the script can't run this command"
		noChan  = "ERR The user executing the script can't publish to the channel"
		gateway = "gateway"
		oper    = "operator"
		anon    = ""
	)
	passwords := map[string]string{gateway: gatewayPassword, oper: operatorPassword}
	var probes []probe
	for _, user := range []string{gateway, oper} {
		probes = append(probes,
			probe{user, []any{"GET", "other:1"}, noperm},
			probe{user, []any{"HSET", "other:1", "status", "active"}, noperm},
			probe{user, []any{"HGETALL", "app:secrets"}, noperm},
			probe{user, []any{"DEL", "other:1"}, noperm},
			probe{user, []any{"PUBLISH", "other", "x"}, noperm},
			probe{user, []any{"SUBSCRIBE", "other"}, noperm},
			probe{user, []any{"PSUBSCRIBE", "*"}, noperm},
			probe{user, []any{"KEYS", "*"}, noperm},
			probe{user, []any{"FLUSHALL"}, noperm},
			probe{user, []any{"FLUSHDB"}, noperm},
			probe{user, []any{"CONFIG", "SET", "appendonly", "yes"}, noperm},
			probe{user, []any{"MONITOR"}, noperm},
			probe{user, []any{"DEBUG", "SLEEP", "0"}, noperm},
			probe{user, []any{"CLIENT", "KILL", "TYPE", "pubsub"}, noperm},
			probe{user, []any{"ACL", "SETUSER", user, "+@all"}, noperm},
			probe{user, []any{"ACL", "LIST"}, noperm},
			probe{user, []any{"SCRIPT", "FLUSH"}, noperm},
			probe{user, []any{"FUNCTION", "FLUSH"}, noperm},
			probe{user, []any{"REPLICAOF", "NO", "ONE"}, noperm},
			probe{user, []any{"SHUTDOWN", "NOSAVE"}, noperm},
			probe{user, []any{"MIGRATE", "127.0.0.1", "1", "session:x", "0", "10"}, noperm},
			// Scripts run with the caller's rights.
			probe{user, []any{"EVAL", "return redis.call('GET', 'other:1')", "0"}, noKeys},
			probe{user, []any{"EVAL", "return redis.call('FLUSHALL')", "0"}, noCmd},
			probe{user, []any{"EVAL", "return redis.call('PUBLISH', 'other', 'x')", "0"}, noChan},
			// What the replicas need.
			probe{user, []any{"PING"}, ""},
			probe{user, []any{"AUTH", user, passwords[user]}, ""},
			probe{user, []any{"CLIENT", "SETNAME", "probe"}, ""},
			probe{user, []any{"WAIT", "0", "1"}, ""},
			probe{user, []any{"HGETALL", "session:x"}, ""},
			probe{user, []any{"GET", "session_invalidation:seq"}, ""},
			probe{user, []any{"XREVRANGE", "session_invalidation:log", "+", "-", "COUNT", "1"}, ""},
			probe{user, []any{"PUBLISH", session.DefaultChannel, `{"session":"x"}`}, ""},
			probe{user, []any{"EVAL", "return redis.call('HGET', KEYS[1], 'status')", "1", "session:x"}, ""},
			probe{user, []any{"EVAL", "return redis.call('SCARD', KEYS[1])", "1", "user:u:sessions"}, ""},
			probe{user, []any{"SSCAN", "user:u:sessions", "0", "COUNT", "1000"}, ""},
			probe{user, []any{"DEL", "session:x"}, ""},
		)
	}
	probes = append(probes,
		probe{gateway, []any{"SCAN", "0"}, noperm},
		probe{gateway, []any{"INFO"}, noperm},
		probe{gateway, []any{"CLIENT", "LIST"}, noperm},
		probe{gateway, []any{"PUBSUB", "NUMSUB", session.DefaultChannel}, noperm},
		probe{gateway, []any{"MEMORY", "USAGE", "session:x"}, noperm},
		probe{gateway, []any{"CONFIG", "GET", "*"}, noperm},
		probe{oper, []any{"CONFIG", "GET", "maxmemory-policy"}, ""},
		probe{oper, []any{"SCAN", "0", "MATCH", "session:*"}, ""},
		probe{oper, []any{"INFO", "memory"}, ""},
		probe{oper, []any{"CLIENT", "LIST", "TYPE", "pubsub"}, ""},
		probe{oper, []any{"PUBSUB", "NUMSUB", session.DefaultChannel}, ""},
		probe{oper, []any{"MEMORY", "USAGE", "session:x"}, ""},
		probe{oper, []any{"PUBSUB", "CHANNELS"}, noperm},
		probe{anon, []any{"PING"}, noauth},
		probe{anon, []any{"GET", "session:x"}, noauth},
	)
	for _, p := range probes {
		who := p.user
		if who == "" {
			who = "unauthenticated"
		}
		t.Run(fmt.Sprintf("%s %v", who, p.cmd), func(t *testing.T) {
			c := srv.ClientWith(t, &redis.Options{Username: p.user, Password: passwords[p.user], MaxRetries: -1, PoolSize: 1})
			err := c.Do(ctx, p.cmd...).Err()
			if errors.Is(err, redis.Nil) {
				err = nil
			}
			switch {
			case p.want == "" && err != nil:
				t.Fatalf("%v as %s = %v, want success", p.cmd, who, err)
			case p.want != "" && (err == nil || !strings.HasPrefix(err.Error(), p.want)):
				t.Fatalf("%v as %s = %v, want an error starting %q", p.cmd, who, err, p.want)
			}
		})
	}
}
