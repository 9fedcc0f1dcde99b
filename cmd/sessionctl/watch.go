package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

func init() {
	register("watch", "print invalidations as they arrive, with fan-out delay and sequence gaps", runWatch)
}

// watchClientName is the CLIENT SETNAME of watch's connection, so that
// `sessionctl stats` and CLIENT LIST tell it from a replica.
const watchClientName = "sessionctl-watch"

// watchLine is one received message; its JSON form is one line of -json.
type watchLine struct {
	Received string `json:"received"` // local receive time, RFC 3339 UTC
	Session  string `json:"session,omitempty"`
	User     string `json:"user,omitempty"`
	Seq      uint64 `json:"seq,omitempty"`    // absent: a hand-typed message
	Stripe   *int   `json:"stripe,omitempty"` // absent on a malformed message
	AtMS     int64  `json:"at_ms,omitempty"`
	// DelayMS is receive time minus at_ms, on the Redis clock (the local
	// clock corrected by the offset measured at start).
	DelayMS *int64 `json:"delay_ms,omitempty"`
	// GapExpected is the seq that should have come next on this stripe
	// when a higher one came: messages were lost.
	GapExpected uint64 `json:"gap_expected_seq,omitempty"`
	// ResetAfter is the stripe's last seq when this one is not higher:
	// the counter started again (Redis restarted without persistence, was
	// flushed, or the key was deleted), which is not a loss of messages.
	ResetAfter uint64 `json:"counter_reset_after_seq,omitempty"`
	Malformed  bool   `json:"malformed,omitempty"`
	Bytes      *int   `json:"bytes,omitempty"` // payload length of a malformed message
}

// watcher holds the state of one watch run: the sequence seen per stripe.
// It is used by one goroutine.
type watcher struct {
	out    io.Writer
	errw   io.Writer
	json   bool
	offset time.Duration // Redis clock minus local clock
	last   map[int]uint64
	// base is the stripe's counter read right after the first
	// subscription; it checks each stripe's first message.
	base map[int]uint64
	now  func() time.Time
}

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	var f redisFlags
	f.register(fs)
	count := fs.Int("count", 0, "stop after this many messages (0: until interrupted)")
	heartbeat := fs.Duration("heartbeat", 15*time.Second, "PING the subscription after this much silence; no answer within another is a lost connection")
	setUsage(fs, "watch [flags]",
		`SUBSCRIBEs to the invalidation channel (connection named `+watchClientName+`) and
prints one line per message: local receive time (UTC), the message fields,
the fan-out delay (receive time minus at_ms, with the local clock corrected
to Redis time), "GAP (expected seq N)" when a stripe's sequence skips (a
message was lost, here or by the publisher's counter), "COUNTER RESET" when
it goes back (the counter started again: Redis restarted without
persistence or was flushed, or the seq key was deleted), and "MALFORMED (n bytes)"
for a payload that does not parse (its contents are not printed). Hand-typed
messages have no seq: they show "seq -". Connection losses and
resubscriptions go to stderr; messages published meanwhile are lost (the
next message of each stripe shows the gap). Runs until interrupted or
-count messages.`)
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if *count < 0 || *heartbeat <= 0 {
		return fail(stderr, "watch", fmt.Errorf("%w: -count must be >= 0 and -heartbeat positive", errUsage))
	}
	c, rdb, err := f.open(ctx, watchClientName)
	if err != nil {
		return fail(stderr, "watch", err)
	}
	defer rdb.Close()

	w := &watcher{out: stdout, errw: stderr, json: f.json, last: map[int]uint64{}, now: time.Now}
	t0 := time.Now()
	rt, err := redisTime(ctx, rdb)
	if err != nil {
		return fail(stderr, "watch", err)
	}
	t1 := time.Now()
	w.offset = rt.Sub(t0.Add(t1.Sub(t0) / 2))

	seen := 0
	for attempt := 0; ; attempt++ {
		err := w.subscribe(ctx, c.Layout(), rdb, *heartbeat, *count, &seen)
		if ctx.Err() != nil || err == nil {
			return exitOK
		}
		fmt.Fprintf(stderr, "sessionctl watch: subscription lost: %s; resubscribing (messages published meanwhile are lost)\n", oneLine(explainRedis(err)))
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
}

// explainRedis is describe's message for a Redis error.
func explainRedis(err error) string {
	_, msg := describe(err)
	return msg
}

