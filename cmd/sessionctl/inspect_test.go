package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/rediscache"
)

// TestInspect runs inspect against sessions the library wrote: active,
// revoked, a tombstone, a missing one, a corrupt hash, and a user with a
// recent user-wide revocation.
func TestInspect(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	for _, id := range []string{"dev-a", "dev-b", "dev-c"} {
		fillActive(t, e.cache, id, "u-7")
	}
	fillActive(t, e.cache, "dev-x", "u-8")
	revB, err := e.cache.RevokeSession(ctx, "dev-b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cache.RevokeSession(ctx, "ghost-1"); err != nil {
		t.Fatal(err)
	}
	e.rdb.SAdd(ctx, "user:u-7:sessions", "dev-gone")
	e.rdb.HSet(ctx, "session:bad-1", "status", "maybe")
	e.rdb.HSet(ctx, "session:bad-2", "status", "active", "user_id", "u-9", "client_public_key", "short")
	userRev, _, err := e.cache.RevokeUser(ctx, "u-8")
	if err != nil {
		t.Fatal(err)
	}
	devX, err := e.cache.Get(ctx, "dev-x")
	if err != nil || devX.RevokedAtMS == nil {
		t.Fatalf("Get(%q) = %+v, %v; want revoked", "dev-x", devX, err)
	}
	// The marker is set first and the user message stamped when it is
	// published, after the marks: its at_ms may be a few ms later.
	marker, err := e.rdb.Get(ctx, "user:u-8:revoked_at_ms").Int64()
	if err != nil || marker > userRev.AtMS {
		t.Fatalf("user:u-8:revoked_at_ms = %d, %v; want the marker time, at most the message's at_ms %d", marker, err, userRev.AtMS)
	}

	tests := []struct {
		name     string
		id       string
		wantCode int
		want     []string // in stdout
		wantErr  string   // in stderr
	}{
		{"active", "dev-a", exitOK, []string{
			"session       dev-a\n",
			"key           session:dev-a\n",
			"stripe        0 (log session_invalidation:log, seq session_invalidation:seq)",
			"status        active\n",
			"user          u-7\n",
			"public key    " + testKey(5) + "\n",
			"ttl           2", // 23h59m59s or 24h0m0s
			"user sessions user:u-7:sessions (4)\n",
			"dev-a                                    active  (this session)",
			"dev-b                                    revoked\n",
			"dev-c                                    active\n",
			"dev-gone                                 missing  (indexed, no record",
			"user revoked  no recent user-wide revocation (user:u-7:revoked_at_ms absent)",
		}, ""},
		{"revoked", "dev-b", exitOK, []string{
			"status        revoked since " + fmtMS(revB.AtMS) + " (",
			"dev-b                                    revoked  (this session)",
		}, ""},
		{"tombstone", "ghost-1", exitOK, []string{
			"status        revoked since",
			"(tombstone: revoked before any tier held its data)",
		}, ""},
		{"user revoked", "dev-x", exitOK, []string{
			"status        revoked since " + fmtMS(*devX.RevokedAtMS),
			"user revoked  " + fmtMS(marker) + " (",
			"user:u-8:revoked_at_ms",
		}, ""},
		{"missing", "nope-1", exitFailure, []string{"status        not found"}, "session nope-1 not found in Redis"},
		{"hand-typed status", "bad-1", exitOK, []string{"status        revoked", "hand-edited   status is neither", `  status      "maybe"`, "ttl           NONE"},
			"not in the documented form"},
		{"invalid", "bad-2", exitFailure, []string{"status        INVALID: ", `  user_id     "u-9"`, "ttl           NONE"}, "fails validation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, "inspect", "-redis", e.url, tt.id)
			if code != tt.wantCode {
				t.Errorf("inspect %s: exit %d, want %d; stderr %q", tt.id, code, tt.wantCode, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("inspect %s: stdout does not contain %q:\n%s", tt.id, w, stdout)
				}
			}
			if tt.wantErr == "" && stderr != "" || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("inspect %s: stderr %q, want %q", tt.id, stderr, tt.wantErr)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "inspect", "dev-b", "-json", "-redis", e.url)
		if code != exitOK {
			t.Fatalf("inspect -json: exit %d, stderr %q", code, stderr)
		}
		var rep inspectReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("inspect -json output does not parse: %v\n%s", err, stdout)
		}
		if !rep.Found || rep.Status != "revoked" || rep.RevokedAtMS == nil || *rep.RevokedAtMS != revB.AtMS {
			t.Errorf("inspect -json = found %v status %q revoked_at_ms %v, want true, revoked, %d", rep.Found, rep.Status, rep.RevokedAtMS, revB.AtMS)
		}
		at, err := time.Parse(time.RFC3339, rep.RevokedAt)
		if err != nil || at.UnixMilli() != revB.AtMS || !strings.HasSuffix(rep.RevokedAt, "Z") {
			t.Errorf("revoked_at = %q, want RFC 3339 UTC of %d", rep.RevokedAt, revB.AtMS)
		}
		if rep.RevokedAgeMS == nil || *rep.RevokedAgeMS < 0 || *rep.RevokedAgeMS > 60_000 {
			t.Errorf("revoked_age_ms = %v, want a small non-negative age", rep.RevokedAgeMS)
		}
		want := map[string]string{"dev-a": "active", "dev-b": "revoked", "dev-c": "active", "dev-gone": "missing"}
		if len(rep.UserSessions) != len(want) {
			t.Errorf("user_sessions = %v, want %v", rep.UserSessions, want)
		}
		for _, us := range rep.UserSessions {
			if want[us.Session] != us.Status {
				t.Errorf("user session %q status %q, want %q", us.Session, us.Status, want[us.Session])
			}
		}
		if rep.TTLMS == nil || *rep.TTLMS <= 0 || time.Duration(*rep.TTLMS)*time.Millisecond > rediscache.DefaultSessionTTL {
			t.Errorf("ttl_ms = %v, want in (0, %v]", rep.TTLMS, rediscache.DefaultSessionTTL)
		}
	})

	t.Run("id starting with a dash after --", func(t *testing.T) {
		fillActive(t, e.cache, "-dash", "u-9")
		code, stdout, stderr := runCmd(t, "inspect", "-redis", e.url, "--", "-dash")
		if code != exitOK || !strings.Contains(stdout, "session       -dash\n") {
			t.Errorf("inspect -- -dash: exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
		}
	})

	t.Run("json missing", func(t *testing.T) {
		code, stdout, _ := runCmd(t, "inspect", "-json", "-redis", e.url, "nope-1")
		var rep inspectReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != exitFailure || rep.Found {
			t.Errorf("inspect -json nope-1 = exit %d, %+v (%v), want exit 1 and found false", code, rep, err)
		}
	})
}

