package tiered

import (
	"context"
	"sync/atomic"
	"time"
)

// coarseTick is the resolution of L1's default clock.
const coarseTick = 10 * time.Millisecond

// coarseClock is L1's clock when Options.Now is not set: a monotonic
// reading refreshed every coarseTick by run, so that an L1 hit loads one
// word instead of reading the system clock (which cost about a third of
// an L1-hit Lookup, BenchmarkL1Hit). It runs behind the system clock by at
// most a tick plus the scheduling delay of run, which only makes an L1
// entry outlive its TTL by as much; revocations do not depend on it. Once
// run returns, Now reads the system clock.
type coarseClock struct {
	base time.Time
	// since is time.Since(base) at the last tick, or -1 once run returned.
	since atomic.Int64
}

func newCoarseClock() *coarseClock {
	return &coarseClock{base: time.Now()}
}

// Now returns base advanced by the last tick; it keeps base's monotonic
// reading, so that L1 compares monotonic times.
func (c *coarseClock) Now() time.Time {
	d := c.since.Load()
	if d < 0 {
		return time.Now()
	}
	return c.base.Add(time.Duration(d))
}

// run refreshes the clock every coarseTick until ctx ends.
func (c *coarseClock) run(ctx context.Context) {
	t := time.NewTicker(coarseTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.since.Store(-1)
			return
		case <-t.C:
			c.since.Store(int64(time.Since(c.base)))
		}
	}
}
