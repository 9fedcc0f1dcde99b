package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/internal/signing"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

const gatewayToken = "debug-test-token"

// buildGatewayd builds cmd/gatewayd into a temporary directory and returns
// the binary's path.
func buildGatewayd(t *testing.T) string {
	t.Helper()
	gobin := goCommand(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, gobin, "build", "-o", dir+string(filepath.Separator), "./cmd/gatewayd")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gatewayd: %v\n%s", err, out)
	}
	return filepath.Join(dir, "gatewayd")
}

// gatewayProc is a gatewayd process on a loopback port.
type gatewayProc struct {
	name, url string
	cmd       *exec.Cmd
	log       *syncBuffer
	done      chan struct{} // closed when the process has been reaped
}

// startGatewayd runs bin as replica name on redisURL and backendURL, waits
// until /healthz answers 200, and stops it (SIGTERM, then SIGKILL) at
// cleanup. Its log is printed when the test fails.
func startGatewayd(t *testing.T, bin, name, redisURL, backendURL string) *gatewayProc {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	p := &gatewayProc{name: name, url: "http://" + addr, log: newSyncBuffer(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "-listen", addr, "-redis", redisURL, "-backend", backendURL, "-name", name,
		"-push-token", gatewayToken, "-log-level", "warn")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start gatewayd %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("gatewayd %s still running 5s after SIGTERM; killed", name)
		}
		if t.Failed() {
			t.Logf("gatewayd %s log:\n%s", name, p.log.String())
		}
	})
	// Polling is the only way to learn that another process is ready.
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("gatewayd %s ended before it was healthy: %v\n%s", name, p.cmd.ProcessState, p.log.String())
		default:
		}
		resp, err := http.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gatewayd %s not healthy after 20s (last: %v)\n%s", name, err, p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// request sends one signed request of the session to the gateway: a
