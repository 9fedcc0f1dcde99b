package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/galaxy-game/sessioncache/internal/fakeclock"
	"github.com/galaxy-game/sessioncache/session"
)

// fakeFetcher answers from a function and counts calls. block, when set,
// holds every call until it is closed or the call's context ends.
type fakeFetcher struct {
	mu     sync.Mutex
	calls  int
	answer func(id string) (session.Record, error)
	block  chan struct{}
}

func (f *fakeFetcher) Fetch(ctx context.Context, id string) (session.Record, error) {
	f.mu.Lock()
	f.calls++
	answer, block := f.answer, f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return session.Record{}, fmt.Errorf("fake: %w", ctx.Err())
		}
	}
	return answer(id)
}

func (f *fakeFetcher) set(answer func(string) (session.Record, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = answer
}

func (f *fakeFetcher) setBlock(block chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.block = block
}

func (f *fakeFetcher) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

var errUnavailable = &StatusError{StatusCode: 503}

func answerActive(id string) (session.Record, error) {
	return session.Record{DeviceSessionID: id, UserID: "u-1", Status: session.StatusActive,
		ClientPublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, nil
}
func answerNotFound(string) (session.Record, error) {
	return session.Record{}, fmt.Errorf("fake: %w", session.ErrNotFound)
}
func answerUnavailable(string) (session.Record, error) { return session.Record{}, errUnavailable }

func newTestGuard(t *testing.T, f Fetcher, opts GuardOptions) *Guard {
	t.Helper()
	g, err := NewGuard(f, opts)
	if err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	return g
}

func TestGuardBreakerOpensAndStopsCalls(t *testing.T) {
	clock := fakeclock.New()
	f := &fakeFetcher{answer: answerUnavailable}
	g := newTestGuard(t, f, GuardOptions{Failures: 5, OpenTimeout: time.Second, Rate: 1e6, Now: clock.Now})
	ctx := context.Background()
	for i := range 5 {
		if _, err := g.Fetch(ctx, "dev-1"); !errors.Is(err, errUnavailable) {
			t.Fatalf("Fetch %d with the backend failing = %v, want the backend's error", i, err)
		}
	}
	if s := g.BreakerState(); s != "open" {
		t.Fatalf("BreakerState() after 5 failures = %q, want open", s)
	}
	for i := range 100 {
		if _, err := g.Fetch(ctx, "dev-1"); !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("Fetch %d while open = %v, want ErrBreakerOpen", i, err)
		}
	}
	if n := f.count(); n != 5 {
		t.Fatalf("backend calls = %d, want 5: none while the breaker is open", n)
	}

	// It stays open for OpenTimeout, then one probe goes through; its
	// success closes the breaker.
	clock.Advance(time.Second - time.Nanosecond)
	if _, err := g.Fetch(ctx, "dev-1"); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Fetch 1ns before OpenTimeout = %v, want ErrBreakerOpen", err)
	}
	clock.Advance(time.Nanosecond)
	f.set(answerActive)
	if _, err := g.Fetch(ctx, "dev-1"); err != nil {
		t.Fatalf("probe after OpenTimeout = %v, want a record", err)
	}
	if s := g.BreakerState(); s != "closed" {
		t.Fatalf("BreakerState() after a successful probe = %q, want closed", s)
	}
	st := g.Stats()
	if st.Calls != 6 || st.RejectedOpen != 101 || st.BreakerOpenings != 1 || st.Failures != 5 {
		t.Errorf("Stats() = %+v, want 6 calls, 5 failures, 101 rejected while open, 1 opening", st)
	}
}

func TestGuardFailedProbeReopens(t *testing.T) {
	clock := fakeclock.New()
	f := &fakeFetcher{answer: answerUnavailable}
	g := newTestGuard(t, f, GuardOptions{Failures: 2, OpenTimeout: 100 * time.Millisecond, Rate: 1e6, Now: clock.Now})
	ctx := context.Background()
	for range 2 {
		_, _ = g.Fetch(ctx, "dev-1")
	}
	clock.Advance(100 * time.Millisecond)
	if s := g.BreakerState(); s != "half-open" {
		t.Fatalf("BreakerState() after OpenTimeout = %q, want half-open", s)
	}
	if _, err := g.Fetch(ctx, "dev-1"); !errors.Is(err, errUnavailable) {
		t.Fatalf("failing probe = %v, want the backend's error", err)
	}
	if s := g.BreakerState(); s != "open" {
		t.Fatalf("BreakerState() after a failed probe = %q, want open", s)
	}
	if _, err := g.Fetch(ctx, "dev-1"); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Fetch after a failed probe = %v, want ErrBreakerOpen", err)
	}
	// The failed probe started a new OpenTimeout.
	clock.Advance(99 * time.Millisecond)
	if s := g.BreakerState(); s != "open" {
		t.Fatalf("BreakerState() 99ms after the failed probe = %q, want open", s)
	}
	clock.Advance(time.Millisecond)
	if s := g.BreakerState(); s != "half-open" {
		t.Fatalf("BreakerState() OpenTimeout after the failed probe = %q, want half-open", s)
	}
	if st := g.Stats(); st.BreakerOpenings != 2 || st.Calls != 3 || st.Failures != 3 {
		t.Errorf("Stats() = %+v, want 2 openings, 3 calls, 3 failures", st)
	}
}

