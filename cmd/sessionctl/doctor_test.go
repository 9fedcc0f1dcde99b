package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
)

// safeConfig is a redis.conf a deployment can rely on: nothing evicted,
// every write in the append-only file.
var safeConfig = []string{"maxmemory-policy noeviction", "appendonly yes"}

// doctorLines runs doctor and returns its exit status and its output lines
// keyed by check name, failing the test on anything on stderr.
func doctorLines(t *testing.T, args ...string) (int, map[string]string) {
	t.Helper()
	code, stdout, stderr := runCmd(t, append([]string{"doctor"}, args...)...)
	if stderr != "" {
		t.Errorf("doctor %v: stderr %q, want nothing", args, stderr)
	}
	lines := map[string]string{}
	for line := range strings.Lines(stdout) {
		status, rest, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		name, _, _ := strings.Cut(rest, ": ")
		if _, dup := lines[name]; dup || (status != checkOK && status != checkWarn && status != checkFail) {
			t.Errorf("doctor %v printed an unexpected line %q:\n%s", args, line, stdout)
		}
		lines[name] = line
	}
	return code, lines
}

// revokeOnce writes one revocation through the library, which creates the
// stripe's seq and log keys.
func revokeOnce(t *testing.T, rdb *redis.Client, opts rediscache.Options) {
	t.Helper()
	c, err := rediscache.New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevokeSession(context.Background(), "dev-doctor"); err != nil {
		t.Fatalf("RevokeSession: %v", err)
	}
}

