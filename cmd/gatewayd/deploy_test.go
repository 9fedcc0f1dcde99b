package main

// The monitoring files in deploy/ against what gatewayd exports: the
// Grafana dashboard parses and every query in it, every rule expression and
// every promtool test series names a metric gatewayd exports or a recording
// rule defines. promtool checks PromQL syntax and the rules' behaviour
// (.ci/run); neither notices a metric name that nothing exports, which
// makes a panel empty and an alert silent.

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// deployDir is the repository's deploy/ directory.
var deployDir = filepath.Join("..", "..", "deploy")

// prometheusSynthetic are series Prometheus itself writes for every target.
var prometheusSynthetic = []string{"up"}

// gatherAfterRequest starts a gateway, serves one authenticated request
// and gathers its registry.
func gatherAfterRequest(t *testing.T) (*fixture, []*dto.MetricFamily) {
	t.Helper()
	f := newFixture(t)
	rec, priv := f.backend.NewSession("user-1")
	wantAnswer(t, "request", f.do(t, f.signed(t, rec.DeviceSessionID, priv, http.MethodGet, "/v1/me", nil, time.Now())), 200, "")
	families, err := f.gw.reg.Gather()
	if err != nil {
		t.Fatalf("Gather = %v", err)
	}
	return f, families
}

// exportedNames returns the series names a scrape of gatewayd can hold:
// those of a gathering after one authenticated request (a histogram gives
// its _bucket, _sum and _count series), and the metrics the cache describes
// but exports only once they have a value (heartbeat_age_seconds).
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	f, families := gatherAfterRequest(t)
	names := map[string]bool{}
	for _, mf := range families {
		name := mf.GetName()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		case dto.MetricType_SUMMARY:
			names[name], names[name+"_sum"], names[name+"_count"] = true, true, true
		default:
			names[name] = true
		}
	}
	described := &helpRecorder{help: map[string]string{}}
	if err := f.gw.cache.RegisterMetrics(described, nil); err != nil {
		t.Fatal(err)
	}
	for name := range described.help {
		if !names[name] && !names[name+"_count"] {
			names[name] = true
		}
	}
	if !names["sessioncache_subscriber_up"] || !names["sessioncache_revocation_fanout_seconds_bucket"] || !names["sessioncache_gateway_requests_total"] {
		t.Fatalf("exported names %v lack the ones every scrape has: the test checks nothing", sortedKeys(names))
	}
	return names
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// readDeploy returns the content of deploy/<rel>.
func readDeploy(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// globDeploy returns deploy/<pattern>'s matches, relative to deploy/, and
// fails when there are none.
func globDeploy(t *testing.T, pattern string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(deployDir, pattern))
	if err != nil || len(paths) == 0 {
		t.Fatalf("deploy/%s matches %v, %v: want at least one file", pattern, paths, err)
	}
	for i, p := range paths {
		paths[i], _ = filepath.Rel(deployDir, p)
	}
	return paths
}

var recordPattern = regexp.MustCompile(`(?m)^\s*-?\s*record:\s*(\S+)\s*$`)

// recordedNames returns the names the recording rules define.
func recordedNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, p := range globDeploy(t, "prometheus/*.rules.yml") {
		for _, m := range recordPattern.FindAllStringSubmatch(readDeploy(t, p), -1) {
			names[m[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatal("no recording rule found in deploy/prometheus/*.rules.yml")
	}
	return names
}

// yamlExprs returns the values of the `expr:` keys of a Prometheus rules
// file: the rest of the line, or the indented block after "expr: |".
func yamlExprs(text string) []string {
	var exprs []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		key := strings.TrimLeft(lines[i], " -")
		rest, ok := strings.CutPrefix(key, "expr:")
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		if rest != "|" && rest != ">" && rest != "|-" && rest != ">-" {
			if len(rest) >= 2 && (rest[0] == '"' || rest[0] == '\'') && rest[len(rest)-1] == rest[0] {
				rest = rest[1 : len(rest)-1] // a quoted scalar
			}
			exprs = append(exprs, rest)
			continue
		}
		indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
		var block []string
		for i+1 < len(lines) {
			next := lines[i+1]
			if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
				break
			}
			block = append(block, next)
			i++
		}
		exprs = append(exprs, strings.Join(block, "\n"))
	}
	return exprs
}

