package subscriber

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// On Redis Cluster each master tracks only its own keys, and the
// subscriber's channel connection reaches one node. So on a cluster Run
// opens, beside that connection, one tracker connection to every master:
// each subscribes to __redis__:invalidate (which puts it in pub/sub mode
// and lets it receive its own invalidations in RESP2), turns tracking on
// for its node, and runs a heartbeat of its own. The loss of any tracker
// is the loss of the whole subscription: the channel connection is closed,
// and the next connection starts new trackers (against the masters the
// cluster has then) before it syncs.

// trackers are the tracker connections of one channel connection.
type trackers struct {
	r      *runState
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex // guards lost
	lost error      // the first tracker's loss
}

// startTrackers opens a tracker on every master of the cluster client and
// waits until each has tracking on and is subscribed. When a tracker is
// lost later, it records why and calls onLost once.
func (r *runState) startTrackers(ctx context.Context, cc *redis.ClusterClient, deadline time.Time, onLost func()) (*trackers, error) {
	tctx, cancel := context.WithCancel(context.WithValue(ctx, subscriberKey{}, true))
	t := &trackers{r: r, cancel: cancel}
	var pss []*redis.PubSub
	var mu sync.Mutex
	sctx, scancel := context.WithTimeout(tctx, r.s.until(deadline))
	defer scancel()
	err := cc.ForEachMaster(sctx, func(_ context.Context, node *redis.Client) error {
		ps := node.Subscribe(tctx) // no I/O yet
		mu.Lock()
		pss = append(pss, ps)
		mu.Unlock()
		if err := ps.Subscribe(sctx, trackingChannel); err != nil {
			return err
		}
		msg, err := ps.ReceiveTimeout(sctx, max(r.s.until(deadline), time.Millisecond))
		if err != nil {
			return err
		}
		if m, ok := msg.(*redis.Subscription); !ok || m.Channel != trackingChannel {
			return fmt.Errorf("unexpected %T before the confirmation", msg)
		}
		return nil
	})
	if err != nil || r.s.st.trackingRefused.Load() {
		// Refused: OnConnect logged it, and the subscriber runs on the
		// channel alone.
		cancel()
		for _, ps := range pss {
			_ = ps.Close()
		}
		r.s.st.tracking.Store(false)
		if err != nil {
			return nil, fmt.Errorf("subscriber: start the cluster's trackers: %w", err)
		}
		return nil, nil
	}
	r.s.st.tracking.Store(true)
	var once sync.Once
	for _, ps := range pss {
		t.wg.Go(func() {
			// Cancelling closes the connection, which ends a blocked
			// receive whatever the client's context handling.
			stop := context.AfterFunc(tctx, func() { _ = ps.Close() })
			defer stop()
			defer ps.Close()
			err := t.run(tctx, ps)
			if tctx.Err() != nil {
				return
			}
			t.mu.Lock()
			if t.lost == nil {
				t.lost = err
			}
			t.mu.Unlock()
			once.Do(onLost)
		})
	}
	return t, nil
}

// stop closes every tracker and waits for them.
func (t *trackers) stop() {
	t.cancel()
	t.wg.Wait()
}

// loss returns the first tracker's loss, or nil.
func (t *trackers) loss() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lost
}

// trackerReason names a tracker's loss as Event.Reason does.
func trackerReason(err error) string {
	if err.Error() == errRedisFlushed {
		return ReasonFlush
	}
	return ReasonReconnect
}

// errRedisFlushed is the error of a loss by flush.
const errRedisFlushed = "subscriber: Redis was flushed"

// run receives one tracker's invalidations until its connection fails, its
// heartbeat goes unanswered or ctx ends, and returns why.
func (t *trackers) run(ctx context.Context, ps *redis.PubSub) error {
	s := t.r.s
	interval, timeout := s.opts.HeartbeatInterval, s.opts.HeartbeatTimeout
	if interval < 0 {
		interval, timeout = idleWait, 0
	}
	var probe string
	var sent time.Time
	for n := 0; ; {
		wait := interval
		if probe != "" {
			wait = max(s.until(sent.Add(timeout)), time.Millisecond)
		}
		rctx, cancel := context.WithTimeout(ctx, wait+receiveSlack)
		msg, err := ps.ReceiveTimeout(rctx, wait)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err != nil && err.Error() == errFlushed:
			s.st.flushes.Add(1)
			return errors.New(errRedisFlushed)
		case err != nil && !isTimeout(err):
			return fmt.Errorf("subscriber: tracker: %w", err)
		case err != nil && probe != "":
			s.st.heartbeatFailures.Add(1)
			return fmt.Errorf("subscriber: tracker heartbeat not answered within %v", timeout)
		case err != nil && timeout > 0:
			n++
			probe, sent = probePrefix+"t"+strconv.Itoa(n), s.opts.Now()
			if err := ps.Ping(ctx, probe); err != nil {
				return fmt.Errorf("subscriber: tracker heartbeat: %w", err)
			}
			s.st.heartbeatsSent.Add(1)
		}
		switch m := msg.(type) {
		case *redis.Message:
			probe = "" // the connection delivers: alive
			if m.Channel == trackingChannel {
				t.r.changed(m.PayloadSlice)
			}
		case *redis.Pong:
			if m.Payload == probe {
				probe = ""
			}
		case *redis.Subscription:
			return errors.New("subscriber: tracker subscription confirmed again: go-redis replaced the connection")
		}
	}
}
