package tiered

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/galaxy-game/sessioncache/localcache"
)

// Stats is a snapshot of a Cache's counters since New.
type Stats struct {
	L1Hits        int64 // lookups answered by L1
	L1Distrusted  int64 // L1 "active" hits not served: channel unhealthy beyond StaleBound
	NegativeHits  int64 // lookups answered by the unknown-id cache
	L2Hits        int64 // lookups answered by Redis
	L2Errors      int64 // Redis reads or fills that failed (down, slow, corrupt), re-reads after a change included
	BackendCalls  int64 // backend requests made (shared calls count once)
	BackendErrors int64 // backend requests that failed (not counting unknown ids)
	NotFound      int64 // backend answers "unknown id"
	BackendFound  int64 // backend answers with a record
	FillsRefused  int64 // backend answers not cached: a user-wide revocation was recent, or Redis ran the fill after its deadline
	FillsSkipped  int64 // backend answers not cached: the call began before Redis lost data, the channel was unhealthy, or the journal of recent fills was full
	LossUnfills   int64 // active records this replica wrote to Redis and took back after Redis lost data
	InvalidIDs    int64 // ids rejected before any I/O

	RevocationsPublished int64 // revocations this replica wrote to Redis, each published once (by whichever replica wrote it first)
	RevokeRetries        int64 // failed attempts to write a revocation (each is retried)
	RevokeFailures       int64 // revocations still failing after RevokeRetryFor, or owed at Close
	RevokeOwedFull       int64 // revocations written once, inline, because 65,536 were owed already

	InvalidationsApplied int64 // messages (and replayed entries) applied to L1
	ChannelLost          int64 // times the invalidation channel was found unhealthy
	Resyncs              int64 // syncs after (re)subscription or a gap
	ResyncDrops          int64 // resyncs after a loss that dropped L1's active entries (the first sync is not counted)
	KeysChanged          int64 // session keys Redis reported changed (tracking)
	HandRevocations      int64 // L1 actives flipped because Redis said revoked without a message
	RevocationsPending   int64 // revocations this process still owes Redis (gauge)

	// Channel describes the invalidation channel's subscriber. Its
	// Tracking reports whether Redis reports changes to session keys
	// (server-assisted invalidation): false on a Redis that refuses CLIENT
	// TRACKING, such as miniredis, and then only this library's
	// revocations reach L1.
	Channel ChannelStats
	// L1 holds L1's own counters, and L1Entries the number of entries it
	// holds (expired ones included until they are read or evicted).
	L1        localcache.Stats
	L1Entries int

	// FanoutCount, FanoutP50, FanoutP99 and FanoutMax describe the delay
	// from a revocation's publication (Redis time in the message) to its
	// application in this replica's L1, to bucket precision (about 10%).
	FanoutCount int64
	FanoutP50   time.Duration
	FanoutP99   time.Duration
	FanoutMax   time.Duration
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := &c.stats
	st := Stats{
		L1Distrusted:         s.l1Distrusted.Load(),
		NegativeHits:         s.negativeHits.Load(),
		L2Hits:               s.l2Hits.Load(),
		L2Errors:             s.l2Errors.Load(),
		BackendCalls:         s.backendCalls.Load(),
		BackendErrors:        s.backendErrors.Load(),
		NotFound:             s.notFound.Load(),
		BackendFound:         s.backendFound.Load(),
		FillsRefused:         s.fillsRefused.Load(),
		FillsSkipped:         s.fillsSkipped.Load(),
		LossUnfills:          s.lossUnfills.Load(),
		InvalidIDs:           s.invalidIDs.Load(),
		RevocationsPublished: s.revocationsPublished.Load(),
		RevokeRetries:        s.revokeRetries.Load(),
		RevokeFailures:       s.revokeFailures.Load(),
		RevokeOwedFull:       s.revokeOwedFull.Load(),
		InvalidationsApplied: s.invalidationsApplied.Load(),
		ChannelLost:          s.channelLost.Load(),
		Resyncs:              s.resyncs.Load(),
		ResyncDrops:          s.resyncDrops.Load(),
		KeysChanged:          s.keysChanged.Load(),
		HandRevocations:      s.handRevocations.Load(),
		RevocationsPending:   c.pending.n.Load(),
		Channel:              ChannelStats(c.sub.Stats()),
	}
	// Read after L1Distrusted, so that a distrusted hit counted between
	// the two reads cannot make L1Hits negative.
	st.L1, st.L1Entries = localcache.Stats(c.l1.Stats()), c.l1.Len()
	st.L1Hits = int64(st.L1.Hits) - st.L1Distrusted
	st.FanoutCount, st.FanoutP50, st.FanoutP99, st.FanoutMax = s.fanout.summary()
	return st
}

