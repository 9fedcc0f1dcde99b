// Package testenv builds what the integration tests share: a real
// redis-server (internal/redistest), the fake backend (backendtest) and
// replicas wired as a gateway wires them — a go-redis client of their own
// with ContextTimeoutEnabled, rediscache.New, backend.New, then the cache
// (tiered.New, or the tiered package's own constructor in its tests),
// synced before it is returned.
//
// The package does not import tiered, so that tiered's in-package tests can
// use it: Start takes the function that builds the cache from the L2 and
// the backend client, and that function writes the tiered.Options.
//
// It is test support: its functions take a testing.TB, fail the test on a
// setup error and stop what they start at the test's cleanup. Call them
// from the test's goroutine. Under CI=true a missing redis-server fails
// the test instead of skipping it (redistest.Start).
package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
)

// syncTimeout bounds how long Start waits for a replica's subscription.
const syncTimeout = 10 * time.Second

// Options configures an Env.
type Options struct {
	// RedisConfig holds extra redis.conf lines, such as
	// "appendonly yes".
	RedisConfig []string
}

// Env is one redis-server and one backend, shared by the replicas started
// on them.
type Env struct {
	Redis   *redistest.Server
	Backend *backendtest.Server
}

// New starts a redis-server and a backend, both stopped at cleanup.
func New(tb testing.TB, opts Options) *Env {
	tb.Helper()
	srv := redistest.Start(tb, redistest.Options{Config: opts.RedisConfig})
	be := backendtest.NewServer()
	tb.Cleanup(be.Close)
	return &Env{Redis: srv, Backend: be}
}

// Client returns a new client of e's server configured as a gateway's
// (ContextTimeoutEnabled), its connections named name ("" leaves them
// unnamed). The caller closes it, or hands it to Start, which does.
func (e *Env) Client(name string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: e.Redis.Addr, ClientName: name, ContextTimeoutEnabled: true})
}

// Replica describes a replica on e's server and backend, its connections
// named name, with default L2 and backend options.
func (e *Env) Replica(name string) Replica {
	return Replica{Name: name, Client: e.Client(name), Backend: backend.Options{BaseURL: e.Backend.URL()}}
}

// Replica says how Start builds one replica.
type Replica struct {
	// Name names the replica in failure messages. It names no connection:
	// Client and the build function do that.
	Name string
	// Client is the replica's own Redis client, required; Start closes it
	// at cleanup.
	Client redis.UniversalClient
	// Redis configures the rediscache.Cache on Client.
	Redis rediscache.Options
	// Backend configures the backend client; BaseURL is required.
	Backend backend.Options
	// NoWait returns the cache without waiting for its first sync, for
	// tests of a replica whose channel cannot sync (an ACL that refuses
	// it, a Redis that is down).
	NoWait bool
}

// Cache is what Start needs of the cache it builds; *tiered.Cache has it.
type Cache interface {
	WaitSynced(ctx context.Context) error
	Close() error
}

// Start builds the L2 and the backend client r describes, passes them to
// build, and returns the cache build returned once its subscription is
// synced (at once with r.NoWait). At cleanup it closes the cache, then the backend client's idle
// connections, then the Redis client.
func Start[C Cache](tb testing.TB, r Replica, build func(l2 *rediscache.Cache, be *backend.Client) (C, error)) C {
	tb.Helper()
	if r.Client == nil {
		tb.Fatalf("replica %s: no Redis client", r.Name)
	}
	tb.Cleanup(func() { _ = r.Client.Close() })
	l2, err := rediscache.New(r.Client, r.Redis)
	if err != nil {
		tb.Fatalf("replica %s: %v", r.Name, err)
	}
	be, err := backend.New(r.Backend)
	if err != nil {
		tb.Fatalf("replica %s: %v", r.Name, err)
	}
	tb.Cleanup(be.CloseIdleConnections)
	c, err := build(l2, be)
	if err != nil {
		tb.Fatalf("replica %s: %v", r.Name, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	if r.NoWait {
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := c.WaitSynced(ctx); err != nil {
		tb.Fatalf("replica %s: WaitSynced: %v", r.Name, err)
	}
	return c
}
