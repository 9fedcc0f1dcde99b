package chaos

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// The subscriber's log lines that mark its events (the subscriber logs each one
// just before it calls the OnEvent handler that tiered owns).
const (
	msgLost   = "subscriber: invalidation channel lost"
	msgSynced = "subscriber: invalidation channel synced"
	msgGap    = "subscriber: gap in the invalidation sequence"
)

// Event is one subscriber event of a replica, read from its log.
type Event struct {
	At         time.Time
	Kind       string // "lost", "synced" or "gap"
	Reason     string // the subscriber's Reason constant
	Replayed   int64  // synced only
	DropActive bool   // synced only
}

// EventLog records a replica's subscriber events. Its Handler is the
// subscriber's slog.Handler: the log is the one hook the subscriber offers
// outside its package, and it carries every loss and sync with its reason.
// It is safe for concurrent use.
type EventLog struct {
	mu      sync.Mutex // guards events and changed
	events  []Event
	changed chan struct{} // closed and replaced at every event
}

// NewEventLog returns an empty log.
func NewEventLog() *EventLog {
	return &EventLog{changed: make(chan struct{})}
}

// Handler returns the slog.Handler to give the subscriber.
func (l *EventLog) Handler() slog.Handler { return eventHandler{l} }

// Events returns a copy of the events recorded so far.
func (l *EventLog) Events() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

// Count returns how many events of kind happened at or after since.
func (l *EventLog) Count(kind string, since time.Time) int {
	n := 0
	for _, e := range l.Events() {
		if e.Kind == kind && !e.At.Before(since) {
			n++
		}
	}
	return n
}

// Wait returns the first event of kind at or after since, waiting for it
// until ctx ends; ok is false if it did not come.
func (l *EventLog) Wait(ctx context.Context, kind string, since time.Time) (e Event, ok bool) {
	for {
		l.mu.Lock()
		for _, e := range l.events {
			if e.Kind == kind && !e.At.Before(since) {
				l.mu.Unlock()
				return e, true
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Event{}, false
		}
	}
}

func (l *EventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	close(l.changed)
	l.changed = make(chan struct{})
}

type eventHandler struct{ l *EventLog }

func (h eventHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h eventHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h eventHandler) WithGroup(string) slog.Handler            { return h }

func (h eventHandler) Handle(_ context.Context, r slog.Record) error {
	var e Event
	switch {
	case strings.HasPrefix(r.Message, msgLost):
		e.Kind = "lost"
	case strings.HasPrefix(r.Message, msgSynced):
		e.Kind = "synced"
	case strings.HasPrefix(r.Message, msgGap):
		e.Kind = "gap"
	default:
		return nil
	}
	e.At = r.Time
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "reason":
			e.Reason = a.Value.String()
		case "replayed":
			e.Replayed = a.Value.Int64()
		case "drop_active":
			e.DropActive = a.Value.Bool()
		}
		return true
	})
	h.l.add(e)
	return nil
}
