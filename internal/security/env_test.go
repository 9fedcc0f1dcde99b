package security

import (
	"context"
	"flag"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/internal/testenv"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

var ctx = context.Background()

var seedFlag = flag.Uint64("security.seed", 0, "seed of the randomized tests; 0 draws a new one")

// newRand returns the random source of a randomized test and logs its seed
// with the command that replays it.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay: go test ./internal/security -run '^%s$' -security.seed %d)", seed, t.Name(), seed)
	return rand.New(rand.NewPCG(seed, seed^0x5ec))
}

// replicaConfig describes one gateway replica: a tiered cache on its own
// Redis client.
type replicaConfig struct {
	name       string
	client     redis.UniversalClient // closed when the test ends
	backendURL string
	l2         rediscache.Options
	logger     *slog.Logger // for tiered, its subscriber and rediscache
	edit       func(*tiered.Options)
	noWait     bool // do not wait for the first sync
}

// startReplica starts a tiered cache and, unless cfg.noWait, waits until
// its subscription is synced. It is closed when the test ends.
func startReplica(t *testing.T, cfg replicaConfig) *tiered.Cache {
	t.Helper()
	r := testenv.Replica{Name: cfg.name, Client: cfg.client, Redis: cfg.l2,
		Backend: backend.Options{BaseURL: cfg.backendURL}, NoWait: cfg.noWait}
	if r.Redis.Logger == nil {
		r.Redis.Logger = cfg.logger
	}
	return testenv.Start(t, r, func(l2 *rediscache.Cache, be *backend.Client) (*tiered.Cache, error) {
		opts := tiered.Options{Redis: l2, Backend: be, Logger: cfg.logger, SubscriberName: cfg.name}
		if cfg.edit != nil {
			cfg.edit(&opts)
		}
		return tiered.New(opts)
	})
}

// plainClient returns a client of addr named name, with per-call deadlines.
func plainClient(addr, name string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, ClientName: name, ContextTimeoutEnabled: true})
}

// eventually polls cond until it holds, failing the test after timeout.
// The tiered package has no hook outside itself, so these tests observe
// what a replica did (its L1, its counters) by polling with a deadline.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: "+format, append([]any{timeout}, args...)...)
		}
		<-tick.C
	}
}

// revokedInL1 reports whether the replica's L1 holds id as revoked, or
// holds nothing of it because a resync dropped its active entries (a
// heartbeat missed on a loaded machine): either way it serves no "active"
// from L1, and a replayed revocation of an entry it no longer holds leaves
// nothing behind to look at.
func revokedInL1(c *tiered.Cache, id string) bool {
	r, ok, _ := c.Peek(id)
	if !ok {
		return c.Stats().ResyncDrops > 0
	}
	return r.Status == session.StatusRevoked
}
