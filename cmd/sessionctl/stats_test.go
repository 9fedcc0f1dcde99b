package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// TestStatsCounts checks the counts by status, tombstones, corrupt and
// TTL-less keys, the subscriber count and the subscriber names, in text and
// JSON.
func TestStatsCounts(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	for i := range 5 {
		fillActive(t, e.cache, fmt.Sprintf("dev-%d", i), "u-7")
	}
	for _, id := range []string{"dev-0", "dev-1", "ghost-1"} { // ghost-1: a tombstone
		if _, err := e.cache.RevokeSession(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	e.rdb.HSet(ctx, "session:handmade", "status", "active") // no user, no key, no TTL
	e.rdb.Set(ctx, "session:a-string", "x", 0)              // not a hash
	e.rdb.Set(ctx, "other:key", "x", 0)                     // not a session key

	named := e.srv.ClientWith(t, &redis.Options{ClientName: "gateway-replica-a"})
	rawSubscriber(t, named, session.DefaultChannel)
	rawSubscriber(t, e.srv.Client(t), "some-other-channel") // unnamed, other channel

	code, stdout, stderr := runCmd(t, "stats", "-json", "-redis", e.url)
	if code != exitOK {
		t.Fatalf("stats -json: exit %d, stderr %q", code, stderr)
	}
	var rep statsReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stats -json output does not parse: %v\n%s", err, stdout)
	}
	want := sessionCounts{Active: 3, Revoked: 3, Tombstones: 1, Invalid: 2, NoTTL: 2}
	if rep.Sessions != want || rep.Scanned != 8 {
		t.Errorf("stats sessions = %+v (scanned %d), want %+v (scanned 8)", rep.Sessions, rep.Scanned, want)
	}
	if rep.Subscribers != 1 || rep.Channel != "session_invalidation" {
		t.Errorf("stats subscribers = %d on %q, want 1 on session_invalidation", rep.Subscribers, rep.Channel)
	}
	var names []string
	for _, c := range rep.Clients {
		names = append(names, c.Name)
	}
	if len(names) != 2 || names[0] != "" || names[1] != "gateway-replica-a" {
		t.Errorf("stats subscriber clients = %q, want [\"\" \"gateway-replica-a\"]", names)
	}
	if len(rep.Nodes) != 1 || rep.Nodes[0].UsedMemoryHuman == "" || rep.Nodes[0].Addr != e.srv.Addr {
		t.Errorf("stats nodes = %+v, want one node %s with used_memory_human", rep.Nodes, e.srv.Addr)
	}

	code, stdout, _ = runCmd(t, "stats", "-redis", e.url)
	for _, w := range []string{
		"sessions      8 keys matching session:*\n",
		"  active      3\n",
		"  revoked     3 (tombstones 1)\n",
		"  INVALID     2",
		"  NO TTL      2",
		"memory        " + rep.Nodes[0].UsedMemoryHuman[:1],
		"channel       session_invalidation: 1 subscriber(s) (PUBSUB NUMSUB)\n",
		"  gateway-replica-a ",
		"  (unnamed) ",
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stats (exit %d) stdout does not contain %q:\n%s", code, w, stdout)
		}
	}
}

