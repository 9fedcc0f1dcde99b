package e2e

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/signing"
	"github.com/galaxy-game/sessioncache/internal/toxitest"
	"github.com/galaxy-game/sessioncache/session"
)

const (
	// pushToken is the shared bearer token of the backend's pushes.
	pushToken = "e2e-push-token"
	// replicas is the number of gateways, as in docker-compose.yml.
	replicas = 3
	// fanoutBound is how soon after a revocation starts every gateway must
	// reject the session.
	fanoutBound = time.Second
	// redisWriteTimeout bounds the wait for a gateway's background worker
	// to write a pushed revocation to Redis.
	redisWriteTimeout = 5 * time.Second
	// channel is the invalidation channel (no key prefix).
	channel = "session_invalidation"
)

// gatewayProc is one running gateway replica.
type gatewayProc struct {
	name, url string
	proc      *proc
}

// topology is the docker-compose topology as processes on loopback.
type topology struct {
	bins       binaries
	binDir     string
	redis      *redistest.Server
	redisCLI   string
	client     *http.Client
	backendURL string
	backend    *proc
	gateways   []gatewayProc
	// proxies holds the proxy between replica i and Redis, for the
	// replicas topologyOptions.proxied names.
	proxies  map[int]*toxitest.Proxy
	requests atomic.Uint64 // makes every signed request unique (no replays)
}

// topologyOptions varies the topology for one test; the zero value is
// docker-compose.yml's.
type topologyOptions struct {
	// proxied lists replicas (0-based) that reach Redis through a
	// toxiproxy proxy of their own (topology.proxies), for network faults.
	proxied []int
}

// startTopology builds the commands and starts redis-server, the backend
// and the gateways, returning once every gateway's /healthz answers 200.
func startTopology(t *testing.T, opts topologyOptions) *topology {
	t.Helper()
	tp := &topology{redisCLI: redistest.Binary(t, "redis-cli"), proxies: map[int]*toxitest.Proxy{}}
	redistest.Binary(t, "redis-server")
	tp.binDir = t.TempDir()
	tp.bins = buildCommands(t, tp.binDir)
	tp.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(tp.client.CloseIdleConnections)
	tp.redis = redistest.Start(t, redistest.Options{})

	backendAddr := loopback(t)
	tp.backendURL = "http://" + backendAddr
	urls := make([]string, replicas)
	addrs := make([]string, replicas)
	for i := range replicas {
		addrs[i] = loopback(t)
		urls[i] = "http://" + addrs[i]
	}
	tp.backend = startProc(t, "backend", tp.bins.sessionctl, "backend",
		"-listen", backendAddr, "-gateways", strings.Join(urls, ","), "-push-token", pushToken)
	// Any answer from the session endpoint means the backend serves.
	waitHTTP(t, tp.client, tp.backend, tp.backendURL+"/api/v1/internal/sessions/e2e-probe", http.StatusNotFound)

	for i := range replicas {
		name := fmt.Sprintf("gateway-%d", i+1)
		redisURL := "redis://" + tp.redis.Addr
		if slices.Contains(opts.proxied, i) {
			tp.proxies[i] = toxitest.Start(t, tp.redis.Addr)
			redisURL = "redis://" + tp.proxies[i].Addr()
		}
		p := startProc(t, name, tp.bins.gatewayd, "-listen", addrs[i], "-redis", redisURL,
			"-backend", tp.backendURL, "-push-token", pushToken, "-name", name)
		tp.gateways = append(tp.gateways, gatewayProc{name: name, url: urls[i], proc: p})
	}
	for _, g := range tp.gateways {
		waitHTTP(t, tp.client, g.proc, g.url+"/healthz", http.StatusOK)
	}
	// The check that no process outlives the test must see these (it reads
	// /proc, so Linux only).
	if got := runningFrom(tp.binDir); runtime.GOOS == "linux" && len(got) != 1+replicas {
		t.Fatalf("processes running from %s = %v, want the backend and %d gateways", tp.binDir, got, replicas)
	}
	return tp
}

// loopback returns 127.0.0.1:<a port that was free a moment ago>.
func loopback(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
}

// testSession is a session created through the backend's admin endpoint.
type testSession struct {
	ID, UserID string
	key        ed25519.PrivateKey
	raw        []byte // the admin answer, for sessionctl sign -key @file
}