// TestGuardHalfOpenProbes checks that a half-open breaker lets one probe
// through at a time, that a cancelled probe leaves room for the next, and
// that a call which ends after the breaker changed state counts for
// nothing.
func TestGuardHalfOpenProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := fakeclock.New()
		f := &fakeFetcher{answer: answerUnavailable}
		g := newTestGuard(t, f, GuardOptions{Failures: 1, OpenTimeout: time.Second, Rate: 1e6, Now: clock.Now})
		ctx := context.Background()

		// A call admitted while closed, held by the backend.
		lateBlock := make(chan struct{})
		f.setBlock(lateBlock)
		late := make(chan error)
		go func() {
			_, err := g.Fetch(ctx, "dev-late")
			late <- err
		}()
		synctest.Wait()
		f.setBlock(nil)
		if _, err := g.Fetch(ctx, "dev-1"); !errors.Is(err, errUnavailable) {
			t.Fatalf("Fetch with the backend failing = %v, want the backend's error", err)
		}
		clock.Advance(time.Second)
		if s := g.BreakerState(); s != "half-open" {
			t.Fatalf("BreakerState() after OpenTimeout = %q, want half-open", s)
		}

		// A probe in flight: the next call is refused.
		f.set(answerActive)
		f.setBlock(make(chan struct{}))
		pctx, cancel := context.WithCancel(ctx)
		probe := make(chan error)
		go func() {
			_, err := g.Fetch(pctx, "dev-probe")
			probe <- err
		}()
		synctest.Wait()
		if _, err := g.Fetch(ctx, "dev-2"); !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("Fetch beside the probe in flight = %v, want ErrBreakerOpen", err)
		}
		// The caller gives the probe up: it counts neither way, and the
		// next call is the probe.
		cancel()
		if err := <-probe; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled probe = %v, want context.Canceled", err)
		}
		if s := g.BreakerState(); s != "half-open" {
			t.Fatalf("BreakerState() after a cancelled probe = %q, want half-open", s)
		}
		// The call admitted while closed fails now, in another state:
		// it must not open the breaker again.
		f.setBlock(nil)
		f.set(answerUnavailable)
		close(lateBlock)
		if err := <-late; !errors.Is(err, errUnavailable) {
			t.Fatalf("call admitted before the opening = %v, want the backend's error", err)
		}
		if s := g.BreakerState(); s != "half-open" {
			t.Fatalf("BreakerState() after a failure admitted before the opening = %q, want half-open", s)
		}
		f.set(answerActive)
		if _, err := g.Fetch(ctx, "dev-3"); err != nil {
			t.Fatalf("probe after the cancelled one = %v, want a record", err)
		}
		if s := g.BreakerState(); s != "closed" {
			t.Fatalf("BreakerState() after a successful probe = %q, want closed", s)
		}
		if st := g.Stats(); st.BreakerOpenings != 1 || st.RejectedOpen != 1 {
			t.Errorf("Stats() = %+v, want 1 opening and 1 refusal", st)
		}
	})
}

// TestGuardPanicCountsAsFailure checks that a Fetcher's panic reaches the
// caller and counts for the breaker as a failure.
func TestGuardPanicCountsAsFailure(t *testing.T) {
	f := &fakeFetcher{answer: func(string) (session.Record, error) { panic("backend bug") }}
	g := newTestGuard(t, f, GuardOptions{Failures: 1, Rate: 1e6, Now: fakeclock.New().Now})
	func() {
		defer func() {
			if r := recover(); r != "backend bug" {
				t.Errorf("recover() = %v, want the Fetcher's panic", r)
			}
		}()
		_, _ = g.Fetch(context.Background(), "dev-1")
	}()
	if s := g.BreakerState(); s != "open" {
		t.Errorf("BreakerState() after a panic with Failures 1 = %q, want open", s)
	}
}

