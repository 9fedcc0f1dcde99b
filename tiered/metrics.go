package tiered

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fanoutBuckets are the upper bounds, in seconds, of the
// sessioncache_revocation_fanout_seconds histogram.
var fanoutBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// latencyBuckets are the upper bounds, in seconds, of the
// sessioncache_lookup_duration_seconds histogram.
var latencyBuckets = [...]float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// buildVersion is the version of the sessioncache module in this binary:
// its tag when built as a dependency, "(devel)" inside its own repository.
var buildVersion = func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path == "github.com/galaxy-game/sessioncache" {
			return bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/galaxy-game/sessioncache" {
				return d.Version
			}
		}
	}
	return "unknown"
}()

// RegisterMetrics registers on reg one Prometheus collector that reads the
// Cache's counters (Stats and the rediscache Stats) when reg is gathered, so that lookups pay nothing for
// metrics. constLabels are added to every metric (for example
// {"replica": "gw-1"} when several Caches share a registry). It returns
// reg.Register's error, for example when the same Cache and labels are
// registered twice.
//
// The metrics, all prefixed sessioncache_:
//
//	lookups_total{tier,result}        lookups answered, by tier; see below
//	lookup_duration_seconds{tier}     histogram: lookups that left L1, by tier (l2, backend, none: failed); L1 hits are not timed
//	build_info{version,go_version}    1, labelled with the module's version
//	l1_distrusted_total               L1 "active" hits not served: channel unhealthy beyond StaleBound
//	l2_errors_total                   Redis reads or fills that failed
//	backend_calls_total               backend requests (concurrent lookups of one id share one)
//	backend_errors_total              backend requests that failed (unknown ids excluded)
//	negative_hits_total               lookups answered by the unknown-id cache
//	fills_refused_total               backend answers not cached after a user-wide revocation
//	l1_entries                        entries in L1
//	l1_evictions_total                L1 entries pushed out by its size bound
//	l1_expired_total                  L1 entries found expired
//	invalidations_received_total      messages received on the channel (malformed included)
//	invalidations_applied_total       messages and replayed log entries applied to L1
//	invalidations_replayed_total      invalidations replayed from the log after a loss
//	invalidations_published_total     revocations this Cache wrote (each published once, by the first writer)
//	invalidations_unheard_total       published messages no subscriber received (PUBLISH returned 0)
//	invalidations_malformed_total     messages dropped as malformed
//	invalidations_forged_total        messages whose sequence number Redis never assigned
//	invalidation_gaps_total           sequence gaps seen on the channel
//	channel_lost_total                times the channel was found unhealthy
//	resyncs_total                     syncs after a loss (reconnect, heartbeat, gap or error)
//	l1_active_drops_total             resyncs after a loss that dropped L1's active entries
//	heartbeats_sent_total             heartbeat probes sent on the subscriber connection
//	heartbeat_failures_total          probes not answered in time
//	heartbeat_age_seconds             seconds since the last answered heartbeat probe (absent before the first)
//	last_message_age_seconds          seconds since the last message on the channel (absent before the first)
//	subscriber_up                     1 while the subscription is established and synced
//	revocation_fanout_seconds         histogram: revocation published (Redis time) to applied in L1
//	revoke_failures_total             revocations still not written to Redis after RevokeRetryFor (still retried), or owed at Close
//	revoke_retries_total              failed attempts to write a revocation (each is retried)
//	revocations_pending               revocations this process still owes Redis
//	revoke_fallbacks_total            revocations Redis refused (OOM, READONLY): records deleted, unnumbered message published
//	tracking                          1 while Redis reports changes to session keys (CLIENT TRACKING), else 0
//	keys_changed_total                session keys Redis reported changed
//	hand_revocations_total            L1 actives flipped because Redis said revoked without a message
//	irregular_records_total           session hashes not in the documented form, served as revoked
//	flushes_total                     flushes Redis reported
//
// lookups_total has the series {tier="l1",result="found"},
// {tier="l2",result="found"}, {tier="negative",result="not_found"},
// {tier="backend",result="found"}, {tier="backend",result="not_found"},
// {tier="backend",result="error"} and {tier="none",result="invalid_id"}.
// L1 and L2 hits are not split into active and revoked. Backend series count
// backend calls, which concurrent lookups of one id share.
//
// The fan-out histogram is built from the Cache's own 10%-wide buckets: a
// sample is counted under the first bound at or above its bucket's upper
// end, and the sum adds those upper ends, so both err by at most 10% on the
// slow side.
func (c *Cache) RegisterMetrics(reg prometheus.Registerer, constLabels prometheus.Labels) error {
	if reg == nil {
		return fmt.Errorf("tiered: RegisterMetrics: nil Registerer")
	}
	return reg.Register(newCollector(c, constLabels))
}