// TestDoctor runs doctor against redis-servers configured safely and
// unsafely, and checks the exit status and the line of each check: "ok",
// "WARN" or "FAIL" with the reason and the fix.
func TestDoctor(t *testing.T) {
	const user = "user doctor on >doctor-pw "
	tests := []struct {
		name     string
		opts     redistest.Options
		user     string            // connect as "doctor" with this ACL rule list; "" for the default user
		args     []string          // beyond -redis
		revoke   bool              // write a revocation first (seq and log keys)
		want     map[string]string // check name -> start of its line
		detail   map[string]string // check name -> more text its line contains
		code     int
		allOKBut []string // checks allowed to be other than ok
	}{
		{
			name: "safe", opts: redistest.Options{Config: safeConfig}, revoke: true, code: exitOK,
			want: map[string]string{
				"maxmemory-policy": "ok maxmemory-policy: noeviction",
				"persistence":      "ok persistence: AOF on (appendonly yes)",
				"tracking":         "ok tracking: CLIENT TRACKING accepted",
				"acl":              "ok acl: user default may run the 29 commands of the gateway role",
				"seq/log keys":     "ok seq/log keys: the seq and log keys of all 1 stripe(s) exist",
			},
		},
		{
			name: "safe, fresh", opts: redistest.Options{Config: safeConfig}, code: exitOK,
			want: map[string]string{
				"seq/log keys": "WARN seq/log keys: 2 of 2 missing (session_invalidation:seq session_invalidation:log): normal on a Redis that has seen no revocation",
			},
			detail:   map[string]string{"seq/log keys": "replicas drop their L1 active entries at their next resync"},
			allOKBut: []string{"seq/log keys"},
		},
		{
			name: "RDB snapshots", opts: redistest.Options{Config: []string{"save 3600 1", "appendonly no"}}, revoke: true, code: exitOK,
			want: map[string]string{"persistence": `ok persistence: RDB snapshots (save "3600 1"; appendonly no)`},
		},
		{
			name: "allkeys-lru", opts: redistest.Options{Config: []string{"maxmemory-policy allkeys-lru", "appendonly yes"}}, revoke: true, code: exitFailure,
			want:     map[string]string{"maxmemory-policy": "FAIL maxmemory-policy: allkeys-lru: a full Redis evicts keys"},
			detail:   map[string]string{"maxmemory-policy": "fix: CONFIG SET maxmemory-policy noeviction"},
			allOKBut: []string{"maxmemory-policy"},
		},
		{
			name: "volatile-ttl", opts: redistest.Options{Config: []string{"maxmemory-policy volatile-ttl", "appendonly yes"}}, revoke: true, code: exitFailure,
			want:     map[string]string{"maxmemory-policy": "FAIL maxmemory-policy: volatile-ttl: "},
			detail:   map[string]string{"maxmemory-policy": "every key the cache writes carries a TTL, so volatile-* evicts session records, seq and log keys"},
			allOKBut: []string{"maxmemory-policy"},
		},
		{
			name: "no persistence", opts: redistest.Options{}, revoke: true, code: exitFailure,
			want:     map[string]string{"persistence": `FAIL persistence: none (appendonly no, save ""): a restart loses every session record and every revocation made only in Redis`},
			detail:   map[string]string{"persistence": "fix: CONFIG SET appendonly yes"},
			allOKBut: []string{"persistence"},
		},
		{
			name: "ACL without tracking, DEL and HEXISTS", opts: redistest.Options{Config: safeConfig}, revoke: true, code: exitFailure,
			user: "resetkeys ~session:* ~user:* ~session_invalidation:* resetchannels &session_invalidation -@all " +
				"+ping +client|setname +client|id +hgetall +evalsha +eval +get +xrevrange +xrange +subscribe +wait +time +hget +hset +hdel " +
				"+pttl +pexpire +sadd +smembers +scard +sscan +set +incr +xadd +publish +exists +config|get +acl|whoami +acl|dryrun",
			want: map[string]string{
				"acl":      "FAIL acl: user doctor lacks what the gateway role needs (ACL DRYRUN): commands CLIENT TRACKING, HEXISTS, DEL; fix: add to the user's ACL: +client|tracking +hexists +del ",
				"tracking": "FAIL tracking: CLIENT TRACKING refused (the Redis user lacks a permission: NOPERM",
			},
			detail:   map[string]string{"tracking": "replicas then see only the library's revocations, not hand edits, DEL, expiry, eviction or flushes"},
			allOKBut: []string{"acl", "tracking"},
		},
		{
			name: "ACL on other keys", opts: redistest.Options{Config: safeConfig}, args: []string{"-prefix", "staging:"}, code: exitFailure,
			user: "resetkeys ~session:* ~user:* ~session_invalidation:* resetchannels &session_invalidation +@all",
			want: map[string]string{
				"acl": "FAIL acl: user doctor lacks what the gateway role needs (ACL DRYRUN): keys staging:session:doctor-probe, ",
			},
			detail: map[string]string{
				"acl":          "; channel staging:session_invalidation; fix: add to the user's ACL: ~staging:session:* ~staging:user:* ~staging:session_invalidation:* &staging:session_invalidation ",
				"seq/log keys": "cannot check: EXISTS failed: the Redis user lacks a permission",
			},
			allOKBut: []string{"acl", "seq/log keys"},
		},
		{
			name: "ACL without DRYRUN or CONFIG", opts: redistest.Options{Config: safeConfig}, revoke: true, code: exitFailure,
			user: "~* &* +@all -acl|dryrun -config",
			want: map[string]string{
				"acl":              "FAIL acl: cannot check: ACL DRYRUN refused (the Redis user lacks a permission: NOPERM",
				"maxmemory-policy": "FAIL maxmemory-policy: unknown (CONFIG GET refused: the Redis user lacks a permission: NOPERM",
				"persistence":      "FAIL persistence: unknown (CONFIG GET refused",
			},
			detail: map[string]string{
				"acl":              "fix: grant the user +acl|dryrun",
				"maxmemory-policy": "fix: grant the user +config|get",
			},
			allOKBut: []string{"acl", "maxmemory-policy", "persistence"},
		},
		{
			name: "another user's ACL", opts: redistest.Options{Config: safeConfig}, revoke: true, code: exitFailure,
			args:     []string{"-acl-user", "nobody"},
			want:     map[string]string{"acl": `FAIL acl: user "nobody" does not exist`},
			allOKBut: []string{"acl"},
		},
		{
			name: "operator role", opts: redistest.Options{Config: safeConfig}, revoke: true, code: exitFailure,
			user:     "~* &* +@all -scan -memory",
			args:     []string{"-role", "operator"},
			want:     map[string]string{"acl": "FAIL acl: user doctor lacks what the operator role needs (ACL DRYRUN): commands SCAN, MEMORY USAGE; fix: add to the user's ACL: +scan +memory|usage "},
			allOKBut: []string{"acl"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if tt.user != "" {
				opts.ACLFile = user + tt.user + "\n"
			}
			srv := redistest.Start(t, opts)
			if tt.revoke {
				revokeOnce(t, srv.Client(t), rediscache.Options{})
			}
			url := "redis://" + srv.Addr
			if tt.user != "" {
				url = "redis://doctor:doctor-pw@" + srv.Addr
			}
			code, lines := doctorLines(t, append([]string{"-redis", url}, tt.args...)...)
			if code != tt.code {
				t.Errorf("doctor: exit %d, want %d\n%s", code, tt.code, joinLines(lines))
			}
			for _, name := range []string{"maxmemory-policy", "persistence", "tracking", "acl", "seq/log keys"} {
				line, ok := lines[name]
				switch {
				case !ok:
					t.Errorf("doctor printed no %q line:\n%s", name, joinLines(lines))
				case tt.want[name] != "" && !strings.HasPrefix(line, tt.want[name]):
					t.Errorf("doctor's %s line is\n%q\nwant it to start\n%q", name, line, tt.want[name])
				case tt.want[name] == "" && !strings.HasPrefix(line, "ok ") && !slices.Contains(tt.allOKBut, name):
					t.Errorf("doctor's %s line is %q, want ok", name, line)
				}
				if d := tt.detail[name]; d != "" && !strings.Contains(line, d) {
					t.Errorf("doctor's %s line is\n%q\nwant it to contain\n%q", name, line, d)
				}
			}
			if _, ok := lines["subscribers"]; ok {
				t.Errorf("doctor without -expect-replicas checked the subscribers: %q", lines["subscribers"])
			}
		})
	}
}

