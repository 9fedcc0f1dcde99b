package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// waitTimeout bounds the waits for replication and promotion.
const waitTimeout = 15 * time.Second

// StartReplica starts a server that replicates primary ("replicaof") and
// waits until its INFO reports master_link_status:up. opts is as for Start.
// When primary speaks TLS and opts.TLS is nil, the replica uses the
// primary's CA and replicates over TLS; when primary has a Password, the
// replica authenticates with it ("masterauth"). A primary whose default
// user is disabled by its ACL file needs "masteruser" and "masterauth" in
// opts.Config.
//
// Restart keeps the replica a replica of primary, even after Promote.
func StartReplica(tb testing.TB, primary *Server, opts Options) *Server {
	tb.Helper()
	if opts.TLS == nil {
		opts.TLS = primary.ca
	}
	config := []string{"replicaof 127.0.0.1 " + strconv.Itoa(primary.Port)}
	if primary.ca != nil {
		config = append(config, "tls-replication yes")
	}
	if primary.password != "" {
		config = append(config, "masterauth "+primary.password)
	}
	opts.Config = append(config, opts.Config...)
	r := Start(tb, opts)
	err := r.waitInfo(waitTimeout, "replication", func(info map[string]string) bool {
		return info["master_link_status"] == "up"
	})
	if err != nil {
		tb.Fatalf("redistest: replica %s of %s: link not up: %v\n%s", r.Addr, primary.Addr, err, r.Log())
	}
	return r
}

// Promote turns a replica into a primary (REPLICAOF NO ONE) and waits until
// its INFO reports role:master. It fails the test on error.
func (s *Server) Promote() {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := s.newClient()
	defer c.Close()
	if err := c.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		s.tb.Fatalf("redistest: REPLICAOF NO ONE on %s: %v", s.Addr, err)
	}
	err := s.waitInfo(waitTimeout, "replication", func(info map[string]string) bool {
		return info["role"] == "master"
	})
	if err != nil {
		s.tb.Fatalf("redistest: promote %s: %v", s.Addr, err)
	}
}

// Role returns the "role" field of the server's INFO replication: "master"
// or "slave".
func (s *Server) Role(ctx context.Context) (string, error) {
	c := s.newClient()
	defer c.Close()
	info, err := serverInfo(ctx, c, "replication")
	if err != nil {
		return "", err
	}
	return info["role"], nil
}

// newClient returns a client that the caller closes, with the server's TLS
// and password.
func (s *Server) newClient() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:        s.Addr,
		Password:    s.password,
		TLSConfig:   s.tlsConfig(),
		DialTimeout: time.Second,
		ReadTimeout: time.Second,
		MaxRetries:  -1,
		PoolSize:    1,
	})
}

// waitInfo polls INFO section until ok accepts it or timeout passes.
// Polling is the only way to learn what another process has done.
func (s *Server) waitInfo(timeout time.Duration, section string, ok func(map[string]string) bool) error {
	c := s.newClient()
	defer c.Close()
	return poll(timeout, func(ctx context.Context) error {
		info, err := serverInfo(ctx, c, section)
		if err != nil {
			return err
		}
		if !ok(info) {
			return fmt.Errorf("INFO %s not as awaited", section)
		}
		return nil
	})
}

// poll calls try every 50ms until it returns nil or timeout passes, and
// returns the last error. Each try gets a context bounded by the deadline.
func poll(timeout time.Duration, try func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		last = try(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %v: %w", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// serverInfo returns the "field:value" lines of INFO section as a map.
func serverInfo(ctx context.Context, c redis.Cmdable, section string) (map[string]string, error) {
	text, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	return parseInfo(text), nil
}

func parseInfo(text string) map[string]string {
	info := make(map[string]string)
	for line := range strings.Lines(text) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok {
			info[k] = v
		}
	}
	return info
}