// collector is the prometheus.Collector of one Cache. It holds no state of
// its own: every Collect reads the counters afresh.
type collector struct {
	c *Cache

	lookups, l1Distrusted, l2Errors, backendCalls, backendErrors, negativeHits *prometheus.Desc
	fillsRefused, l1Entries, l1Evictions, l1Expired                            *prometheus.Desc
	received, applied, replayed, published, unheard, malformed, gaps           *prometheus.Desc
	forged                                                                     *prometheus.Desc
	channelLost, resyncs, activeDrops, heartbeatsSent, heartbeatFailures       *prometheus.Desc
	heartbeatAge, subscriberUp, fanout, revokeFailures, revokeRetries          *prometheus.Desc
	lastMessageAge, pending, fallbacks, tracking, keysChanged, handRevocations *prometheus.Desc
	irregular, flushes, latency, buildInfo                                     *prometheus.Desc
}

func newCollector(c *Cache, constLabels prometheus.Labels) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sessioncache_"+name, help, labels, constLabels)
	}
	return &collector{
		c:                 c,
		lookups:           d("lookups_total", "Session lookups answered, by tier and result (backend series count shared backend calls).", "tier", "result"),
		l1Distrusted:      d("l1_distrusted_total", "L1 active hits not served because the invalidation channel was unhealthy beyond the stale bound."),
		l2Errors:          d("l2_errors_total", "Redis reads or fills that failed (down, slow or corrupt)."),
		backendCalls:      d("backend_calls_total", "Backend requests made; concurrent lookups of one id share one."),
		backendErrors:     d("backend_errors_total", "Backend requests that failed, unknown ids excluded."),
		negativeHits:      d("negative_hits_total", "Lookups answered by the unknown-id cache."),
		fillsRefused:      d("fills_refused_total", "Backend answers not cached because a user-wide revocation was recent."),
		l1Entries:         d("l1_entries", "Entries in the process-local cache."),
		l1Evictions:       d("l1_evictions_total", "L1 entries pushed out by the size bound."),
		l1Expired:         d("l1_expired_total", "L1 entries found expired and removed."),
		received:          d("invalidations_received_total", "Messages received on the invalidation channel, malformed ones included."),
		applied:           d("invalidations_applied_total", "Invalidations (messages and replayed log entries) applied to L1."),
		replayed:          d("invalidations_replayed_total", "Invalidations replayed from the log after a loss of the channel."),
		published:         d("invalidations_published_total", "Revocations this replica wrote to Redis; each is published once, by whichever replica wrote it first."),
		unheard:           d("invalidations_unheard_total", "Published invalidations that no subscriber received."),
		malformed:         d("invalidations_malformed_total", "Messages on the invalidation channel dropped as malformed."),
		forged:            d("invalidations_forged_total", "Messages whose sequence number Redis never assigned, applied as revocations without a resync."),
		gaps:              d("invalidation_gaps_total", "Sequence gaps seen on the invalidation channel."),
		channelLost:       d("channel_lost_total", "Times the invalidation channel was found unhealthy."),
		resyncs:           d("resyncs_total", "Syncs of L1 after a loss of the channel (reconnect, heartbeat, gap or error)."),
		activeDrops:       d("l1_active_drops_total", "Syncs that dropped every active L1 entry because replay was impossible."),
		heartbeatsSent:    d("heartbeats_sent_total", "Heartbeat probes sent on the subscriber connection."),
		heartbeatFailures: d("heartbeat_failures_total", "Heartbeat probes not answered in time."),
		heartbeatAge:      d("heartbeat_age_seconds", "Seconds since the last heartbeat probe on the subscriber connection was answered."),
		lastMessageAge:    d("last_message_age_seconds", "Seconds since the last message was received on the invalidation channel."),
		pending:           d("revocations_pending", "Revocations this replica still owes Redis; retried until Redis holds them."),
		fallbacks:         d("revoke_fallbacks_total", "Revocations Redis refused (OOM, READONLY), after which their records were deleted and an unnumbered message published."),
		tracking:          d("tracking", "1 while Redis reports changes to session keys to this replica (CLIENT TRACKING), else 0."),
		keysChanged:       d("keys_changed_total", "Session keys Redis reported changed (hand edits, DEL, expiry, eviction, fills)."),
		handRevocations:   d("hand_revocations_total", "L1 active entries flipped because Redis said revoked without a message."),
		irregular:         d("irregular_records_total", "Session hashes found not in the documented form (a typo), served as revoked."),
		flushes:           d("flushes_total", "Flushes of Redis (FLUSHDB, FLUSHALL) reported to this replica."),
		latency:           d("lookup_duration_seconds", "Duration of lookups that left L1, by the tier that answered (none: failed); L1 hits are not timed.", "tier"),
		buildInfo:         d("build_info", "1, labelled with the version of the sessioncache module and of Go.", "version", "go_version"),
		subscriberUp:      d("subscriber_up", "1 while the invalidation subscription is established and synced, else 0."),
		fanout:            d("revocation_fanout_seconds", "Delay from a revocation's publication (Redis time) to its application in this replica's L1."),
		revokeFailures:    d("revoke_failures_total", "Revocations that could not be written to Redis."),
		revokeRetries:     d("revoke_retries_total", "Background revocation attempts retried."),
	}
}

