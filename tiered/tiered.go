// Package tiered composes the session cache's tiers into one session.Cache:
// a per-process L1 (internal/l1, configured by localcache.Options), the
// shared L2 in Redis (rediscache) and the
// session backend (backend), with revocations fanned out over Redis pub/sub.
//
// Lookup path: an L1 hit answers; an L1 miss reads L2 and fills L1; a miss in
// both calls the backend, once per id at a time in this process (concurrent
// callers share the call), fills L2 with a guarded write and then L1. Unknown
// ids are cached as unknown for Options.NegativeTTL; backend errors are never
// cached.
//
// Revocation path: MarkRevoked and MarkAllRevokedForUser flip L1 at once and
// then write and publish the revocation in Redis from a background worker
// that retries; Revoke and RevokeUser do the same synchronously and return
// the error. Every replica, this one included, subscribes to the channel and
// flips its L1 on each message.
//
// Guarantees:
//   - Revocation is one-way: no path turns a revoked session active.
//   - A fill cannot resurrect: a record read from L2 or the backend before a
//     revocation reached this replica is stored, and answered, as revoked.
//     A user-wide revocation names no sessions, so for a backend answer it
//     overtook, the backend is asked again and has the last word: the
//     sessions its user opened after it stay active.
//   - Lost invalidations are noticed: a reconnect, a failed heartbeat or a
//     sequence gap marks the channel unhealthy; L1 "active" entries are then
//     served for at most Options.StaleBound before lookups revalidate them in
//     L2, and the replica replays what it missed (or drops its active
//     entries) before it trusts L1 again.
//   - Fail closed: when neither L1 (revoked, or active within its bound), L2
//     nor the backend can answer, Lookup returns an error.
//
// A Cache is safe for concurrent use. New starts two goroutines (the
// subscriber and the revocation worker), and a third for L1's clock unless
// Options.Now or Options.Local.Now is set; Close stops them and waits.
package tiered

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/internal/l1"
	"github.com/galaxy-game/sessioncache/internal/subscriber"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// Defaults for Options.
const (
	DefaultNegativeTTL    = 5 * time.Second
	DefaultNegativeSize   = 10000
	DefaultStaleBound     = time.Second
	DefaultFetchTimeout   = 3 * time.Second
	DefaultRevokeRetryFor = 2 * time.Minute
	// DefaultHeartbeatInterval is the default Options.HeartbeatInterval.
	DefaultHeartbeatInterval = 500 * time.Millisecond
)

// ErrClosed reports a call on a closed Cache.
var ErrClosed = errors.New("tiered: cache closed")

// Options configures a Cache. Zero fields mean the documented defaults.
type Options struct {
	// Redis is the shared L2 and the invalidation channel. Required.
	Redis *rediscache.Cache
	// Backend answers double misses: a *backend.Client, a *backend.Guard
	// around one, or any other backend.Fetcher. Required.
	Backend backend.Fetcher
	// Local configures L1 (see localcache.Options for its defaults).
	Local localcache.Options
	// NegativeTTL is how long an id the backend does not know is answered
	// with session.ErrNotFound without asking again. Default
	// DefaultNegativeTTL.
	NegativeTTL time.Duration
	// NegativeSize bounds the number of ids cached as unknown. Default
	// DefaultNegativeSize.
	NegativeSize int
	// StaleBound is how long L1 may keep serving "active" after the
	// invalidation channel was found unhealthy; after it, lookups read L2
	// (or the backend) until the channel is synced again. The worst-case
	// staleness of an L1 "active" after a silent loss of the channel is the
	// subscriber's HeartbeatInterval plus HeartbeatTimeout plus StaleBound.
	// Default DefaultStaleBound.
	StaleBound time.Duration
	// FetchTimeout bounds one shared backend call and the fills after it. It
	// must be at most half of the rediscache FillWindow. Default
	// DefaultFetchTimeout.
	FetchTimeout time.Duration
	// HeartbeatInterval is the time between two heartbeat probes on the
	// subscriber's connection. Default DefaultHeartbeatInterval. A negative
	// value turns the heartbeat off, and with it the only way to notice a
	// connection that stays open but carries nothing (a network
	// blackhole): go-redis alone does not notice one. Use it only in tests.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long a probe may stay unanswered before the
	// connection is declared dead and replaced. Default 3 ×
	// HeartbeatInterval; it must be 0 when the heartbeat is off.
	HeartbeatTimeout time.Duration
	// SubscriberClient, when set, is the client whose options the
	// subscriber's own connections are made from (a *redis.Client, a
	// Sentinel failover client or a *redis.ClusterClient), so that the
	// subscriber can use another pool, proxy or dialer than Redis's client.
	// The subscriber makes a client of its own from those options (RESP2,
	// an OnConnect that turns on tracking) and closes it at Close; hooks
	// added with AddHook are not carried over. With a client of any other
	// type, it subscribes through that client and runs without tracking.
	// Default: the rediscache.Cache's client.
	SubscriberClient redis.UniversalClient
	// SubscriberName is the name set with CLIENT SETNAME on every
	// subscriber connection, as `CLIENT LIST TYPE pubsub` shows it; it
	// survives reconnects. If Redis refuses the command (an ACL without
	// CLIENT), the connection goes on unnamed and a warning is logged. It
	// must consist of the bytes '!' to '~'. Default "": the client's own
	// name (redis.Options.ClientName), if any.
	SubscriberName string
	// RevokeRetryFor is how long a revocation this replica owes Redis
	// (MarkRevoked, MarkAllRevokedForUser, a failed Revoke) may keep
	// failing before it is counted in Stats.RevokeFailures and logged at
	// ERROR. It is retried all the same, with backoff from 50 ms to 2 s,
	// until Redis holds it or the Cache closes: while it fails, Redis may
	// still hold the session active. Set it above a Redis failover
	// (Sentinel's down-after-milliseconds or cluster-node-timeout plus a
	// few seconds), so that a failover does not page. Default
	// DefaultRevokeRetryFor.
	RevokeRetryFor time.Duration
	// Logger receives failures; never a full session id. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now. The subscriber (its heartbeat
	// and ages) uses it; a clock that stands still stops the heartbeat.
	// When Now is set and Local.Now is not, L1 uses Now too; when neither
	// is set, L1 checks expiry against a clock that a goroutine of the
	// Cache refreshes every 10 ms, so
	// that an L1 hit does not read the system clock (an entry may then
	// outlive its TTL by about 10 ms).
	Now func() time.Time
}

