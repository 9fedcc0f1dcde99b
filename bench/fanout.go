package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// FanoutScaleOptions configures one point of the fan-out scale curve:
// revocations published on one redis-server with Subscribers subscribers
// to the invalidation channel, of which three are real replicas
// (tiered.Cache) whose fan-out is timed and the others bare connections
// that only read, standing in for the rest of a fleet.
type FanoutScaleOptions struct {
	// Addr is the redis-server; the run flushes it. Required.
	Addr string
	// Subscribers is the number of subscribers in all, at least 3.
	// Required.
	Subscribers int
	// Revocations is the number of revocations timed, one at a time.
	// Default 1,000.
	Revocations int
}

// FanoutPoint is one measured point of the fan-out scale curve.
type FanoutPoint struct {
	Subscribers, Revocations int
	// P50, P99 and Max are the time from the revoking call to the third
	// replica's L1 flip.
	P50, P99, Max time.Duration
	// CPUPerRevocation is redis-server's CPU time (INFO cpu) per
	// revocation over the timed phase: the script, the delivery of its
	// message to every subscriber, and whatever the replicas asked in
	// return. ScriptUsec is the time
	// Redis spent running one revocation script (EVALSHA), PUBLISH
	// included, the writes to the subscribers' sockets not.
	CPUPerRevocation time.Duration
	ScriptUsec       float64
	// ReadsPerRevocation is the HGETALLs Redis ran per revocation in the
	// phase: a replica reads the hash again when Redis's tracking
	// invalidation of the key reaches it before the message.
	ReadsPerRevocation float64
}

func (o *FanoutScaleOptions) setDefaults() error {
	if o.Revocations == 0 {
		o.Revocations = 1000
	}
	switch {
	case o.Addr == "":
		return fmt.Errorf("bench: FanoutScaleOptions.Addr is required")
	case o.Subscribers < 3:
		return fmt.Errorf("bench: FanoutScaleOptions.Subscribers %d, want at least 3 (the timed replicas)", o.Subscribers)
	case o.Revocations < 0:
		return fmt.Errorf("bench: negative FanoutScaleOptions.Revocations %d", o.Revocations)
	}
	return nil
}

// signalConn signals sig (without blocking) whenever a read returns
// bytes: a replica's subscriber connection has received something, and
// the waiter looks at the replica's L1 again.
type signalConn struct {
	net.Conn
	sig chan<- struct{}
}

func (c signalConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		select {
		case c.sig <- struct{}{}:
		default:
		}
	}
	return n, err
}

// bareSubscriber is a subscriber connection that counts the messages it
// receives (a pub/sub "message" or a sharded "smessage") and does nothing
// else.
type bareSubscriber struct {
	conn net.Conn
	msgs atomic.Int64
	// onMessage, when set before read starts, is called after each
	// message is counted, from read's goroutine.
	onMessage func()
}

// subscribeBare opens a connection to addr and subscribes it to the
// channels with command, SUBSCRIBE or SSUBSCRIBE, one command per channel
// (Redis refuses an SSUBSCRIBE of channels in several slots), sent at
// once; it returns when Redis has confirmed them all.
func subscribeBare(addr, command string, channels ...string) (*bareSubscriber, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var cmds []byte
	for _, ch := range channels {
		cmds = fmt.Appendf(cmds, "*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(command), command, len(ch), ch)
	}
	br := bufio.NewReaderSize(conn, 4096)
	if _, err := conn.Write(cmds); err != nil {
		conn.Close()
		return nil, nil, err
	}
	// Per channel: *3, $n, subscribe (or ssubscribe), $n, channel, :count.
	kind := strings.ToLower(command) + "\r\n"
	for _, ch := range channels {
		for i := range 6 {
			line, err := br.ReadString('\n')
			if err != nil {
				conn.Close()
				return nil, nil, err
			}
			if (i == 2 && line != kind) || (i == 4 && line != ch+"\r\n") {
				conn.Close()
				return nil, nil, fmt.Errorf("%s %s answered %q", command, ch, line)
			}
		}
	}
	_ = conn.SetDeadline(time.Time{})
	return &bareSubscriber{conn: conn}, br, nil
}

// read counts messages until the connection is closed.
func (s *bareSubscriber) read(br *bufio.Reader) {
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return
		}
		if string(line) == "message\r\n" || string(line) == "smessage\r\n" {
			s.msgs.Add(1)
			if s.onMessage != nil {
				s.onMessage()
			}
		}
	}
}

