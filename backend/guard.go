package backend

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
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

// Fetcher loads a session from the backend. *Client implements it, and so
// does *Guard, so that a Guard can wrap a Client and be used wherever a
// Client is (tiered.Options.Backend).
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
	breaker *gobreaker.CircuitBreaker[session.Record]
	limiter *rate.Limiter
	slots   chan struct{} // one element per call in flight

	calls, failures, rejectedOpen, rejectedRate, rejectedBusy, openings atomic.Uint64
}

// excluded marks an error the breaker must not count: the caller
// cancelled.
type excluded struct{ err error }

func (e excluded) Error() string { return e.err.Error() }
func (e excluded) Unwrap() error { return e.err }

// NewGuard returns a Guard around next, configured by opts.
func NewGuard(next Fetcher, opts GuardOptions) (*Guard, error) {
	if next == nil {
		return nil, errors.New("backend: NewGuard: nil Fetcher")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	g := &Guard{
		next:    next,
		opts:    opts,
		limiter: rate.NewLimiter(rate.Limit(opts.Rate), opts.Burst),
		slots:   make(chan struct{}, opts.MaxConcurrent),
	}
	failures := uint32(opts.Failures)
	g.breaker = gobreaker.NewCircuitBreaker[session.Record](gobreaker.Settings{
		Name:        "session backend",
		MaxRequests: 1,
		Timeout:     opts.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsSuccessful: func(err error) bool {
			return err == nil || errors.Is(err, session.ErrNotFound)
		},
		IsExcluded: func(err error) bool {
			var e excluded
			return errors.As(err, &e)
		},
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				g.openings.Add(1)
			}
		},
	})
	return g, nil
}

// Fetch calls the wrapped Fetcher unless the breaker is open, the token
// bucket is empty or too many calls are in flight; it then returns
// ErrBreakerOpen, ErrRateLimited or ErrOverloaded (wrapped) without a call.
// Otherwise it returns what the wrapped Fetcher returned.
func (g *Guard) Fetch(ctx context.Context, id string) (session.Record, error) {
	if err := session.ValidateID(id); err != nil {
		return session.Record{}, fmt.Errorf("backend: fetch: %w", err)
	}
	if g.breaker.State() == gobreaker.StateOpen {
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
	rec, err := g.breaker.Execute(func() (session.Record, error) {
		g.calls.Add(1)
		rec, err := g.next.Fetch(ctx, id)
		switch {
		case err == nil, errors.Is(err, session.ErrNotFound):
		case errors.Is(ctx.Err(), context.Canceled):
			return rec, excluded{err}
		default:
			g.failures.Add(1)
		}
		return rec, err
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		g.rejectedOpen.Add(1)
		return session.Record{}, fmt.Errorf("backend: fetch %s: %w", session.Redact(id), ErrBreakerOpen)
	}
	var e excluded
	if errors.As(err, &e) {
		err = e.err
	}
	return rec, err
}

// token takes a token from the bucket, waiting up to MaxWait (within ctx).
func (g *Guard) token(ctx context.Context) bool {
	if g.opts.MaxWait == 0 {
		return g.limiter.Allow()
	}
	wctx, cancel := context.WithTimeout(ctx, g.opts.MaxWait)
	defer cancel()
	// Wait fails at once when the token would come after the deadline.
	return g.limiter.Wait(wctx) == nil
}

// BreakerState returns "closed", "half-open" or "open".
func (g *Guard) BreakerState() string {
	return g.breaker.State().String()
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
