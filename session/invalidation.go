package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// DefaultChannel is the Redis pub/sub channel that carries invalidations.
const DefaultChannel = "session_invalidation"

// MaxInvalidationSize is the largest message ParseInvalidation accepts.
const MaxInvalidationSize = 1024

// ErrMalformedInvalidation reports a message on the invalidation channel that
// ParseInvalidation rejects. Such a message is counted and dropped.
var ErrMalformedInvalidation = errors.New("session: malformed invalidation message")

// Invalidation is one message on the invalidation channel. It can only
// revoke: there is no message that makes a session active.
//
// The wire form is one JSON object. Exactly one of "session" (a device
// session id) and "user" (a user id, meaning every session of that user) is
// set. Messages written by this module also carry "seq" (a sequence number
// assigned by Redis, counting from 1 within "stripe") and "at_ms" (Redis
// server time of the revocation, in Unix milliseconds):
//
//	{"session":"dev-123","seq":41,"stripe":0,"at_ms":1764415200000}
//	{"user":"user-7","seq":42,"stripe":0,"at_ms":1764415200100}
//
// A hand-typed message needs only the identifier:
//
//	PUBLISH session_invalidation '{"session":"dev-123"}'
//
// Unknown fields are ignored so that later versions can add some.
type Invalidation struct {
	// SessionID is the revoked device session, or "" for a user message.
	SessionID string
	// UserID is the user whose sessions are all revoked, or "" for a
	// session message.
	UserID string
	// Seq is the message's sequence number within Stripe; 0 means none
	// (a hand-typed message).
	Seq uint64
	// Stripe is the keyspace stripe whose counter assigned Seq.
	Stripe int
	// AtMS is the Redis server time of the revocation in Unix
	// milliseconds; 0 means unknown.
	AtMS int64
}

type wireInvalidation struct {
	Session *string `json:"session,omitempty"`
	User    *string `json:"user,omitempty"`
	Seq     *uint64 `json:"seq,omitempty"`
	Stripe  *int    `json:"stripe,omitempty"`
	AtMS    *int64  `json:"at_ms,omitempty"`
}

// ParseInvalidation decodes and validates one message. Any error wraps
// ErrMalformedInvalidation; it never contains the message itself.
func ParseInvalidation(payload []byte) (Invalidation, error) {
	if len(payload) > MaxInvalidationSize {
		return Invalidation{}, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformedInvalidation, len(payload), MaxInvalidationSize)
	}
	// Unmarshal refuses anything but white space after the value.
	var w wireInvalidation
	if err := json.Unmarshal(payload, &w); err != nil {
		return Invalidation{}, fmt.Errorf("%w: not one JSON object", ErrMalformedInvalidation)
	}
	var m Invalidation
	switch {
	case w.Session != nil && w.User != nil:
		return Invalidation{}, fmt.Errorf("%w: both \"session\" and \"user\" are set", ErrMalformedInvalidation)
	case w.Session != nil:
		if err := ValidateID(*w.Session); err != nil {
			return Invalidation{}, fmt.Errorf("%w: %w", ErrMalformedInvalidation, err)
		}
		m.SessionID = *w.Session
	case w.User != nil:
		if err := ValidateUserID(*w.User); err != nil {
			return Invalidation{}, fmt.Errorf("%w: %w", ErrMalformedInvalidation, err)
		}
		m.UserID = *w.User
	default:
		return Invalidation{}, fmt.Errorf("%w: neither \"session\" nor \"user\" is set", ErrMalformedInvalidation)
	}
	if w.Seq != nil {
		if *w.Seq == 0 {
			return Invalidation{}, fmt.Errorf("%w: seq must be at least 1", ErrMalformedInvalidation)
		}
		m.Seq = *w.Seq
	}
	if w.Stripe != nil {
		if *w.Stripe < 0 || *w.Stripe >= MaxStripes {
			return Invalidation{}, fmt.Errorf("%w: stripe out of range", ErrMalformedInvalidation)
		}
		m.Stripe = *w.Stripe
	}
	if w.AtMS != nil {
		if *w.AtMS < 0 {
			return Invalidation{}, fmt.Errorf("%w: negative at_ms", ErrMalformedInvalidation)
		}
		m.AtMS = *w.AtMS
	}
	return m, nil
}

// MaxStripes bounds the number of keyspace stripes (see rediscache).
const MaxStripes = 1024

// MarshalJSON encodes m in the wire form described on Invalidation.
func (m Invalidation) MarshalJSON() ([]byte, error) {
	if (m.SessionID == "") == (m.UserID == "") {
		return nil, fmt.Errorf("%w: exactly one of SessionID and UserID must be set", ErrMalformedInvalidation)
	}
	b := make([]byte, 0, 96)
	if m.SessionID != "" {
		if err := ValidateID(m.SessionID); err != nil {
			return nil, err
		}
		b = append(b, `{"session":"`...)
		b = append(b, m.SessionID...)
	} else {
		if err := ValidateUserID(m.UserID); err != nil {
			return nil, err
		}
		b = append(b, `{"user":"`...)
		b = append(b, m.UserID...)
	}
	b = append(b, '"')
	if m.Seq > 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, m.Seq, 10)
	}
	// The stripe goes with a sequence number, and is kept whenever it is
	// not the default, so that ParseInvalidation gives m back.
	if m.Seq > 0 || m.Stripe != 0 {
		b = append(b, `,"stripe":`...)
		b = strconv.AppendInt(b, int64(m.Stripe), 10)
	}
	if m.AtMS > 0 {
		b = append(b, `,"at_ms":`...)
		b = strconv.AppendInt(b, m.AtMS, 10)
	}
	return append(b, '}'), nil
}