// RunFanoutScale flushes the Redis at opts.Addr, loads Revocations
// sessions, starts three replicas that hold them all in L1 and
// Subscribers-3 bare subscribers, and revokes the sessions one at a time
// (rediscache.RevokeSession, as BenchmarkFanout of the library does),
// timing each until the third replica has flipped its L1 entry. It fails
// unless every bare subscriber received every message.
func RunFanoutScale(ctx context.Context, opts FanoutScaleOptions) (FanoutPoint, error) {
	if err := opts.setDefaults(); err != nil {
		return FanoutPoint{}, err
	}
	if _, err := RaiseOpenFiles(opts.Subscribers + 256); err != nil {
		return FanoutPoint{}, err
	}
	if err := LoadFresh(ctx, opts.Addr, SystemSessioncache, opts.Revocations); err != nil {
		return FanoutPoint{}, err
	}
	admin := redis.NewClient(&redis.Options{Addr: opts.Addr, ClientName: "fanout-admin"})
	defer admin.Close()
	if cfg, err := admin.ConfigGet(ctx, "maxclients").Result(); err != nil {
		return FanoutPoint{}, fmt.Errorf("bench: CONFIG GET maxclients: %w", err)
	} else if m, _ := strconv.Atoi(cfg["maxclients"]); m < opts.Subscribers+64 {
		return FanoutPoint{}, fmt.Errorf("bench: redis-server maxclients %d, want at least %d (its open-files limit lowers it)", m, opts.Subscribers+64)
	}

	// The three timed replicas; their subscriber connections signal sig.
	sig := make(chan struct{}, 1)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return signalConn{Conn: conn, sig: sig}, nil
	}
	var clients []*redis.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	client := func(name string, dialer func(context.Context, string, string) (net.Conn, error)) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: opts.Addr, ClientName: name, ContextTimeoutEnabled: true, Dialer: dialer})
		clients = append(clients, c)
		return c
	}
	var replicas []*tiered.Cache
	defer func() {
		for _, r := range replicas {
			r.Close()
		}
	}()
	for i := range 3 {
		name := "replica-" + strconv.Itoa(i)
		l2, err := rediscache.New(client(name, nil), rediscache.Options{SessionTTL: RedisTTL})
		if err != nil {
			return FanoutPoint{}, err
		}
		c, err := tiered.New(tiered.Options{Redis: l2, Backend: noBackend{},
			Local:            localcache.Options{Size: max(opts.Revocations, localcache.DefaultSize), TTL: LocalTTL},
			SubscriberClient: client(name+"-sub", dial), SubscriberName: name})
		if err != nil {
			return FanoutPoint{}, err
		}
		replicas = append(replicas, c)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i, r := range replicas {
		if err := r.WaitSynced(wctx); err != nil {
			return FanoutPoint{}, fmt.Errorf("bench: replica %d: WaitSynced: %w", i, err)
		}
	}
	// The revoker waits up to 2 s (the most that the default FillWindow
	// allows): with a thousand subscribers on a loaded machine a
	// revocation may exceed the default CallTimeout, and the time is
	// measured here, not bounded.
	pub, err := rediscache.New(client("revoker", nil), rediscache.Options{SessionTTL: RedisTTL, CallTimeout: 2 * time.Second})
	if err != nil {
		return FanoutPoint{}, err
	}

	// The bare subscribers.
	layout, err := rediscache.NewLayout("", "", 1)
	if err != nil {
		return FanoutPoint{}, err
	}
	var bare []*bareSubscriber
	var readers sync.WaitGroup
	defer func() {
		for _, s := range bare {
			s.conn.Close()
		}
		readers.Wait()
	}()
	for range opts.Subscribers - 3 {
		s, br, err := subscribeBare(opts.Addr, "SUBSCRIBE", layout.Channel())
		if err != nil {
			return FanoutPoint{}, fmt.Errorf("bench: bare subscriber %d of %d: %w", len(bare)+1, opts.Subscribers-3, err)
		}
		bare = append(bare, s)
		readers.Go(func() { s.read(br) })
	}
	if n, err := admin.PubSubNumSub(ctx, layout.Channel()).Result(); err != nil {
		return FanoutPoint{}, err
	} else if n[layout.Channel()] != int64(opts.Subscribers) {
		return FanoutPoint{}, fmt.Errorf("bench: PUBSUB NUMSUB %s = %d, want %d", layout.Channel(), n[layout.Channel()], opts.Subscribers)
	}

	// Every replica holds every session to be revoked, active.
	ids := workload.IDs(opts.Revocations)
	for i, r := range replicas {
		if err := warm(ctx, r, ids); err != nil {
			return FanoutPoint{}, fmt.Errorf("bench: replica %d: %w", i, err)
		}
	}

	before, err := ReadRedisCounters(ctx, admin)
	if err != nil {
		return FanoutPoint{}, err
	}
	var hist Histogram
	for _, id := range ids {
		d, err := revokeAndWait(ctx, pub, replicas, id, sig)
		if err != nil {
			return FanoutPoint{}, err
		}
		hist.Record(d)
	}
	after, err := ReadRedisCounters(ctx, admin)
	if err != nil {
		return FanoutPoint{}, err
	}

	// Every bare subscriber received every message.
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range bare {
		for s.msgs.Load() < int64(opts.Revocations) {
			if time.Now().After(deadline) {
				return FanoutPoint{}, fmt.Errorf("bench: a bare subscriber received %d of %d messages", s.msgs.Load(), opts.Revocations)
			}
			time.Sleep(5 * time.Millisecond) // polling: the readers report nothing else
		}
	}

	d := after.Sub(before)
	n := float64(opts.Revocations)
	script := d.Commands["evalsha"]
	return FanoutPoint{
		Subscribers: opts.Subscribers, Revocations: opts.Revocations,
		P50: hist.Quantile(0.50), P99: hist.Quantile(0.99), Max: hist.Quantile(1),
		CPUPerRevocation:   time.Duration(d.CPUSeconds * float64(time.Second) / n),
		ScriptUsec:         float64(script.Usec) / float64(max(script.Calls, 1)),
		ReadsPerRevocation: float64(d.Commands["hgetall"].Calls) / n,
	}, nil
}

