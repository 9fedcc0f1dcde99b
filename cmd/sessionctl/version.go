package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func init() {
	register("version", "print the module version, the commit and the Go version it was built with", runVersion)
}

// versionInfo is what version prints, from the build information Go
// embeds in the binary.
type versionInfo struct {
	Module   string `json:"module"`
	Version  string `json:"version"` // "(devel)" for a build from a checkout without VCS stamping
	Go       string `json:"go"`
	Platform string `json:"platform"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
}

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, jsonUsage)
	setUsageStatuses(fs, "version [-json]",
		`Prints the version of the module sessionctl was built from (a tag, a
pseudo-version, or "(devel)"), the VCS revision and time when the build
recorded them, and the Go version and platform.`, "\nexit status:\n  0  success\n  2  bad usage\n")
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	bi, ok := debug.ReadBuildInfo()
	v := buildVersion(bi, ok)
	if *asJSON {
		b, _ := json.Marshal(v) // strings and a bool always encode
		fmt.Fprintf(stdout, "%s\n", b)
		return exitOK
	}
	fmt.Fprintln(stdout, v.String())
	return exitOK
}

// buildVersion reads the build information (ok false: none, as in a
// binary built without module support).
func buildVersion(bi *debug.BuildInfo, ok bool) versionInfo {
	v := versionInfo{Module: "unknown", Version: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || bi == nil {
		return v
	}
	if bi.Main.Path != "" {
		v.Module = bi.Main.Path
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the text form: "sessionctl v1.2.0 (github.com/...), revision
// 0123abc (2025-01-02T03:04:05Z, modified), go1.26.0 linux/amd64".
func (v versionInfo) String() string {
	s := fmt.Sprintf("sessionctl %s (%s)", v.Version, v.Module)
	if v.Revision != "" {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		s += ", revision " + rev
		switch {
		case v.Time != "" && v.Modified:
			s += " (" + v.Time + ", modified)"
		case v.Time != "":
			s += " (" + v.Time + ")"
		case v.Modified:
			s += " (modified)"
		}
	}
	return s + ", " + v.Go + " " + v.Platform
}
