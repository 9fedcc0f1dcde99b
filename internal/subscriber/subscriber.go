package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/mutation"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// DefaultHeartbeatInterval is the default Options.HeartbeatInterval.
const DefaultHeartbeatInterval = 500 * time.Millisecond

// Reasons carried by Event.Reason.
const (
	// ReasonStart: the first sync of a Run. There is no earlier position
	// to replay from, so it asks to drop every active L1 entry.
	ReasonStart = "start"
	// ReasonReconnect: the subscriber connection broke (an error from the
	// connection, or go-redis replaced it by itself).
	ReasonReconnect = "reconnect"
	// ReasonHeartbeat: a probe was not answered within HeartbeatTimeout.
	ReasonHeartbeat = "heartbeat"
	// ReasonGap: a message skipped sequence numbers, or its stripe's
	// counter started again.
	ReasonGap = "gap"
	// ReasonError: a Redis call failed while subscribing or syncing.
	ReasonError = "error"
	// ReasonFlush: Redis reported that it was flushed (FLUSHDB or
	// FLUSHALL) on the tracking channel.
	ReasonFlush = "flush"
)

// trackingChannel is where Redis sends the server-assisted invalidations
// of a RESP2 connection that redirects them to itself.
const trackingChannel = "__redis__:invalidate"

// errFlushed is how go-redis reports the null invalidation that Redis
// sends on a flush: it cannot decode a message with a null payload.
const errFlushed = "redis: unsupported pubsub message payload: <nil>"

const (
	// idleWait bounds one receive when no heartbeat is due. Cancelling
	// Run's context does not wait for it: it closes the connection.
	idleWait = time.Minute
	// minBackoff and maxBackoff bound the wait between failed attempts to
	// subscribe and sync.
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
	// receiveSlack is how much longer than its timeout a receive's
	// context lasts, so that an ordinary receive ends by its timeout.
	receiveSlack = 50 * time.Millisecond
	// probePrefix starts the payload of every heartbeat PING.
	probePrefix = "rediscache-heartbeat-"
)

// Options configures a Subscriber. Zero fields mean the
// documented defaults.
type Options struct {
	// OnInvalidation receives every invalidation: the ones that arrive on
	// the channel, in arrival order, and the ones replayed from the log, in
	// sequence order. It is called from Run's goroutine, one call at a
	// time, and must not block long: while it runs, nothing is received
	// and heartbeats are not answered. Required.
	OnInvalidation func(session.Invalidation)
	// OnEvent receives the Lost and Synced events, from Run's goroutine,
	// in order with the OnInvalidation calls. Optional.
	OnEvent func(Event)
	// OnKeysChanged receives the ids of sessions whose Redis hash changed
	// in any way (a write by anyone, DEL, expiry, eviction, RENAME), as
	// Redis reports them through server-assisted invalidation, from Run's
	// goroutine, in order with the other callbacks. The change may be the
	// caller's own fill: the receiver must read the hash again (or forget
	// what it holds), never assume a revocation. A flush is not reported
	// here: it is a loss, followed by an EventSynced with DropActive.
	// Optional; without it changes are not asked for.
	OnKeysChanged func(ids []string)
	// Client, when set, is the client whose options the subscriber's own
	// connections are made from (a *redis.Client, a Sentinel failover
	// client or a *redis.ClusterClient), so that a deployment can put the
	// subscriber on another pool, proxy or dialer. Default: the client
	// given to New. Run makes a client of its own from those options (RESP2, an
	// OnConnect that turns on tracking) and closes it when it returns;
	// hooks added with AddHook are not carried over. With a client of any
	// other type, Run subscribes through it and runs without tracking.
	Client redis.UniversalClient
	// HeartbeatInterval is the time between two heartbeat probes on the
	// subscriber connection. Default DefaultHeartbeatInterval. A negative
	// value turns the heartbeat off, and with it the only way to notice a
	// connection that stays open but carries nothing (a network
	// blackhole): go-redis alone does not notice one. Use it only in tests.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long a probe may stay unanswered before the
	// connection is declared dead. Default 3 × HeartbeatInterval. It must
	// be 0 when the heartbeat is off.
	HeartbeatTimeout time.Duration
	// Name is the connection name set with CLIENT SETNAME on every
	// subscriber connection before it subscribes, shown by
	// `CLIENT LIST TYPE pubsub`. Run replaces every lost connection with a
	// new one of its own instead of keeping the one go-redis reconnects
	// silently, so the name survives reconnects. If Redis refuses the
	// command (an ACL without CLIENT), Run logs it and goes on unnamed. It
	// must consist of the bytes '!' to '~'. Default "": the connection
	// keeps the client's own name (redis.Options.ClientName), if any.
	Name string
	// Logger receives losses, syncs and dropped messages. It never gets
	// a message's contents or a full session id. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now. Every time the subscriber reads
	// comes from it: when a heartbeat probe is due and when an unanswered
	// one has failed, the deadline of a new connection's confirmation, the
	// backoff between failed connections, Event.At, and
	// Stats.LastMessageUnixMs and LastHeartbeatUnixMs. The waits
	// between two checks are real timers of the durations this clock
	// gives: a clock that stands still sends no probe and fails none, and
	// one that jumps makes the next check due at once. It is called from
	// Run's goroutine and, on a cluster, from the tracker connections'
	// goroutines, so it must be safe for concurrent use.
	Now func() time.Time
	// CallTimeout bounds each Redis call of a sync, and a quarter of the
	// time a new connection has to be confirmed. Default
	// rediscache.DefaultCallTimeout.
	CallTimeout time.Duration
	// LogMaxLen is the Cache's rediscache.Options.LogMaxLen: a replay of a
	// longer range than a log can hold is not tried. Default
	// rediscache.DefaultLogMaxLen.
	LogMaxLen int
}