// TestInspectPrefixAndStripes checks that -prefix and -stripes name the
// same keys as the library with those options, hash tags included.
func TestInspectPrefixAndStripes(t *testing.T) {
	e := newTestEnv(t, rediscache.Options{Prefix: "staging:", Stripes: 4})
	fillActive(t, e.cache, "dev-a", "u-7")
	l := e.cache.Layout()

	code, stdout, stderr := runCmd(t, "inspect", "-redis", e.url, "-prefix", "staging:", "-stripes", "4", "dev-a")
	if code != exitOK {
		t.Fatalf("inspect with the prefix: exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{
		"key           " + l.SessionKey("dev-a") + "\n",
		"{s",
		"user sessions " + l.UserSessionsKey("u-7", l.Stripe("dev-a")) + " and 3 other stripes' (1)",
		l.LogKey(l.Stripe("dev-a")),
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect -prefix staging: -stripes 4: stdout does not contain %q:\n%s", want, stdout)
		}
	}

	code, _, stderr = runCmd(t, "inspect", "-redis", e.url, "dev-a")
	if code != exitFailure || !strings.Contains(stderr, "another -prefix/-stripes") {
		t.Errorf("inspect without the prefix: exit %d, stderr %q; want 1 and a hint about -prefix", code, stderr)
	}
}