func (o *Options) setDefaults() error {
	if o.Redis == nil {
		return errors.New("tiered: Options.Redis is required")
	}
	if o.Backend == nil {
		return errors.New("tiered: Options.Backend is required")
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = DefaultNegativeTTL
	}
	if o.NegativeSize == 0 {
		o.NegativeSize = DefaultNegativeSize
	}
	if o.StaleBound == 0 {
		o.StaleBound = DefaultStaleBound
	}
	if o.FetchTimeout == 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.RevokeRetryFor == 0 {
		o.RevokeRetryFor = DefaultRevokeRetryFor
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Local.Now == nil && o.Now != nil {
		o.Local.Now = o.Now
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	switch {
	case o.NegativeTTL < 0:
		return fmt.Errorf("tiered: negative NegativeTTL %v", o.NegativeTTL)
	case o.NegativeSize < 0:
		return fmt.Errorf("tiered: negative NegativeSize %d", o.NegativeSize)
	case o.StaleBound < 0:
		return fmt.Errorf("tiered: negative StaleBound %v", o.StaleBound)
	case o.FetchTimeout < 0:
		return fmt.Errorf("tiered: negative FetchTimeout %v", o.FetchTimeout)
	case o.RevokeRetryFor < 0:
		return fmt.Errorf("tiered: negative RevokeRetryFor %v", o.RevokeRetryFor)
	case o.HeartbeatTimeout < 0:
		return fmt.Errorf("tiered: negative HeartbeatTimeout %v", o.HeartbeatTimeout)
	case o.HeartbeatInterval < 0 && o.HeartbeatTimeout != 0:
		return fmt.Errorf("tiered: HeartbeatTimeout %v is set but the heartbeat is off (negative HeartbeatInterval)", o.HeartbeatTimeout)
	}
	for i := 0; i < len(o.SubscriberName); i++ {
		if b := o.SubscriberName[i]; b < '!' || b > '~' {
			return fmt.Errorf("tiered: Options.SubscriberName has a disallowed byte 0x%02x at offset %d", b, i)
		}
	}
	if w := o.Redis.Options().FillWindow; 2*o.FetchTimeout > w {
		return fmt.Errorf("tiered: FetchTimeout %v is more than half of the rediscache FillWindow %v", o.FetchTimeout, w)
	}
	return nil
}

// Tier names the tier that answered a lookup.
type Tier int

// The tiers, in lookup order.
const (
	TierNone     Tier = iota // no tier answered: the lookup failed
	TierL1                   // the process-local cache
	TierNegative             // the unknown-id cache
	TierL2                   // Redis
	TierBackend              // the session backend
)

var tierNames = [...]string{"none", "l1", "negative", "l2", "backend"}

// String returns "l1", "negative", "l2", "backend" or "none".
func (t Tier) String() string {
	if t < 0 || int(t) >= len(tierNames) {
		return "unknown"
	}
	return tierNames[t]
}

// Cache is the tiered session cache. Create it with New.
type Cache struct {
	opts    Options
	l1      *l1.Cache
	l2      *rediscache.Cache
	backend backend.Fetcher
	sub     *subscriber.Subscriber
	neg     *lru.Cache[string, time.Time] // id -> when the unknown answer expires
	flights singleflight.Group
	pending *pending
	recent  recentFills
	stats   counters
	hooks   testHooks

	// unhealthySince is the UnixNano time the invalidation channel was
	// found unhealthy, or 0 while it is healthy.
	unhealthySince atomic.Int64
	synced         chan struct{} // closed at the first sync
	syncOnce       sync.Once

	kick      chan struct{}   // wakes the revocation worker
	ctx       context.Context // ends at Close; owned by the Cache's goroutines
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	owned     []io.Closer // clients made by Open, closed by Close
}

var _ session.Cache = (*Cache)(nil)

// testHooks lets in-package tests force interleavings.
type testHooks struct {
	afterL2Read      func(id string)
	afterBackendRead func(id string)
	beforeFlight     func(id string) // a lookup is about to join or start a backend call
	applied          func(m session.Invalidation)
	event            func(e subscriber.Event)
}

type revokeJob struct {
	id, userID string
}

// New builds a Cache and starts its subscriber and revocation worker.
// Lookups work at once; until the first subscription is synced, L1
// "active" entries are subject to StaleBound as if the channel were
// unhealthy. Call Close to stop.
func New(opts Options) (*Cache, error) {
	return newCache(opts, testHooks{})
}

func newCache(opts Options, hooks testHooks) (*Cache, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	var clock *coarseClock
	if opts.Local.Now == nil {
		clock = newCoarseClock()
		opts.Local.Now = clock.Now
	}
	l1c, err := l1.New(l1.Options{Size: opts.Local.Size, TTL: opts.Local.TTL, Now: opts.Local.Now})
	if err != nil {
		return nil, fmt.Errorf("tiered: %w", err)
	}
	neg, err := lru.New[string, time.Time](max(opts.NegativeSize, 1))
	if err != nil {
		return nil, fmt.Errorf("tiered: %w", err)
	}
	c := &Cache{
		opts:    opts,
		l1:      l1c,
		l2:      opts.Redis,
		backend: opts.Backend,
		neg:     neg,
		hooks:   hooks,
		pending: newPending(),
		synced:  make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	c.unhealthySince.Store(opts.Now().UnixNano())
	l2o := opts.Redis.Options()
	c.sub, err = subscriber.New(opts.Redis.Client(), opts.Redis.Layout(), subscriber.Options{
		OnInvalidation:    c.apply,
		OnEvent:           c.event,
		OnKeysChanged:     c.keysChanged,
		Client:            opts.SubscriberClient,
		HeartbeatInterval: opts.HeartbeatInterval,
		HeartbeatTimeout:  opts.HeartbeatTimeout,
		Name:              opts.SubscriberName,
		Logger:            opts.Logger,
		Now:               opts.Now,
		CallTimeout:       l2o.CallTimeout,
		LogMaxLen:         l2o.LogMaxLen,
	})
	if err != nil {
		return nil, fmt.Errorf("tiered: %w", err)
	}
	c.recent.keepFor = c.StaleBound() + opts.FetchTimeout
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if clock != nil {
		c.wg.Go(func() { clock.run(c.ctx) })
	}
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		if err := c.sub.Run(c.ctx); err != nil && !errors.Is(err, context.Canceled) {
			c.opts.Logger.Error("session invalidation subscriber stopped", "err", err)
		}
	}()
	go func() {
		defer c.wg.Done()
		c.revokeWorker()
	}()
	return c, nil
}

// Close stops the subscriber and the revocation worker and waits for them.
// Revocations still queued are not written to Redis; they are counted as
// failed. Close is idempotent; lookups after Close still use the tiers but
// L1 "active" entries are no longer trusted.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.unhealthySince.CompareAndSwap(0, c.opts.Now().UnixNano())
		for _, o := range c.owned {
			_ = o.Close()
		}
	})
	return nil
}

