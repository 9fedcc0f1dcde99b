// Package fakeclock is a clock for tests that moves only when told to.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a settable clock, safe for concurrent use. Its Now fits every
// injectable clock of the module (tiered.Options.Now, localcache.Options.Now,
// backend.GuardOptions.Now).
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a Clock that reads a fixed instant (2030-01-02 03:04:05 UTC)
// until Advance moves it.
func New() *Clock {
	return &Clock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
