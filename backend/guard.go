package backend

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/galaxy-game/sessioncache/session"
)

// Defaults for GuardOptions.
const (
	DefaultGuardRate          = 100.0
	DefaultGuardMaxConcurrent = 64
	DefaultGuardFailures      = 5
	DefaultGuardOpenTimeout   = time.Second
)

// Errors returned by Guard.Fetch when it refuses to call the backend. None
// of them is session.ErrNotFound: a lookup that gets one must deny, and a
// cache must not remember the answer.
var (
	// ErrBreakerOpen: the circuit breaker is open (the backend failed
	// GuardOptions.Failures times in a row) or half-open with its probes
	// already in flight.
	ErrBreakerOpen = errors.New("backend: circuit breaker open")
	// ErrRateLimited: the token bucket is empty (GuardOptions.Rate).
	ErrRateLimited = errors.New("backend: rate limited")
	// ErrOverloaded: GuardOptions.MaxConcurrent calls are in flight.
	ErrOverloaded = errors.New("backend: too many calls in flight")
)

// Fetcher loads a session from the backend. Fetch must return an error
// wrapping session.ErrNotFound for an id the backend does not know.
// *Client implements it, and so does *Guard, so that a Guard can wrap a
// Client and be used wherever a Client is (tiered.Options.Backend).
type Fetcher interface {
	Fetch(ctx context.Context, id string) (session.Record, error)
}

var (
	_ Fetcher = (*Client)(nil)
	_ Fetcher = (*Guard)(nil)
)

// GuardOptions configures a Guard. Zero fields mean the documented
// defaults; negative values are errors.
type GuardOptions struct {
	// Rate is the sustained number of backend calls a second, refilled
	// into a token bucket of Burst tokens. Default DefaultGuardRate.
	Rate float64
	// Burst is the size of the token bucket: how many calls may go at once
	// after a quiet period. Default: Rate rounded up, at least 1.
	Burst int
	// MaxWait is how long a call may wait for a token. Default 0: a call
	// that finds the bucket empty fails at once with ErrRateLimited, which
	// keeps a flood of unknown ids from queueing goroutines.
	MaxWait time.Duration
	// MaxConcurrent bounds the calls in flight; one more fails at once with
	// ErrOverloaded. Default DefaultGuardMaxConcurrent.
	MaxConcurrent int
	// Failures is how many consecutive failed calls open the circuit
	// breaker. Default DefaultGuardFailures.
	Failures int
	// OpenTimeout is how long the breaker stays open before it lets one
	// probe call through (half-open); a successful probe closes it, a
	// failed one opens it again. Default DefaultGuardOpenTimeout.
	OpenTimeout time.Duration
	// Now is the clock of the token bucket's refill and of the breaker's
	// OpenTimeout. Default time.Now. A wait for a token (MaxWait) is a
	// real timer of the duration this clock gives. It is called from
	// every Fetch, so it must be safe for concurrent use.
	Now func() time.Time
}