// Describe implements prometheus.Collector.
func (m *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		m.lookups, m.l1Distrusted, m.l2Errors, m.backendCalls, m.backendErrors, m.negativeHits,
		m.fillsRefused, m.l1Entries, m.l1Evictions, m.l1Expired,
		m.received, m.applied, m.replayed, m.published, m.unheard, m.malformed, m.gaps, m.forged,
		m.channelLost, m.resyncs, m.activeDrops, m.heartbeatsSent, m.heartbeatFailures,
		m.heartbeatAge, m.subscriberUp, m.fanout, m.revokeFailures, m.revokeRetries,
		m.lastMessageAge, m.pending, m.fallbacks, m.tracking, m.keysChanged, m.handRevocations,
		m.irregular, m.flushes, m.latency, m.buildInfo,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *collector) Collect(ch chan<- prometheus.Metric) {
	st := m.c.Stats()
	l1, sub := st.L1, st.Channel
	l2 := m.c.l2.Stats()

	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}

	counter(m.lookups, float64(st.L1Hits), "l1", "found")
	counter(m.lookups, float64(st.L2Hits), "l2", "found")
	counter(m.lookups, float64(st.NegativeHits), "negative", "not_found")
	counter(m.lookups, float64(st.BackendFound), "backend", "found")
	counter(m.lookups, float64(st.NotFound), "backend", "not_found")
	counter(m.lookups, float64(st.BackendErrors), "backend", "error")
	counter(m.lookups, float64(st.InvalidIDs), "none", "invalid_id")
	counter(m.l1Distrusted, float64(st.L1Distrusted))
	counter(m.l2Errors, float64(st.L2Errors))
	counter(m.backendCalls, float64(st.BackendCalls))
	counter(m.backendErrors, float64(st.BackendErrors))
	counter(m.negativeHits, float64(st.NegativeHits))
	counter(m.fillsRefused, float64(st.FillsRefused))

	gauge(m.l1Entries, float64(st.L1Entries))
	counter(m.l1Evictions, float64(l1.Evictions))
	counter(m.l1Expired, float64(l1.Expired))

	counter(m.received, float64(sub.Received))
	counter(m.applied, float64(st.InvalidationsApplied))
	counter(m.replayed, float64(sub.Replayed))
	counter(m.published, float64(st.RevocationsPublished))
	counter(m.unheard, float64(l2.PublishedNoReceivers))
	counter(m.malformed, float64(sub.Malformed))
	counter(m.forged, float64(sub.Forged))
	counter(m.gaps, float64(sub.Gaps))
	counter(m.channelLost, float64(st.ChannelLost))
	counter(m.resyncs, float64(sub.Resyncs))
	counter(m.activeDrops, float64(st.ResyncDrops))
	counter(m.heartbeatsSent, float64(sub.HeartbeatsSent))
	counter(m.heartbeatFailures, float64(sub.HeartbeatFailures))
	age := func(d *prometheus.Desc, unixMs int64) {
		if unixMs > 0 {
			gauge(d, max(m.c.opts.Now().Sub(time.UnixMilli(unixMs)), 0).Seconds())
		}
	}
	age(m.heartbeatAge, sub.LastHeartbeatUnixMs)
	age(m.lastMessageAge, sub.LastMessageUnixMs)
	gauge(m.subscriberUp, boolValue(sub.Subscribed))
	gauge(m.tracking, boolValue(sub.Tracking))
	counter(m.keysChanged, float64(st.KeysChanged))
	counter(m.handRevocations, float64(st.HandRevocations))
	counter(m.irregular, float64(l2.Irregular))
	counter(m.flushes, float64(sub.Flushes))

	count, sum, buckets := m.c.stats.fanout.cumulative(fanoutBuckets[:])
	ch <- prometheus.MustNewConstHistogram(m.fanout, count, sum, buckets)
	for _, t := range []Tier{TierL2, TierBackend, TierNone} {
		count, sum, buckets := m.c.stats.latency[t].cumulative(latencyBuckets[:])
		ch <- prometheus.MustNewConstHistogram(m.latency, count, sum, buckets, t.String())
	}
	ch <- prometheus.MustNewConstMetric(m.buildInfo, prometheus.GaugeValue, 1, buildVersion, runtime.Version())

	counter(m.revokeFailures, float64(st.RevokeFailures))
	counter(m.revokeRetries, float64(st.RevokeRetries))
	gauge(m.pending, float64(st.RevocationsPending))
	counter(m.fallbacks, float64(l2.Fallbacks))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// cumulative maps the histogram onto Prometheus buckets (upper bounds in
// seconds, ascending): each of its buckets counts under the first bound at
// or above its upper end. The sum adds those upper ends.
func (h *histogram) cumulative(bounds []float64) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(bounds))
	per := make([]uint64, len(bounds))
	for i := range h.buckets {
		n := h.buckets[i].Load()
		if n == 0 {
			continue
		}
		up := upper(i).Seconds()
		count += uint64(n)
		sum += float64(n) * up
		for j, b := range bounds {
			if up <= b {
				per[j] += uint64(n)
				break
			}
		}
	}
	var acc uint64
	for j, b := range bounds {
		acc += per[j]
		buckets[b] = acc
	}
	return count, sum, buckets
}
