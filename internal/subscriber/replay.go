package subscriber

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/mutation"
	"github.com/galaxy-game/sessioncache/session"
)

const (
	// replayPage is the largest COUNT of one XREVRANGE of a replay.
	replayPage = 500
	// replaySlack is how many entries beyond Options.LogMaxLen a replay
	// may need: XADD MAXLEN ~ keeps a little more than LogMaxLen. A
	// longer range is not read: it cannot be complete.
	replaySlack = 1000
)

// sync brings every stripe's position up to its counter: the first time by
// taking the counters as the baseline (DropActive), later by replaying what
// each stripe's log holds between the position and the counter.
func (r *runState) sync(ctx context.Context, reason string) error {
	seqs, ats, err := r.readCounters(ctx)
	if err != nil {
		return err
	}
	if !r.based {
		copy(r.last, seqs)
		copy(r.lastAt, ats)
		r.based = true
		r.synced(ReasonStart, 0, true)
		return nil
	}
	if mutation.Disabled(mutation.Resync) {
		copy(r.last, seqs)
		copy(r.lastAt, ats)
		r.synced(reason, 0, false)
		return nil
	}
	replayed := 0
	for k, c := range seqs {
		l := r.last[k]
		switch {
		case c < l, c == l && r.lastAt[k] > 0 && ats[k] > r.lastAt[k]:
			// The counter went back (Redis lost data, or the counter
			// expired) or started again and reached the same number.
			r.s.opts.Logger.Warn("subscriber: invalidation counter went back", "stripe", k, "last", l, "counter", c)
			r.pendingDrop = true
		case c > l:
			n, complete, err := r.replay(ctx, k, l, r.lastAt[k], c)
			if err != nil {
				return err
			}
			replayed += n
			// From position 0 no entry anchors the log: a Redis that
			// restarted empty and numbered new invalidations from 1
			// looks the same as an intact log, so only a drop is safe.
			if !complete || l == 0 {
				r.pendingDrop = true
			}
		}
		// Positions advance stripe by stripe; pendingDrop carries a
		// needed drop over a failure of a later stripe.
		r.last[k], r.lastAt[k] = c, ats[k]
	}
	r.synced(reason, replayed, r.tracked)
	return nil
}

// readCounters reads every stripe's counter (a missing one is 0) and the
// at_ms of the newest log entry when that entry has the counter's number
// (else 0), in one pipeline.
func (r *runState) readCounters(ctx context.Context) ([]uint64, []int64, error) {
	s := r.s
	n := s.layout.Stripes()
	cctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	gets := make([]*redis.StringCmd, n)
	heads := make([]*redis.XMessageSliceCmd, n)
	// Pipelined's own error is the first failed command's, which may be
	// redis.Nil: each command is checked below.
	_, _ = s.rdb.Pipelined(cctx, func(p redis.Pipeliner) error {
		for k := range n {
			gets[k] = p.Get(cctx, s.layout.SeqKey(k))
			heads[k] = p.XRevRangeN(cctx, s.layout.LogKey(k), "+", "-", 1)
		}
		return nil
	})
	seqs := make([]uint64, n)
	ats := make([]int64, n)
	for k := range n {
		v, err := gets[k].Uint64()
		switch {
		case errors.Is(err, redis.Nil):
			v = 0
		case err != nil:
			return nil, nil, fmt.Errorf("subscriber: read the invalidation counter of stripe %d: %w", k, err)
		}
		head, err := heads[k].Result()
		if err != nil {
			return nil, nil, fmt.Errorf("subscriber: read the invalidation log of stripe %d: %w", k, err)
		}
		if len(head) == 1 {
			if m, ok := parseLogEntry(head[0].Values, k); ok && m.Seq == v {
				ats[k] = m.AtMS
			}
		}
		seqs[k] = v
	}
	return seqs, ats, nil
}

// replay reads stripe k's log backwards for the invalidations numbered
// from+1 to to and, if it finds all of them, passes them to OnInvalidation
// in ascending order and returns how many. It reports incomplete when some
// are missing (the log was trimmed or expired), or when the entry numbered
// from does not have the at_ms fromAt that the subscriber saw for it (the
// counter started again since). fromAt 0 skips that check.
func (r *runState) replay(ctx context.Context, k int, from uint64, fromAt int64, to uint64) (int, bool, error) {
	s := r.s
	want := to - from
	if want == 0 {
		return 0, true, nil
	}
	if want > uint64(s.opts.LogMaxLen)+replaySlack {
		return 0, false, nil
	}
	got := make([]session.Invalidation, want) // got[i] has number from+1+i
	var have uint64
	key := s.layout.LogKey(k)
	end := "+"
	for {
		// One more than missing, so that the entry numbered from comes
		// in the same page.
		count := int64(min(want-have+1, replayPage))
		cctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
		page, err := s.rdb.XRevRangeN(cctx, key, end, "-", count).Result()
		cancel()
		if err != nil {
			return 0, false, fmt.Errorf("subscriber: replay the invalidation log of stripe %d: %w", k, err)
		}
		for _, e := range page {
			m, ok := parseLogEntry(e.Values, k)
			switch {
			case !ok || m.Seq > to:
				// Malformed (its number stays missing) or newer than
				// the range: it arrives as a message too.
			case m.Seq > from:
				if i := m.Seq - from - 1; got[i].Seq == 0 {
					got[i] = m
					have++
				}
			default:
				// The log is in sequence order: the range is behind us.
				if m.Seq == from && fromAt > 0 && m.AtMS != fromAt {
					return 0, false, nil
				}
				return r.deliver(got, have == want), have == want, nil
			}
		}
		if int64(len(page)) < count {
			return r.deliver(got, have == want), have == want, nil
		}
		end = "(" + page[len(page)-1].ID
	}
}

// deliver passes a complete replay to OnInvalidation and returns how many
// it passed.
func (r *runState) deliver(got []session.Invalidation, complete bool) int {
	if !complete {
		return 0
	}
	for _, m := range got {
		r.s.opts.OnInvalidation(m)
	}
	r.s.st.replayed.Add(uint64(len(got)))
	return len(got)
}

// parseLogEntry decodes the fields of a log entry of stripe k:
// session|user <id> seq <n> at_ms <ms>.
func parseLogEntry(values map[string]any, k int) (session.Invalidation, bool) {
	field := func(name string) (string, bool) {
		v, ok := values[name].(string)
		return v, ok
	}
	m := session.Invalidation{Stripe: k}
	v, ok := field("seq")
	if !ok {
		return m, false
	}
	seq, err := strconv.ParseUint(v, 10, 64)
	if err != nil || seq == 0 {
		return m, false
	}
	m.Seq = seq
	if v, ok := field("at_ms"); ok {
		at, err := strconv.ParseInt(v, 10, 64)
		if err != nil || at < 0 {
			return m, false
		}
		m.AtMS = at
	}
	id, isSession := field("session")
	uid, isUser := field("user")
	switch {
	case isSession && !isUser && session.ValidateID(id) == nil:
		m.SessionID = id
	case isUser && !isSession && session.ValidateUserID(uid) == nil:
		m.UserID = uid
	default:
		return m, false
	}
	return m, true
}