func (o *GuardOptions) setDefaults() error {
	switch {
	case o.Rate < 0:
		return fmt.Errorf("backend: negative GuardOptions.Rate %v", o.Rate)
	case o.Burst < 0:
		return fmt.Errorf("backend: negative GuardOptions.Burst %d", o.Burst)
	case o.MaxWait < 0:
		return fmt.Errorf("backend: negative GuardOptions.MaxWait %v", o.MaxWait)
	case o.MaxConcurrent < 0:
		return fmt.Errorf("backend: negative GuardOptions.MaxConcurrent %d", o.MaxConcurrent)
	case o.Failures < 0:
		return fmt.Errorf("backend: negative GuardOptions.Failures %d", o.Failures)
	case o.OpenTimeout < 0:
		return fmt.Errorf("backend: negative GuardOptions.OpenTimeout %v", o.OpenTimeout)
	}
	if o.Rate == 0 {
		o.Rate = DefaultGuardRate
	}
	if o.Burst == 0 {
		o.Burst = max(1, int(o.Rate+0.999999))
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = DefaultGuardMaxConcurrent
	}
	if o.Failures == 0 {
		o.Failures = DefaultGuardFailures
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = DefaultGuardOpenTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// GuardStats counts a Guard's decisions since NewGuard. The counters only
// grow.
type GuardStats struct {
	Calls           uint64 // calls passed to the wrapped Fetcher
	Failures        uint64 // of those, the ones the breaker counted as failed
	RejectedOpen    uint64 // refused with ErrBreakerOpen
	RejectedRate    uint64 // refused with ErrRateLimited
	RejectedBusy    uint64 // refused with ErrOverloaded
	BreakerOpenings uint64 // times the breaker went from closed or half-open to open
}

// Guard protects the backend from the cache's callers: a circuit breaker
// that stops calls while the backend keeps failing, a token-bucket rate
// limit, and a cap on calls in flight. It wraps a Fetcher (normally a
// *Client) and is itself one, so it goes where the Client would:
//
//	client, _ := backend.New(backend.Options{BaseURL: url, Timeout: 500 * time.Millisecond})
//	guard, _ := backend.NewGuard(client, backend.GuardOptions{Rate: 200})
//	cache, _ := tiered.New(tiered.Options{Redis: l2, Backend: guard})
//
// What counts for the breaker: a record, and an unknown id (404,
// session.ErrNotFound), are successes, so a flood of random ids never opens
// it. Any other error (5xx, a malformed answer, a transport error, a
// timeout, including the caller's deadline) is a failure. A call whose
// context was cancelled (the caller gave up, or is closing) counts as
// neither. For a hung backend to open the breaker, set the Client's Timeout
// below the caller's own deadline (tiered.Options.FetchTimeout).
//
// An invalid id is rejected before the breaker, the limiter and the cap,
// and costs nothing. Refusals (ErrBreakerOpen, ErrRateLimited,
// ErrOverloaded) make no call and do not count as failures.
//
// A Guard is safe for concurrent use and starts no goroutines.
type Guard struct {
	next    Fetcher
	opts    GuardOptions
	breaker breaker
	limiter *rate.Limiter
	slots   chan struct{} // one element per call in flight

	calls, failures, rejectedOpen, rejectedRate, rejectedBusy, openings atomic.Uint64
}

// NewGuard returns a Guard around next, configured by opts.
func NewGuard(next Fetcher, opts GuardOptions) (*Guard, error) {
	if next == nil {
		return nil, errors.New("backend: NewGuard: nil Fetcher")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	return &Guard{
		next:    next,
		opts:    opts,
		breaker: breaker{failures: opts.Failures, openTimeout: opts.OpenTimeout},
		limiter: rate.NewLimiter(rate.Limit(opts.Rate), opts.Burst),
		slots:   make(chan struct{}, opts.MaxConcurrent),
	}, nil
}

// Fetch calls the wrapped Fetcher unless the breaker is open, the token
// bucket is empty or too many calls are in flight; it then returns
// ErrBreakerOpen, ErrRateLimited or ErrOverloaded (wrapped) without a call.
// Otherwise it returns what the wrapped Fetcher returned.
func (g *Guard) Fetch(ctx context.Context, id string) (session.Record, error) {
	if err := session.ValidateID(id); err != nil {
		return session.Record{}, fmt.Errorf("backend: fetch: %w", err)
	}
	if g.breaker.state(g.opts.Now()) == breakerOpen {
		g.rejectedOpen.Add(1)
		return session.Record{}, fmt.Errorf("backend: fetch %s: %w", session.Redact(id), ErrBreakerOpen)
	}
	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	default:
		g.rejectedBusy.Add(1)
		return session.Record{}, fmt.Errorf("backend: fetch %s: %w", session.Redact(id), ErrOverloaded)
	}
	if !g.token(ctx) {
		g.rejectedRate.Add(1)
		return session.Record{}, fmt.Errorf("backend: fetch %s: %w", session.Redact(id), ErrRateLimited)
	}
	gen, ok := g.breaker.admit(g.opts.Now())
	if !ok {
		g.rejectedOpen.Add(1)
		return session.Record{}, fmt.Errorf("backend: fetch %s: %w", session.Redact(id), ErrBreakerOpen)
	}
	g.calls.Add(1)
	out := outcomeFailure // if next panics
	defer func() {
		if g.breaker.done(g.opts.Now(), gen, out) {
			g.openings.Add(1)
		}
	}()
	rec, err := g.next.Fetch(ctx, id)
	switch {
	case err == nil, errors.Is(err, session.ErrNotFound):
		out = outcomeSuccess
	case errors.Is(ctx.Err(), context.Canceled):
		out = outcomeExcluded
	default:
		g.failures.Add(1)
	}
	return rec, err
}

// token takes a token from the bucket, waiting up to MaxWait (within ctx).
// It fails at once, reserving nothing, when the token would come later.
func (g *Guard) token(ctx context.Context) bool {
	now := g.opts.Now()
	if g.limiter.AllowN(now, 1) {
		return true
	}
	limit := g.opts.MaxWait
	if limit == 0 {
		return false
	}
	if dl, ok := ctx.Deadline(); ok {
		// A context's deadline is on the system clock, as the timer
		// below is: the one reading of it in a Guard.
		limit = min(limit, time.Until(dl))
	}
	if g.delay(now) > limit {
		return false
	}
	r := g.limiter.ReserveN(now, 1)
	d := r.DelayFrom(now)
	switch {
	case d > limit: // others took the tokens since delay looked
		r.CancelAt(now)
		return false
	case d == 0:
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		r.CancelAt(g.opts.Now())
		return false
	}
}

// delay is how long after now the bucket holds a whole token.
func (g *Guard) delay(now time.Time) time.Duration {
	missing := 1 - g.limiter.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / g.opts.Rate * float64(time.Second))
}

// BreakerState returns "closed", "half-open" or "open".
func (g *Guard) BreakerState() string {
	return g.breaker.state(g.opts.Now()).String()
}

// Stats returns the counters. It is cheap and safe for concurrent use.
func (g *Guard) Stats() GuardStats {
	return GuardStats{
		Calls:           g.calls.Load(),
		Failures:        g.failures.Load(),
		RejectedOpen:    g.rejectedOpen.Load(),
		RejectedRate:    g.rejectedRate.Load(),
		RejectedBusy:    g.rejectedBusy.Load(),
		BreakerOpenings: g.openings.Load(),
	}
}

// breakerState is the state of a breaker.
type breakerState int

const (
	breakerClosed breakerState = iota
	breakerOpen
	breakerHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s breakerState) String() string {
	switch s {
	case breakerClosed:
		return "closed"
	case breakerOpen:
		return "open"
	case breakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("breakerState(%d)", int(s))
}

// outcome is how a call counts for the breaker.
type outcome int

const (
	outcomeSuccess  outcome = iota
	outcomeFailure          // counts towards opening
	outcomeExcluded         // counts neither way: the caller cancelled
)

// breaker is the Guard's circuit breaker, on the Guard's clock: closed
// until failures consecutive calls fail, then open for openTimeout, then
// half-open, when it admits one probe at a time; the probe's success
// closes it and its failure opens it again. A call counts only in the
// state it was admitted in: one that ends after a change of state (its
// generation) is ignored. Every method takes the time from its caller.
type breaker struct {
	failures    int
	openTimeout time.Duration

	// mu guards the fields below.
	mu         sync.Mutex
	st         breakerState
	generation uint64    // incremented at every change of st
	failed     int       // consecutive failures while closed
	openUntil  time.Time // when an open breaker turns half-open
	probing    bool      // half-open, with its probe in flight
}

// state returns the state at now.
func (b *breaker) state(now time.Time) breakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateLocked(now)
}

// stateLocked returns the state at now, after an open breaker whose
// OpenTimeout has passed turned half-open.
func (b *breaker) stateLocked(now time.Time) breakerState {
	if b.st == breakerOpen && !now.Before(b.openUntil) {
		b.setLocked(breakerHalfOpen, now)
	}
	return b.st
}

// setLocked changes the state and starts a generation.
func (b *breaker) setLocked(st breakerState, now time.Time) {
	b.st, b.failed, b.probing = st, 0, false
	b.generation++
	if st == breakerOpen {
		b.openUntil = now.Add(b.openTimeout)
	}
}

// admit reports whether a call may go at now, and the generation that
// done must be given when it ends.
func (b *breaker) admit(now time.Time) (generation uint64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.stateLocked(now) {
	case breakerOpen:
		return 0, false
	case breakerHalfOpen:
		if b.probing {
			return 0, false
		}
		b.probing = true
	}
	return b.generation, true
}

// done counts the outcome of a call admitted in generation, ending at now,
// and reports whether it opened the breaker.
func (b *breaker) done(now time.Time, generation uint64, out outcome) (opened bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.stateLocked(now)
	if generation != b.generation {
		return false
	}
	switch {
	case out == outcomeExcluded:
		b.probing = false
	case st == breakerClosed && out == outcomeSuccess:
		b.failed = 0
	case st == breakerClosed:
		b.failed++
		if b.failed < b.failures {
			return false
		}
		b.setLocked(breakerOpen, now)
		return true
	case st == breakerHalfOpen && out == outcomeSuccess:
		b.setLocked(breakerClosed, now)
	case st == breakerHalfOpen:
		b.setLocked(breakerOpen, now)
		return true
	}
	return false
}