// WaitSynced blocks until the first subscription to the invalidation
// channel is established and synced, or ctx ends.
func (c *Cache) WaitSynced(ctx context.Context) error {
	select {
	case <-c.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Peek reports what L1 holds of id without changing anything: no LRU
// move, no hit counted, no fill, no I/O. held says whether L1 holds an
// unexpired entry (rec); served says whether a Lookup now would answer it
// from L1: always for a revoked entry, and for an active one while the
// invalidation channel is trusted (see StaleBound). An id L1 does not
// serve is looked up in the unknown-id cache, Redis and the backend.
func (c *Cache) Peek(id string) (rec session.Record, held, served bool) {
	rec, held = c.l1.Peek(id)
	return rec, held, held && (rec.Status == session.StatusRevoked || c.trustL1())
}

// StaleBound is the longest an L1 "active" entry is served after a
// revocation was published that this replica did not hear: a silent loss
// of the channel is noticed within the heartbeat's interval plus its
// timeout, and L1 is trusted for Options.StaleBound after that. With the
// heartbeat off a silent loss goes unnoticed, and StaleBound returns
// Options.StaleBound: the bound after a loss the connection reported.
//
// The bound counts from the revocation's publication in Redis. Revoke and
// RevokeUser return after it; MarkRevoked and MarkAllRevokedForUser return
// before it (they flip this replica's L1 at once and leave the Redis write
// to a worker that retries), so for other replicas the bound starts when
// Stats().RevocationsPending drops back.
func (c *Cache) StaleBound() time.Duration {
	return c.sub.LossBound() + c.opts.StaleBound
}
