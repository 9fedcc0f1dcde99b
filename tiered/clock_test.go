package tiered

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestCoarseClockTicksAndFallsBackAfterRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCoarseClock()
		start := time.Now()
		if got := c.Now(); !got.Equal(start) {
			t.Fatalf("Now() before the first tick = %v, want the start %v", got, start)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			c.run(ctx)
			close(done)
		}()
		time.Sleep(10*coarseTick + coarseTick/2) // fake time: ten ticks pass
		synctest.Wait()
		if got, want := c.Now().Sub(start), 10*coarseTick; got != want {
			t.Errorf("Now() after 10.5 ticks = start + %v, want start + %v (the last tick)", got, want)
		}
		cancel()
		<-done
		time.Sleep(time.Hour)
		if got := c.Now(); !got.Equal(time.Now()) {
			t.Errorf("Now() after run returned = %v, want the system clock %v", got, time.Now())
		}
	})
}

func TestDefaultL1ClockStopsAtClose(t *testing.T) {
	e := newBenchEnv(t, 1)
	c := e.replica("clock", testHooks{}, nil)
	id := "device-session-00000000"
	if _, tier, err := c.LookupTier(context.Background(), id); err != nil || tier != TierL2 {
		t.Fatalf("LookupTier(%q) = %v, %v; want an L2 hit", id, tier, err)
	}
	if _, tier, err := c.LookupTier(context.Background(), id); err != nil || tier != TierL1 {
		t.Fatalf("second LookupTier(%q) = %v, %v; want an L1 hit", id, tier, err)
	}
	// Close ends the clock's goroutine (goleak checks that in TestMain),
	// and L1 then reads the system clock.
	c.Close()
	before := time.Now()
	if got := c.opts.Local.Now(); got.Before(before) {
		t.Errorf("L1 clock after Close = %v, before the system clock %v", got, before)
	}
	if _, ok := c.l1.Get(id); !ok {
		t.Errorf("Local().Get(%q) after Close = miss, want the unexpired entry", id)
	}
}