type counters struct {
	l1Distrusted, negativeHits, l2Hits, l2Errors        atomic.Int64
	backendCalls, backendErrors, notFound               atomic.Int64
	fillsRefused, fillsSkipped, invalidIDs              atomic.Int64
	lossUnfills                                         atomic.Int64
	revocationsPublished, revokeRetries, revokeFailures atomic.Int64
	revokeOwedFull, invalidationsApplied, channelLost   atomic.Int64
	resyncs, resyncDrops, keysChanged, handRevocations  atomic.Int64
	backendFound                                        atomic.Int64
	// latency[t] times the lookups answered by tier t that left L1.
	latency [len(tierNames)]histogram
	fanout  histogram
}

// histogram counts durations in logarithmic buckets 10% wide, from 1 µs to
// about 10 minutes. It is lock-free.
type histogram struct {
	buckets [histBuckets]atomic.Int64
	max     atomic.Int64
}

const (
	histBuckets = 216 // 1.1^215 µs ≈ 13 min
	histGrowth  = 1.1 // bucket width ratio
	histBase    = time.Microsecond
)

func (h *histogram) observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := 0
	if d > histBase {
		i = int(math.Log(float64(d)/float64(histBase))/math.Log(histGrowth)) + 1
	}
	h.buckets[min(i, histBuckets-1)].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// upper returns the upper bound of bucket i.
func upper(i int) time.Duration {
	return time.Duration(float64(histBase) * math.Pow(histGrowth, float64(i)))
}

func (h *histogram) summary() (n int64, p50, p99, maxd time.Duration) {
	var counts [histBuckets]int64
	for i := range counts {
		counts[i] = h.buckets[i].Load()
		n += counts[i]
	}
	if n == 0 {
		return 0, 0, 0, 0
	}
	quantile := func(q float64) time.Duration {
		rank := int64(math.Ceil(q * float64(n)))
		var seen int64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				return upper(i)
			}
		}
		return upper(histBuckets - 1)
	}
	maxd = time.Duration(h.max.Load())
	return n, min(quantile(0.50), maxd), min(quantile(0.99), maxd), maxd
}

// ChannelStats counts what the Cache's subscriber of the invalidation
// channel saw since New. The counters only grow.
type ChannelStats struct {
	// Received counts messages received on the channel, malformed or not.
	Received uint64
	// Malformed counts messages dropped because session.ParseInvalidation
	// rejected them or their stripe does not exist.
	Malformed uint64
	// Forged counts messages whose sequence number contradicts Redis's
	// counter (typed or forged by a publisher): applied as revocations,
	// without a resync.
	Forged uint64
	// Gaps counts sequence anomalies seen in messages: skipped numbers and
	// counters that started again.
	Gaps uint64
	// Resyncs counts syncs other than the first after each start.
	Resyncs uint64
	// Replayed counts invalidations replayed from the log.
	Replayed uint64
	// DropActive counts syncs that dropped every active L1 entry.
	DropActive uint64
	// HeartbeatsSent counts heartbeat probes sent.
	HeartbeatsSent uint64
	// HeartbeatFailures counts probes not answered in time.
	HeartbeatFailures uint64
	// LastMessageUnixMs is when the last message was received on the
	// channel, in Unix milliseconds; 0 if none was.
	LastMessageUnixMs int64
	// LastHeartbeatUnixMs is when the last heartbeat probe was answered,
	// in Unix milliseconds; 0 if none was.
	LastHeartbeatUnixMs int64
	// Subscribed reports whether the channel is synced now.
	Subscribed bool
	// Tracking reports whether the current connection receives Redis's
	// server-assisted invalidations of session keys. False on a Redis that
	// refuses CLIENT TRACKING (miniredis, an ACL without it), where only
	// the library's own revocations reach L1.
	Tracking bool
	// KeysChanged counts session ids Redis reported changed.
	KeysChanged uint64
	// Flushes counts flushes Redis reported.
	Flushes uint64
}