func joinLines(lines map[string]string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
	}
	return b.String()
}

// TestDoctorSubscribers checks -expect-replicas against the channel's
// subscribers, named from CLIENT LIST.
func TestDoctorSubscribers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Config: safeConfig})
	revokeOnce(t, srv.Client(t), rediscache.Options{})
	gw := srv.ClientWith(t, &redis.Options{ClientName: "gw-1"})
	rawSubscriber(t, gw, "session_invalidation")
	url := "redis://" + srv.Addr

	tests := []struct {
		expect string
		code   int
		want   string
	}{
		{"1", exitOK, "ok subscribers: 1 subscriber(s) on session_invalidation, 1 expected; connections in subscriber mode (any channel): gw-1"},
		{"2", exitFailure, "FAIL subscribers: 1 subscriber(s) on session_invalidation, 2 expected (-expect-replicas): a replica that is not subscribed hears no revocation"},
	}
	for _, tt := range tests {
		t.Run("expect "+tt.expect, func(t *testing.T) {
			code, lines := doctorLines(t, "-redis", url, "-expect-replicas", tt.expect)
			line := lines["subscribers"]
			if code != tt.code || !strings.HasPrefix(line, tt.want) {
				t.Errorf("doctor -expect-replicas %s: exit %d, subscribers line\n%q\nwant %d and a line starting\n%q", tt.expect, code, line, tt.code, tt.want)
			}
			if tt.code == exitFailure && (!strings.Contains(line, "connections in subscriber mode (any channel): gw-1;") || !strings.Contains(line, "fix: ")) {
				t.Errorf("doctor -expect-replicas %s: %q does not name gw-1 and give a fix", tt.expect, line)
			}
		})
	}
}

