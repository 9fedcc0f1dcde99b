package security

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/toxitest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// TestWaitReplicasOptions checks the validation of the WAIT options.
func TestWaitReplicasOptions(t *testing.T) {
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer single.Close()
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cluster.Close()
	tests := []struct {
		name string
		rdb  redis.UniversalClient
		opts rediscache.Options
		ok   bool
	}{
		{"off", single, rediscache.Options{}, true},
		{"on with the default timeout", single, rediscache.Options{WaitReplicas: 1}, true},
		{"on with a timeout", single, rediscache.Options{WaitReplicas: 2, WaitTimeout: 50 * time.Millisecond}, true},
		{"negative replicas", single, rediscache.Options{WaitReplicas: -1}, false},
		{"a timeout without replicas", single, rediscache.Options{WaitTimeout: time.Second}, false},
		{"a negative timeout", single, rediscache.Options{WaitReplicas: 1, WaitTimeout: -time.Millisecond}, false},
		{"a timeout under 1ms", single, rediscache.Options{WaitReplicas: 1, WaitTimeout: time.Microsecond}, false},
		{"a timeout as long as CallTimeout", single, rediscache.Options{WaitReplicas: 1, WaitTimeout: rediscache.DefaultCallTimeout}, false},
		{"a cluster client", cluster, rediscache.Options{WaitReplicas: 1}, false},
		{"a cluster client without WAIT", cluster, rediscache.Options{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rediscache.New(tt.rdb, tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New(%+v) = %v, want ok %v", tt.opts, err, tt.ok)
			}
		})
	}
}