// PromQL tokens that are not metric names.
var (
	promqlStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers  = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlLabelList = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlOffset    = regexp.MustCompile(`\boffset\s+-?[0-9a-z]+`)
	promqlIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords  = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges, label lists and
// offsets are removed that are neither keywords nor called as functions
// (a number's exponent, as in 1e3, is not an identifier: it follows a
// digit).
func metricNames(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlLabelList.ReplaceAllString(s, " ")
	s = promqlOffset.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.' || s[loc[0]-1] == '$') {
			continue
		}
		if strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") || slices.Contains(promqlKeywords, id) {
			continue
		}
		names = append(names, id)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`up{job="gatewayd"} == 0`, []string{"up"}},
		{`sum by (replica, le) (rate(a_bucket{replica=~"$replica"}[$__rate_interval]))`, []string{"a_bucket"}},
		{"x:y:rate5m < 0.5 * (x:y:rate5m offset 1h)\nand on (replica)\nz >= 1e3", []string{"x:y:rate5m", "x:y:rate5m", "z"}},
		{`label_replace(a, "tier", "backend", "", "") or b / ignoring (tier) group_left c`, []string{"a", "b", "c"}},
		{`histogram_quantile(0.99, sum without (instance) (rate(h_bucket[5m])))`, []string{"h_bucket"}},
		{`sum(rate(a[1m])) / bool sum(b)`, []string{"a", "b"}},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

func TestYAMLExprs(t *testing.T) {
	rules := `groups:
  - name: g
    rules:
      - record: a:b:rate1m
        expr: sum by (x) (rate(m_total[1m]))
      - alert: Quoted
        expr: 'label_replace(up, "a", "b", "", "")'
        for: 1m
      - alert: Block
        expr: |
          x > 1
          and on (y)
          z

        labels:
          severity: warning
`
	want := []string{
		"sum by (x) (rate(m_total[1m]))",
		`label_replace(up, "a", "b", "", "")`,
		"          x > 1\n          and on (y)\n          z\n",
	}
	if got := yamlExprs(rules); !slices.Equal(got, want) {
		t.Errorf("yamlExprs = %q, want %q", got, want)
	}
}

// checkExpr fails the test when expr selects no metric or one outside known.
func checkExpr(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	names := metricNames(expr)
	if len(names) == 0 {
		t.Errorf("%s: expression %q selects no metric", where, expr)
	}
	for _, n := range names {
		if !known[n] {
			t.Errorf("%s: %q is neither exported by gatewayd nor recorded by deploy/prometheus/*.rules.yml (expression %q)", where, n, expr)
		}
	}
}