func TestGuardNotFoundNeverTrips(t *testing.T) {
	f := &fakeFetcher{answer: answerNotFound}
	g := newTestGuard(t, f, GuardOptions{Failures: 1, Rate: 1e6})
	for i := range 1000 {
		id := fmt.Sprintf("unknown-%d", i)
		if _, err := g.Fetch(context.Background(), id); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Fetch(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if s := g.BreakerState(); s != "closed" {
		t.Fatalf("BreakerState() after 1000 unknown ids = %q, want closed", s)
	}
	if st := g.Stats(); st.Failures != 0 || st.Calls != 1000 {
		t.Errorf("Stats() = %+v, want 1000 calls and no failure", st)
	}
}

func TestGuardCancellationNeverTrips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{answer: answerActive, block: make(chan struct{})}
		g := newTestGuard(t, f, GuardOptions{Failures: 1, Rate: 1e6})
		for range 3 {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() {
				_, err := g.Fetch(ctx, "dev-1")
				done <- err
			}()
			synctest.Wait()
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Fetch = %v, want context.Canceled", err)
			}
		}
		if s := g.BreakerState(); s != "closed" {
			t.Fatalf("BreakerState() after cancelled calls = %q, want closed", s)
		}

		// A deadline is the backend's failure to answer in time.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if _, err := g.Fetch(ctx, "dev-1"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Fetch past its deadline = %v, want DeadlineExceeded", err)
		}
		if s := g.BreakerState(); s != "open" {
			t.Fatalf("BreakerState() after a timeout with Failures 1 = %q, want open", s)
		}
	})
}

func TestGuardRateLimit(t *testing.T) {
	clock := fakeclock.New()
	f := &fakeFetcher{answer: answerActive}
	g := newTestGuard(t, f, GuardOptions{Rate: 10, Burst: 5, Now: clock.Now})
	ctx := context.Background()
	ok, limited := 0, 0
	for range 20 {
		_, err := g.Fetch(ctx, "dev-1")
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrRateLimited):
			limited++
		default:
			t.Fatalf("Fetch = %v, want a record or ErrRateLimited", err)
		}
	}
	if ok != 5 || limited != 15 || f.count() != 5 {
		t.Fatalf("20 calls at once with Burst 5: %d passed, %d limited, %d backend calls; want 5, 15, 5", ok, limited, f.count())
	}
	passed := func() int {
		n := 0
		for range 20 {
			if _, err := g.Fetch(ctx, "dev-1"); err == nil {
				n++
			}
		}
		return n
	}
	// The bucket refills at Rate, up to Burst.
	tests := []struct {
		advance time.Duration
		want    int
	}{
		{0, 0},
		{99 * time.Millisecond, 0},
		{time.Millisecond, 1},
		{300 * time.Millisecond, 3},
		{time.Second, 5},
		{time.Hour, 5},
	}
	for _, tc := range tests {
		clock.Advance(tc.advance)
		if n := passed(); n != tc.want {
			t.Errorf("calls passed %v after the bucket emptied = %d, want %d", tc.advance, n, tc.want)
		}
	}
	if s := g.BreakerState(); s != "closed" {
		t.Errorf("BreakerState() after rate limiting = %q, want closed: refusals are not failures", s)
	}
}

// TestGuardMaxWait runs on the default clock: the wait for a token is a
// real timer, which synctest's bubble controls with the system clock.
func TestGuardMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{answer: answerActive}
		g := newTestGuard(t, f, GuardOptions{Rate: 10, Burst: 1, MaxWait: 250 * time.Millisecond})
		ctx := context.Background()
		start := time.Now()
		for i := range 3 {
			if _, err := g.Fetch(ctx, "dev-1"); err != nil {
				t.Fatalf("Fetch %d with MaxWait = %v, want a record after a wait", i, err)
			}
		}
		if waited := time.Since(start); waited != 200*time.Millisecond {
			t.Errorf("3 calls at 10/s with Burst 1 took %v, want 200ms", waited)
		}
		g2 := newTestGuard(t, f, GuardOptions{Rate: 1, Burst: 1, MaxWait: 250 * time.Millisecond})
		_, _ = g2.Fetch(ctx, "dev-1")
		start = time.Now()
		if _, err := g2.Fetch(ctx, "dev-1"); !errors.Is(err, ErrRateLimited) {
			t.Fatalf("Fetch whose token is 1s away with MaxWait 250ms = %v, want ErrRateLimited", err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("refusal took %v, want at once", waited)
		}
	})
}

func TestGuardConcurrencyCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{answer: answerActive, block: make(chan struct{})}
		g := newTestGuard(t, f, GuardOptions{MaxConcurrent: 3, Rate: 1e6})
		ctx := context.Background()
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if _, err := g.Fetch(ctx, "dev-1"); err != nil {
					t.Errorf("Fetch within the cap = %v", err)
				}
			})
		}
		synctest.Wait()
		if _, err := g.Fetch(ctx, "dev-2"); !errors.Is(err, ErrOverloaded) {
			t.Fatalf("Fetch beyond 3 in flight = %v, want ErrOverloaded", err)
		}
		close(f.block)
		wg.Wait()
		if _, err := g.Fetch(ctx, "dev-2"); err != nil {
			t.Fatalf("Fetch after the calls ended = %v, want a record", err)
		}
		if st := g.Stats(); st.RejectedBusy != 1 || st.Calls != 4 {
			t.Errorf("Stats() = %+v, want 1 busy refusal and 4 calls", st)
		}
	})
}

func TestGuardInvalidIDCostsNothing(t *testing.T) {
	f := &fakeFetcher{answer: answerActive}
	g := newTestGuard(t, f, GuardOptions{Rate: 1, Burst: 1})
	for _, id := range []string{"", "*", "{x}", "a b", "\x00"} {
		if _, err := g.Fetch(context.Background(), id); !errors.Is(err, session.ErrInvalidID) {
			t.Errorf("Fetch(%q) = %v, want ErrInvalidID", id, err)
		}
	}
	if _, err := g.Fetch(context.Background(), "dev-1"); err != nil {
		t.Fatalf("Fetch of a valid id after invalid ones = %v: invalid ids must not take tokens", err)
	}
	if n := f.count(); n != 1 {
		t.Errorf("backend calls = %d, want 1", n)
	}
}

func TestNewGuardOptions(t *testing.T) {
	f := &fakeFetcher{answer: answerActive}
	tests := []struct {
		name string
		opts GuardOptions
	}{
		{"negative Rate", GuardOptions{Rate: -1}},
		{"negative Burst", GuardOptions{Burst: -1}},
		{"negative MaxWait", GuardOptions{MaxWait: -time.Second}},
		{"negative MaxConcurrent", GuardOptions{MaxConcurrent: -1}},
		{"negative Failures", GuardOptions{Failures: -1}},
		{"negative OpenTimeout", GuardOptions{OpenTimeout: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewGuard(f, tc.opts); err == nil {
				t.Errorf("NewGuard(%+v) = nil error, want one", tc.opts)
			}
		})
	}
	if _, err := NewGuard(nil, GuardOptions{}); err == nil {
		t.Error("NewGuard(nil) = nil error, want one")
	}
	g := newTestGuard(t, f, GuardOptions{})
	if g.opts.Rate != DefaultGuardRate || g.opts.Burst != 100 || g.opts.MaxConcurrent != DefaultGuardMaxConcurrent ||
		g.opts.Failures != DefaultGuardFailures || g.opts.OpenTimeout != DefaultGuardOpenTimeout || g.opts.Now == nil {
		t.Errorf("defaults = %+v", g.opts)
	}
}

// TestGuardOverHTTP runs the guard over a real Client: a 503 backend opens
// the breaker, and 404s keep it closed.
func TestGuardOverHTTP(t *testing.T) {
	srv := newGuardBackend(t)
	c, err := New(Options{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	g := newTestGuard(t, c, GuardOptions{Failures: 3, Rate: 1e6, OpenTimeout: time.Hour})
	ctx := context.Background()
	for i := range 50 {
		id := fmt.Sprintf("missing-%d", i)
		if _, err := g.Fetch(ctx, id); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Fetch(%q) = %v, want ErrNotFound", id, err)
		}
	}
	for i := range 3 {
		if _, err := g.Fetch(ctx, "fail-1"); err == nil {
			t.Fatalf("Fetch %d of a 503 = nil error", i)
		}
	}
	if _, err := g.Fetch(ctx, "missing-x"); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Fetch after 3 503s = %v, want ErrBreakerOpen", err)
	}
	if n := srv.count(); n != 53 {
		t.Errorf("requests reaching the backend = %d, want 53", n)
	}
}

// guardBackend answers 404 for ids starting "missing-" and 503 for the
// others, counting requests.
type guardBackend struct {
	*httptest.Server
	mu sync.Mutex
	n  int
}

func newGuardBackend(t *testing.T) *guardBackend {
	t.Helper()
	b := &guardBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.n++
		b.mu.Unlock()
		if strings.HasPrefix(strings.TrimPrefix(r.URL.Path, PathPrefix), "missing-") {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *guardBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}
