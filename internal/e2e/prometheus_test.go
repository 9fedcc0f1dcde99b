package e2e

// The alert rules on a real Prometheus: the prometheus binary scrapes the
// topology's gateways with short intervals and evaluates
// deploy/prometheus's rule files; a blackhole on one replica's Redis
// connection must make SessioncacheSubscriberDown fire for that replica
// alone, and lifting it must resolve the alert.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/tiered"
)

const (
	// promScrapeInterval and promEvalInterval are the test Prometheus's
	// scrape and rule evaluation intervals.
	promScrapeInterval = 250 * time.Millisecond
	promEvalInterval   = 250 * time.Millisecond
	// subscriberAlertFor replaces the subscriber alert's `for:` (a minute
	// in deploy/prometheus) in the test's copy of the rules.
	subscriberAlertFor = 2 * time.Second
	subscriberAlert    = "SessioncacheSubscriberDown"
	// promJob is the scrape job name the rules select, as in
	// deploy/prometheus/prometheus.yml.
	promJob = "gatewayd"
	// schedulingAllowance is added to every deadline derived from the
	// intervals: process start-up and scheduling on a loaded CI machine
	// under -race.
	schedulingAllowance = 5 * time.Second
	// promTargetSync bounds how long after start-up Prometheus scrapes a
	// static target for the first time: its discovery manager sends target
	// updates, and its scrape manager applies them, each on a 5 s ticker
	// (fixed in Prometheus 2.42).
	promTargetSync = 2 * 5 * time.Second
	// gatewayDetectsLoss bounds how long after a blackhole begins the
	// gateway's subscriber reports the loss: a heartbeat interval plus the
	// heartbeat timeout (gatewayd runs the defaults; the timeout is 3 ×
	// the interval).
	gatewayDetectsLoss = tiered.DefaultHeartbeatInterval + 3*tiered.DefaultHeartbeatInterval
	// gatewayResubscribes bounds how long after the network heals the
	// subscriber is synced again: its longest wait between attempts (1 s)
	// plus one attempt's confirmation bound (the heartbeat timeout).
	gatewayResubscribes = time.Second + 3*tiered.DefaultHeartbeatInterval
)

// promDeployDir is deploy/prometheus: the rule files and the compose
// prometheus.yml.
var promDeployDir = filepath.Join("..", "..", "deploy", "prometheus")

// promServer is a running prometheus process.
type promServer struct {
	proc   *proc
	url    string
	client *http.Client
}

// promBinary returns the path of prometheus, failing the test when it is
// missing (never skipping: CI installs it).
func promBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found on PATH: install Debian's prometheus package (.ci/run does): %v", err)
	}
	return p
}