// TestDeployRulesUseExportedMetrics checks every expression of the rules and
// every input series of their promtool tests against gatewayd's metrics
// and the recording rules.
func TestDeployRulesUseExportedMetrics(t *testing.T) {
	exported := exportedNames(t)
	known := recordedNames(t)
	for n := range exported {
		known[n] = true
	}
	for _, n := range prometheusSynthetic {
		known[n] = true
	}
	for _, p := range globDeploy(t, "prometheus/*.rules.yml") {
		exprs := yamlExprs(readDeploy(t, p))
		if len(exprs) == 0 {
			t.Errorf("deploy/%s: no expr found", p)
		}
		for _, e := range exprs {
			checkExpr(t, "deploy/"+p, e, known)
		}
	}
	// The tests' input series stand for scrapes: they must be exported
	// names, or the tests prove rules over metrics nobody sends.
	series := regexp.MustCompile(`(?m)^\s*-?\s*series:\s*'?"?([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, p := range globDeploy(t, "prometheus/*_test.yml") {
		found := series.FindAllStringSubmatch(readDeploy(t, p), -1)
		if len(found) == 0 {
			t.Errorf("deploy/%s: no input series found", p)
		}
		for _, m := range found {
			if !exported[m[1]] && !slices.Contains(prometheusSynthetic, m[1]) {
				t.Errorf("deploy/%s: input series %q is not a metric gatewayd exports", p, m[1])
			}
		}
	}
}

// dashboard is the part of a Grafana dashboard JSON the checks read.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
	// Templating holds the dashboard's variables.
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Datasource *datasourceRef  `json:"datasource"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

var labelValuesPattern = regexp.MustCompile(`^label_values\(\s*(.+?)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$`)

// TestDeployDashboard checks that the Grafana dashboard parses, that its
// panels query the provisioned Prometheus datasource, and that every query
// and variable selects metrics gatewayd exports or the rules record.
func TestDeployDashboard(t *testing.T) {
	known := recordedNames(t)
	for n := range exportedNames(t) {
		known[n] = true
	}
	for _, n := range prometheusSynthetic {
		known[n] = true
	}
	dsUID := regexp.MustCompile(`(?m)^\s*uid:\s*(\S+)\s*$`).FindStringSubmatch(readDeploy(t, "grafana/provisioning/datasources/prometheus.yml"))
	if dsUID == nil {
		t.Fatal("deploy/grafana/provisioning/datasources/prometheus.yml: no uid")
	}
	for _, p := range globDeploy(t, "grafana/dashboards/*.json") {
		var d dashboard
		dec := json.NewDecoder(strings.NewReader(readDeploy(t, p)))
		if err := dec.Decode(&d); err != nil {
			t.Errorf("deploy/%s: not a JSON dashboard: %v", p, err)
			continue
		}
		if dec.More() {
			t.Errorf("deploy/%s: data after the dashboard object", p)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("deploy/%s: uid %q, title %q: want both (provisioning keys dashboards by uid)", p, d.UID, d.Title)
		}
		ids := map[int]bool{}
		queries := 0
		var walk func([]panel)
		walk = func(panels []panel) {
			for _, pn := range panels {
				where := "deploy/" + p + ": panel " + pn.Title
				if ids[pn.ID] {
					t.Errorf("%s: id %d used twice", where, pn.ID)
				}
				ids[pn.ID] = true
				if pn.GridPos == nil || pn.GridPos.W == 0 || pn.GridPos.H == 0 {
					t.Errorf("%s: no gridPos", where)
				}
				walk(pn.Panels)
				if pn.Type == "row" {
					continue
				}
				if len(pn.Targets) == 0 {
					t.Errorf("%s: no query", where)
				}
				for _, tg := range pn.Targets {
					ds := tg.Datasource
					if ds == nil {
						ds = pn.Datasource
					}
					if ds == nil || ds.UID != dsUID[1] || ds.Type != "prometheus" {
						t.Errorf("%s, query %s: datasource %+v, want the provisioned prometheus %q", where, tg.RefID, ds, dsUID[1])
					}
					checkExpr(t, where+", query "+tg.RefID, tg.Expr, known)
					queries++
				}
			}
		}
		walk(d.Panels)
		if queries == 0 {
			t.Errorf("deploy/%s: no query in any panel", p)
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				if err := json.Unmarshal(v.Query, &q.Query); err != nil {
					t.Errorf("deploy/%s: variable %s: query %s is neither a string nor an object with one", p, v.Name, v.Query)
					continue
				}
			}
			expr := q.Query
			if m := labelValuesPattern.FindStringSubmatch(expr); m != nil {
				expr = m[1]
			}
			checkExpr(t, "deploy/"+p+": variable "+v.Name, expr, known)
		}
	}
}
