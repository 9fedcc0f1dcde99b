package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions configures StartSentinel. Zero fields mean defaults.
type SentinelOptions struct {
	// MasterName is the name the sentinels monitor the primary under.
	// Default "mymaster"; no spaces.
	MasterName string
	// Sentinels is the number of sentinel processes, default 3.
	Sentinels int
	// Quorum is how many sentinels must agree that the primary is down,
	// default a majority of Sentinels (2 of 3); at most Sentinels.
	Quorum int
	// DownAfter is "down-after-milliseconds": how long the primary may not
	// answer before a sentinel thinks it down. Default 1s; whole
	// milliseconds, at least 100ms.
	DownAfter time.Duration
	// FailoverTimeout is "failover-timeout", default 3s; whole
	// milliseconds, at least 100ms.
	FailoverTimeout time.Duration
}

func (o *SentinelOptions) validate() error {
	if o.MasterName == "" {
		o.MasterName = "mymaster"
	}
	if strings.ContainsFunc(o.MasterName, func(r rune) bool { return r <= ' ' || r == '"' || r == '\'' }) {
		return fmt.Errorf("redistest: SentinelOptions.MasterName %q has spaces or quotes", o.MasterName)
	}
	switch {
	case o.Sentinels == 0:
		o.Sentinels = 3
	case o.Sentinels < 0:
		return fmt.Errorf("redistest: SentinelOptions.Sentinels = %d, want 0 (default 3) or more", o.Sentinels)
	}
	switch {
	case o.Quorum == 0:
		o.Quorum = o.Sentinels/2 + 1
	case o.Quorum < 0 || o.Quorum > o.Sentinels:
		return fmt.Errorf("redistest: SentinelOptions.Quorum = %d, want 0 (default majority) or 1..%d", o.Quorum, o.Sentinels)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"DownAfter", &o.DownAfter, time.Second},
		{"FailoverTimeout", &o.FailoverTimeout, 3 * time.Second},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 100*time.Millisecond || *d.v%time.Millisecond != 0:
			return fmt.Errorf("redistest: SentinelOptions.%s = %v, want 0 (default %v) or whole milliseconds of at least 100ms", d.name, *d.v, d.def)
		}
	}
	return nil
}

// Sentinel is a primary, one replica and a group of sentinels monitoring
// them, all on loopback and killed at test cleanup.
type Sentinel struct {
	tb        testing.TB
	name      string
	sentinels []*Server

	mu      sync.Mutex // guards primary and replica
	primary *Server
	replica *Server
}

// StartSentinel starts a primary, a replica of it, and opts.Sentinels
// sentinels ("redis-server sentinel.conf --sentinel", announcing
// 127.0.0.1) that monitor the primary, and waits until every sentinel
// knows the replica and the other sentinels, so that a failover can
// happen. It fails the test when redis-server is missing or opts is
// invalid.
func StartSentinel(tb testing.TB, opts SentinelOptions) *Sentinel {
	tb.Helper()
	if err := opts.validate(); err != nil {
		tb.Fatal(err)
	}
	primary := Start(tb, Options{})
	replica := StartReplica(tb, primary, Options{})
	sg := &Sentinel{tb: tb, name: opts.MasterName, primary: primary, replica: replica}
	for range opts.Sentinels {
		sg.sentinels = append(sg.sentinels, startSentinelProcess(tb, opts, primary.Port))
	}
	err := poll(30*time.Second, func(ctx context.Context) error {
		for _, s := range sg.sentinels {
			m, err := sg.sentinelMaster(ctx, s)
			if err != nil {
				return fmt.Errorf("sentinel %s: %w", s.Addr, err)
			}
			if m["num-slaves"] != "1" || m["num-other-sentinels"] != strconv.Itoa(opts.Sentinels-1) || m["flags"] != "master" {
				return fmt.Errorf("sentinel %s sees flags %q, %s replicas, %s other sentinels",
					s.Addr, m["flags"], m["num-slaves"], m["num-other-sentinels"])
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("redistest: sentinels not ready: %v", err)
	}
	return sg
}

func startSentinelProcess(tb testing.TB, opts SentinelOptions, primaryPort int) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: Binary(tb, "redis-server"), dir: tb.TempDir(), args: []string{"--sentinel"}}
	name := opts.MasterName
	// Sentinel rewrites its configuration file, so it lives in dir.
	s.run(FreePort, "sentinel.conf", func() []string {
		return []string{
			"bind 127.0.0.1",
			"port " + strconv.Itoa(s.Port),
			"dir " + s.dir,
			"protected-mode no",
			"logfile " + filepath.Join(s.dir, "redis.log"),
			"sentinel announce-ip 127.0.0.1",
			"sentinel announce-port " + strconv.Itoa(s.Port),
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", name, primaryPort, opts.Quorum),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", name, opts.DownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", name, opts.FailoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", name),
		}
	})
	return s
}