func (tp *topology) createSession(t *testing.T, userID string) testSession {
	t.Helper()
	code, body := tp.post(t, "/admin/sessions?user="+userID)
	var c struct {
		DeviceSessionID string `json:"device_session_id"`
		UserID          string `json:"user_id"`
		PrivateKey      string `json:"private_key"`
		Error           string `json:"error"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("POST /admin/sessions?user=%s = %d, answer not JSON: %v", userID, code, err)
	}
	if code != http.StatusCreated {
		t.Fatalf("POST /admin/sessions?user=%s = %d %q, want 201", userID, code, c.Error)
	}
	key, err := base64.StdEncoding.DecodeString(c.PrivateKey)
	if err != nil || len(key) != ed25519.PrivateKeySize || c.UserID != userID || c.DeviceSessionID == "" {
		t.Fatalf("POST /admin/sessions?user=%s answered user %q, session %q, a %d-byte key: want a session of %s with a %d-byte private key",
			userID, c.UserID, session.Redact(c.DeviceSessionID), len(key), userID, ed25519.PrivateKeySize)
	}
	return testSession{ID: c.DeviceSessionID, UserID: c.UserID, key: key, raw: body}
}

// post sends an empty POST to the backend and returns the status and body.
func (tp *topology) post(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := tp.client.Post(tp.backendURL+path, "application/json", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading the answer: %v", path, err)
	}
	return resp.StatusCode, body
}

// send sends one freshly signed request for s to the gateway at gwURL and
// returns the status and, for an error answer, its reason.
func (tp *topology) send(t *testing.T, gwURL string, s testSession) (int, string) {
	t.Helper()
	n := tp.requests.Add(1)
	req, err := http.NewRequest(http.MethodGet, gwURL+"/e2e/hello?n="+strconv.FormatUint(n, 10), nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	signing.SignRequest(req, s.ID, s.key, time.Now(), nil)
	resp, err := tp.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	var answer struct {
		UserID string `json:"user_id"`
		Error  string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("GET %s: answer %s is not JSON: %v", req.URL, resp.Status, err)
	}
	if resp.StatusCode == http.StatusOK && answer.UserID != s.UserID {
		t.Fatalf("GET %s: user_id %q, want %q", req.URL, answer.UserID, s.UserID)
	}
	return resp.StatusCode, answer.Error
}

// wantAccepted checks that every gateway accepts a signed request of each
// session.
func (tp *topology) wantAccepted(t *testing.T, sessions ...testSession) {
	t.Helper()
	for _, s := range sessions {
		for _, g := range tp.gateways {
			if code, reason := tp.send(t, g.url, s); code != http.StatusOK {
				t.Errorf("%s: signed request of %s (user %s) = %d %q, want 200", g.name, session.Redact(s.ID), s.UserID, code, reason)
			}
		}
	}
}

// wantRevoked checks that every gateway answers 401 "revoked" to a fresh
// signed request of each session, on the first try.
func (tp *topology) wantRevoked(t *testing.T, sessions ...testSession) {
	t.Helper()
	for _, s := range sessions {
		for _, g := range tp.gateways {
			if code, reason := tp.send(t, g.url, s); code != http.StatusUnauthorized || reason != "revoked" {
				t.Errorf("%s: signed request of %s (user %s) = %d %q, want 401 \"revoked\"", g.name, session.Redact(s.ID), s.UserID, code, reason)
			}
		}
	}
}

// awaitRevoked sends fresh signed requests of s to every gateway until each
// answers 401 "revoked" or start+fanoutBound passes. It returns how long
// after start the last gateway rejected, and the gateways that accepted
// at least once before rejecting.
func (tp *topology) awaitRevoked(t *testing.T, s testSession, start time.Time) (fanout time.Duration, late []string) {
	t.Helper()
	deadline := start.Add(fanoutBound)
	for _, g := range tp.gateways {
		for try := 1; ; try++ {
			code, reason := tp.send(t, g.url, s)
			if code == http.StatusUnauthorized && reason == "revoked" {
				break
			}
			if try == 1 {
				late = append(late, g.name)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: signed request of %s = %d %q %v after the revocation started, want 401 \"revoked\" within %v",
					g.name, session.Redact(s.ID), code, reason, time.Since(start), fanoutBound)
			}
			time.Sleep(5 * time.Millisecond) // another process's state: nothing to wait on
		}
	}
	return time.Since(start), late
}

// revokeResult is the answer of the backend's revoke endpoints.
type revokeResult struct {
	Revoked []string `json:"revoked"`
	Pushes  []struct {
		Gateway string `json:"gateway"`
		Status  int    `json:"status"`
		Error   string `json:"error"`
	} `json:"pushes"`
}

// revoke POSTs a backend revoke endpoint (path; shown is the same with
// the id redacted) and checks that it answered 200, revoked want, and
// pushed to every gateway with a 202 answer.
func (tp *topology) revoke(t *testing.T, path, shown string, want ...string) {
	t.Helper()
	code, body := tp.post(t, path)
	var res revokeResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("POST %s = %d, answer not JSON: %v", shown, code, err)
	}
	if code != http.StatusOK {
		t.Errorf("POST %s = %d, want 200", shown, code)
	}
	slices.Sort(res.Revoked)
	slices.Sort(want)
	if !slices.Equal(res.Revoked, want) {
		t.Errorf("POST %s revoked %q, want %q", shown, redactAll(res.Revoked), redactAll(want))
	}
	var pushed []string
	for _, p := range res.Pushes {
		if p.Status != http.StatusAccepted || p.Error != "" {
			t.Errorf("POST %s: push to %s = %d %q, want 202", shown, p.Gateway, p.Status, p.Error)
		}
		pushed = append(pushed, p.Gateway)
	}
	var urls []string
	for _, g := range tp.gateways {
		urls = append(urls, g.url)
	}
	slices.Sort(pushed)
	slices.Sort(urls)
	if !slices.Equal(pushed, urls) {
		t.Errorf("POST %s pushed to %q, want every gateway %q", shown, pushed, urls)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// redactAll returns the session ids redacted.
func redactAll(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = session.Redact(id)
	}
	return out
}

// redactArg returns a redis-cli argument fit for a failure message: a
// session key or an invalidation naming a session gets the id redacted.
func redactArg(a string) string {
	if id, ok := strings.CutPrefix(a, "session:"); ok {
		return "session:" + session.Redact(id)
	}
	if m, err := session.ParseInvalidation([]byte(a)); err == nil && m.SessionID != "" {
		return strings.Replace(a, m.SessionID, session.Redact(m.SessionID), 1)
	}
	return a
}

// printable returns a session hash fit for a failure message: the public
// key replaced by its length.
func printable(f map[string]string) map[string]string {
	out := maps.Clone(f)
	if k, ok := out["client_public_key"]; ok {
		out["client_public_key"] = fmt.Sprintf("<%d bytes>", len(k))
	}
	return out
}

// cli runs the real redis-cli against the topology's Redis and returns its
// output, failing the test on a non-zero exit.
func (tp *topology) cli(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, code := runCmd(t, tp.redisCLI, append([]string{"-p", strconv.Itoa(tp.redis.Port)}, args...)...)
	if code != 0 || strings.HasPrefix(stdout, "ERR") || strings.HasPrefix(stdout, "WRONGTYPE") {
		shown := make([]string, len(args))
		for i, a := range args {
			shown[i] = redactArg(a)
		}
		t.Fatalf("redis-cli %s = exit %d, %q %q", strings.Join(shown, " "), code, stdout, stderr)
	}
	return strings.TrimRight(stdout, "\n")
}

// hgetall runs redis-cli HGETALL session:<id> and returns the fields.
func (tp *topology) hgetall(t *testing.T, id string) map[string]string {
	t.Helper()
	out := tp.cli(t, "HGETALL", "session:"+id)
	fields := map[string]string{}
	if out == "" {
		return fields
	}
	lines := strings.Split(out, "\n")
	if len(lines)%2 != 0 {
		t.Fatalf("redis-cli HGETALL session:%s printed an odd number of lines (%d)", session.Redact(id), len(lines))
	}
	for i := 0; i < len(lines); i += 2 {
		fields[lines[i]] = lines[i+1]
	}
	return fields
}

// awaitRedisRevoked polls redis-cli HGETALL session:<id> until status is
// revoked (the gateways write a pushed revocation from a background
// worker) and returns the fields.
func (tp *topology) awaitRedisRevoked(t *testing.T, id string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(redisWriteTimeout)
	for {
		f := tp.hgetall(t, id)
		if f["status"] == "revoked" {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-cli HGETALL session:%s = %v after %v, want status revoked", session.Redact(id), printable(f), redisWriteTimeout)
		}
		time.Sleep(20 * time.Millisecond) // written by another process
	}
}

// wantRevokedAt checks that a hash's revoked_at_ms is a decimal Unix time
// in milliseconds in [from, to] (with a second of slack for the clocks).
func wantRevokedAt(t *testing.T, id string, f map[string]string, from, to int64) {
	t.Helper()
	at, err := strconv.ParseInt(f["revoked_at_ms"], 10, 64)
	if err != nil {
		t.Errorf("HGETALL session:%s revoked_at_ms = %q, want decimal milliseconds", session.Redact(id), f["revoked_at_ms"])
		return
	}
	if at < from-1000 || at > to+1000 {
		t.Errorf("HGETALL session:%s revoked_at_ms = %d, want within [%d, %d]", session.Redact(id), at, from, to)
	}
}

// TestComposeTopology runs docker-compose.yml's topology as processes and
// drives it the way the README and the runbook do. The subtests share the
// processes and run in order; each depends on the ones before.
func TestComposeTopology(t *testing.T) {
	began := time.Now()
	tp := startTopology(t, topologyOptions{})
	t.Logf("topology up (build and start) in %v", time.Since(began).Round(time.Millisecond))

	var alice []testSession
	var carol testSession
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"SignedRequestsAcceptedEverywhere", func(t *testing.T) {
			for range 3 {
				alice = append(alice, tp.createSession(t, "alice"))
			}
			carol = tp.createSession(t, "carol")
			tp.wantAccepted(t, append(slices.Clone(alice), carol)...)
		}},
		{"PushedRevocationRejectedEverywhereAtOnce", func(t *testing.T) {
			s := alice[0]
			start := time.Now()
			tp.revoke(t, "/admin/sessions/"+s.ID+"/revoke", "/admin/sessions/"+session.Redact(s.ID)+"/revoke", s.ID)
			push := time.Since(start)
			fanout, late := tp.awaitRevoked(t, s, start)
			t.Logf("fan-out: revoke answered (pushed to %d gateways) in %v; every gateway rejected %v after the revoke request began (bound %v)",
				replicas, push.Round(time.Microsecond), fanout.Round(time.Microsecond), fanoutBound)
			if len(late) > 0 {
				t.Errorf("gateways %v still accepted %s after the push answered: the push is not synchronous", late, session.Redact(s.ID))
			}
			tp.wantAccepted(t, alice[1], alice[2], carol)
		}},
		{"UserRevocationRejectsAllSessionsEverywhere", func(t *testing.T) {
			tp.revoke(t, "/admin/users/alice/revoke", "/admin/users/alice/revoke", alice[0].ID, alice[1].ID, alice[2].ID)
			tp.wantRevoked(t, alice...)
			tp.wantAccepted(t, carol)
		}},
		{"RunbookRedisCLIShowsRevocation", func(t *testing.T) {
			now := time.Now().UnixMilli()
			for _, s := range alice {
				f := tp.awaitRedisRevoked(t, s.ID)
				if f["user_id"] != "alice" {
					t.Errorf("HGETALL session:%s user_id = %q, want alice", session.Redact(s.ID), f["user_id"])
				}
				wantRevokedAt(t, s.ID, f, began.UnixMilli(), now+redisWriteTimeout.Milliseconds())
			}
			if got := tp.hgetall(t, carol.ID)["status"]; got != "active" {
				t.Errorf("HGETALL session:%s status = %q, want active", session.Redact(carol.ID), got)
			}
			members := strings.Split(tp.cli(t, "SMEMBERS", "user:alice:sessions"), "\n")
			for _, s := range alice {
				if !slices.Contains(members, s.ID) {
					t.Errorf("SMEMBERS user:alice:sessions (%d members) does not hold %s", len(members), session.Redact(s.ID))
				}
			}
			if at, err := strconv.ParseInt(tp.cli(t, "GET", "user:alice:revoked_at_ms"), 10, 64); err != nil || at < began.UnixMilli()-1000 {
				t.Errorf("GET user:alice:revoked_at_ms = %d, %v: want the time of the user revocation", at, err)
			}
			if got, want := tp.cli(t, "PUBSUB", "NUMSUB", channel), channel+"\n"+strconv.Itoa(replicas); got != want {
				t.Errorf("PUBSUB NUMSUB %s = %q, want %q", channel, got, want)
			}
			clients := tp.cli(t, "CLIENT", "LIST", "TYPE", "pubsub")
			for _, g := range tp.gateways {
				if !slices.ContainsFunc(strings.Split(clients, "\n"), func(line string) bool {
					return slices.Contains(strings.Fields(line), "name="+g.name)
				}) {
					t.Errorf("CLIENT LIST TYPE pubsub = %q, want a connection named %s", clients, g.name)
				}
			}
		}},
		{"HandRevocationReachesEveryGateway", func(t *testing.T) {
			bob := tp.createSession(t, "bob")
			tp.wantAccepted(t, bob) // every gateway now holds bob's session in L1 (and Redis in L2)
			key := "session:" + bob.ID
			// One HSET, no message: Redis reports the change to every
			// gateway's subscriber (tracking), and each flips its L1.
			start := time.Now()
			tp.cli(t, "HSET", key, "status", "revoked")
			fanout, _ := tp.awaitRevoked(t, bob, start)
			t.Logf("hand revocation: every gateway rejected %v after redis-cli HSET began (bound %v)",
				fanout.Round(time.Microsecond), fanoutBound)
			if f := tp.hgetall(t, bob.ID); f["status"] != "revoked" || f["user_id"] != "bob" {
				t.Errorf("HGETALL session:%s = %v, want status revoked, user_id bob", session.Redact(bob.ID), printable(f))
			}
			tp.wantAccepted(t, carol)
		}},
		{"SessionctlSignExitStatus", func(t *testing.T) {
			dir := t.TempDir()
			for _, c := range []struct {
				s        testSession
				wantCode int
				wantLine string
			}{
				{carol, 0, "200 OK"},
				{alice[0], 1, "401 Unauthorized"},
			} {
				file := filepath.Join(dir, c.s.ID+".json")
				if err := os.WriteFile(file, c.s.raw, 0o600); err != nil {
					t.Fatal(err)
				}
				url := tp.gateways[0].url + "/e2e/sign"
				stdout, stderr, code := runCmd(t, tp.bins.sessionctl, "sign", "-key", "@"+file, "-url", url)
				if code != c.wantCode || !strings.Contains(stdout, c.wantLine) {
					t.Errorf("sessionctl sign -key @<%s>.json -url %s = exit %d, %q %q; want exit %d printing %q",
						session.Redact(c.s.ID), url, code, stdout, stderr, c.wantCode, c.wantLine)
				}
			}
		}},
		{"SIGTERMEndsEveryProcessWithStatus0", func(t *testing.T) {
			for _, g := range tp.gateways {
				code, took := g.proc.stop(t)
				t.Logf("%s ended %v after SIGTERM with exit status %d", g.name, took.Round(time.Millisecond), code)
				if code != 0 {
					t.Errorf("%s exit status after SIGTERM = %d, want 0", g.name, code)
				}
			}
			// The kernel closed the gateways' connections; Redis drops
			// their subscriptions when it reads the close.
			deadline := time.Now().Add(redisWriteTimeout)
			for got := tp.cli(t, "PUBSUB", "NUMSUB", channel); got != channel+"\n0"; got = tp.cli(t, "PUBSUB", "NUMSUB", channel) {
				if time.Now().After(deadline) {
					t.Errorf("PUBSUB NUMSUB %s = %q after the gateways ended, want 0 subscribers", channel, got)
					break
				}
				time.Sleep(20 * time.Millisecond) // another process's state
			}
			code, took := tp.backend.stop(t)
			t.Logf("backend ended %v after SIGTERM with exit status %d", took.Round(time.Millisecond), code)
			if code != 0 {
				t.Errorf("backend exit status after SIGTERM = %d, want 0", code)
			}
			if left := runningFrom(tp.binDir); len(left) > 0 {
				t.Errorf("processes still running after SIGTERM: %v", left)
			}
		}},
	}
	for _, step := range steps {
		if !t.Run(step.name, step.run) {
			t.Fatalf("%s failed; the later steps depend on it", step.name)
		}
	}
	t.Logf("TestComposeTopology took %v", time.Since(began).Round(time.Millisecond))
}
