package main

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// gatewaySubscriber subscribes a connection to channel as a gateway
// replica would, so that a revocation counts as heard (exit status 0, not
// 5): any subscriber not named sessionctl-watch counts as a gateway.
func gatewaySubscriber(t *testing.T, rdb redis.UniversalClient, channel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps := rdb.Subscribe(ctx, channel)
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
}

// TestSplitArgs checks the rule that sorts a command line into flags and
// ids: a '-' argument is a flag when it names one, else an id when it is a
// valid one; "--" ends the flags.
func TestSplitArgs(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("revoke", flag.ContinueOnError)
		fs.Bool("json", false, "")
		fs.String("redis", "", "")
		fs.Duration("timeout", time.Second, "")
		return fs
	}
	tests := []struct {
		name      string
		args      []string
		takesIDs  bool
		wantFlags []string
		wantPos   []string
	}{
		{"plain id", []string{"dev-1"}, true, nil, []string{"dev-1"}},
		{"id starting with -", []string{"-LNc_te8x"}, true, nil, []string{"-LNc_te8x"}},
		{"flags around the id", []string{"-json", "-LNc_te8x", "-redis", "redis://h:1"}, true,
			[]string{"-json", "-redis", "redis://h:1"}, []string{"-LNc_te8x"}},
		{"--flag and -flag=value", []string{"--json", "-timeout=1s", "-abc"}, true, []string{"--json", "-timeout=1s"}, []string{"-abc"}},
		{"a flag's value that starts with -", []string{"-redis", "-x", "dev-1"}, true, []string{"-redis", "-x"}, []string{"dev-1"}},
		{"double dash ends the flags", []string{"-json", "--", "-json", "-redis"}, true, []string{"-json"}, []string{"-json", "-redis"}},
		{"help", []string{"-h", "-help"}, true, []string{"-h", "-help"}, nil},
		{"not an id: left to the flag parser", []string{"-no*pe"}, true, []string{"-no*pe"}, nil},
		{"not an id: =", []string{"-nope=1"}, true, []string{"-nope=1"}, nil},
		{"no ids: an unknown flag stays a flag", []string{"-nope"}, false, []string{"-nope"}, nil},
		{"lone dash", []string{"-"}, true, nil, []string{"-"}},
		{"value missing at the end", []string{"-redis"}, true, []string{"-redis"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, pos := splitArgs(newFS(), tt.args, tt.takesIDs)
			if !slices.Equal(flags, tt.wantFlags) || !slices.Equal(pos, tt.wantPos) {
				t.Errorf("splitArgs(%q, %v) = %q, %q; want %q, %q", tt.args, tt.takesIDs, flags, pos, tt.wantFlags, tt.wantPos)
			}
		})
	}
}

// TestIDsStartingWithDash revokes and inspects backend-style ids that start
// with '-', typed without quoting or "--", with flags before and after.
func TestIDsStartingWithDash(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	gatewaySubscriber(t, e.rdb, session.DefaultChannel)
	fillActive(t, e.cache, "-LNc_te8xQ", "-user-1")
	fillActive(t, e.cache, "-json", "u-2")

	tests := []struct {
		name    string
		args    []string
		revoked string // the session revoked in Redis, "" for none
		stdout  string
	}{
		{"revoke", []string{"revoke", "-redis", e.url, "-LNc_te8xQ"}, "-LNc_te8xQ", "revoked session -LNc_te8xQ\n"},
		{"revoke, flags after", []string{"revoke", "-LNc_te8xQ", "-redis", e.url}, "-LNc_te8xQ", "session -LNc_te8xQ was revoked and announced already"},
		{"inspect, -json after", []string{"inspect", "-LNc_te8xQ", "-redis", e.url, "-json"}, "", `"session": "-LNc_te8xQ"`},
		{"an id that is a flag's name, after --", []string{"revoke", "-redis", e.url, "--", "-json"}, "-json", "revoked session -json\n"},
		{"revoke-user", []string{"revoke-user", "-redis", e.url, "-user-1"}, "-LNc_te8xQ", "revoked user -user-1: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tt.args...)
			if code != exitOK || !strings.Contains(stdout, tt.stdout) {
				t.Fatalf("%q: exit %d, stdout %q, stderr %q; want 0 and %q", tt.args, code, stdout, stderr, tt.stdout)
			}
			if tt.revoked == "" {
				return
			}
			if rec, err := e.cache.Get(ctx, tt.revoked); err != nil || rec.Status != session.StatusRevoked {
				t.Errorf("after %q: Get(%q) = %+v, %v; want revoked", tt.args, tt.revoked, rec, err)
			}
		})
	}

	t.Run("a flag typo next to an id", func(t *testing.T) {
		code, _, stderr := runCmd(t, "revoke", "-redis", e.url, "-jsno", "dev-1")
		if code != exitUsage || !strings.Contains(stderr, `want exactly one session id, got 2 arguments ("-jsno" is taken as an id: there is no flag -jsno)`) {
			t.Errorf("revoke -jsno dev-1: exit %d, stderr %q; want %d and the typo named", code, stderr, exitUsage)
		}
	})
	t.Run("help documents the rule", func(t *testing.T) {
		for _, name := range []string{"inspect", "revoke", "revoke-user"} {
			_, _, stderr := runCmd(t, name, "-h")
			if !strings.Contains(stderr, "backend ids such as -LNc_te8x need no quoting") || !strings.Contains(stderr, "After --, every argument is an id") {
				t.Errorf("%s -h does not document ids starting with '-':\n%s", name, stderr)
			}
		}
	})
}

