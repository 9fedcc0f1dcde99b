package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/testenv"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// runbookPath is the README; the runbook is its section "During an
// incident" (up to the next "## " heading).
const runbookPath = "../../README.md"

const runbookHeading = "## During an incident"

// runbookCmd is one command line of a ```sh block of the runbook.
type runbookCmd struct {
	section  string // the "### " heading above it
	template string // the line as written, placeholders included
	lineNo   int
}

// parseRunbook returns the commands of every ```sh block, in order. Every
// line of such a block must be a redis-cli or sessionctl command.
func parseRunbook(t *testing.T, path string) []runbookCmd {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []runbookCmd
	section, fence := "", ""
	inRunbook, found := false, false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if fence == "" && strings.HasPrefix(line, "## ") {
			inRunbook = line == runbookHeading
			found = found || inRunbook
		}
		if !inRunbook {
			continue
		}
		switch {
		case fence == "" && strings.HasPrefix(line, "```"):
			fence = strings.TrimPrefix(line, "```")
		case fence != "" && line == "```":
			fence = ""
		case fence == "" && strings.HasPrefix(line, "### "):
			section = strings.TrimPrefix(line, "### ")
		case fence == "sh" && strings.TrimSpace(line) != "":
			if !strings.HasPrefix(line, "redis-cli ") && !strings.HasPrefix(line, "sessionctl ") {
				t.Fatalf("%s:%d: %q is neither a redis-cli nor a sessionctl command", path, n, line)
			}
			cmds = append(cmds, runbookCmd{section: section, template: line, lineNo: n})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("%s has no %q section", path, runbookHeading)
	}
	return cmds
}

// shellWords splits a line as sh does for the quoting the runbook uses:
// blanks separate words, single quotes keep their contents literally.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			quoted, inWord = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// runbook is the world the runbook's commands run against: a redis-server
// the library wrote to with three tiered replicas on it, and a Redis
// Cluster for the cluster section.
type runbook struct {
	t        *testing.T
	cli      string
	srv      *redistest.Server
	admin    *redis.Client
	lib      *rediscache.Cache // default layout
	staging  *rediscache.Cache // prefix "staging:"
	cluster  *redistest.Cluster
	clib     *rediscache.Cache // 16 stripes on the cluster
	curl     string            // cluster URL for sessionctl
	replicas []*tiered.Cache
	users    map[string][]string // user id -> session ids, as filled
}

// fill writes an active session through the library and remembers it.
func (r *runbook) fill(c *rediscache.Cache, id, userID string) {
	r.t.Helper()
	fillActive(r.t, c, id, userID)
	r.users[userID] = append(r.users[userID], id)
}

// cliOut runs one redis-cli line through sh, with -p (and the port of the
// cluster's first node for -c lines) added after "redis-cli". It fails on
// a non-zero exit or anything on stderr, and returns stdout.
func (r *runbook) cliOut(line string) string {
	r.t.Helper()
	port := r.srv.Port
	if strings.HasPrefix(line, "redis-cli -c ") {
		port = r.cluster.Nodes()[0].Server.Port
	}
	script := strings.ReplaceAll(line, "redis-cli", r.cli+" -p "+strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		r.t.Fatalf("%s: %v, stderr %q", line, err, stderr.String())
	}
	return stdout.String()
}

// ctl runs one sessionctl line in-process with -redis (the cluster's URL
// for -cluster lines) added after the command name.
func (r *runbook) ctl(ctx context.Context, line string, stdout, stderr io.Writer) int {
	words := shellWords(line)[1:]
	url := "redis://" + r.srv.Addr
	if slices.Contains(words, "-cluster") {
		url = r.curl
	}
	args := append([]string{words[0], "-redis", url}, words[1:]...)
	return dispatch(ctx, args, stdout, stderr)
}

func (r *runbook) ctlOut(line string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if code := r.ctl(ctx, line, &stdout, &stderr); code != exitOK {
		r.t.Fatalf("%s: exit %d, stderr %q", line, code, stderr.String())
	}
	return stdout.String()
}