// subscribe holds one subscription until it is lost (the error), ctx ends,
// or count messages were seen in all (nil).
func (w *watcher) subscribe(ctx context.Context, l rediscache.Layout, rdb redis.UniversalClient, heartbeat time.Duration, count int, seen *int) error {
	ps := rdb.Subscribe(ctx, l.Channel())
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, heartbeat)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ne net.Error
		switch {
		case err != nil && errors.As(err, &ne) && ne.Timeout():
			if pinged {
				return fmt.Errorf("no answer to PING within %v", heartbeat)
			}
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			pinged = true
			continue
		case err != nil:
			return err
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if w.base == nil {
				w.base = readSeqs(ctx, l, rdb)
				fmt.Fprintf(w.errw, "sessionctl watch: subscribed to %s as %s (clock offset to Redis %v)\n",
					m.Channel, watchClientName, w.offset.Round(time.Millisecond))
			} else {
				fmt.Fprintf(w.errw, "sessionctl watch: resubscribed to %s\n", m.Channel)
			}
		case *redis.Message:
			w.handle([]byte(m.Payload))
			*seen++
			if count > 0 && *seen >= count {
				return nil
			}
		}
	}
}

// readSeqs reads every stripe's counter; a stripe it cannot read is left
// out (its first message is then not checked).
func readSeqs(ctx context.Context, l rediscache.Layout, rdb redis.UniversalClient) map[int]uint64 {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, l.Stripes())
	for k := range cmds {
		cmds[k] = pipe.Get(ctx, l.SeqKey(k))
	}
	_, _ = pipe.Exec(ctx) // read per command
	base := make(map[int]uint64, len(cmds))
	for k, cmd := range cmds {
		v, err := cmd.Uint64()
		switch {
		case errors.Is(err, redis.Nil):
			base[k] = 0
		case err == nil:
			base[k] = v
		}
	}
	return base
}

// handle prints one message.
func (w *watcher) handle(payload []byte) {
	recv := w.now()
	line := watchLine{Received: recv.UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	m, err := session.ParseInvalidation(payload)
	if err != nil {
		n := len(payload)
		line.Malformed, line.Bytes = true, &n
		w.print(line)
		return
	}
	line.Session, line.User, line.Seq, line.Stripe, line.AtMS = m.SessionID, m.UserID, m.Seq, &m.Stripe, m.AtMS
	if m.AtMS > 0 {
		d := recv.Add(w.offset).UnixMilli() - m.AtMS
		line.DelayMS = &d
	}
	if m.Seq > 0 {
		if last, ok := w.last[m.Stripe]; ok {
			switch {
			case m.Seq <= last:
				line.ResetAfter = last
			case m.Seq != last+1:
				line.GapExpected = last + 1
			}
		} else if b, ok := w.base[m.Stripe]; ok && m.Seq > b+1 {
			line.GapExpected = b + 1
		}
		w.last[m.Stripe] = m.Seq
	}
	w.print(line)
}

func (w *watcher) print(l watchLine) {
	if w.json {
		b, _ := json.Marshal(l) // a watchLine always encodes
		fmt.Fprintf(w.out, "%s\n", b)
		return
	}
	var b strings.Builder
	b.WriteString(l.Received)
	if l.Malformed {
		fmt.Fprintf(&b, "  MALFORMED (%d bytes)", *l.Bytes)
		fmt.Fprintln(w.out, b.String())
		return
	}
	if l.Session != "" {
		fmt.Fprintf(&b, "  session %s", l.Session)
	} else {
		fmt.Fprintf(&b, "  user %s", l.User)
	}
	if l.Seq > 0 {
		fmt.Fprintf(&b, "  stripe %d seq %d", *l.Stripe, l.Seq)
	} else {
		b.WriteString("  seq - (hand-typed)")
	}
	if l.AtMS > 0 {
		fmt.Fprintf(&b, "  at %s", fmtMS(l.AtMS))
	}
	if l.DelayMS != nil {
		fmt.Fprintf(&b, "  delay %sms", strconv.FormatInt(*l.DelayMS, 10))
	}
	if l.GapExpected > 0 {
		fmt.Fprintf(&b, "  GAP (expected seq %d)", l.GapExpected)
	}
	if l.ResetAfter > 0 {
		fmt.Fprintf(&b, "  COUNTER RESET (after seq %d: Redis restarted or flushed?)", l.ResetAfter)
	}
	fmt.Fprintln(w.out, b.String())
}