// TestFlagErrorsAreOneLine checks that a bad flag or value is one line on
// stderr (not the usage), exit status 2, and a JSON object with -json.
func TestFlagErrorsAreOneLine(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"watch", "-count", "x"}, `sessionctl watch: invalid value "x" for flag -count: parse error; sessionctl help watch lists the flags`},
		{[]string{"stats", "-nope"}, "sessionctl stats: flag provided but not defined: -nope;"},
		{[]string{"revoke", "dev-1", "-timeout"}, "sessionctl revoke: flag needs an argument: -timeout;"},
		{[]string{"inspect", "-json=maybe", "dev-1"}, `sessionctl inspect: invalid boolean value "maybe" for -json`},
		{[]string{"sign", "-nope"}, "sessionctl sign: flag provided but not defined: -nope;"},
		{[]string{"demo", "-replicas", "x"}, `sessionctl demo: invalid value "x" for flag -replicas`},
		{[]string{"backend", "extra"}, `sessionctl backend: backend takes no arguments (got "extra")`},
		{[]string{"watch", "extra"}, `sessionctl watch: watch takes no arguments (got "extra")`},
		{[]string{"nope"}, `sessionctl: unknown command "nope"; sessionctl help lists the commands`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tt.args...)
			if code != exitUsage || !strings.HasPrefix(stderr, tt.want) || strings.Count(stderr, "\n") != 1 || stdout != "" {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and one line starting %q", tt.args, code, stdout, stderr, exitUsage, tt.want)
			}
		})
	}
}

// TestJSONErrors checks that with -json every command's error is one JSON
// object on stdout, {"command","error","exit"}, and nothing on stderr;
// commands whose output is not JSON say so.
func TestJSONErrors(t *testing.T) {
	closed := closedURL(t)
	tests := []struct {
		name string
		args []string
		code int
		want string // in the error
	}{
		{"inspect bad id", []string{"inspect", "-json", "dev*1"}, exitUsage, "invalid identifier"},
		{"inspect unreachable", []string{"inspect", "-json", "-redis", closed, "dev-1"}, exitFailure, "Redis unreachable"},
		{"revoke unreachable", []string{"revoke", "-redis", closed, "dev-1", "-json"}, exitFailure, "Redis unreachable"},
		{"revoke-user unreachable", []string{"revoke-user", "-json", "-redis", closed, "u-1"}, exitFailure, "Redis unreachable"},
		{"watch bad count", []string{"watch", "-json", "-count", "x"}, exitUsage, `invalid value "x" for flag -count`},
		{"stats unreachable", []string{"stats", "-json", "-redis", closed}, exitFailure, "Redis unreachable"},
		{"doctor unreachable", []string{"doctor", "-json", "-redis", closed}, exitFailure, "Redis unreachable"},
		{"sign no key", []string{"sign", "-json", "-url", "http://127.0.0.1:1/"}, exitUsage, "-key is required"},
		{"sign unreachable", []string{"sign", "-json", "-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "-session", "dev-1", "-url", "http://" + strings.TrimPrefix(closed, "redis://") + "/"},
			exitFailure, "connection refused"},
		{"backend bad gateway", []string{"backend", "-json", "-gateways", "ftp://x"}, exitUsage, "want an http:// or https:// base URL"},
		{"demo bad replicas", []string{"demo", "-json", "-replicas", "0"}, exitUsage, "-replicas 0: want 1 to"},
		{"help", []string{"help", "-json"}, exitUsage, "help prints text: -json does not apply"},
		{"unknown command", []string{"nope", "-json"}, exitUsage, `unknown command "nope"`},
		{"flag parse error before -json", []string{"revoke", "-nope=1", "--json", "dev-1"}, exitUsage, "flag provided but not defined: -nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // the unreachable ones wait for go-redis's dial retries
			code, stdout, stderr := runCmd(t, tt.args...)
			var got jsonError
			dec := json.NewDecoder(strings.NewReader(stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil || dec.More() {
				t.Fatalf("%q: stdout %q is not one JSON error object (%v); stderr %q", tt.args, stdout, err, stderr)
			}
			if code != tt.code || got.Exit != tt.code || got.Command != tt.args[0] && tt.name != "unknown command" || !strings.Contains(got.Error, tt.want) {
				t.Errorf("%q: exit %d, %+v; want exit %d in both and an error containing %q", tt.args, code, got, tt.code, tt.want)
			}
			if stderr != "" {
				t.Errorf("%q: stderr %q, want nothing (the error is on stdout)", tt.args, stderr)
			}
		})
	}
}

// TestHelpCommand checks "help <command>" (the command's -h on stdout),
// "help" (the usage), and an unknown command.
func TestHelpCommand(t *testing.T) {
	for _, name := range commandNames() {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, "help", name)
			if code != exitOK || !strings.HasPrefix(stdout, "usage: sessionctl "+name) || stderr != "" {
				t.Errorf("help %s: exit %d, stderr %q, stdout:\n%s\nwant 0 and its usage on stdout", name, code, stderr, stdout)
			}
			if name != "help" && !strings.Contains(stdout, "exit status:") {
				t.Errorf("help %s does not document its exit statuses:\n%s", name, stdout)
			}
		})
	}
	code, stdout, _ := runCmd(t, "help")
	if code != exitOK || !strings.Contains(stdout, "  revoke-user  ") || !strings.Contains(stdout, "exit status:\n  0  success\n") {
		t.Errorf("help: exit %d, stdout:\n%s\nwant 0, the commands and the exit statuses", code, stdout)
	}
	code, _, stderr := runCmd(t, "help", "nope")
	if code != exitUsage || stderr != "sessionctl help: unknown command \"nope\"; sessionctl help lists the commands\n" {
		t.Errorf("help nope: exit %d, stderr %q; want %d and one line", code, stderr, exitUsage)
	}
}