// TestFailoverLosesUnreplicatedRevocations runs three gateway replicas on
// a primary whose replica copies it through a proxy. With the replication
// link blackholed, every revocation is applied and published by the
// primary but reported as not replicated (rediscache.ErrNotReplicated:
// WaitReplicas 1). The replica is then promoted and the clients moved to
// it: it holds the revoked sessions as active (the rollback is real), the
// gateway replicas notice that the invalidation counter went back and drop
// their active L1 entries, but keep the revoked ones: 0 active answers for
// revoked sessions. A retry of the revocations that were reported writes
// them into the new primary, so a replica that never heard of them answers
// revoked too.
func TestFailoverLosesUnreplicatedRevocations(t *testing.T) {
	const (
		sessions = 100
		users    = 5 // revoked user-wide, 4 sessions each
	)
	// hz 100: Redis ends a WAIT at its timeout to within 1/hz.
	primary := redistest.Start(t, redistest.Options{Config: []string{"hz 100"}})
	link := toxitest.Start(t, primary.Addr)
	_, linkPort, _ := net.SplitHostPort(link.Addr())
	// The later "replicaof" line wins: the replica copies the primary
	// through the proxy.
	replica := redistest.StartReplica(t, primary, redistest.Options{Config: []string{"hz 100", "replicaof 127.0.0.1 " + linkPort}})
	info, err := replica.Client(t).Info(ctx, "replication").Result()
	if err != nil || !strings.Contains(info, "master_port:"+linkPort) {
		t.Fatalf("the replica does not replicate through the proxy (port %s): %v\n%s", linkPort, err, info)
	}
	be := backendtest.NewServer()
	t.Cleanup(be.Close)

	// The gateway replicas dial whatever address is current: the primary,
	// then the promoted replica.
	var current atomic.Value
	current.Store(primary.Addr)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, current.Load().(string))
	}
	wait := rediscache.Options{WaitReplicas: 1, WaitTimeout: 20 * time.Millisecond}
	gateways := make([]*tiered.Cache, 3)
	for i := range gateways {
		name := fmt.Sprintf("gw-%d", i+1)
		rdb := redis.NewClient(&redis.Options{Addr: primary.Addr, Dialer: dial, ClientName: name, ContextTimeoutEnabled: true})
		gateways[i] = startReplica(t, replicaConfig{name: name, client: rdb, backendURL: be.URL(), l2: wait,
			edit: func(o *tiered.Options) { o.HeartbeatInterval = 100 * time.Millisecond }})
	}

	// The sessions reach Redis through a gateway that is gone before the
	// failover: a live gateway takes back the fills it made shortly before
	// it noticed a data loss (tiered's recent fills), which would hide, for
	// these freshly filled sessions, the rollback this test shows.
	filler := startReplica(t, replicaConfig{name: "filler", backendURL: be.URL(), l2: wait,
		client: redis.NewClient(&redis.Options{Addr: primary.Addr, Dialer: dial, ClientName: "filler", ContextTimeoutEnabled: true})})

	var control, lost []string // revoked with the link up; with it blackholed
	userSessions := map[string][]string{}
	newSession := func(user string) string {
		rec, _ := be.NewSession(user)
		for _, g := range append([]*tiered.Cache{filler}, gateways...) {
			if _, err := g.Lookup(ctx, rec.DeviceSessionID); err != nil {
				t.Fatalf("Lookup(%q): %v", rec.DeviceSessionID, err)
			}
		}
		return rec.DeviceSessionID
	}
	for i := range 10 {
		control = append(control, newSession(fmt.Sprintf("control-%d", i)))
	}
	for i := range sessions {
		lost = append(lost, newSession(fmt.Sprintf("user-%d", i)))
	}
	for u := range users {
		user := fmt.Sprintf("all-%d", u)
		for range 4 {
			userSessions[user] = append(userSessions[user], newSession(user))
		}
	}
	// The fills reached the replica: a write and a WAIT on one connection.
	pc := primary.Client(t)
	cmds, err := pc.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "fills-done", "1", 0)
		p.Do(ctx, "WAIT", 1, 5000)
		return nil
	})
	if n, _ := cmds[1].(*redis.Cmd).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the fills = %d, %v; want 1 replica", n, err)
	}
	if err := filler.Close(); err != nil {
		t.Fatal(err)
	}

	// With the link up, revocations are replicated.
	var slowest time.Duration
	for i, id := range control {
		be.Revoke(id)
		start := time.Now()
		if err := gateways[i%3].Revoke(ctx, id); err != nil {
			t.Fatalf("Revoke(%q) with the link up = %v, want nil", id, err)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("link up: %d/%d revocations replicated; the slowest Revoke (write, publish, WAIT) took %v", len(control), len(control), slowest)

	link.Blackhole()
	reported := 0
	for i, id := range lost {
		be.Revoke(id)
		err := gateways[i%3].Revoke(ctx, id)
		switch {
		case errors.Is(err, rediscache.ErrNotReplicated):
			reported++
		default:
			t.Errorf("Revoke(%q) with the link blackholed = %v, want ErrNotReplicated", id, err)
		}
	}
	reportedUsers := 0
	for user := range userSessions {
		be.RevokeUser(user)
		if err := gateways[0].RevokeUser(ctx, user); errors.Is(err, rediscache.ErrNotReplicated) {
			reportedUsers++
		} else {
			t.Errorf("RevokeUser(%q) with the link blackholed = %v, want ErrNotReplicated", user, err)
		}
	}
	t.Logf("link blackholed: %d/%d session revocations and %d/%d user revocations reported not replicated", reported, len(lost), reportedUsers, users)
	revoked := append(append([]string(nil), control...), lost...)
	for _, ids := range userSessions {
		lost = append(lost, ids...)
		revoked = append(revoked, ids...)
	}
	// Every gateway answers each revoked, and holds it so in L1. A gateway
	// whose subscriber resynced meanwhile (a heartbeat missed under load)
	// dropped its active entries: its lookup reads the revocation from the
	// primary and caches it.
	for i, g := range gateways {
		for _, id := range revoked {
			eventually(t, 5*time.Second, func() bool {
				rec, err := g.Lookup(ctx, id)
				return err == nil && rec.Status == session.StatusRevoked && revokedInL1(g, id)
			}, "gateway %d did not apply the revocation of %s", i, session.Redact(id))
		}
	}
	rc := replica.Client(t)
	rolledBack := 0
	for _, id := range lost {
		if s, _ := rc.HGet(ctx, "session:"+id, "status").Result(); s == "active" {
			rolledBack++
		}
	}
	if rolledBack != len(lost) {
		t.Fatalf("the replica holds %d of %d unreplicated revocations as active, want all: the link was not cut", rolledBack, len(lost))
	}

	// Failover: promote the replica, move the clients, kill the primary.
	drops := make([]uint64, len(gateways))
	for i, g := range gateways {
		drops[i] = g.Stats().Channel.DropActive
	}
	replica.Promote()
	current.Store(replica.Addr)
	primary.Kill()
	for i, g := range gateways {
		eventually(t, 10*time.Second, func() bool {
			st := g.Stats().Channel
			return st.DropActive > drops[i] && st.Subscribed
		}, "gateway %d did not resync with DropActive on the promoted replica", i)
	}
	activeAnswers := 0
	for i, g := range gateways {
		for _, id := range revoked {
			got, err := g.Lookup(ctx, id)
			if err != nil || got.Status != session.StatusRevoked {
				activeAnswers++
				t.Errorf("gateway %d after the failover: Lookup(%q) = %v, %v; want revoked", i, id, got.Status, err)
			}
		}
	}
	t.Logf("after the failover: %d of %d lookups of revoked sessions on 3 resynced gateways were not revoked", activeAnswers, 3*len(revoked))

	// A gateway that never heard of the revocations reads the rolled-back
	// Redis: that is what ErrNotReplicated warned about.
	cold := startReplica(t, replicaConfig{name: "cold", client: redis.NewClient(&redis.Options{Addr: replica.Addr, ContextTimeoutEnabled: true}), backendURL: be.URL()})
	coldActive := 0
	for _, id := range lost {
		if got, err := cold.Lookup(ctx, id); err == nil && got.Status == session.StatusActive {
			coldActive++
		}
	}
	t.Logf("control: a gateway that missed the revocations answers %d of %d of them active from the rolled-back Redis", coldActive, len(lost))
	if coldActive != len(lost) {
		t.Errorf("a cold gateway answered %d of %d rolled-back sessions active, want all (the control shows the loss)", coldActive, len(lost))
	}

	// The caller's remedy: retry what was reported (the new primary has no
	// replica, so the retries are reported again, but they are written).
	for i, id := range lost {
		if err := gateways[i%3].Revoke(ctx, id); err != nil && !errors.Is(err, rediscache.ErrNotReplicated) {
			t.Fatalf("retry Revoke(%q) = %v", id, err)
		}
	}
	fresh := startReplica(t, replicaConfig{name: "fresh", client: redis.NewClient(&redis.Options{Addr: replica.Addr, ContextTimeoutEnabled: true}), backendURL: be.URL()})
	for _, g := range []*tiered.Cache{cold, fresh} {
		for _, id := range lost {
			eventually(t, 5*time.Second, func() bool {
				got, err := g.Lookup(ctx, id)
				return err == nil && got.Status == session.StatusRevoked
			}, "after the retries, Lookup(%q) is still not revoked", id)
		}
	}
}