// hashMatches checks that HGETALL output (field and value lines) decodes
// to the record the library reads.
func (r *runbook) hashMatches(line, out string, c *rediscache.Cache, id string) {
	r.t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines)%2 != 0 {
		r.t.Fatalf("%s printed an odd number of lines: %q", line, out)
	}
	h := map[string]string{}
	for i := 0; i < len(lines); i += 2 {
		h[lines[i]] = lines[i+1]
	}
	got, err := rediscache.DecodeHash(id, h)
	if err != nil {
		r.t.Fatalf("%s printed %q, which does not decode: %v", line, out, err)
	}
	want, err := c.Get(context.Background(), id)
	if err != nil || !sameRecord(got, want) || want.UserID == "" {
		r.t.Errorf("%s printed %+v; the library reads %+v, %v", line, got, want, err)
	}
}

// setMatches checks SMEMBERS output against the sessions filled for userID
// that keep says the set holds (with several stripes, those of one stripe).
func (r *runbook) setMatches(line, out, userID string, keep func(id string) bool) {
	r.t.Helper()
	got := strings.Fields(out)
	slices.Sort(got)
	var want []string
	for _, id := range r.users[userID] {
		if keep(id) {
			want = append(want, id)
		}
	}
	slices.Sort(want)
	if len(want) == 0 {
		r.t.Fatalf("%s: no session of %s to compare with", line, userID)
	}
	if !slices.Equal(got, want) {
		r.t.Errorf("%s printed %q, want %q", line, got, want)
	}
}

// redisStatus is the status the library reads for id.
func (r *runbook) redisStatus(c *rediscache.Cache, id string) session.Status {
	r.t.Helper()
	rec, err := c.Get(context.Background(), id)
	if err != nil {
		r.t.Fatalf("Get(%q): %v", id, err)
	}
	return rec.Status
}

// wantL1 checks that every replica answers id from its L1 with status.
func (r *runbook) wantL1(id string, status session.Status) {
	r.t.Helper()
	for i, rep := range r.replicas {
		rec, tier, err := rep.LookupTier(context.Background(), id)
		if err != nil || rec.Status != status || tier != tiered.TierL1 {
			r.t.Errorf("replica %d: LookupTier(%q) = %s from %v, %v; want %s from l1", i+1, id, rec.Status, tier, err, status)
		}
	}
}