// TestDoctorDoesNotCountWatchers checks that a running sessionctl watch is
// not counted as a replica by -expect-replicas.
func TestDoctorDoesNotCountWatchers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Config: safeConfig})
	revokeOnce(t, srv.Client(t), rediscache.Options{})
	url := "redis://" + srv.Addr
	ctx, cancel := context.WithCancel(context.Background())
	_, wait := startWatch(t, ctx, "-redis", url)
	defer func() {
		cancel()
		wait()
	}()
	code, lines := doctorLines(t, "-redis", url, "-expect-replicas", "1")
	want := "FAIL subscribers: 0 subscriber(s) on session_invalidation (and 1 sessionctl watch, not counted), 1 expected (-expect-replicas)"
	if line := lines["subscribers"]; code != exitFailure || !strings.HasPrefix(line, want) {
		t.Errorf("doctor -expect-replicas 1 with only a watch: exit %d, subscribers line\n%q\nwant %d and a line starting\n%q", code, line, exitFailure, want)
	}
}

// TestDoctorJSON checks that -json prints the checks as a JSON array, the
// same as the text lines.
func TestDoctorJSON(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	code, stdout, stderr := runCmd(t, "doctor", "-json", "-redis", "redis://"+srv.Addr, "-expect-replicas", "1")
	var checks []doctorCheck
	if err := json.Unmarshal([]byte(stdout), &checks); err != nil {
		t.Fatalf("doctor -json output does not parse: %v\n%s", err, stdout)
	}
	if code != exitFailure || stderr != "" {
		t.Errorf("doctor -json: exit %d, stderr %q; want %d (no persistence, no subscriber) and nothing on stderr", code, stderr, exitFailure)
	}
	want := []struct{ name, status string }{
		{"maxmemory-policy", checkOK}, {"persistence", checkFail}, {"tracking", checkOK},
		{"acl", checkOK}, {"seq/log keys", checkWarn}, {"subscribers", checkFail},
	}
	if len(checks) != len(want) {
		t.Fatalf("doctor -json printed %d checks, want %d: %+v", len(checks), len(want), checks)
	}
	for i, w := range want {
		if checks[i].Name != w.name || checks[i].Status != w.status || checks[i].Detail == "" || (w.status == checkFail) != (checks[i].Fix != "") {
			t.Errorf("check %d = %+v, want %s %s with a detail, and a fix only if it failed", i, checks[i], w.status, w.name)
		}
	}
}

// TestDoctorBadUsage checks that bad flags are exit status 2 before any
// connection.
func TestDoctorBadUsage(t *testing.T) {
	l := listenCounting(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-role", "admin"}, "-role must be gateway or operator"},
		{[]string{"-expect-replicas", "-1"}, "-expect-replicas must be >= 0"},
		{[]string{"extra"}, "doctor takes no arguments"},
		{[]string{"-acl-user", "a b"}, "-acl-user must not contain spaces"},
		{[]string{"-stripes", "0", "-prefix", "a*"}, "prefix has a disallowed byte"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(t, append([]string{"doctor", "-redis", l.url()}, tt.args...)...)
		if code != exitUsage || stdout != "" || !strings.HasPrefix(stderr, "sessionctl doctor: ") || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("doctor %v: exit %d, stdout %q, stderr %q; want %d and one line with %q", tt.args, code, stdout, stderr, exitUsage, tt.want)
		}
	}
	if n := l.conns.Load(); n != 0 {
		t.Errorf("doctor opened %d connections for bad usage, want 0", n)
	}
}

// TestDoctorHelp checks that doctor -h names every check, its flags and
// its exit statuses.
func TestDoctorHelp(t *testing.T) {
	code, _, stderr := runCmd(t, "doctor", "-h")
	for _, want := range []string{"maxmemory-policy", "persistence", "tracking", "acl", "seq/log keys", "subscribers",
		"-expect-replicas", "-role", "-acl-user", "-redis", "-cluster", "-sentinel-master", "-prefix", "-stripes", "-json",
		"0  every check passed", "1  a check failed", "2  bad usage"} {
		if code != exitOK || !strings.Contains(stderr, want) {
			t.Errorf("doctor -h (exit %d) does not mention %q:\n%s", code, want, stderr)
		}
	}
}
