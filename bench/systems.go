package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// The systems of the mixed workload.
const (
	SystemSessioncache = "sessioncache"
	SystemRueidis      = "rueidis"
	SystemGoCache      = "go-redis/cache"
)

// Systems lists the systems of the mixed workload, sessioncache first.
var Systems = []string{SystemSessioncache, SystemRueidis, SystemGoCache}

// LocalTTL is the lifetime of a session in every system's process memory:
// localcache.DefaultTTL, given to rueidis' DoCache and to go-redis/cache's
// TinyLFU too.
const LocalTTL = localcache.DefaultTTL

// RedisTTL is the lifetime of a session in Redis, for every system.
const RedisTTL = rediscache.DefaultSessionTTL

// rueidisEntryBytes is what rueidis v1.0.79 charges its client-side cache
// for one cached HGETALL of a workload session (lru.go: a base of 336
// bytes, twice the key and command lengths, and the reply's approximate
// size). TestRueidisCapacity checks that a cache sized with it holds the
// intended number of sessions.
const rueidisEntryBytes = 783

// system is one cache under test. It is created on a Redis loaded for it
// and closed after the run.
type system interface {
	// worker returns the handle one goroutine of the workload uses.
	worker() worker
	close()
}

// worker looks up and revokes sessions by workload index. lookup reports
// whether the answer came from process memory.
type worker interface {
	lookup(ctx context.Context, i int) (local bool, err error)
	revoke(ctx context.Context, i int) error
}

// newSystem builds the named system for sessions on the Redis at addr,
// with an in-process cache of l1 sessions. ids are workload.IDs.
func newSystem(ctx context.Context, name, addr string, l1 int, ids []string) (system, error) {
	switch name {
	case SystemSessioncache:
		return newSessioncache(ctx, addr, l1, ids)
	case SystemRueidis:
		return newRueidis(addr, l1, ids)
	case SystemGoCache:
		return newGoCache(addr, l1, ids)
	}
	return nil, fmt.Errorf("bench: unknown system %q", name)
}

// errNoBackend is the answer of noBackend.
var errNoBackend = errors.New("bench: no backend (a lookup that Redis did not answer in time fails closed)")

// noBackend fails every fetch: the workload's sessions are all in Redis,
// so the backend is asked only when a Redis read fails (a CallTimeout
// under a load spike), and the lookup then fails closed.
type noBackend struct{}

func (noBackend) Fetch(context.Context, string) (session.Record, error) {
	return session.Record{}, errNoBackend
}

type sessioncacheSystem struct {
	rdb *redis.Client
	c   *tiered.Cache
	ids []string
}

func newSessioncache(ctx context.Context, addr string, l1 int, ids []string) (*sessioncacheSystem, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	l2, err := rediscache.New(rdb, rediscache.Options{SessionTTL: RedisTTL})
	if err != nil {
		rdb.Close()
		return nil, err
	}
	c, err := tiered.New(tiered.Options{Redis: l2, Backend: noBackend{}, Local: localcache.Options{Size: l1, TTL: LocalTTL}})
	if err != nil {
		rdb.Close()
		return nil, err
	}
	s := &sessioncacheSystem{rdb: rdb, c: c, ids: ids}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitSynced(wctx); err != nil {
		s.close()
		return nil, fmt.Errorf("bench: sessioncache: WaitSynced: %w", err)
	}
	return s, nil
}

func (s *sessioncacheSystem) worker() worker { return s }

func (s *sessioncacheSystem) lookup(ctx context.Context, i int) (bool, error) {
	rec, tier, err := s.c.LookupTier(ctx, s.ids[i])
	if err == nil && rec.DeviceSessionID != s.ids[i] {
		err = fmt.Errorf("lookup of session %d answered session %q", i, rec.DeviceSessionID)
	}
	return tier == tiered.TierL1, err
}

func (s *sessioncacheSystem) revoke(ctx context.Context, i int) error {
	return s.c.Revoke(ctx, s.ids[i])
}

func (s *sessioncacheSystem) close() {
	s.c.Close()
	s.rdb.Close()
}

// decodeHash turns an HGETALL reply into a record without validating it:
// the peers are given the cheapest decoding a gateway could do.
func decodeHash(id string, h map[string]string) (session.Record, error) {
	if len(h) == 0 {
		return session.Record{}, fmt.Errorf("session %q: %w", id, session.ErrNotFound)
	}
	r := session.Record{
		DeviceSessionID: id,
		UserID:          h[rediscache.FieldUserID],
		ClientPublicKey: h[rediscache.FieldClientPublicKey],
		Status:          session.Status(h[rediscache.FieldStatus]),
	}
	if s, ok := h[rediscache.FieldRevokedAtMS]; ok {
		at, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return session.Record{}, err
		}
		r.RevokedAtMS = &at
	}
	return r, nil
}

// rueidisSystem uses rueidis' server-assisted client-side caching: DoCache
// of HGETALL with LocalTTL; Redis invalidates the cached reply when the
// hash changes. A revocation is an HSET of the status and time.
type rueidisSystem struct {
	c    rueidis.Client
	ids  []string
	keys []string
}

