package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// deployment is a Redis Cluster or a Sentinel group, with the flags that
// reach it and a library Cache writing to it.
type deployment struct {
	flags []string // -redis and -cluster or -sentinel-master, plus -stripes
	cache *rediscache.Cache
	rdb   redis.UniversalClient
	// masters is how many nodes stats must report memory for.
	masters int
}

// TestSessionctlOnCluster runs inspect, revoke, revoke-user, watch and
// stats with -cluster against a three-master Redis Cluster with 16 stripes,
// the seed nodes given as redis://first?addr=second&addr=third.
func TestSessionctlOnCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{})
	addrs := cluster.Addrs()
	url := "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
	rdb := cluster.ClientWith(t, &redis.ClusterOptions{ContextTimeoutEnabled: true})
	c, err := rediscache.New(rdb, rediscache.Options{Stripes: 16})
	if err != nil {
		t.Fatal(err)
	}
	runSessionctlSuite(t, deployment{
		flags:   []string{"-redis", url, "-cluster", "-stripes", "16"},
		cache:   c,
		rdb:     rdb,
		masters: 3,
	})
}

// TestSessionctlThroughSentinel runs the same commands with
// -sentinel-master against a primary, a replica and three sentinels, the
// sentinels given as redis://first?addr=second&addr=third.
func TestSessionctlThroughSentinel(t *testing.T) {
	sg := redistest.StartSentinel(t, redistest.SentinelOptions{})
	addrs := sg.SentinelAddrs()
	url := "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
	rdb := sg.FailoverClient(t)
	c, err := rediscache.New(rdb, rediscache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runSessionctlSuite(t, deployment{
		flags:   []string{"-redis", url, "-sentinel-master", sg.MasterName()},
		cache:   c,
		rdb:     rdb,
		masters: 1,
	})
}

// userSessionsRow is inspect's "user sessions" row for a session of user
// uid on stripe k whose user has n sessions.
func userSessionsRow(l rediscache.Layout, uid string, k, n int) string {
	if l.Stripes() == 1 {
		return fmt.Sprintf("user sessions %s (%d)\n", l.UserSessionsKey(uid, k), n)
	}
	return fmt.Sprintf("user sessions %s and %d other stripes' (%d)\n", l.UserSessionsKey(uid, k), l.Stripes()-1, n)
}

// runSessionctlSuite checks each incident command against the deployment:
// watch sees every message in sequence per stripe; inspect names the keys
// (with hash tags on a cluster) and reads a user's index across slots;
// revoke and revoke-user write what the library reads back as revoked
// (revoke-user's sessions on several stripes, so slots) and reach the
// watcher, revoke-user with one message; stats counts the sessions on
// every master and names the watcher's connection.
func runSessionctlSuite(t *testing.T, d deployment) {
	ctx := context.Background()
	l := d.cache.Layout()
	cmd := func(name string, args ...string) []string {
		return append(append([]string{name}, d.flags...), args...)
	}
	user7 := []string{"dev-a", "dev-b", "dev-c", "dev-d", "dev-e", "dev-f"}
	for _, id := range user7 {
		fillActive(t, d.cache, id, "u-7")
	}
	fillActive(t, d.cache, "dev-x", "u-8")
	stripes := map[int]bool{}
	for _, id := range user7 {
		stripes[l.Stripe(id)] = true
	}
	if l.Stripes() > 1 && len(stripes) < 3 {
		t.Fatalf("the sessions of u-7 use stripes %v; the test needs several (a mark script each)", stripes)
	}

	// 1 revoke, 1 of revoke-user (the user message, whatever the number
	// of sessions), 1 hand-typed.
	const messages = 3
	watchOut, waitWatch := startWatch(t, ctx, cmd("watch", "-json", "-count", fmt.Sprint(messages))[1:]...)

	t.Run("inspect", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, cmd("inspect", "dev-b")...)
		if code != exitOK {
			t.Fatalf("inspect dev-b: exit %d, stderr %q", code, stderr)
		}
		k := l.Stripe("dev-b")
		for _, want := range []string{
			"key           " + l.SessionKey("dev-b") + "\n",
			fmt.Sprintf("stripe        %d (log %s, seq %s)", k, l.LogKey(k), l.SeqKey(k)),
			"status        active\n",
			userSessionsRow(l, "u-7", k, 6),
			"dev-f                                    active\n",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("inspect dev-b: stdout lacks %q:\n%s", want, stdout)
			}
		}
	})

	gatewaySubscriber(t, d.rdb, l.Channel())

	t.Run("revoke", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, cmd("revoke", "dev-a")...)
		if code != exitOK {
			t.Fatalf("revoke dev-a: exit %d, stderr %q", code, stderr)
		}
		for _, want := range []string{
			"revoked session dev-a\n",
			`published on session_invalidation: {"session":"dev-a","seq":`,
			"2 listening (PUBSUB NUMSUB), 1 of them sessionctl watch\n",
			"gateways: 1 subscribed\n",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("revoke dev-a: stdout lacks %q:\n%s", want, stdout)
			}
		}
		if got, err := d.cache.Get(ctx, "dev-a"); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("Get(%q) after revoke = %+v, %v; want revoked", "dev-a", got, err)
		}
	})

	t.Run("revoke-user", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, cmd("revoke-user", "-json", "u-7")...)
		if code != exitOK {
			t.Fatalf("revoke-user u-7: exit %d, stderr %q", code, stderr)
		}
		var rep revokeReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("revoke-user -json: %v\n%s", err, stdout)
		}
		slices.Sort(rep.Sessions)
		if !slices.Equal(rep.Sessions, user7) || rep.Published != 1 {
			t.Fatalf("revoke-user u-7 = %+v, want sessions %v and 1 message", rep, user7)
		}
		if m, err := session.ParseInvalidation(rep.Message); err != nil || m.UserID != "u-7" || m.Stripe != l.Stripe("u-7") {
			t.Errorf("revoke-user u-7 printed the message %s (%v), want the user message on stripe %d", rep.Message, err, l.Stripe("u-7"))
		}
		// On a cluster PUBLISH counts only the subscribers of the node
		// that ran the script, so only a single primary can promise that
		// the message was counted as received (watch checks the rest).
		if d.masters == 1 && rep.NoReceivers != 0 {
			t.Errorf("revoke-user u-7: %d of 1 message counted no receiver, want 0", rep.NoReceivers)
		}
		for _, id := range user7 {
			if got, err := d.cache.Get(ctx, id); err != nil || got.Status != session.StatusRevoked {
				t.Fatalf("Get(%q) after revoke-user = %+v, %v; want revoked", id, got, err)
			}
		}
		if got, err := d.cache.Get(ctx, "dev-x"); err != nil || got.Status != session.StatusActive {
			t.Fatalf("Get(%q) of another user = %+v, %v; want active", "dev-x", got, err)
		}
		code, stdout, _ = runCmd(t, cmd("inspect", "dev-c")...)
		if code != exitOK || !strings.Contains(stdout, "status        revoked since ") ||
			!strings.Contains(stdout, "user revoked  ") || strings.Contains(stdout, "no recent user-wide revocation") {
			t.Errorf("inspect dev-c after revoke-user: exit %d:\n%s\nwant revoked and the user's marker", code, stdout)
		}
	})

	t.Run("stats", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, cmd("stats", "-json")...)
		if code != exitOK {
			t.Fatalf("stats: exit %d, stderr %q", code, stderr)
		}
		var rep statsReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("stats -json: %v\n%s", err, stdout)
		}
		if want := (sessionCounts{Active: 1, Revoked: 6}); rep.Sessions != want || rep.Scanned != 7 {
			t.Errorf("stats sessions = %+v (scanned %d), want %+v (scanned 7)", rep.Sessions, rep.Scanned, want)
		}
		masters := 0
		for _, n := range rep.Nodes {
			if n.Master && n.UsedMemoryHuman != "" {
				masters++
			}
		}
		if masters != d.masters {
			t.Errorf("stats reports memory of %d masters, want %d: %+v", masters, d.masters, rep.Nodes)
		}
		watchers := 0
		for _, c := range rep.Clients {
			if c.Name == watchClientName {
				watchers++
			}
		}
		if rep.Subscribers != 2 || watchers != 1 {
			t.Errorf("stats: %d subscribers, clients %+v; want 2 (a gateway and a watch), one named %s", rep.Subscribers, rep.Clients, watchClientName)
		}
	})

	t.Run("doctor", func(t *testing.T) {
		// The test servers run without persistence: that check fails,
		// the others pass on every node.
		code, lines := doctorLines(t, cmd("doctor", "-expect-replicas", "1")[1:]...)
		if code != exitFailure {
			t.Errorf("doctor: exit %d, want %d (no persistence)", code, exitFailure)
		}
		every := ""
		if d.masters > 1 {
			every = fmt.Sprintf(" (every node, %d)", d.masters)
		}
		for name, want := range map[string]string{
			"maxmemory-policy": "ok maxmemory-policy: noeviction",
			"persistence":      "FAIL persistence: none",
			"tracking":         "ok tracking: ",
			"acl":              "ok acl: user default may run",
			"subscribers":      "ok subscribers: 1 subscriber(s) on session_invalidation (and 1 sessionctl watch, not counted), 1 expected; connections in subscriber mode (any channel): ",
		} {
			if line := lines[name]; !strings.HasPrefix(line, want) || name != "subscribers" && !strings.Contains(line, every) ||
				name == "subscribers" && !strings.Contains(line, watchClientName) {
				t.Errorf("doctor's %s line is %q, want it to start %q and hold %q", name, line, want, every)
			}
		}
	})

	t.Run("watch", func(t *testing.T) {
		if err := d.rdb.Publish(ctx, l.Channel(), `{"session":"hand-1"}`).Err(); err != nil {
			t.Fatal(err)
		}
		if code := waitWatch(); code != exitOK {
			t.Fatalf("watch: exit %d", code)
		}
		lines := strings.Split(strings.TrimSpace(watchOut.String()), "\n")
		if len(lines) != messages {
			t.Fatalf("watch printed %d lines, want %d:\n%s", len(lines), messages, watchOut.String())
		}
		last := map[int]uint64{}
		revoked := map[string]bool{}
		for i, line := range lines {
			var w watchLine
			if err := json.Unmarshal([]byte(line), &w); err != nil {
				t.Fatalf("line %d %q: %v", i, line, err)
			}
			if w.GapExpected != 0 || w.Malformed {
				t.Errorf("line %d = %s: want no gap, not malformed", i, line)
			}
			if w.Seq == 0 {
				revoked[w.Session+w.User] = true
				continue
			}
			if w.Stripe == nil || w.Seq != last[*w.Stripe]+1 {
				t.Errorf("line %d = %s: want seq %d of its stripe", i, line, last[derefOr(w.Stripe, -1)]+1)
			}
			if id := w.Session + w.User; w.Stripe != nil && *w.Stripe != l.Stripe(id) {
				t.Errorf("line %d = %s: want the stripe of %s, %d", i, line, id, l.Stripe(id))
			}
			if w.Stripe != nil {
				last[*w.Stripe] = w.Seq
			}
			revoked[w.Session+w.User] = true
		}
		for _, id := range []string{"dev-a", "u-7", "hand-1"} {
			if !revoked[id] {
				t.Errorf("watch did not print a message for %s:\n%s", id, watchOut.String())
			}
		}
	})
}

func derefOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}