// lookup through its tiers, which fills its L1. It returns the status.
func (p *gatewayProc) request(t *testing.T, id string, priv ed25519.PrivateKey) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.url+"/v1/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	signing.SignRequest(req, id, priv, time.Now(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("request to %s: %v", p.name, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// awaitStatus sends requests until the gateway answers status, within 5s.
func (p *gatewayProc) awaitStatus(t *testing.T, id string, priv ed25519.PrivateKey, status int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := p.request(t, id, priv)
		if got == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gatewayd %s answers %d 5s after the change, want %d", p.name, got, status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInspectGateways runs `sessionctl inspect <id> -gateways ...` against
// gatewayd processes built from this tree, on a real redis-server and a
// test backend: two gateways whose Redis user may turn tracking on, and
// one whose user may not, so that a hand revocation in Redis never reaches
// its L1.
func TestInspectGateways(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{ACLFile: "user default on nopass ~* &* +@all\n" +
		"user notrack on >notrack-pw ~* &* +@all -client|tracking\n"})
	redisURL := "redis://" + srv.Addr
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	bin := buildGatewayd(t)
	gw1 := startGatewayd(t, bin, "gw-1", redisURL, be.URL())
	gw2 := startGatewayd(t, bin, "gw-2", redisURL, be.URL())
	blind := startGatewayd(t, bin, "gw-notrack", "redis://notrack:notrack-pw@"+srv.Addr, be.URL())
	all := []*gatewayProc{gw1, gw2, blind}

	// Every gateway holds both sessions active in L1.
	hand, handPriv := be.NewSession("user-1")
	atBackend, atBackendPriv := be.NewSession("user-2")
	for _, g := range all {
		for _, s := range []struct {
			id   string
			priv ed25519.PrivateKey
		}{{hand.DeviceSessionID, handPriv}, {atBackend.DeviceSessionID, atBackendPriv}} {
			if got := g.request(t, s.id, s.priv); got != http.StatusOK {
				t.Fatalf("request to %s = %d, want 200", g.name, got)
			}
		}
	}
	// Revoke one by hand, in Redis alone, as the runbook does.
	cli := exec.Command(redistest.Binary(t, "redis-cli"), "-p", strconv.Itoa(srv.Port), "HSET", "session:"+hand.DeviceSessionID, "status", "revoked")
	if out, err := cli.CombinedOutput(); err != nil || string(out) != "0\n" {
		t.Fatalf("redis-cli HSET: %v, %q", err, out)
	}
	gw1.awaitStatus(t, hand.DeviceSessionID, handPriv, http.StatusUnauthorized)
	gw2.awaitStatus(t, hand.DeviceSessionID, handPriv, http.StatusUnauthorized)
	// The other is revoked at the backend only: no push, Redis says active.
	be.Revoke(atBackend.DeviceSessionID)

	urls := func(gs ...*gatewayProc) string {
		var u []string
		for _, g := range gs {
			u = append(u, g.url)
		}
		return strings.Join(u, ",")
	}
	row := func(g *gatewayProc, rest string) string { return g.url + " " + g.name + " " + rest }

	t.Run("revoked by hand, every gateway rejects", func(t *testing.T) {
		flags := []string{"-redis", redisURL, "-gateways", urls(gw1, gw2), "-push-token", gatewayToken}
		code, stdout, stderr := inspectCmd(t, hand.DeviceSessionID, flags...)
		t.Logf("$ sessionctl inspect %s -- %s\n%s%s(exit %d)", strings.Join(flags, " "), hand.DeviceSessionID, stdout, stderr, code)
		if code != exitOK || stderr != "" {
			t.Errorf("exit %d, stderr %q; want 0 and nothing", code, stderr)
		}
		for _, want := range []string{
			"status        revoked",
			"gateways      2 asked: 0 would accept a revoked session, 0 did not answer\n",
			"  GATEWAY ",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, stdout)
			}
		}
		wantRows(t, stdout, row(gw1, "reject_revoked l1 revoked"), row(gw2, "reject_revoked l1 revoked"))
	})

	t.Run("a gateway without tracking still accepts", func(t *testing.T) {
		t.Setenv(pushTokenEnv, gatewayToken)
		flags := []string{"-redis", redisURL, "-gateways", urls(all...)}
		code, stdout, stderr := inspectCmd(t, hand.DeviceSessionID, flags...)
		t.Logf("$ PUSH_TOKEN=%s sessionctl inspect %s -- %s\n%s%s(exit %d)", gatewayToken, strings.Join(flags, " "), hand.DeviceSessionID, stdout, stderr, code)
		if code != exitFailure {
			t.Errorf("exit %d, want %d", code, exitFailure)
		}
		if want := "gateways      3 asked: 1 would accept a revoked session, 0 did not answer\n"; !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
		wantRows(t, stdout, row(gw1, "reject_revoked l1 revoked"), row(gw2, "reject_revoked l1 revoked"),
			row(blind, "accept l1 active ACCEPTS A REVOKED SESSION; no tracking: hand edits of Redis do not reach its L1"))
		want := "sessionctl inspect: gateway " + blind.url + " (gw-notrack) would ACCEPT session " + hand.DeviceSessionID +
			", which Redis calls revoked (answered from l1)\n"
		if stderr != want {
			t.Errorf("stderr %q, want %q", stderr, want)
		}
	})

	t.Run("revoked at the backend only", func(t *testing.T) {
		code, stdout, stderr := inspectCmd(t, atBackend.DeviceSessionID, "-redis", redisURL,
			"-gateways", urls(gw1, gw2), "-push-token", gatewayToken, "-backend", be.URL())
		if code != exitFailure {
			t.Errorf("exit %d, want %d; stderr %q", code, exitFailure, stderr)
		}
		for _, want := range []string{"status        active\n", "backend       revoked\n"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, stdout)
			}
		}
		wantRows(t, stdout, row(gw1, "accept l1 active ACCEPTS A REVOKED SESSION"), row(gw2, "accept l1 active ACCEPTS A REVOKED SESSION"))
		if !strings.Contains(stderr, "would ACCEPT session "+atBackend.DeviceSessionID+", which the backend calls revoked") {
			t.Errorf("stderr %q does not name the accepting gateways", stderr)
		}
	})

	t.Run("backend still active for a hand revocation", func(t *testing.T) {
		code, stdout, stderr := inspectCmd(t, hand.DeviceSessionID, "-redis", redisURL, "-backend", be.URL())
		if code != exitOK || !strings.Contains(stdout, "backend       active\n") ||
			!strings.Contains(stderr, "WARNING: the backend still answers active for "+hand.DeviceSessionID) {
			t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant 0, the backend active and a warning", code, stderr, stdout)
		}
	})

	t.Run("json", func(t *testing.T) {
		code, stdout, stderr := inspectCmd(t, hand.DeviceSessionID, "-json", "-redis", redisURL,
			"-gateways", urls(all...), "-push-token", gatewayToken, "-backend", be.URL())
		if code != exitFailure {
			t.Errorf("exit %d, want %d; stderr %q", code, exitFailure, stderr)
		}
		var rep inspectReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("inspect -json output does not parse: %v\n%s", err, stdout)
		}
		if rep.Status != "revoked" || rep.Backend == nil || len(rep.Backend.Active) != 1 || len(rep.Gateways) != 3 {
			t.Fatalf("inspect -json = %+v; want revoked, the backend active, 3 gateways", rep)
		}
		for i, want := range []struct {
			replica, decision, tier, l1 string
			accepts, tracking           bool
		}{
			{"gw-1", decisionRevoked, "l1", "revoked", false, true},
			{"gw-2", decisionRevoked, "l1", "revoked", false, true},
			{"gw-notrack", decisionAccept, "l1", "active", true, false},
		} {
			g := rep.Gateways[i]
			if g.URL != all[i].url || g.Replica != want.replica || g.Decision != want.decision || g.Tier != want.tier ||
				g.L1 != want.l1 || g.AcceptsRevoked != want.accepts || g.Tracking != want.tracking || !g.Subscribed || g.Error != "" {
				t.Errorf("gateways[%d] = %+v, want %+v at %s", i, g, want, all[i].url)
			}
		}
		if strings.Contains(stdout+stderr, gatewayToken) {
			t.Errorf("the output holds the push token")
		}
	})

	// A gateway that cannot be asked, for any reason, fails the command
	// and is named.
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"missing_session"}` + "\n"))
	}))
	t.Cleanup(old.Close)
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"decision":"maybe"}`))
	}))
	t.Cleanup(garbage.Close)
	closed := "http://" + redistest.ClosedAddr(t)
	for _, tt := range []struct {
		name, gateway, token, why string
	}{
		{"nothing listening", closed, gatewayToken, "dial tcp " + strings.TrimPrefix(closed, "http://") + ": connect: connection refused"},
		{"wrong token", gw2.url, "wrong", "401: the gateway refused the push token (-push-token or $PUSH_TOKEN)"},
		{"no endpoint", old.URL, gatewayToken, "401 missing_session: no /debug/sessions/ endpoint there (an older gatewayd, or not a gatewayd)"},
		{"not a state", garbage.URL, gatewayToken, `the answer holds an unknown decision "maybe"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := inspectCmd(t, hand.DeviceSessionID, "-redis", redisURL,
				"-gateways", gw1.url+","+tt.gateway, "-push-token", tt.token)
			want := "sessionctl inspect: gateway " + tt.gateway + " did not answer: " + tt.why + "\n"
			if code != exitFailure || !strings.Contains(stderr, want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, exitFailure, want)
			}
			wantRows(t, stdout, tt.gateway+" - NO ANSWER - - "+tt.why)
		})
	}
}

// inspectCmd runs inspect with flags and id, after "--": the backend's ids
// may start with '-'.
func inspectCmd(t *testing.T, id string, flags ...string) (int, string, string) {
	t.Helper()
	return runCmd(t, append(append([]string{"inspect"}, flags...), "--", id)...)
}

// wantRows checks that the gateway table in stdout has each row, compared
// with its blanks squeezed.
func wantRows(t *testing.T, stdout string, rows ...string) {
	t.Helper()
	got := map[string]string{}
	for line := range strings.Lines(stdout) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(line, "  http") {
			got[f[0]] = strings.Join(f, " ")
		}
	}
	for _, want := range rows {
		url, _, _ := strings.Cut(want, " ")
		if got[url] != want {
			t.Errorf("gateway row %q, want %q; stdout:\n%s", got[url], want, stdout)
		}
	}
}

// TestInspectGatewaysBadUsage checks that bad -gateways and -backend values
// exit 2 before anything connects.
func TestInspectGatewaysBadUsage(t *testing.T) {
	l := listenCounting(t)
	for _, bad := range [][]string{
		{"-gateways", "127.0.0.1:8080"},
		{"-gateways", "ftp://127.0.0.1:8080"},
		{"-gateways", "http://127.0.0.1:8080,"},
		{"-gateways", "http://127.0.0.1:8080?x=1"},
		{"-backend", "127.0.0.1:8081"},
	} {
		code, _, stderr := runCmd(t, append([]string{"inspect", "dev-1", "-redis", l.url()}, bad...)...)
		if code != exitUsage || !strings.Contains(stderr, bad[0]) {
			t.Errorf("inspect %q: exit %d, stderr %q; want %d naming %s", bad, code, stderr, exitUsage, bad[0])
		}
	}
	if n := l.conns.Load(); n != 0 {
		t.Errorf("%d connections to Redis; bad usage must connect to nothing", n)
	}
}

// replicaDebugServer serves a stand-in for gatewayd's GET
// /debug/sessions/{id} from an in-process replica, for tests whose
// replicas are tiered.Caches rather than gatewayd processes (the runbook):
// the answer from L1 (Peek, which changes nothing) or else from Redis (l2),
// never from the backend. gatewayd's own endpoint is tested in its
// package, and against this command in TestInspectGateways.
func replicaDebugServer(t *testing.T, name string, c *tiered.Cache, l2 *rediscache.Cache) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, debugSessionsPath)
		if !ok || session.ValidateID(id) != nil {
			http.Error(w, `{"error":"invalid"}`, http.StatusBadRequest)
			return
		}
		sub := c.Stats().Channel
		st := gatewayState{Replica: name, L1: "absent", Subscribed: sub.Subscribed, Tracking: sub.Tracking}
		decide := func(rec session.Record, tier tiered.Tier) {
			st.Decision, st.Tier = decisionAccept, tier.String()
			if rec.Status != session.StatusActive {
				st.Decision = decisionRevoked
			}
		}
		if rec, held, _ := c.Peek(id); held {
			st.L1 = string(rec.Status)
			decide(rec, tiered.TierL1)
		} else if rec, err := l2.Get(r.Context(), id); err == nil {
			st.L2 = string(rec.Status)
			decide(rec, tiered.TierL2)
		} else {
			st.Decision, st.Tier, st.Errors = decisionError, tiered.TierNone.String(), []string{"no backend in this stand-in"}
		}
		var b bytes.Buffer
		_ = json.NewEncoder(&b).Encode(st)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b.Bytes())
	}))
	t.Cleanup(srv.Close)
	return srv
}