// promDuration formats d the way Prometheus's configuration reads it.
func promDuration(d time.Duration) string {
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// withFor returns the alert rules file rules with the `for:` of alert set
// to d, failing the test when the alert or its `for:` is missing.
func withFor(t *testing.T, rules, alert string, d time.Duration) string {
	t.Helper()
	lines := strings.Split(rules, "\n")
	in := false
	for i, l := range lines {
		key := strings.TrimSpace(l)
		if name, ok := strings.CutPrefix(key, "- alert:"); ok {
			in = strings.TrimSpace(name) == alert
			continue
		}
		if in && strings.HasPrefix(key, "for:") {
			lines[i] = l[:len(l)-len(strings.TrimLeft(l, " "))] + "for: " + promDuration(d)
			return strings.Join(lines, "\n")
		}
	}
	t.Fatalf("alert %s with a `for:` not found in the rules", alert)
	return ""
}

// startPrometheus starts prometheus on a free loopback port with the
// deploy/prometheus rule files (the subscriber alert's `for:` shortened),
// scraping the topology's gateways, and waits until it is ready.
func startPrometheus(t *testing.T, tp *topology) *promServer {
	t.Helper()
	bin := promBinary(t)
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(promDeployDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if !strings.Contains(read("prometheus.yml"), "job_name: "+promJob) {
		t.Fatalf("deploy/prometheus/prometheus.yml has no job %q: the test's scrape job must be named as the one the rules select", promJob)
	}
	dir := t.TempDir()
	var targets []string
	for _, g := range tp.gateways {
		targets = append(targets, `"`+strings.TrimPrefix(g.url, "http://")+`"`)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[2]s
rule_files:
  - recording.rules.yml
  - alerts.rules.yml
scrape_configs:
  - job_name: %[3]s
    static_configs:
      - targets: [%[4]s]
`, promDuration(promScrapeInterval), promDuration(promEvalInterval), promJob, strings.Join(targets, ", "))
	files := map[string]string{
		"prometheus.yml":      config,
		"recording.rules.yml": read("recording.rules.yml"),
		"alerts.rules.yml":    withFor(t, read("alerts.rules.yml"), subscriberAlert, subscriberAlertFor),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := loopback(t)
	data := t.TempDir() // removed after the process is killed (cleanups run last-in first-out)
	p := startProc(t, "prometheus", bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+data,
		"--web.listen-address="+addr,
		"--log.level=warn")
	ps := &promServer{proc: p, url: "http://" + addr, client: tp.client}
	waitHTTP(t, tp.client, p, ps.url+"/-/ready", http.StatusOK)
	return ps
}

// get GETs an API path of Prometheus and decodes the "data" of a
// successful answer into data.
func (ps *promServer) get(t *testing.T, path string, query url.Values, data any) {
	t.Helper()
	u := ps.url + path
	if query != nil {
		u += "?" + query.Encode()
	}
	resp, err := ps.client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var answer struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("GET %s = %s, not JSON: %v", u, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || answer.Status != "success" {
		t.Fatalf("GET %s = %s %q %q, want 200 success", u, resp.Status, answer.Status, answer.Error)
	}
	if err := json.Unmarshal(answer.Data, data); err != nil {
		t.Fatalf("GET %s: data: %v", u, err)
	}
}

// promAlert is one entry of /api/v1/alerts.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"` // pending or firing
}

// alerts returns the active (pending and firing) alerts named name.
func (ps *promServer) alerts(t *testing.T, name string) []promAlert {
	t.Helper()
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	ps.get(t, "/api/v1/alerts", nil, &data)
	var out []promAlert
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name {
			out = append(out, a)
		}
	}
	return out
}

// query evaluates expr now and returns the result's series.
func (ps *promServer) query(t *testing.T, expr string) []struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
} {
	t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	ps.get(t, "/api/v1/query", url.Values{"query": {expr}}, &data)
	if data.ResultType != "vector" {
		t.Fatalf("query %q: result type %q, want vector", expr, data.ResultType)
	}
	return data.Result
}

// poll calls done every promEvalInterval/2 until it returns true, failing
// the test with what() once deadline has passed. Prometheus's state is
// another process's: polling its API is the only way to learn it.
func poll(t *testing.T, deadline time.Time, done func() bool, what func() string) {
	t.Helper()
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("%s", what())
		}
		time.Sleep(promEvalInterval / 2)
	}
}

// dashboardExprs returns every "expr" string of the Grafana dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "dashboards", "sessioncache.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	var exprs []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				exprs = append(exprs, e)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(doc)
	if len(exprs) == 0 {
		t.Fatal("dashboard: no expr found")
	}
	return exprs
}

