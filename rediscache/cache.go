package rediscache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/session"
)

// Defaults for Options.
const (
	DefaultSessionTTL  = 24 * time.Hour
	DefaultFillWindow  = 10 * time.Second
	DefaultLogMaxLen   = 10000
	DefaultCallTimeout = 250 * time.Millisecond
	DefaultWaitTimeout = 100 * time.Millisecond
)

// readSlots is how many pipelines of reads Get keeps in flight at once.
const readSlots = 2

// maxWarned bounds the session keys remembered as logged by warnIrregular.
const maxWarned = 1024

// ErrFillRefused reports that Fill did not store an active record because a
// user-wide revocation of its user happened within Options.FillWindow (the
// record may predate that revocation), or because Redis ran the fill after
// the call's deadline. The caller may serve the record it fetched to the
// lookup that fetched it, but must not cache it.
var ErrFillRefused = errors.New("rediscache: fill refused after a recent user-wide revocation")

// RefusedFill is the error of a Fill refused because of a user-wide
// revocation; it wraps ErrFillRefused. RevokedAtMS is the Redis time of
// that revocation: a record the backend answers after the refusal reflects
// it, and FillSince may store it.
type RefusedFill struct {
	RevokedAtMS int64
}

func (e *RefusedFill) Error() string {
	return fmt.Sprintf("%v at %d", ErrFillRefused, e.RevokedAtMS)
}

func (e *RefusedFill) Unwrap() error { return ErrFillRefused }

// ErrNotReplicated reports a revocation that the primary applied and
// published but that fewer than Options.WaitReplicas replicas acknowledged
// within Options.WaitTimeout. A failover before the replicas catch up could
// bring the session back as active in Redis: retry the revocation (it is
// idempotent) or alert.
var ErrNotReplicated = errors.New("rediscache: revocation not acknowledged by the replicas")

