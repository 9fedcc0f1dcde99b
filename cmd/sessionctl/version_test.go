package main

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"tagged release", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/galaxy-game/sessioncache", Version: "v1.4.0"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}}},
			true, "sessionctl v1.4.0 (github.com/galaxy-game/sessioncache), revision 0123456789ab (2026-01-02T03:04:05Z), go1.26.0 " + platform},
		{"modified checkout", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/galaxy-game/sessioncache", Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			true, "sessionctl (devel) (github.com/galaxy-game/sessioncache), revision abc (modified), go1.26.0 " + platform},
		{"no build information", nil, false, "sessionctl unknown (unknown), " + runtime.Version() + " " + platform},
	}
	for _, tt := range tests {
		if got := buildVersion(tt.bi, tt.ok).String(); got != tt.want {
			t.Errorf("%s: buildVersion().String() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestVersionCommand runs version in the test binary, which Go builds with
// the module's build information.
func TestVersionCommand(t *testing.T) {
	code, stdout, stderr := runCmd(t, "version")
	if code != exitOK || !strings.HasPrefix(stdout, "sessionctl ") || !strings.Contains(stdout, "(github.com/galaxy-game/sessioncache)") ||
		!strings.Contains(stdout, runtime.Version()) || strings.Count(stdout, "\n") != 1 || stderr != "" {
		t.Errorf("version: exit %d, stdout %q, stderr %q; want one line with the module and %s", code, stdout, stderr, runtime.Version())
	}
	code, stdout, _ = runCmd(t, "version", "-json")
	var v versionInfo
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || code != exitOK || v.Module != "github.com/galaxy-game/sessioncache" || v.Go != runtime.Version() || v.Version == "" {
		t.Errorf("version -json: exit %d, %+v, %v; want the module, a version and %s", code, v, err, runtime.Version())
	}
	code, stdout, stderr = runCmd(t, "version", "-json", "extra")
	if code != exitUsage || stdout != `{"command":"version","error":"version takes no arguments (got \"extra\")","exit":2}`+"\n" || stderr != "" {
		t.Errorf("version -json extra: exit %d, stdout %q, stderr %q; want %d and the error as JSON on stdout", code, stdout, stderr, exitUsage)
	}
}