func (o *Options) setDefaults() error {
	if o.OnInvalidation == nil {
		return errors.New("subscriber: Options.OnInvalidation is nil")
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	switch {
	case o.HeartbeatInterval < 0 && o.HeartbeatTimeout != 0:
		return fmt.Errorf("subscriber: HeartbeatTimeout %v is set but the heartbeat is off", o.HeartbeatTimeout)
	case o.HeartbeatTimeout < 0:
		return fmt.Errorf("subscriber: negative HeartbeatTimeout %v", o.HeartbeatTimeout)
	case o.HeartbeatInterval > 0 && o.HeartbeatTimeout == 0:
		o.HeartbeatTimeout = 3 * o.HeartbeatInterval
	}
	for i := 0; i < len(o.Name); i++ {
		if c := o.Name[i]; c < '!' || c > '~' {
			return fmt.Errorf("subscriber: Name has a disallowed byte 0x%02x at offset %d", c, i)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = rediscache.DefaultCallTimeout
	}
	if o.LogMaxLen <= 0 {
		o.LogMaxLen = rediscache.DefaultLogMaxLen
	}
	return nil
}

// EventKind tells a lost channel from a synced one.
type EventKind int

const (
	// EventLost: invalidations may be missed from now on. The receiver
	// must stop trusting "active" L1 entries until the next EventSynced.
	EventLost EventKind = iota + 1
	// EventSynced: the subscription is confirmed and everything missed
	// since the last position was replayed, or DropActive is set.
	EventSynced
)

// String returns "lost" or "synced".
func (k EventKind) String() string {
	switch k {
	case EventLost:
		return "lost"
	case EventSynced:
		return "synced"
	default:
		return "EventKind(" + strconv.Itoa(int(k)) + ")"
	}
}

// Event reports a change of the channel's health to Options.OnEvent.
type Event struct {
	// Kind is EventLost or EventSynced.
	Kind EventKind
	// Reason is one of the Reason constants: what caused the loss, or, for
	// EventSynced, the loss the sync recovers from ("start" for the first).
	Reason string
	// Replayed counts the invalidations replayed from the log during this
	// sync (EventSynced only).
	Replayed int
	// DropActive is set on an EventSynced when replay was impossible (the
	// first sync of a Run, a log trimmed past the last position, a counter
	// that went back or started again): the receiver must drop every
	// active L1 entry.
	DropActive bool
	// At is when the event was emitted.
	At time.Time
}

// Stats counts what a Subscriber saw since New, over all
// its Runs. The counters only grow.
type Stats struct {
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
	// Resyncs counts EventSynced events other than the first of each Run.
	Resyncs uint64
	// Replayed counts invalidations replayed from the log.
	Replayed uint64
	// DropActive counts EventSynced events with DropActive set.
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
	// Subscribed reports whether the last event was an EventSynced and Run
	// is still running.
	Subscribed bool
	// Tracking reports whether the current connection receives Redis's
	// server-assisted invalidations of session keys. False on a Redis that
	// refuses CLIENT TRACKING (miniredis, an ACL without it), where only
	// the library's own revocations reach L1.
	Tracking bool
	// KeysChanged counts session ids reported to OnKeysChanged.
	KeysChanged uint64
	// Flushes counts flushes Redis reported.
	Flushes uint64
}

// Subscriber keeps an L1 in step with the invalidation channel. Its Run
// subscribes, receives invalidations and passes them to
// Options.OnInvalidation, and notices every way a message can be
// missed:
//
//   - a broken connection: go-redis reconnects and resubscribes silently,
//     but Run sees the receive error (or a second subscription
//     confirmation), closes that connection and opens one of its own;
//   - a connection that stays open but carries nothing (a blackhole): a
//     heartbeat PING with a fresh payload must come back as a PONG with
//     that payload within HeartbeatTimeout, or the connection is closed and
//     replaced. Such a loss is noticed within HeartbeatInterval +
//     HeartbeatTimeout;
//   - a gap in a stripe's sequence numbers, or a message numbered at or
//     below the position but newer than the message that took the
//     position's number (the counter started again).
//
// Each of these is reported as an EventLost. A new connection must be
// confirmed within max(HeartbeatTimeout, 4 × Options.CallTimeout); give the
// client ContextTimeoutEnabled, or its handshake may take up to its
// ReadTimeout instead. Every subscription confirmation (or, for a gap, the
// message itself) starts a sync before anything else received is passed
// on: each stripe's counter is read, and the invalidations numbered after
// the stripe's position up to the counter are replayed from the stripe's
// log (session_invalidation:log) in sequence order. When the log no longer
// holds all of them, or the counter went back or started again, the
// EventSynced that follows carries DropActive. A failed Redis call during
// a sync is a loss like the others.
//
// A counter that starts again and passes the position while the
// subscriber is away is caught when the log entry at the position is
// still there (its at_ms differs from the one seen); when the log lost it
// too, the gap goes unnoticed. A position of 0 (the stripe had no
// invalidation when Run started, and none arrived since) has no entry to
// check: a Redis that restarted empty and numbered new invalidations from
// 1 looks like an intact log, so a sync that finds any invalidation there
// carries DropActive. Run reacts to the channel only: the L1's own
// TTL stays the last bound on staleness.
//
// Run owns its connection and every goroutine it starts. Stats is safe for
// concurrent use; Run must not run twice at the same time.
type Subscriber struct {
	rdb    redis.UniversalClient
	layout rediscache.Layout
	opts   Options
	// setup bounds the time from creating a connection to its
	// subscription confirmation.
	setup   time.Duration
	running atomic.Bool
	st      subscriberCounters

	// testHookLost, when a test sets it before Run, runs on Run's
	// goroutine after a loss was reported and its connection closed, before
	// the next subscription.
	testHookLost func(reason string)
}

// subscriberCounters holds the atomics behind Stats.
type subscriberCounters struct {
	received, malformed, gaps, resyncs, replayed, dropActive atomic.Uint64
	forged                                                   atomic.Uint64
	heartbeatsSent, heartbeatFailures                        atomic.Uint64
	lastMessageUnixMs, lastHeartbeatUnixMs                   atomic.Int64
	subscribed                                               atomic.Bool
	keysChanged, flushes                                     atomic.Uint64
	// tracking is set by each new connection: whether it turned tracking
	// on. trackingRefused records that Redis refused it once (logged once).
	tracking, trackingRefused atomic.Bool
}

// New returns a Subscriber of layout's channel, which uses rdb for the
// subscription (unless Options.Client is set) and for reading counters and
// logs. Run starts it.
func New(rdb redis.UniversalClient, layout rediscache.Layout, opts Options) (*Subscriber, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	return &Subscriber{rdb: rdb, layout: layout, opts: opts, setup: max(opts.HeartbeatTimeout, 4*opts.CallTimeout)}, nil
}

// until returns the time from now to t on Options.Now. A
// deadline on that clock bounds a context or a receive through it: both
// run on real timers.
func (s *Subscriber) until(t time.Time) time.Duration {
	return t.Sub(s.opts.Now())
}

// LossBound is how long a connection that silently stopped carrying
// messages can go unnoticed: HeartbeatInterval + HeartbeatTimeout, or 0
// with the heartbeat off (a loss is then noticed only from an error).
func (s *Subscriber) LossBound() time.Duration {
	if s.opts.HeartbeatInterval < 0 {
		return 0
	}
	return s.opts.HeartbeatInterval + s.opts.HeartbeatTimeout
}

// Stats returns the counters. It is cheap and safe for concurrent use.
func (s *Subscriber) Stats() Stats {
	return Stats{
		Received:            s.st.received.Load(),
		Malformed:           s.st.malformed.Load(),
		Forged:              s.st.forged.Load(),
		Gaps:                s.st.gaps.Load(),
		Resyncs:             s.st.resyncs.Load(),
		Replayed:            s.st.replayed.Load(),
		DropActive:          s.st.dropActive.Load(),
		HeartbeatsSent:      s.st.heartbeatsSent.Load(),
		HeartbeatFailures:   s.st.heartbeatFailures.Load(),
		LastMessageUnixMs:   s.st.lastMessageUnixMs.Load(),
		LastHeartbeatUnixMs: s.st.lastHeartbeatUnixMs.Load(),
		Subscribed:          s.st.subscribed.Load(),
		Tracking:            s.st.tracking.Load(),
		KeysChanged:         s.st.keysChanged.Load(),
		Flushes:             s.st.flushes.Load(),
	}
}

// Run subscribes and passes invalidations and events to the callbacks
// until ctx ends, then closes its connection and returns ctx.Err(); it
// returns promptly, since cancelling ctx closes the connection. Failures do
// not end it: each one is an EventLost followed by a new connection, at
// once after a connection that had been synced for a second or more, else
// after a pause growing from 50 ms to 1 s. It returns an error at once only
// if it is already running.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("subscriber: Subscriber.Run is already running")
	}
	defer s.running.Store(false)
	defer s.st.subscribed.Store(false)

	client, own := s.ownClient()
	if own {
		defer client.Close()
	}
	n := s.layout.Stripes()
	r := &runState{s: s, client: client, own: own, last: make([]uint64, n), lastAt: make([]int64, n)}
	reason := ReasonStart
	var delay time.Duration
	for {
		lost, syncedAt := r.connect(ctx, reason)
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.testHookLost != nil {
			s.testHookLost(lost)
		}
		if r.based {
			reason = lost
		}
		if !syncedAt.IsZero() && s.opts.Now().Sub(syncedAt) >= maxBackoff {
			delay = 0
		} else {
			delay = min(max(2*delay, minBackoff), maxBackoff)
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

// subscriberKey marks the context of the subscriber's connections, so
// that OnConnect turns tracking on for them alone: a cluster client also
// connects to learn the topology.
type subscriberKey struct{}

// ownClient returns the client that Run subscribes through, and whether
// Run made it (and must close it): a copy of Options.Client, or
// of the client given to New, that speaks RESP2 (so that invalidations arrive
// as pub/sub messages on the connection itself) and turns tracking on for
// each subscriber connection it makes.
func (s *Subscriber) ownClient() (redis.UniversalClient, bool) {
	base := s.opts.Client
	if base == nil {
		base = s.rdb
	}
	if s.opts.OnKeysChanged == nil {
		return base, false
	}
	switch b := base.(type) {
	case *redis.Client:
		o := *b.Options()
		o.Protocol = 2
		o.OnConnect = s.onConnect(o.OnConnect)
		return redis.NewClient(&o), true
	case *redis.ClusterClient:
		o := *b.Options()
		o.Protocol = 2
		o.OnConnect = s.onConnect(o.OnConnect)
		return redis.NewClusterClient(&o), true
	}
	return base, false
}

// onConnect wraps a client's OnConnect: on a subscriber connection it
// turns on tracking of every session key, redirected to the connection
// itself.
func (s *Subscriber) onConnect(next func(context.Context, *redis.Conn) error) func(context.Context, *redis.Conn) error {
	return func(ctx context.Context, cn *redis.Conn) error {
		if next != nil {
			if err := next(ctx, cn); err != nil {
				return err
			}
		}
		if ctx.Value(subscriberKey{}) == nil {
			return nil
		}
		return s.track(ctx, cn)
	}
}

// track sends CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX
// <prefix>session: on a new subscriber connection. Redis then reports every
// change to a session key on the connection's __redis__:invalidate
// messages, and a flush as a null message, for as long as the connection
// lives. A Redis that refuses it (an unknown command, an ACL) leaves the
// connection without tracking, logged once; a failure to reach Redis fails
// the connection.
func (s *Subscriber) track(ctx context.Context, cn *redis.Conn) error {
	s.st.tracking.Store(false)
	if mutation.Disabled(mutation.Tracking) {
		return nil
	}
	id, err := cn.ClientID(ctx).Result()
	if err == nil {
		err = cn.Do(ctx, "CLIENT", "TRACKING", "ON", "REDIRECT", id, "BCAST", "PREFIX", s.layout.SessionKeyPrefix()).Err()
	}
	var rerr redis.Error
	switch {
	case err == nil:
		s.st.tracking.Store(true)
		return nil
	case errors.As(err, &rerr):
		if !s.st.trackingRefused.Swap(true) {
			s.opts.Logger.Warn("subscriber: Redis refused CLIENT TRACKING; only this library's revocations reach L1, "+
				"not hand edits, DEL, expiry, eviction or flushes", "err", err)
		}
		return nil
	}
	return err
}

// runState is what one Run knows. Only Run's goroutine uses it.
type runState struct {
	s      *Subscriber
	client redis.UniversalClient
	own    bool // client is Run's own copy (see ownClient)
	// trackers are the cluster's tracker connections of the current
	// channel connection, or nil.
	trackers *trackers
	// tracked reports that a connection of this Run had tracking on:
	// after its loss, changes Redis reported to nobody may have been
	// missed, and no log replays them, so every sync drops L1's actives.
	tracked bool
	// based reports that last holds positions: the first sync is done.
	based bool
	// last[k] is the highest sequence number of stripe k applied or
	// replayed; lastAt[k] is its at_ms, or 0 if unknown.
	last   []uint64
	lastAt []int64
	// pendingDrop records that a sync found invalidations it cannot
	// replay but failed before it could report DropActive.
	pendingDrop bool

	// probe is the payload of the unanswered heartbeat, "" if none;
	// probeSent is when it was sent.
	probe     string
	probeSent time.Time
	// lastRecv is when the connection last delivered anything. A probe
	// fails only when nothing at all arrived for HeartbeatTimeout after
	// it was sent: a backlog of messages ahead of the answer proves the
	// connection alive.
	lastRecv  time.Time
	probeSeq  uint64
	nextProbe time.Time

	// malformedLogged is when a malformed message was last logged;
	// malformedQuiet counts those dropped without a log line since.
	malformedLogged time.Time
	malformedQuiet  uint64
}

// connect runs one subscriber connection until it is lost or ctx ends. It
// reports the loss (EventLost), closes the connection and returns the
// reason, with the time of the connection's first sync (zero if none).
func (r *runState) connect(ctx context.Context, reason string) (lost string, syncedAt time.Time) {
	if _, cluster := r.client.(*redis.ClusterClient); !cluster || !r.own {
		// On a cluster the trackers track (see tracker.go).
		ctx = context.WithValue(ctx, subscriberKey{}, true)
	}
	ps := r.client.Subscribe(ctx) // no channel yet: no I/O
	closed := make(chan struct{})
	// Cancelling ctx closes the connection, which ends a blocked receive.
	stop := context.AfterFunc(ctx, func() {
		_ = ps.Close()
		close(closed)
	})
	defer func() {
		if stop() {
			_ = ps.Close()
		} else {
			<-closed
		}
	}()
	lost, err := r.serve(ctx, ps, reason, &syncedAt)
	if ctx.Err() == nil {
		r.lose(lost, err)
	}
	return lost, syncedAt
}

// serve subscribes on ps and receives until the connection is lost,
// returning the reason and the error that revealed the loss.
func (r *runState) serve(ctx context.Context, ps *redis.PubSub, reason string, syncedAt *time.Time) (string, error) {
	s := r.s
	channel := s.layout.Channel()
	deadline := s.opts.Now().Add(s.setup)
	if cc, ok := r.client.(*redis.ClusterClient); ok && r.own && !s.st.trackingRefused.Load() {
		tr, err := r.startTrackers(ctx, cc, deadline, func() { _ = ps.Close() })
		if err != nil {
			return ReasonError, err
		}
		if tr != nil {
			defer tr.stop()
			r.trackers = tr
		}
	} else {
		r.trackers = nil
	}
	if err := r.subscribe(ctx, ps, deadline); err != nil {
		return ReasonError, err
	}
	confirmed := false
	for {
		// The context bounds the receive as its timeout does: after a
		// connection error go-redis reconnects inside ReceiveTimeout, and
		// a handshake on a network that went black would otherwise wait
		// for go-redis' own dial and read timeouts (seconds) with the
		// heartbeat stopped and the loss unreported. Failing that
		// reconnect costs nothing: the connection is replaced anyway.
		wait := r.wait(s.opts.Now(), confirmed, deadline)
		rctx, cancel := context.WithTimeout(ctx, wait+receiveSlack)
		msg, err := ps.ReceiveTimeout(rctx, wait)
		cancel()
		if err != nil && !isTimeout(err) {
			if r.trackers != nil {
				if lerr := r.trackers.loss(); lerr != nil {
					return trackerReason(lerr), lerr
				}
			}
			if err.Error() == errFlushed {
				s.st.flushes.Add(1)
				return ReasonFlush, errors.New(errRedisFlushed)
			}
			// go-redis reconnects by itself after this error; the
			// caller closes that connection and starts its own.
			if confirmed {
				return ReasonReconnect, fmt.Errorf("subscriber: receive: %w", err)
			}
			return ReasonError, fmt.Errorf("subscriber: receive the subscription confirmation: %w", err)
		}
		if err == nil {
			r.lastRecv = s.opts.Now()
		}
		switch m := msg.(type) {
		case *redis.Message:
			switch m.Channel {
			case channel:
				if err := r.handle(ctx, m.Payload); err != nil {
					return ReasonError, err
				}
			case trackingChannel:
				r.changed(m.PayloadSlice)
			}
		case *redis.Subscription:
			if m.Channel != channel {
				break
			}
			if m.Kind != "subscribe" {
				return ReasonError, fmt.Errorf("subscriber: unexpected %q of the invalidation channel", m.Kind)
			}
			if confirmed {
				// A second confirmation: go-redis replaced the
				// connection without returning an error. Replace it
				// with one of ours, named and synced like any other.
				return ReasonReconnect, errors.New("subscriber: subscription confirmed again: go-redis replaced the connection")
			}
			confirmed = true
			if err := r.sync(ctx, reason); err != nil {
				return ReasonError, err
			}
			r.tracked = r.tracked || s.st.tracking.Load()
			now := s.opts.Now()
			if syncedAt.IsZero() {
				*syncedAt = now
			}
			r.probe, r.nextProbe = "", now.Add(s.opts.HeartbeatInterval)
		case *redis.Pong:
			if r.probe != "" && m.Payload == r.probe {
				r.probe = ""
				s.st.lastHeartbeatUnixMs.Store(s.opts.Now().UnixMilli())
			}
		}
		if lost, err := r.tick(ctx, ps, s.opts.Now(), confirmed, deadline); err != nil {
			return lost, err
		}
	}
}

// subscribe names the connection and sends SUBSCRIBE; the confirmation
// arrives through ReceiveTimeout.
func (r *runState) subscribe(ctx context.Context, ps *redis.PubSub, deadline time.Time) error {
	sctx, cancel := context.WithTimeout(ctx, r.s.until(deadline))
	defer cancel()
	if name := r.s.opts.Name; name != "" {
		// CLIENT SETNAME goes first, on the connection it creates, so that
		// the name is there before the connection subscribes. Its reply
		// comes back through the receive path, as a *redis.Pong "OK".
		if err := ps.ClientSetName(sctx, name); err != nil {
			return fmt.Errorf("subscriber: connect the subscriber: %w", err)
		}
		reply, err := ps.ReceiveTimeout(sctx, max(r.s.until(deadline), time.Millisecond))
		var rerr redis.Error
		switch {
		case errors.As(err, &rerr):
			r.s.opts.Logger.Warn("subscriber: CLIENT SETNAME refused; the subscriber connection stays unnamed", "err", err)
		case err != nil:
			return fmt.Errorf("subscriber: name the subscriber connection: %w", err)
		default:
			if p, ok := reply.(*redis.Pong); !ok || p.Payload != "OK" {
				return fmt.Errorf("subscriber: unexpected reply %T to CLIENT SETNAME", reply)
			}
		}
	}
	if err := ps.Subscribe(sctx, r.s.layout.Channel()); err != nil {
		return fmt.Errorf("subscriber: subscribe: %w", err)
	}
	return nil
}

// wait returns how long the next receive may block: until the
// confirmation is overdue, the next probe is due or the unanswered one is
// overdue.
func (r *runState) wait(now time.Time, confirmed bool, deadline time.Time) time.Duration {
	var until time.Time
	switch {
	case !confirmed:
		until = deadline
	case r.s.opts.HeartbeatInterval < 0:
		return idleWait
	case r.probe != "":
		until = r.probeDeadline()
	default:
		until = r.nextProbe
	}
	// A receive timeout of 0 would mean no timeout at all.
	return max(until.Sub(now), time.Millisecond)
}

// probeDeadline is when the outstanding probe fails: HeartbeatTimeout after
// it was sent or, if later, after the connection last delivered anything.
func (r *runState) probeDeadline() time.Time {
	last := r.probeSent
	if r.lastRecv.After(last) {
		last = r.lastRecv
	}
	return last.Add(r.s.opts.HeartbeatTimeout)
}

// tick enforces the confirmation deadline and runs the heartbeat: it
// declares the connection dead when the probe is overdue and sends the
// next probe when one is due.
func (r *runState) tick(ctx context.Context, ps *redis.PubSub, now time.Time, confirmed bool, deadline time.Time) (string, error) {
	s := r.s
	switch {
	case !confirmed:
		if !now.Before(deadline) {
			return ReasonError, fmt.Errorf("subscriber: subscription not confirmed within %v", s.setup)
		}
		return "", nil
	case s.opts.HeartbeatInterval < 0:
		return "", nil
	case r.probe != "":
		if !now.Before(r.probeDeadline()) {
			s.st.heartbeatFailures.Add(1)
			return ReasonHeartbeat, fmt.Errorf("subscriber: heartbeat not answered within %v", s.opts.HeartbeatTimeout)
		}
		return "", nil
	case now.Before(r.nextProbe):
		return "", nil
	}
	r.probeSeq++
	r.probe = probePrefix + strconv.FormatUint(r.probeSeq, 10)
	r.probeSent, r.nextProbe = now, now.Add(s.opts.HeartbeatInterval)
	pctx, cancel := context.WithTimeout(ctx, s.opts.HeartbeatTimeout)
	err := ps.Ping(pctx, r.probe)
	cancel()
	if err != nil {
		return ReasonReconnect, fmt.Errorf("subscriber: send a heartbeat: %w", err)
	}
	s.st.heartbeatsSent.Add(1)
	return "", nil
}

// handle processes one message of the channel.
func (r *runState) handle(ctx context.Context, payload string) error {
	s := r.s
	s.st.received.Add(1)
	s.st.lastMessageUnixMs.Store(s.opts.Now().UnixMilli())
	m, err := session.ParseInvalidation([]byte(payload))
	if err != nil || m.Stripe >= len(r.last) {
		r.malformed(len(payload))
		return nil
	}
	k := m.Stripe
	switch {
	case m.Seq == 0: // hand-typed: no position
	case m.Seq == r.last[k]+1:
		r.last[k], r.lastAt[k] = m.Seq, m.AtMS
	case m.Seq > r.last[k]:
		if mutation.Disabled(mutation.GapDetection) {
			r.last[k], r.lastAt[k] = m.Seq, m.AtMS
			break
		}
		if r.forged(ctx, m, func(counter uint64) bool { return counter < m.Seq }) {
			break
		}
		return r.gap(ctx, m)
	case r.lastAt[k] > 0 && m.AtMS > r.lastAt[k]:
		// Not a duplicate: it is newer than the message that took
		// the number last[k], so the counter started again, unless
		// Redis's counter says it did not.
		if r.forged(ctx, m, func(counter uint64) bool { return counter >= r.last[k] }) {
			break
		}
		return r.restarted(m)
	}
	// A duplicate (already replayed) is applied again: it only revokes.
	s.opts.OnInvalidation(m)
	return nil
}

// changed passes the session ids among keys, which Redis reported as
// changed, to OnKeysChanged.
func (r *runState) changed(keys []string) {
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		if id, ok := r.s.layout.SessionIDOfKey(k); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 {
		r.s.st.keysChanged.Add(uint64(len(ids)))
		r.s.opts.OnKeysChanged(ids)
	}
}

// gap replays what m's stripe missed before m, then applies m.
func (r *runState) gap(ctx context.Context, m session.Invalidation) error {
	s, k := r.s, m.Stripe
	s.st.gaps.Add(1)
	s.opts.Logger.Warn("subscriber: gap in the invalidation sequence", "stripe", k, "last", r.last[k], "seq", m.Seq)
	r.emit(Event{Kind: EventLost, Reason: ReasonGap})
	start := s.opts.Now()
	n, complete, err := r.replay(ctx, k, r.last[k], r.lastAt[k], m.Seq-1)
	if r.probe != "" {
		// The replay kept us from reading the probe's answer.
		r.probeSent = r.probeSent.Add(s.opts.Now().Sub(start))
	}
	if err != nil {
		// Applying a revocation early is always safe; the positions
		// stay, so the next sync replays the gap.
		s.opts.OnInvalidation(m)
		return err
	}
	r.last[k], r.lastAt[k] = m.Seq, m.AtMS
	r.synced(ReasonGap, n, !complete)
	s.opts.OnInvalidation(m)
	return nil
}

// forged reports whether m's sequence number is one Redis's counter for
// its stripe cannot have assigned (contradicts reports that for the
// counter's value), as when anyone allowed to PUBLISH types one. Such a
// message is counted (Forged) and applied as a plain revocation,
// without a resync: otherwise a forged number would make every replica
// drop its active L1 entries. When the counter cannot be read, it reports
// false and the caller resyncs (the safe side).
func (r *runState) forged(ctx context.Context, m session.Invalidation, contradicts func(counter uint64) bool) bool {
	s := r.s
	cctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	counter, err := s.rdb.Get(cctx, s.layout.SeqKey(m.Stripe)).Uint64()
	if errors.Is(err, redis.Nil) {
		counter, err = 0, nil
	}
	if err != nil || !contradicts(counter) {
		return false
	}
	r.s.st.forged.Add(1)
	r.s.opts.Logger.Warn("subscriber: invalidation with a sequence number Redis did not assign; applied without a resync",
		"stripe", m.Stripe, "seq", m.Seq, "counter", counter)
	return true
}

// restarted handles m, whose stripe's counter started again: what the new
// counter numbered before m cannot be told apart from the old entries, so
// the sync drops the active entries.
func (r *runState) restarted(m session.Invalidation) error {
	s, k := r.s, m.Stripe
	s.st.gaps.Add(1)
	s.opts.Logger.Warn("subscriber: invalidation counter started again", "stripe", k, "last", r.last[k], "seq", m.Seq)
	r.emit(Event{Kind: EventLost, Reason: ReasonGap})
	r.last[k], r.lastAt[k] = m.Seq, m.AtMS
	r.synced(ReasonGap, 0, true)
	s.opts.OnInvalidation(m)
	return nil
}

// malformed counts and logs a dropped message, at most one line a second.
func (r *runState) malformed(size int) {
	r.s.st.malformed.Add(1)
	now := r.s.opts.Now()
	if now.Sub(r.malformedLogged) < time.Second {
		r.malformedQuiet++
		return
	}
	r.s.opts.Logger.Warn("subscriber: dropped a malformed invalidation message",
		"bytes", size, "dropped_without_log", r.malformedQuiet)
	r.malformedLogged, r.malformedQuiet = now, 0
}

// lose reports a loss.
func (r *runState) lose(reason string, err error) {
	r.s.opts.Logger.Warn("subscriber: invalidation channel lost", "reason", reason, "err", err)
	r.emit(Event{Kind: EventLost, Reason: reason})
}

// synced reports a sync, with DropActive if this or an earlier failed sync
// could not replay everything.
func (r *runState) synced(reason string, replayed int, drop bool) {
	drop = drop || r.pendingDrop
	r.pendingDrop = false
	if reason != ReasonStart {
		r.s.st.resyncs.Add(1)
	}
	if drop {
		r.s.st.dropActive.Add(1)
	}
	r.s.opts.Logger.Info("subscriber: invalidation channel synced", "reason", reason, "replayed", replayed, "drop_active", drop)
	r.emit(Event{Kind: EventSynced, Reason: reason, Replayed: replayed, DropActive: drop})
}

func (r *runState) emit(ev Event) {
	ev.At = r.s.opts.Now()
	r.s.st.subscribed.Store(ev.Kind == EventSynced)
	if r.s.opts.OnEvent != nil {
		r.s.opts.OnEvent(ev)
	}
}

// isTimeout reports whether err is the expiry of a receive timeout, which
// leaves the connection usable.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