// awaitRevoked waits until every replica answers each id revoked from its
// L1, as a write to Redis alone makes it through tracking, and Redis says
// revoked. It polls the replicas' answers, with a deadline: tiered has no
// hook for code outside the package.
func (r *runbook) awaitRevoked(ids ...string) {
	r.t.Helper()
	deadline := time.Now().Add(time.Second)
	for i, rep := range r.replicas {
		for _, id := range ids {
			for {
				rec, tier, err := rep.LookupTier(context.Background(), id)
				if err == nil && rec.Status == session.StatusRevoked && tier == tiered.TierL1 {
					break
				}
				if time.Now().After(deadline) {
					r.t.Fatalf("replica %d: LookupTier(%q) = %s from %v, %v; want revoked from l1 within 1s", i+1, id, rec.Status, tier, err)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	for _, id := range ids {
		if st := r.redisStatus(r.lib, id); st != session.StatusRevoked {
			r.t.Errorf("Redis says %s for %s, want revoked", st, id)
		}
	}
}

// startReplica starts a gateway replica's tiered cache on env with its own
// Redis client, its connections and its subscriber named name, and waits
// until it is subscribed.
func startReplica(t *testing.T, env *testenv.Env, name string) *tiered.Cache {
	t.Helper()
	return testenv.Start(t, env.Replica(name), func(l2 *rediscache.Cache, be *backend.Client) (*tiered.Cache, error) {
		return tiered.New(tiered.Options{Redis: l2, Backend: be, SubscriberName: name})
	})
}

// TestRunbook runs every command of the README's runbook section with the real redis-cli (and
// sessionctl in-process) against a redis-server the library wrote to, with
// three tiered replicas subscribed, and checks what each prints. It checks
// that the hand revocation (one HSET, no message) reaches every replica's L1
// and that Redis says revoked, for a session and for a user. Every command
// of the runbook must have a check here and every check a command there.
func TestRunbook(t *testing.T) {
	ctx := context.Background()
	r := &runbook{t: t, cli: redistest.Binary(t, "redis-cli"), users: map[string][]string{}}
	env := testenv.New(t, testenv.Options{})
	r.srv = env.Redis
	r.admin = r.srv.Client(t)
	var err error
	if r.lib, err = rediscache.New(r.admin, rediscache.Options{}); err != nil {
		t.Fatal(err)
	}
	if r.staging, err = rediscache.New(r.admin, rediscache.Options{Prefix: "staging:"}); err != nil {
		t.Fatal(err)
	}
	r.cluster = redistest.StartCluster(t, redistest.ClusterOptions{})
	if r.clib, err = rediscache.New(r.cluster.Client(t), rediscache.Options{Stripes: 16}); err != nil {
		t.Fatal(err)
	}
	addrs := r.cluster.Addrs()
	r.curl = "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]

	// u-1: read and listed; dev-1 is then revoked by hand. u-2: revoked
	// by hand. dev-ctl and u-3: revoked with sessionctl. dev-watch*:
	// revoked while the watch commands run.
	for _, s := range [][2]string{
		{"dev-1", "u-1"}, {"dev-2", "u-1"}, {"dev-3", "u-1"},
		{"dev-4", "u-2"}, {"dev-5", "u-2"},
		{"dev-6", "u-3"}, {"dev-7", "u-3"},
		{"dev-ctl", "u-9"}, {"dev-watch", "u-9"}, {"dev-watch2", "u-9"},
	} {
		r.fill(r.lib, s[0], s[1])
	}
	for i := range 6 {
		r.fill(r.clib, "dev-c"+strconv.Itoa(i+1), "u-c"+strconv.Itoa((i+1)%2+1)) // dev-c1: u-c2
	}
	if _, err := r.clib.RevokeSession(ctx, "dev-c1"); err != nil {
		t.Fatal(err)
	}
	r.fill(r.staging, "dev-p1", "u-p")

	be := env.Backend
	for _, name := range []string{"gatewayd-1", "gatewayd-2", "gatewayd-3"} {
		r.replicas = append(r.replicas, startReplica(t, env, name))
	}
	for _, id := range []string{"dev-1", "dev-2", "dev-3", "dev-4", "dev-5"} {
		for _, rep := range r.replicas {
			if _, err := rep.Lookup(ctx, id); err != nil { // L2 hit, fills L1
				t.Fatalf("Lookup(%q): %v", id, err)
			}
		}
		r.wantL1(id, session.StatusActive)
	}
	if be.Calls() != 0 {
		t.Fatalf("the backend was called %d times; every session should come from Redis", be.Calls())
	}
	// The replicas are tiered caches, not gatewayd processes: each answers
	// inspect -gateways through a stand-in of gatewayd's debug endpoint.
	var gateways []string
	for i, rep := range r.replicas {
		gateways = append(gateways, replicaDebugServer(t, "gatewayd-"+strconv.Itoa(i+1), rep, r.lib).URL)
	}

	base := map[string]string{"<id>": "dev-1", "<uid>": "u-1"}
	sections := map[string]map[string]string{
		"Revoke a session or a user":        {"<id>": "dev-ctl", "<uid>": "u-3"},
		"Revoke by hand":                    {"<uid>": "u-2"},
		"Check the deployment":              {"<n>": "3"},
		"Redis Cluster":                     {"<id>": "dev-c1", "<uid>": "u-c2", "<k>": strconv.Itoa(r.clib.Layout().Stripe("dev-c1"))},
		"Key prefix":                        {"<id>": "dev-p1"},
		"Is a session rejected everywhere?": {"<urls>": strings.Join(gateways, ",")},
	}
	substitute := func(c runbookCmd, extra map[string]string) (string, map[string]string) {
		v := maps.Clone(base)
		maps.Copy(v, sections[c.section])
		maps.Copy(v, extra)
		now, err := r.admin.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		v["<ms>"] = strconv.FormatInt(now.UnixMilli(), 10)
		line := c.template
		for k, val := range v {
			line = strings.ReplaceAll(line, k, val)
		}
		if i := strings.Index(line, "<"); i >= 0 && strings.Contains(line[i:], ">") {
			t.Fatalf("%s:%d: placeholder left in %q", runbookPath, c.lineNo, line)
		}
		return line, v
	}

	cmds := parseRunbook(t, runbookPath)
	type check func(c runbookCmd, line string, v map[string]string)
	checks := map[string]check{
		"sessionctl doctor -expect-replicas <n>": func(c runbookCmd, line string, v map[string]string) {
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := r.ctl(dctx, line, &stdout, &stderr)
			// The test server runs without persistence: doctor says so
			// and exits 1; every other check passes (the seq and log keys
			// may not exist yet).
			if code != exitFailure || stderr.Len() > 0 {
				t.Errorf("%s: exit %d, stderr %q; want %d (no persistence) and nothing on stderr", line, code, stderr.String(), exitFailure)
			}
			for _, want := range []string{
				"ok maxmemory-policy: noeviction",
				"FAIL persistence: none",
				"ok tracking: ",
				"ok acl: user default may run",
				"ok subscribers: 3 subscriber(s) on session_invalidation, 3 expected; connections in subscriber mode (any channel): gatewayd-1, gatewayd-2, gatewayd-3\n",
			} {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("%s printed:\n%s\nwant %q", line, stdout.String(), want)
				}
			}
		},
		"redis-cli HGETALL session:<id>": func(c runbookCmd, line string, v map[string]string) {
			r.hashMatches(line, r.cliOut(line), r.lib, v["<id>"])
		},
		"redis-cli PTTL session:<id>": func(c runbookCmd, line string, v map[string]string) {
			out := r.cliOut(line)
			ms, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
			if err != nil || ms <= 0 || ms > rediscache.DefaultSessionTTL.Milliseconds() {
				t.Errorf("%s printed %q, want milliseconds in (0, %d]", line, out, rediscache.DefaultSessionTTL.Milliseconds())
			}
		},
		"sessionctl inspect <id>": func(c runbookCmd, line string, v map[string]string) {
			out := r.ctlOut(line)
			if !strings.Contains(out, "session       "+v["<id>"]+"\n") || !strings.Contains(out, "status        "+string(r.redisStatus(r.lib, v["<id>"]))) {
				t.Errorf("%s printed:\n%s\nwant the session and its status", line, out)
			}
		},
		"redis-cli SMEMBERS user:<uid>:sessions": func(c runbookCmd, line string, v map[string]string) {
			r.setMatches(line, r.cliOut(line), v["<uid>"], func(string) bool { return true })
		},
		"redis-cli GET user:<uid>:revoked_at_ms": func(c runbookCmd, line string, v map[string]string) {
			if out := r.cliOut(line); out != "\n" {
				t.Errorf("%s printed %q, want an empty line: no user-wide revocation yet", line, out)
			}
		},
		"sessionctl revoke <id>": func(c runbookCmd, line string, v map[string]string) {
			out := r.ctlOut(line)
			if !strings.Contains(out, `published on session_invalidation: {"session":"`+v["<id>"]+`","seq":`) || r.redisStatus(r.lib, v["<id>"]) != session.StatusRevoked {
				t.Errorf("%s printed:\n%s\nwant the published message and the session revoked in Redis", line, out)
			}
		},
		"sessionctl revoke-user <uid>": func(c runbookCmd, line string, v map[string]string) {
			out := r.ctlOut(line)
			for _, id := range r.users[v["<uid>"]] {
				if r.redisStatus(r.lib, id) != session.StatusRevoked || !strings.Contains(out, "  "+id+"\n") {
					t.Errorf("%s: %s not revoked in Redis or not listed:\n%s", line, id, out)
				}
			}
		},
		"redis-cli HSET session:<id> status revoked": func(c runbookCmd, line string, v map[string]string) {
			r.wantL1(v["<id>"], session.StatusActive) // the replicas hold it active
			if out := r.cliOut(line); out != "0\n" {
				t.Errorf("%s printed %q, want 0 (an existing field updated)", line, out)
			}
			// The write alone reaches every replica's L1 (tracking).
			r.awaitRevoked(v["<id>"])
		},
		"redis-cli SMEMBERS user:<uid>:sessions | xargs -I{} redis-cli HSET session:{} status revoked": func(c runbookCmd, line string, v map[string]string) {
			ids := r.users[v["<uid>"]]
			for _, id := range ids {
				r.wantL1(id, session.StatusActive)
			}
			if out := r.cliOut(line); out != strings.Repeat("0\n", len(ids)) {
				t.Errorf("%s printed %q, want one 0 per session", line, out)
			}
			r.awaitRevoked(ids...)
		},
		"sessionctl inspect <id> -gateways <urls>": func(c runbookCmd, line string, v map[string]string) {
			// After the hand revocation above, every replica rejects from L1.
			out := r.ctlOut(line)
			for i, u := range strings.Split(v["<urls>"], ",") {
				wantRows(t, out, u+" gatewayd-"+strconv.Itoa(i+1)+" reject_revoked l1 revoked")
			}
		},
		"redis-cli PUBSUB NUMSUB session_invalidation": func(c runbookCmd, line string, v map[string]string) {
			if out := r.cliOut(line); out != "session_invalidation\n3\n" {
				t.Errorf("%s printed %q, want the channel and 3", line, out)
			}
		},
		"redis-cli CLIENT LIST TYPE pubsub": func(c runbookCmd, line string, v map[string]string) {
			out := r.cliOut(line)
			for _, name := range []string{"gatewayd-1", "gatewayd-2", "gatewayd-3"} {
				if !strings.Contains(out, " name="+name+" ") {
					t.Errorf("%s printed:\n%s\nwant a connection named %s", line, out, name)
				}
			}
			if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 3 {
				t.Errorf("%s printed %d connections, want 3", line, n)
			}
		},
		"sessionctl stats": func(c runbookCmd, line string, v map[string]string) {
			out := r.ctlOut(line)
			for _, want := range []string{"channel       session_invalidation: 3 subscriber(s)", "  gatewayd-1 ", "  gatewayd-2 ", "  gatewayd-3 ", "memory        "} {
				if !strings.Contains(out, want) {
					t.Errorf("%s printed:\n%s\nwant %q", line, out, want)
				}
			}
		},
		"redis-cli SUBSCRIBE session_invalidation": func(c runbookCmd, line string, v map[string]string) {
			r.subscribeCLI(line, "dev-watch")
		},
		"sessionctl watch": func(c runbookCmd, line string, v map[string]string) {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stdout, stderr := newSyncBuffer(), newSyncBuffer()
			done := make(chan int, 1)
			go func() { done <- r.ctl(wctx, line, stdout, stderr) }()
			stderr.waitFor(t, "subscribed to session_invalidation")
			if _, err := r.lib.RevokeSession(ctx, "dev-watch2"); err != nil {
				t.Fatal(err)
			}
			stdout.waitFor(t, "  session dev-watch2  stripe 0 seq ")
			cancel()
			if code := <-done; code != exitOK {
				t.Errorf("%s: exit %d after interrupt, want 0", line, code)
			}
		},
		"redis-cli XREVRANGE session_invalidation:log + - COUNT 10": func(c runbookCmd, line string, v map[string]string) {
			out := r.cliOut(line)
			seq, _ := r.admin.Get(ctx, r.lib.Layout().SeqKey(0)).Result()
			if !strings.Contains(out, "\nsession\ndev-watch2\nseq\n"+seq+"\nat_ms\n") {
				t.Errorf("%s printed:\n%s\nwant the last revocation (dev-watch2, seq %s) first", line, out, seq)
			}
		},
		"redis-cli GET session_invalidation:seq": func(c runbookCmd, line string, v map[string]string) {
			seq, _ := r.admin.Get(ctx, r.lib.Layout().SeqKey(0)).Result()
			if out := r.cliOut(line); out != seq+"\n" || seq == "" {
				t.Errorf("%s printed %q, want %q", line, out, seq)
			}
		},
		"sessionctl inspect -cluster -stripes 16 <id>": func(c runbookCmd, line string, v map[string]string) {
			out := r.ctlOut(line)
			l := r.clib.Layout()
			for _, want := range []string{
				"key           session:{s" + v["<k>"] + "}:" + v["<id>"] + "\n",
				"user sessions user:{s" + v["<k>"] + "}:" + v["<uid>"] + ":sessions and 15 other stripes' (3)",
				l.LogKey(l.Stripe(v["<id>"])),
			} {
				if !strings.Contains(out, want) {
					t.Errorf("%s printed:\n%s\nwant %q", line, out, want)
				}
			}
		},
		"redis-cli -c HGETALL 'session:{s<k>}:<id>'": func(c runbookCmd, line string, v map[string]string) {
			r.hashMatches(line, r.cliOut(line), r.clib, v["<id>"])
		},
		"redis-cli -c SMEMBERS 'user:{s<k>}:<uid>:sessions'": func(c runbookCmd, line string, v map[string]string) {
			l := r.clib.Layout()
			r.setMatches(line, r.cliOut(line), v["<uid>"], func(id string) bool { return l.Stripe(id) == l.Stripe(v["<id>"]) })
		},
		"redis-cli -c XREVRANGE 'session_invalidation:{s<k>}:log' + - COUNT 10": func(c runbookCmd, line string, v map[string]string) {
			if out := r.cliOut(line); !strings.Contains(out, "\nsession\n"+v["<id>"]+"\nseq\n1\nat_ms\n") {
				t.Errorf("%s printed:\n%s\nwant the revocation of %s", line, out, v["<id>"])
			}
		},
		"sessionctl stats -cluster -stripes 16": func(c runbookCmd, line string, v map[string]string) {
			if out := r.ctlOut(line); !strings.Contains(out, "sessions      6 keys matching session:*\n  active      5\n  revoked     1 ") {
				t.Errorf("%s printed:\n%s\nwant 6 sessions, 5 active, over every master", line, out)
			}
		},
		"sessionctl inspect -prefix staging: <id>": func(c runbookCmd, line string, v map[string]string) {
			if out := r.ctlOut(line); !strings.Contains(out, "key           staging:session:"+v["<id>"]+"\n") || !strings.Contains(out, "status        active\n") {
				t.Errorf("%s printed:\n%s\nwant the prefixed key and active", line, out)
			}
		},
		"redis-cli HGETALL staging:session:<id>": func(c runbookCmd, line string, v map[string]string) {
			r.hashMatches(line, r.cliOut(line), r.staging, v["<id>"])
		},
		"redis-cli PUBSUB NUMSUB staging:session_invalidation": func(c runbookCmd, line string, v map[string]string) {
			if out := r.cliOut(line); out != "staging:session_invalidation\n0\n" {
				t.Errorf("%s printed %q, want the prefixed channel and 0", line, out)
			}
		},
	}
	used := map[string]bool{}
	for _, c := range cmds {
		ck, ok := checks[c.template]
		if !ok {
			t.Fatalf("%s:%d: the test has no check for %q", runbookPath, c.lineNo, c.template)
		}
		used[c.template] = true
		line, v := substitute(c, nil)
		t.Logf("%s:%d [%s] %s", runbookPath, c.lineNo, c.section, line)
		ck(c, line, v)
	}
	for template := range checks {
		if !used[template] {
			t.Errorf("%s no longer has %q; remove its check", runbookPath, template)
		}
	}
}

// subscribeCLI runs a redis-cli SUBSCRIBE line until it has printed the
// message of a revocation of id made through the library while it listens.
func (r *runbook) subscribeCLI(line, id string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	script := "exec " + r.cli + " -p " + strconv.Itoa(r.srv.Port) + strings.TrimPrefix(line, "redis-cli")
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	out := newSyncBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	out.waitFor(r.t, "subscribe\nsession_invalidation\n1\n")
	m, err := r.lib.RevokeSession(ctx, id)
	if err != nil {
		r.t.Fatal(err)
	}
	payload, err := m.MarshalJSON()
	if err != nil {
		r.t.Fatal(err)
	}
	out.waitFor(r.t, "message\nsession_invalidation\n"+string(payload)+"\n")
}

// sameRecord compares two records field by field, RevokedAtMS by value.
func sameRecord(a, b session.Record) bool {
	if (a.RevokedAtMS == nil) != (b.RevokedAtMS == nil) || a.RevokedAtMS != nil && *a.RevokedAtMS != *b.RevokedAtMS {
		return false
	}
	a.RevokedAtMS, b.RevokedAtMS = nil, nil
	return a == b
}