// TestHelpHidesThePassword checks that -h with REDIS_URL set shows the
// default URL with its password redacted, for every command with -redis.
func TestHelpHidesThePassword(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://admin:s3cret-pw@redis.internal:6380/2")
	for _, name := range []string{"inspect", "revoke", "revoke-user", "watch", "stats", "doctor"} {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, name, "-h")
			if code != exitOK || strings.Contains(stderr+stdout, "s3cret-pw") {
				t.Errorf("%s -h: exit %d; it prints the password:\n%s", name, code, stderr)
			}
			if !strings.Contains(stderr, `(default "redis://admin:xxxxx@redis.internal:6380/2")`) {
				t.Errorf("%s -h does not show the redacted default:\n%s", name, stderr)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"redis://127.0.0.1:6379", "redis://127.0.0.1:6379"},
		{"redis://user@h:1", "redis://user@h:1"},
		{"redis://:pw@h:1", "redis://:xxxxx@h:1"},
		{"rediss://op:pw@h:1/0?addr=h2:1", "rediss://op:xxxxx@h:1/0?addr=h2:1"},
		{"redis://op:p%zz@h:1", "(not shown: it may hold a password)"},
		{"plain text", "plain text"},
	}
	for _, tt := range tests {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestNotARedisServer checks that a port that answers HTTP is reported as
// not a Redis server, on one line, by every command that connects.
func TestNotARedisServer(t *testing.T) {
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	addr := strings.TrimPrefix(web.URL, "http://")
	for _, cmd := range [][]string{{"inspect", "dev-1"}, {"revoke", "dev-1"}, {"revoke-user", "u-1"}, {"watch"}, {"stats"}, {"doctor"}} {
		t.Run(cmd[0], func(t *testing.T) {
			args := append([]string{cmd[0], "-redis", "redis://" + addr}, cmd[1:]...)
			code, stdout, stderr := runCmd(t, args...)
			want := "sessionctl " + cmd[0] + ": not a Redis server at " + addr + ": it answered \"HTTP/1.1 400 Bad Request"
			if code != exitFailure || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 || stdout != "" {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and one line starting %q", args, code, stdout, stderr, exitFailure, want)
			}
		})
	}
}

// TestLibraryErrorsNameTheTypedID checks that an error from the library,
// which shortens ids, names the id the operator typed in full.
func TestLibraryErrorsNameTheTypedID(t *testing.T) {
	tests := []struct {
		msg  string
		ids  []string
		want string
	}{
		{"rediscache: revoke session dev-…: NOPERM x", []string{"dev-abcdef123"}, "rediscache: revoke session dev-abcdef123: NOPERM x"},
		{"Redis unreachable: rediscache: get dev-…: dial tcp", []string{"dev-abcdef123"}, "Redis unreachable: rediscache: get dev-abcdef123: dial tcp"},
		{"rediscache: revoke user …: x", []string{"u-7"}, "rediscache: revoke user u-7: x"},
		{"rediscache: revoke user u-7: session dev-…: x", []string{"u-7"}, "rediscache: revoke user u-7: session dev-…: x"}, // another id stays short
		{"rediscache: get dev-…: x", []string{"dev 1"}, "rediscache: get dev-…: x"},                                         // not an id: never echoed
	}
	for _, tt := range tests {
		if got := unredact(tt.msg, tt.ids); got != tt.want {
			t.Errorf("unredact(%q, %q) = %q, want %q", tt.msg, tt.ids, got, tt.want)
		}
	}
}