// TestStatsProgress checks the progress line every 10000 keys with -progress
// (stderr is not a terminal in tests) and its absence without.
func TestStatsProgress(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	pipe := e.rdb.Pipeline()
	for i := range 25000 {
		k := fmt.Sprintf("session:bulk-%d", i)
		pipe.HSet(ctx, k, "status", "revoked")
		pipe.PExpire(ctx, k, rediscache.DefaultSessionTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, "stats", "-progress", "-redis", e.url)
	line := regexp.MustCompile(`(?m)^scanned (\d+) of 25000 keys \((\d+)%\), \d+\.\ds elapsed(, ETA \d+\.\ds)?$`)
	progress := line.FindAllStringSubmatch(stderr, -1)
	if code != exitOK || len(progress) != 3 || strings.Count(stderr, "\n") != 3 {
		t.Fatalf("stats -progress on 25000 keys: exit %d, progress lines %q, want 3 lines; stderr:\n%s", code, progress, stderr)
	}
	for i, want := range []struct{ done, pct string }{{"1", "4"}, {"2", "8"}, {"25000", "100"}} {
		if got := progress[i]; !strings.HasPrefix(got[1], want.done) || !strings.HasPrefix(got[2], want.pct) || (got[3] == "") != (i == 2) {
			t.Errorf("progress line %d = %q, want about %s… keys, %s…%%, and an ETA unless it is the last", i, got[0], want.done, want.pct)
		}
	}
	if !strings.Contains(stdout, "  revoked     25000 (tombstones 25000)") {
		t.Errorf("stats stdout:\n%s\nwant 25000 revoked tombstones", stdout)
	}
	if _, _, stderr := runCmd(t, "stats", "-redis", e.url); stderr != "" {
		t.Errorf("stats without -progress wrote %q to a non-terminal stderr, want nothing", stderr)
	}
}

// TestCommandsOnCluster runs inspect, revoke, stats and watch on a
// three-master Redis Cluster with 12 stripes: keys carry hash tags, stats
// scans every master, and watch receives messages published on any node.
func TestCommandsOnCluster(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t, redistest.ClusterOptions{})
	cc := cl.Client(t)
	c, err := rediscache.New(cc, rediscache.Options{Stripes: 12})
	if err != nil {
		t.Fatal(err)
	}
	addrs := cl.Addrs()
	url := "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]
	flags := []string{"-redis", url, "-cluster", "-stripes", "12"}
	const n = 40
	for i := range n {
		fillActive(t, c, fmt.Sprintf("dev-%d", i), fmt.Sprintf("u-%d", i%4))
	}

	stdout, wait := startWatch(t, ctx, append(flags, "-count", "1")...)
	gatewaySubscriber(t, cc, c.Layout().Channel())
	code, out, stderr := runCmd(t, append([]string{"revoke"}, append(flags, "dev-3")...)...)
	if code != exitOK {
		t.Fatalf("revoke on the cluster: exit %d, stderr %q", code, stderr)
	}
	if code := wait(); code != exitOK || !strings.Contains(stdout.String(), "  session dev-3  stripe ") {
		t.Errorf("watch on the cluster: exit %d, stdout %q; want the dev-3 message", code, stdout.String())
	}
	if !strings.Contains(out, "revoked session dev-3") {
		t.Errorf("revoke stdout %q", out)
	}

	code, out, stderr = runCmd(t, append([]string{"inspect"}, append(flags, "dev-3")...)...)
	if want := "key           " + c.Layout().SessionKey("dev-3") + "\n"; code != exitOK || !strings.Contains(out, want) || !strings.Contains(out, "status        revoked since") {
		t.Errorf("inspect on the cluster: exit %d, stderr %q, stdout:\n%s\nwant %q and revoked", code, stderr, out, want)
	}

	code, out, stderr = runCmd(t, append([]string{"stats", "-json"}, flags...)...)
	var rep statsReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK {
		t.Fatalf("stats on the cluster: exit %d, stderr %q, %v\n%s", code, stderr, err, out)
	}
	masters := 0
	for _, node := range rep.Nodes {
		if node.Master {
			masters++
			if node.Scanned == 0 {
				t.Errorf("stats scanned no session on master %s; 40 sessions over 12 stripes should reach every master", node.Addr)
			}
		}
	}
	if rep.Sessions.Active != n-1 || rep.Sessions.Revoked != 1 || masters != 3 {
		t.Errorf("stats on the cluster = %+v over %d masters, want %d active, 1 revoked, 3 masters", rep.Sessions, masters, n-1)
	}
}

// FuzzParseClientList checks that any CLIENT LIST text parses without a
// panic, one client per line at most, each with an address.
func FuzzParseClientList(f *testing.F) {
	f.Add("id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=gatewayd-1 age=12 sub=1 psub=0\n")
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		got := parseClientList("node:1", text)
		if lines := strings.Count(text, "\n") + 1; len(got) > lines {
			t.Fatalf("parseClientList(%.40q) = %d clients from %d lines", text, len(got), lines)
		}
		for _, c := range got {
			if c.Addr == "" || c.Node != "node:1" {
				t.Fatalf("parseClientList(%.40q) returned %+v, want an address and the node", text, c)
			}
		}
	})
}