// TestPrometheusSubscriberAlert runs the real Prometheus against the
// topology, with one replica reaching Redis through a proxy, blackholes
// that proxy and measures how long the subscriber alert takes to fire.
func TestPrometheusSubscriberAlert(t *testing.T) {
	const faulty = 1 // gateway-2
	tp := startTopology(t, topologyOptions{proxied: []int{faulty}})
	ps := startPrometheus(t, tp)
	faultyName := tp.gateways[faulty].name

	// Lookups on every gateway, so that the dashboard's ratios have data.
	s := tp.createSession(t, "prom-user")
	tp.wantAccepted(t, s)

	t.Run("EveryGatewayScrapedAndEveryRuleHealthy", func(t *testing.T) {
		// A rule is "unknown" until its first evaluation; a few evaluation
		// intervals after every target is up, each rule has run on data.
		deadline := time.Now().Add(promTargetSync + 3*promScrapeInterval + schedulingAllowance)
		var up []string
		poll(t, deadline, func() bool {
			up = up[:0]
			for _, r := range ps.query(t, `up{job="`+promJob+`"} == 1`) {
				up = append(up, r.Metric["instance"])
			}
			return len(up) == replicas
		}, func() string { return fmt.Sprintf("targets up: %v, want the %d gateways", up, replicas) })

		var bad []string
		poll(t, time.Now().Add(3*promEvalInterval+schedulingAllowance), func() bool {
			var data struct {
				Groups []struct {
					Name  string `json:"name"`
					Rules []struct {
						Name      string `json:"name"`
						Health    string `json:"health"`
						LastError string `json:"lastError"`
					} `json:"rules"`
				} `json:"groups"`
			}
			ps.get(t, "/api/v1/rules", nil, &data)
			bad = bad[:0]
			n := 0
			for _, g := range data.Groups {
				for _, r := range g.Rules {
					n++
					if r.Health != "ok" {
						bad = append(bad, fmt.Sprintf("%s/%s: %s %s", g.Name, r.Name, r.Health, r.LastError))
					}
				}
			}
			return n > 0 && len(bad) == 0
		}, func() string { return fmt.Sprintf("rules not healthy: %q", bad) })

		if got := ps.query(t, "sessioncache_subscriber_up == 1"); len(got) != replicas {
			t.Fatalf("sessioncache_subscriber_up == 1 holds for %d series, want %d", len(got), replicas)
		}
		if got := ps.alerts(t, subscriberAlert); len(got) > 0 {
			t.Fatalf("%s active before any fault: %+v", subscriberAlert, got)
		}
	})

	t.Run("DashboardQueriesReturnSeries", func(t *testing.T) {
		// A rate needs two samples in its window, and a recording rule's
		// series one evaluation over them.
		deadline := time.Now().Add(2*promScrapeInterval + 2*promEvalInterval + schedulingAllowance)
		exprs := dashboardExprs(t)
		var empty []string
		poll(t, deadline, func() bool {
			empty = empty[:0]
			for _, e := range exprs {
				q := strings.NewReplacer("$__rate_interval", "1m", "$replica", ".*").Replace(e)
				if len(ps.query(t, q)) == 0 {
					empty = append(empty, q)
				}
			}
			return len(empty) == 0
		}, func() string {
			return fmt.Sprintf("%d of the dashboard's %d queries return no series: %q", len(empty), len(exprs), empty)
		})
	})

	t.Run("BlackholeFiresSubscriberAlert", func(t *testing.T) {
		tp.proxies[faulty].Blackhole()
		fault := time.Now()
		deadline := fault.Add(gatewayDetectsLoss + promScrapeInterval + 2*promEvalInterval + subscriberAlertFor + schedulingAllowance)
		var pendingAfter time.Duration
		var last []promAlert
		poll(t, deadline, func() bool {
			last = ps.alerts(t, subscriberAlert)
			for _, a := range last {
				if a.Labels["replica"] != faultyName {
					t.Fatalf("%s active for %s, whose Redis connection is intact: %+v", subscriberAlert, a.Labels["replica"], a)
				}
				if pendingAfter == 0 {
					pendingAfter = time.Since(fault)
				}
				if a.State == "firing" {
					return true
				}
			}
			return false
		}, func() string {
			return fmt.Sprintf("%s not firing for %s %v after the blackhole (deadline from the intervals); active: %+v",
				subscriberAlert, faultyName, time.Since(fault).Round(time.Millisecond), last)
		})
		firing := time.Since(fault)
		t.Logf("%s: pending %.2f s and firing %.2f s after the blackhole on %s's Redis connection (detection bound %v, scrape %v, evaluation %v, for %v)",
			subscriberAlert, pendingAfter.Seconds(), firing.Seconds(), faultyName, gatewayDetectsLoss, promScrapeInterval, promEvalInterval, subscriberAlertFor)
		if firing < subscriberAlertFor {
			t.Errorf("%s fired %v after the fault, before its `for:` (%v) could pass", subscriberAlert, firing, subscriberAlertFor)
		}
		a := last[slices.IndexFunc(last, func(a promAlert) bool { return a.State == "firing" })]
		for k, want := range map[string]string{"severity": "critical", "job": promJob, "replica": faultyName} {
			if a.Labels[k] != want {
				t.Errorf("firing alert label %s = %q, want %q (labels %v)", k, a.Labels[k], want, a.Labels)
			}
		}
	})

	t.Run("HealedConnectionResolvesAlert", func(t *testing.T) {
		tp.proxies[faulty].Clear()
		healed := time.Now()
		deadline := healed.Add(gatewayResubscribes + promScrapeInterval + 2*promEvalInterval + schedulingAllowance)
		var last []promAlert
		poll(t, deadline, func() bool {
			last = ps.alerts(t, subscriberAlert)
			return len(last) == 0
		}, func() string {
			return fmt.Sprintf("%s still active %v after the blackhole lifted: %+v", subscriberAlert, time.Since(healed).Round(time.Millisecond), last)
		})
		t.Logf("%s resolved %.2f s after the blackhole lifted", subscriberAlert, time.Since(healed).Seconds())
		tp.wantAccepted(t, s)
	})

	if code, took := ps.proc.stop(t); code != 0 {
		t.Errorf("prometheus exit status after SIGTERM = %d (after %v), want 0", code, took)
	}
}