func newRueidis(addr string, l1 int, ids []string) (*rueidisSystem, error) {
	// rueidis keeps one cache per connection, and spreads keys over
	// 2^PipelineMultiplex connections by slot: each gets its share.
	const multiplex = 1
	perConn := l1 * rueidisEntryBytes / (1 << multiplex)
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{addr},
		CacheSizeEachConn: perConn,
		PipelineMultiplex: multiplex,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: rueidis: %w", err)
	}
	keys, err := sessionKeys(ids)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &rueidisSystem{c: c, ids: ids, keys: keys}, nil
}

func sessionKeys(ids []string) ([]string, error) {
	layout, err := rediscache.NewLayout("", "", 1)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = layout.SessionKey(id)
	}
	return keys, nil
}

func (s *rueidisSystem) worker() worker { return s }

func (s *rueidisSystem) lookup(ctx context.Context, i int) (bool, error) {
	resp := s.c.DoCache(ctx, s.c.B().Hgetall().Key(s.keys[i]).Cache(), LocalTTL)
	h, err := resp.AsStrMap()
	if err != nil {
		return false, err
	}
	_, err = decodeHash(s.ids[i], h)
	return resp.IsCacheHit(), err
}

func (s *rueidisSystem) revoke(ctx context.Context, i int) error {
	at := strconv.FormatInt(time.Now().UnixMilli(), 10)
	return s.c.Do(ctx, s.c.B().Hset().Key(s.keys[i]).FieldValue().
		FieldValue(rediscache.FieldStatus, string(session.StatusRevoked)).
		FieldValue(rediscache.FieldRevokedAtMS, at).Build()).Error()
}

func (s *rueidisSystem) close() { s.c.Close() }

// goCacheKey is the key of a session's msgpack value for go-redis/cache,
// which stores opaque values in strings rather than hashes.
func goCacheKey(id string) string { return "gocache:session:" + id }

// goCacheSystem uses go-redis/cache: a TinyLFU of l1 entries in process
// (LocalTTL) over msgpack values in Redis. It has no invalidation: a
// revocation Sets the revoked record, in this process's TinyLFU and in
// Redis; other processes keep their copy until it expires.
type goCacheSystem struct {
	rdb  *redis.Client
	lfu  *gocache.TinyLFU
	ids  []string
	keys []string
}

func newGoCache(addr string, l1 int, ids []string) (*goCacheSystem, error) {
	s := &goCacheSystem{
		rdb: redis.NewClient(&redis.Options{Addr: addr}),
		lfu: gocache.NewTinyLFU(l1, LocalTTL),
		ids: ids,
	}
	s.keys = make([]string, len(ids))
	for i, id := range ids {
		s.keys[i] = goCacheKey(id)
	}
	return s, nil
}

// localProbe is the TinyLFU seen by one worker: it remembers whether the
// last Get hit, which go-redis/cache does not report.
type localProbe struct {
	*gocache.TinyLFU
	hit bool
}

func (p *localProbe) Get(key string) ([]byte, bool) {
	b, ok := p.TinyLFU.Get(key)
	p.hit = ok
	return b, ok
}

type goCacheWorker struct {
	s     *goCacheSystem
	probe *localProbe
	c     *gocache.Cache
}

// worker returns a cache.Cache of its own over the shared TinyLFU and
// client: the same cache to the workload, with a probe per goroutine.
func (s *goCacheSystem) worker() worker {
	probe := &localProbe{TinyLFU: s.lfu}
	return &goCacheWorker{s: s, probe: probe, c: gocache.New(&gocache.Options{Redis: s.rdb, LocalCache: probe})}
}

func (w *goCacheWorker) lookup(ctx context.Context, i int) (bool, error) {
	var rec session.Record
	if err := w.c.Get(ctx, w.s.keys[i], &rec); err != nil {
		if errors.Is(err, gocache.ErrCacheMiss) {
			err = fmt.Errorf("session %d: %w", i, session.ErrNotFound)
		}
		return false, err
	}
	if rec.DeviceSessionID != w.s.ids[i] {
		return false, fmt.Errorf("lookup of session %d answered session %q", i, rec.DeviceSessionID)
	}
	return w.probe.hit, nil
}

func (w *goCacheWorker) revoke(ctx context.Context, i int) error {
	rec := workload.Record(i).Revoked(time.Now().UnixMilli())
	return w.c.Set(&gocache.Item{Ctx: ctx, Key: w.s.keys[i], Value: &rec, TTL: RedisTTL})
}

func (s *goCacheSystem) close() { s.rdb.Close() }

// LoadGoCache writes sessions [from, to) as go-redis/cache stores them:
// msgpack (compressed as the library does) under goCacheKey, expiring
// after RedisTTL.
func LoadGoCache(ctx context.Context, rdb redis.UniversalClient, from, to int) error {
	gc := gocache.New(&gocache.Options{})
	for lo := from; lo < to; lo += 500 {
		hi := min(lo+500, to)
		pipe := rdb.Pipeline()
		for i := lo; i < hi; i++ {
			rec := workload.Record(i)
			b, err := gc.Marshal(&rec)
			if err != nil {
				return fmt.Errorf("bench: marshal session %d: %w", i, err)
			}
			pipe.Set(ctx, goCacheKey(rec.DeviceSessionID), b, RedisTTL)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("bench: load go-redis/cache sessions %d..%d: %w", lo, hi-1, err)
		}
	}
	return nil
}
