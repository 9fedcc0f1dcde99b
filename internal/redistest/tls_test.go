package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestTLSServerAcceptsOnlyClientsTrustingTheCA(t *testing.T) {
	ctx := context.Background()
	ca := NewTestCA(t)
	s := Start(t, Options{TLS: ca})
	if s.TLSAddr == "" || s.TLSAddr != s.Addr {
		t.Fatalf("TLSAddr = %q, Addr = %q; want both the TLS address", s.TLSAddr, s.Addr)
	}
	fast := func(o *redis.Options) *redis.Options {
		o.DialTimeout, o.ReadTimeout, o.MaxRetries = time.Second, time.Second, -1
		return o
	}

	t.Run("rediss client with the CA pool connects", func(t *testing.T) {
		o, err := redis.ParseURL("rediss://" + s.TLSAddr)
		if err != nil {
			t.Fatal(err)
		}
		o.TLSConfig.RootCAs = ca.CertPool()
		c := redis.NewClient(o)
		defer c.Close()
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatalf("SET over rediss with the CA pool: %v", err)
		}
		if got, err := s.Client(t).Get(ctx, "k").Result(); err != nil || got != "v" {
			t.Fatalf("Client().Get(k) = %q, %v; want %q", got, err, "v")
		}
	})

	t.Run("rediss client without the CA fails certificate verification", func(t *testing.T) {
		o, err := redis.ParseURL("rediss://" + s.TLSAddr)
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(fast(o))
		defer c.Close()
		err = c.Ping(ctx).Err()
		var verr *tls.CertificateVerificationError
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &verr) || !errors.As(err, &unknown) {
			t.Fatalf("PING without the CA = %v, want an unknown-authority certificate error", err)
		}
	})

	t.Run("plaintext client to the TLS port fails", func(t *testing.T) {
		c := redis.NewClient(fast(&redis.Options{Addr: s.TLSAddr}))
		defer c.Close()
		if err := c.Ping(ctx).Err(); err == nil {
			t.Fatalf("plaintext PING to TLS port %s = nil error, want an error", s.TLSAddr)
		}
	})

	t.Run("CA files and PEM hold the CA", func(t *testing.T) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca.PEM()) {
			t.Fatalf("AppendCertsFromPEM(PEM()) = false, want true")
		}
		pair, err := tls.LoadX509KeyPair(ca.CertFile(), ca.KeyFile())
		if err != nil {
			t.Fatalf("LoadX509KeyPair(CertFile, KeyFile): %v", err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
				t.Errorf("server certificate Verify(%q) = %v, want nil", host, err)
			}
		}
	})

	t.Run("replica of a TLS primary replicates over TLS", func(t *testing.T) {
		r := StartReplica(t, s, Options{})
		if r.TLSAddr == "" {
			t.Fatalf("replica TLSAddr is empty, want the replica to use the primary's CA")
		}
		cmds, err := s.Client(t).Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "r", "1", 0)
			p.Do(ctx, "WAIT", 1, 5000)
			return nil
		})
		if err != nil {
			t.Fatalf("SET r; WAIT 1: %v", err)
		}
		if got, err := r.Client(t).Get(ctx, "r").Result(); err != nil || got != "1" {
			t.Fatalf("replica GET r = %q, %v (WAIT said %v); want %q", got, err, cmds[1], "1")
		}
	})
}