// MasterName returns the name the sentinels monitor the primary under.
func (sg *Sentinel) MasterName() string { return sg.name }

// SentinelAddrs returns the sentinels' addresses.
func (sg *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(sg.sentinels))
	for i, s := range sg.sentinels {
		addrs[i] = s.Addr
	}
	return addrs
}

// Sentinels returns the sentinel processes.
func (sg *Sentinel) Sentinels() []*Server { return append([]*Server(nil), sg.sentinels...) }

// Primary returns the current primary: the one started first or, after
// WaitFailover, the promoted replica.
func (sg *Sentinel) Primary() *Server {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	return sg.primary
}

// Replica returns the other data server: the replica started first or,
// after WaitFailover, the former primary (killed; after its Restart the
// sentinels make it a replica of the new primary).
func (sg *Sentinel) Replica() *Server {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	return sg.replica
}

// FailoverClient returns a go-redis failover client for the group, closed
// at cleanup.
func (sg *Sentinel) FailoverClient(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    sg.name,
		SentinelAddrs: sg.SentinelAddrs(),
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// UniversalClient returns redis.NewUniversalClient for the group (a
// failover client, as MasterName is set), closed at cleanup.
func (sg *Sentinel) UniversalClient(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:      sg.SentinelAddrs(),
		MasterName: sg.name,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// KillPrimary kills the current primary and returns it. WaitFailover waits
// for the sentinels to promote the replica.
func (sg *Sentinel) KillPrimary() *Server {
	p := sg.Primary()
	p.Kill()
	return p
}

// WaitFailover polls every live sentinel with "SENTINEL
// get-master-addr-by-name" until all name the same live server of the
// group and that server's INFO says role:master, or timeout passes. It then
// records that server as Primary (and the other as Replica) and returns it.
func (sg *Sentinel) WaitFailover(timeout time.Duration) (*Server, error) {
	var promoted *Server
	err := poll(timeout, func(ctx context.Context) error {
		promoted = nil
		for _, s := range sg.sentinels {
			if !s.alive() {
				continue
			}
			addr, err := sg.masterAddr(ctx, s)
			if err != nil {
				return fmt.Errorf("sentinel %s: %w", s.Addr, err)
			}
			d := sg.dataServer(addr)
			if d == nil || !d.alive() {
				return fmt.Errorf("sentinel %s names %s, not a live server", s.Addr, addr)
			}
			if promoted != nil && promoted != d {
				return fmt.Errorf("sentinels name %s and %s", promoted.Addr, d.Addr)
			}
			promoted = d
		}
		if promoted == nil {
			return errors.New("no live sentinel")
		}
		role, err := promoted.Role(ctx)
		if err != nil {
			return err
		}
		if role != "master" {
			return fmt.Errorf("%s has role %s", promoted.Addr, role)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redistest: failover of %s: %w", sg.name, err)
	}
	sg.mu.Lock()
	defer sg.mu.Unlock()
	if promoted != sg.primary {
		sg.primary, sg.replica = promoted, sg.primary
	}
	return promoted, nil
}

// dataServer returns the primary or replica listening on addr, or nil.
func (sg *Sentinel) dataServer(addr string) *Server {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	for _, s := range []*Server{sg.primary, sg.replica} {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

func (sg *Sentinel) sentinelClient(s *Server) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{
		Addr:        s.Addr,
		DialTimeout: time.Second,
		ReadTimeout: time.Second,
		MaxRetries:  -1,
		PoolSize:    1,
	})
}

func (sg *Sentinel) sentinelMaster(ctx context.Context, s *Server) (map[string]string, error) {
	c := sg.sentinelClient(s)
	defer c.Close()
	return c.Master(ctx, sg.name).Result()
}

func (sg *Sentinel) masterAddr(ctx context.Context, s *Server) (string, error) {
	c := sg.sentinelClient(s)
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, sg.name).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("get-master-addr-by-name answered %q", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}