// Options configures a Cache. Zero fields mean the documented defaults.
type Options struct {
	// Prefix is put in front of every key and of the channel, so that two
	// environments can share one Redis. Default "".
	Prefix string
	// Channel is the invalidation channel before the prefix. Default
	// session.DefaultChannel.
	Channel string
	// Stripes is the number of keyspace stripes, each with its own sequence
	// counter and log (see Layout). Use 1 (the default) on a single Redis
	// or Sentinel, and at least 4 × the number of masters on Redis Cluster.
	// Every replica of a deployment must use the same value.
	Stripes int
	// SessionTTL is the lifetime of a session hash and of a user index,
	// renewed by every fill. A revoked record is kept at least this long.
	// Default DefaultSessionTTL.
	SessionTTL time.Duration
	// FillWindow is how long after a user-wide revocation fills of that
	// user's active records are refused (ErrFillRefused). It must exceed the
	// longest backend call plus a Redis round trip, and 4 × CallTimeout (see
	// Cache.Fill). Default DefaultFillWindow.
	FillWindow time.Duration
	// LogMaxLen is the approximate length of each stripe's invalidation
	// stream (XADD MAXLEN ~). Default DefaultLogMaxLen.
	LogMaxLen int
	// CallTimeout bounds each Redis call, within the caller's context.
	// Default DefaultCallTimeout. go-redis applies context deadlines to
	// socket reads only when the client has ContextTimeoutEnabled; without
	// it a call to a stalled Redis lasts up to the client's ReadTimeout.
	CallTimeout time.Duration
	// WaitReplicas, when above 0, makes RevokeSession and RevokeUser send
	// WAIT WaitReplicas WaitTimeout on the connection of their writes, and
	// return an error wrapping ErrNotReplicated when fewer replicas
	// acknowledged them. Default 0: revocations do not wait. It needs a
	// client whose pipelines use one connection: a *redis.Client (a single
	// Redis, or Sentinel's failover client); New refuses it with a Redis
	// Cluster client.
	WaitReplicas int
	// WaitTimeout bounds each WAIT. It must be shorter than CallTimeout,
	// which bounds the write and its WAIT together. Default
	// DefaultWaitTimeout; it must be 0 when WaitReplicas is 0.
	WaitTimeout time.Duration
	// Logger receives failures of the Mark* methods. Default: discard.
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.SessionTTL == 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.FillWindow == 0 {
		o.FillWindow = DefaultFillWindow
	}
	if o.LogMaxLen == 0 {
		o.LogMaxLen = DefaultLogMaxLen
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.WaitReplicas > 0 && o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	switch {
	case o.WaitReplicas < 0:
		return fmt.Errorf("rediscache: negative WaitReplicas %d", o.WaitReplicas)
	case o.WaitReplicas == 0 && o.WaitTimeout != 0:
		return fmt.Errorf("rediscache: WaitTimeout %v is set but WaitReplicas is 0", o.WaitTimeout)
	case o.WaitTimeout < 0:
		return fmt.Errorf("rediscache: negative WaitTimeout %v", o.WaitTimeout)
	case o.WaitReplicas > 0 && o.WaitTimeout < time.Millisecond:
		// WAIT counts milliseconds, and WAIT n 0 would block for ever.
		return fmt.Errorf("rediscache: WaitTimeout %v is shorter than 1ms", o.WaitTimeout)
	case o.WaitReplicas > 0 && o.WaitTimeout >= o.CallTimeout:
		return fmt.Errorf("rediscache: WaitTimeout %v must be shorter than CallTimeout %v", o.WaitTimeout, o.CallTimeout)
	}
	switch {
	case o.SessionTTL < time.Second:
		return fmt.Errorf("rediscache: SessionTTL %v is shorter than 1s", o.SessionTTL)
	case o.FillWindow < 0:
		return fmt.Errorf("rediscache: negative FillWindow %v", o.FillWindow)
	case o.LogMaxLen < 0:
		return fmt.Errorf("rediscache: negative LogMaxLen %d", o.LogMaxLen)
	case o.CallTimeout < 0:
		return fmt.Errorf("rediscache: negative CallTimeout %v", o.CallTimeout)
	case 4*o.CallTimeout >= o.FillWindow:
		// A fill must run within FillWindow/2 of its fetch (see Fill).
		return fmt.Errorf("rediscache: FillWindow %v must exceed 4 × CallTimeout (%v)", o.FillWindow, o.CallTimeout)
	}
	return nil
}

// Cache is the shared L2: session records in Redis hashes, revocations
// written and published by Lua scripts. It is safe for concurrent use.
type Cache struct {
	rdb    redis.UniversalClient
	opts   Options
	layout Layout
	store  storeState // counters and clock offsets of the data operations (store.go)
	reads  *reads     // Get's pipelined reads (batch.go)
}

var _ session.Cache = (*Cache)(nil)

// New returns a Cache that uses rdb, which may be a *redis.Client, a
// *redis.ClusterClient or a Sentinel failover client. The caller owns rdb
// and closes it after the Cache is no longer used.
func New(rdb redis.UniversalClient, opts Options) (*Cache, error) {
	if rdb == nil {
		return nil, errors.New("rediscache: nil client")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if _, ok := rdb.(*redis.Client); opts.WaitReplicas > 0 && !ok {
		// WAIT counts the writes of its own connection; a cluster or ring
		// pipeline may send it to another node.
		return nil, fmt.Errorf("rediscache: WaitReplicas needs a *redis.Client (a single Redis or Sentinel), not %T", rdb)
	}
	layout, err := NewLayout(opts.Prefix, opts.Channel, opts.Stripes)
	if err != nil {
		return nil, err
	}
	c := &Cache{rdb: rdb, opts: opts, layout: layout}
	c.reads = newReads(rdb, readSlots, func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), opts.CallTimeout)
	})
	c.store.warned, _ = lru.New[string, struct{}](maxWarned) // fails only for a size <= 0
	c.store.redisAhead = make([]atomic.Int64, layout.Stripes())
	return c, nil
}

// Layout returns the key layout in use.
func (c *Cache) Layout() Layout { return c.layout }

// Options returns the options in use, defaults filled in.
func (c *Cache) Options() Options { return c.opts }

// Client returns the client the Cache was made with.
func (c *Cache) Client() redis.UniversalClient { return c.rdb }
