package security

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// redisPassword is the default user's password of the TLS server.
const redisPassword = "tls-test-pw-3f9d21aa"

// TestTLSReplicaLooksUpAndFansOut runs two replicas on a TLS-only
// redis-server (no plaintext port) through redisconn with rediss:// and the
// test CA: lookups fill and read Redis, and a revocation on one replica
// reaches the other.
func TestTLSReplicaLooksUpAndFansOut(t *testing.T) {
	ca := redistest.NewTestCA(t)
	srv := redistest.Start(t, redistest.Options{TLS: ca, Password: redisPassword})
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	replicas := make([]*tiered.Cache, 2)
	for i := range replicas {
		name := fmt.Sprintf("tls-%d", i+1)
		cfg := redisconn.Config{URL: "rediss://:" + redisPassword + "@" + srv.Addr, CAFile: ca.CAFile(), ClientName: name}
		rdb, err := cfg.NewClient()
		if err != nil {
			t.Fatalf("redisconn: %v", err)
		}
		replicas[i] = startReplica(t, replicaConfig{name: name, client: rdb, backendURL: be.URL()})
	}
	var ids []string
	for i := range 20 {
		rec, _ := be.NewSession(fmt.Sprintf("user-%d", i))
		ids = append(ids, rec.DeviceSessionID)
		for j, r := range replicas {
			want := []tiered.Tier{tiered.TierBackend, tiered.TierL2}[j]
			if got, tier, err := r.LookupTier(ctx, rec.DeviceSessionID); err != nil || got != rec || tier != want {
				t.Fatalf("replica %d: LookupTier(%q) = %v, %v, %v; want the record from %v", j, rec.DeviceSessionID, got.Status, tier, err, want)
			}
		}
	}
	for i, id := range ids {
		be.Revoke(id)
		if err := replicas[i%2].Revoke(ctx, id); err != nil {
			t.Fatalf("Revoke(%q): %v", id, err)
		}
		other := replicas[(i+1)%2]
		eventually(t, 5*time.Second, func() bool { return revokedInL1(other, id) }, "revocation %d did not reach the other replica over TLS", i)
		if got, err := other.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("Lookup(%q) on the other replica = %v, %v; want revoked", id, got.Status, err)
		}
	}
}

// forward accepts connections on listen (host:0) and relays each to
// upstream, until the test ends. It lets a client reach the server by an
// address the server's certificate does not name.
func forward(t *testing.T, listen, upstream string) string {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("listen on %s: %v", listen, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", upstream)
			if err != nil {
				in.Close()
				continue
			}
			track(in)
			track(out)
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// TestTLSRefusals checks that a connection fails, with redisconn.Explain's
// message, when the CA is wrong, the server name is not the certificate's,
// TLS and plaintext are mixed up, or the password is wrong; that
// skip_verify=true in a URL is refused without InsecureSkipTLSVerify; and
// that no message carries the password.
func TestTLSRefusals(t *testing.T) {
	ca := redistest.NewTestCA(t)
	otherCA := redistest.NewTestCA(t)
	tlsSrv := redistest.Start(t, redistest.Options{TLS: ca, Password: redisPassword})
	plainSrv := redistest.Start(t, redistest.Options{Password: redisPassword})
	_, port, _ := net.SplitHostPort(tlsSrv.Addr)
	// 127.0.0.2 is loopback too, but the certificate names only
	// 127.0.0.1, ::1 and localhost.
	unnamed := forward(t, "127.0.0.2:0", tlsSrv.Addr)
	url := func(scheme, pw, addr string) string { return scheme + "://:" + pw + "@" + addr }

	tests := []struct {
		name    string
		cfg     redisconn.Config
		wantNew string // prefix of NewClient's error; "" if it must succeed
		want    string // prefix of Explain(Ping error); "" for success
		orWant  string // another accepted prefix
	}{
		{name: "right CA", cfg: redisconn.Config{URL: url("rediss", redisPassword, tlsSrv.Addr), CAFile: ca.CAFile()}},
		{name: "right CA, localhost", cfg: redisconn.Config{URL: url("rediss", redisPassword, "localhost:"+port), CAFile: ca.CAFile()}},
		{name: "wrong CA", cfg: redisconn.Config{URL: url("rediss", redisPassword, tlsSrv.Addr), CAFile: otherCA.CAFile()},
			want: "TLS certificate not trusted"},
		{name: "system roots only", cfg: redisconn.Config{URL: url("rediss", redisPassword, tlsSrv.Addr)},
			want: "TLS certificate not trusted"},
		{name: "server name not in the certificate", cfg: redisconn.Config{URL: url("rediss", redisPassword, unnamed), CAFile: ca.CAFile()},
			want: "TLS certificate not trusted"},
		{name: "plaintext to the TLS port", cfg: redisconn.Config{URL: url("redis", redisPassword, tlsSrv.Addr)},
			want: "Redis closed the connection"},
		// Redis reads the ClientHello as an inline command: it answers
		// with an error (not TLS) if the hello holds a newline byte, and
		// otherwise waits for one until the client's deadline.
		{name: "TLS to a plaintext server", cfg: redisconn.Config{URL: url("rediss", redisPassword, plainSrv.Addr), CAFile: ca.CAFile()},
			want: "TLS handshake failed", orWant: "Redis did not answer in time"},
		{name: "wrong password over TLS", cfg: redisconn.Config{URL: url("rediss", "not-"+redisPassword, tlsSrv.Addr), CAFile: ca.CAFile()},
			want: "Redis refused the credentials"},
		{name: "no password over TLS", cfg: redisconn.Config{URL: "rediss://" + tlsSrv.Addr, CAFile: ca.CAFile()},
			want: "Redis requires a password"},
		{name: "skip_verify in the URL without the option", cfg: redisconn.Config{URL: url("rediss", redisPassword, tlsSrv.Addr) + "?skip_verify=true", CAFile: otherCA.CAFile()},
			wantNew: "redis: the URL asks for skip_verify=true; refusing without -tls-insecure-skip-verify"},
		{name: "skip_verify in the URL with InsecureSkipTLSVerify", cfg: redisconn.Config{URL: url("rediss", redisPassword, tlsSrv.Addr) + "?skip_verify=true", CAFile: otherCA.CAFile(), InsecureSkipTLSVerify: true}},
		{name: "a CA file for a plaintext URL", cfg: redisconn.Config{URL: url("redis", redisPassword, plainSrv.Addr), CAFile: ca.CAFile()},
			wantNew: "redis: -tls-ca given for a plaintext redis:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := tt.cfg.NewClient()
			if tt.wantNew != "" || err != nil {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantNew) || tt.wantNew == "" {
					t.Fatalf("NewClient() = %v, want an error starting %q", err, tt.wantNew)
				}
				if strings.Contains(err.Error(), redisPassword) {
					t.Fatalf("NewClient() error %q carries the password", err)
				}
				return
			}
			defer rdb.Close()
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			err = redisconn.Ping(pctx, rdb)
			msg := redisconn.Explain(err)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Ping = %v (%s), want success", err, msg)
			case tt.want != "" && !strings.HasPrefix(msg, tt.want) && (tt.orWant == "" || !strings.HasPrefix(msg, tt.orWant)):
				t.Fatalf("Explain(Ping error %v) = %q, want it to start %q", err, msg, tt.want)
			case strings.Contains(msg, redisPassword):
				t.Fatalf("Explain(...) = %q carries the password", msg)
			}
		})
	}
}
