package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// healthcheck runs `gatewayd healthcheck args...` through run, as main does.
func healthcheck(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"healthcheck"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// statusServer answers every request with status and body.
func statusServer(t *testing.T, status int, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHealthcheck(t *testing.T) {
	healthy := newFixture(t)
	sick := newFixture(t)
	sick.backend.SetFault(backendtest.Fault{Status: http.StatusInternalServerError})
	_, healthyPort, err := net.SplitHostPort(healthy.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	notFound := statusServer(t, http.StatusNotFound, `{"error":"session not found"}`)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // until the client gives up
	}))
	t.Cleanup(hang.Close)

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOutput string // in stdout when wantCode is 0, in stderr otherwise
	}{
		{"gateway healthy", []string{"-listen", healthy.srv.Listener.Addr().String()}, 0, `200 OK {"status":"ok"`},
		{"listen address without a host dials loopback", []string{"-listen", ":" + healthyPort}, 0, "GET http://127.0.0.1:" + healthyPort + "/healthz: 200 OK"},
		{"listen address 0.0.0.0 dials loopback", []string{"-listen", "0.0.0.0:" + healthyPort}, 0, "200 OK"},
		{"gateway unhealthy", []string{"-listen", sick.srv.Listener.Addr().String()}, 1, `503 Service Unavailable {"status":"unhealthy"`},
		{"url answering the wanted status", []string{"-url", notFound.URL + "/api/v1/internal/sessions/probe", "-status", "404"}, 0, "404 Not Found"},
		{"url answering another status", []string{"-url", notFound.URL + "/x"}, 1, "404 Not Found"},
		{"nothing listening", []string{"-listen", redistest.ClosedAddr(t)}, 1, "connection refused"},
		{"no answer within the timeout", []string{"-url", hang.URL, "-timeout", "100ms"}, 1, "deadline exceeded"},
		{"unknown flag", []string{"-no-such-flag"}, 2, "flag provided but not defined"},
		{"argument", []string{"extra"}, 2, `unexpected argument "extra"`},
		{"zero timeout", []string{"-timeout", "0s"}, 2, "-timeout 0s"},
		{"status out of range", []string{"-status", "42"}, 2, "-status 42"},
		{"url not http", []string{"-url", "ftp://127.0.0.1/healthz"}, 2, "want an http://"},
		{"listen without a port", []string{"-listen", "8080"}, 2, `-listen "8080"`},
		{"help", []string{"-h"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			code, stdout, stderr := healthcheck(t, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("gatewayd healthcheck %q = exit %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, stdout, stderr)
			}
			out, other := stderr, stdout
			if code == 0 {
				out, other = stdout, stderr
			}
			if !strings.Contains(out, tt.wantOutput) {
				t.Errorf("gatewayd healthcheck %q printed %q, want it to contain %q", tt.args, out, tt.wantOutput)
			}
			if code != 0 && other != "" {
				t.Errorf("gatewayd healthcheck %q = exit %d and printed %q on stdout, want nothing there", tt.args, code, other)
			}
			if took := time.Since(start); took > defaultHealthcheckTimeout {
				t.Errorf("gatewayd healthcheck %q took %v, want at most the default -timeout %v", tt.args, took, defaultHealthcheckTimeout)
			}
		})
	}
}

func TestLoopbackAddr(t *testing.T) {
	tests := []struct {
		listen, want string
	}{
		{":8080", "127.0.0.1:8080"},
		{"0.0.0.0:8080", "127.0.0.1:8080"},
		{"[::]:8080", "[::1]:8080"},
		{"127.0.0.1:9", "127.0.0.1:9"},
		{"[::1]:9", "[::1]:9"},
		{"gateway-1:8080", "gateway-1:8080"},
	}
	for _, tt := range tests {
		if got, err := loopbackAddr(tt.listen); err != nil || got != tt.want {
			t.Errorf("loopbackAddr(%q) = %q, %v, want %q", tt.listen, got, err, tt.want)
		}
	}
	for _, bad := range []string{"8080", "gateway-1", "127.0.0.1:", ""} {
		if got, err := loopbackAddr(bad); err == nil {
			t.Errorf("loopbackAddr(%q) = %q, nil, want an error", bad, got)
		}
	}
}
