package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/galaxy-game/sessioncache/rediscache"
)

// TestInspectLimit checks that inspect lists at most -limit of a user's
// sessions, sorted, says how many more there are, and that -limit 0 lists
// them all.
func TestInspectLimit(t *testing.T) {
	e := newTestEnv(t, rediscache.Options{})
	const n = 25
	for i := range n {
		fillActive(t, e.cache, fmt.Sprintf("dev-%02d", i), "u-many")
	}
	tests := []struct {
		name     string
		args     []string
		listed   int
		wantMore string // "" for no "… and N more" line
	}{
		{"default", nil, defaultListLimit, fmt.Sprintf("  … and %d more (-limit 0 lists them all)\n", n-defaultListLimit)},
		{"limit 3", []string{"-limit", "3"}, 3, "  … and 22 more (-limit 0 lists them all)\n"},
		{"limit 0", []string{"-limit", "0"}, n, ""},
		{"limit above the count", []string{"-limit", "100"}, n, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"inspect", "-redis", e.url}, tt.args...), "dev-00")
			code, stdout, stderr := runCmd(t, args...)
			if code != exitOK {
				t.Fatalf("inspect %v: exit %d, stderr %q", tt.args, code, stderr)
			}
			if !strings.Contains(stdout, fmt.Sprintf("user sessions user:u-many:sessions (%d)\n", n)) {
				t.Errorf("inspect %v: stdout lacks the index size %d:\n%s", tt.args, n, stdout)
			}
			listed := strings.Count(stdout, "\n  dev-")
			if listed != tt.listed {
				t.Errorf("inspect %v listed %d sessions, want %d:\n%s", tt.args, listed, tt.listed, stdout)
			}
			last := fmt.Sprintf("  dev-%02d ", tt.listed-1)
			if !strings.Contains(stdout, last) {
				t.Errorf("inspect %v: stdout lacks %q (the list is sorted):\n%s", tt.args, last, stdout)
			}
			if hasMore := strings.Contains(stdout, "… and "); hasMore != (tt.wantMore != "") || !strings.Contains(stdout, tt.wantMore) {
				t.Errorf("inspect %v: stdout:\n%s\nwant the line %q", tt.args, stdout, tt.wantMore)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "inspect", "-redis", e.url, "-json", "-limit", "4", "dev-00")
		var rep inspectReport
		if err := json.Unmarshal([]byte(stdout), &rep); code != exitOK || err != nil {
			t.Fatalf("inspect -json -limit 4: exit %d, %v, stderr %q\n%s", code, err, stderr, stdout)
		}
		if len(rep.UserSessions) != 4 || rep.UserSessionsTotal != n || rep.UserSessions[3].Session != "dev-03" {
			t.Errorf("inspect -json -limit 4: %d sessions listed (last %+v), total %d; want 4, dev-03 last, total %d",
				len(rep.UserSessions), rep.UserSessions[len(rep.UserSessions)-1], rep.UserSessionsTotal, n)
		}
	})

	t.Run("negative", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "inspect", "-redis", e.url, "-limit", "-1", "dev-00")
		if code != exitUsage || !strings.Contains(stderr, "-limit must be >= 0") || stdout != "" {
			t.Errorf("inspect -limit -1: exit %d, stdout %q, stderr %q; want %d and the -limit error", code, stdout, stderr, exitUsage)
		}
	})
}
