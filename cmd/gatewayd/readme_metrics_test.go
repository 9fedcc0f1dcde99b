package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the README's metrics table from the code")

// readmePath is the repository's README.
var readmePath = filepath.Join("..", "..", "README.md")

// The README's metrics table stands between these two lines.
const (
	metricsBegin = "<!-- metrics: generated from the code by `go test ./cmd/gatewayd -run TestREADMEListsEveryMetric -update-readme` -->"
	metricsEnd   = "<!-- /metrics -->"
)

var descPattern = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", help: "((?:[^"\\]|\\.)*)"`)

// helpRecorder is a prometheus.Registerer that records each described
// metric's help text.
type helpRecorder struct{ help map[string]string }

func (r *helpRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		if m := descPattern.FindStringSubmatch(d.String()); m != nil {
			r.help[m[1]] = m[2]
		}
	}
	return nil
}

func (r *helpRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *helpRecorder) Unregister(prometheus.Collector) bool { return false }

// metricsTable returns the README table of every sessioncache_ metric
// gatewayd exports (beside the standard go_ and process_ collectors):
// the gathered families (after one request), and the cache's metrics that
// appear only once they have a value (gauges).
func metricsTable(t *testing.T) string {
	t.Helper()
	f, families := gatherAfterRequest(t)
	type row struct{ kind, help string }
	rows := map[string]row{}
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "sessioncache_") {
			continue // the Go runtime's and the process's standard collectors
		}
		rows[mf.GetName()] = row{strings.ToLower(dto.MetricType_name[int32(mf.GetType())]), mf.GetHelp()}
	}
	described := &helpRecorder{help: map[string]string{}}
	if err := f.gw.cache.RegisterMetrics(described, nil); err != nil {
		t.Fatal(err)
	}
	for name, help := range described.help {
		if _, ok := rows[name]; !ok {
			rows[name] = row{"gauge", help}
		}
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("| metric | type | meaning |\n| --- | --- | --- |\n")
	for _, n := range names {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", n, rows[n].kind, strings.ReplaceAll(rows[n].help, "|", `\|`))
	}
	return b.String()
}

// TestREADMEListsEveryMetric checks that the README's metrics table is
// exactly what gatewayd exports, names, types and help texts.
func TestREADMEListsEveryMetric(t *testing.T) {
	want := metricsTable(t)
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	i, j := strings.Index(readme, metricsBegin), strings.Index(readme, metricsEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no metrics table between %q and %q", metricsBegin, metricsEnd)
	}
	got := readme[i+len(metricsBegin)+1 : j]
	if got == want {
		return
	}
	if *updateREADME {
		readme = readme[:i+len(metricsBegin)+1] + want + readme[j:]
		if err := os.WriteFile(readmePath, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's metrics table differs from what gatewayd exports; run\n\tgo test ./cmd/gatewayd -run TestREADMEListsEveryMetric -update-readme\nwant:\n%s", want)
}