// warm looks every id up on c, from 16 goroutines, and checks that L1
// then holds it active.
func warm(ctx context.Context, c *tiered.Cache, ids []string) error {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(ids)); i = next.Add(1) - 1 {
				if _, err := c.Lookup(ctx, ids[i]); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	for _, id := range ids {
		if rec, held, _ := c.Peek(id); !held || rec.Status != session.StatusActive {
			return fmt.Errorf("L1 does not hold session %s active after a lookup", session.Redact(id))
		}
	}
	return nil
}

// revokeAndWait revokes id and returns the time until all three replicas
// hold it revoked in L1. It sleeps on sig, which the replicas' subscriber
// connections signal when they receive bytes, then looks at the replicas'
// L1 for a moment (the message is applied right after it is read); a
// timer wakes it every millisecond in case a signal came before it
// looked.
func revokeAndWait(ctx context.Context, pub *rediscache.Cache, replicas []*tiered.Cache, id string, sig chan struct{}) (time.Duration, error) {
	select {
	case <-sig:
	default:
	}
	revoked := func() bool {
		for _, r := range replicas {
			if rec, held, _ := r.Peek(id); !held || rec.Status != session.StatusRevoked {
				return false
			}
		}
		return true
	}
	start := time.Now()
	if _, err := pub.RevokeSession(ctx, id); err != nil {
		return 0, err
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		for t := time.Now(); time.Since(t) < 200*time.Microsecond; runtime.Gosched() {
			if revoked() {
				return time.Since(start), nil
			}
		}
		if time.Since(start) > 5*time.Second {
			return 0, fmt.Errorf("bench: revocation of %s not applied by three replicas within 5s", session.Redact(id))
		}
		select {
		case <-sig:
		case <-tick.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
