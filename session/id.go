package session

import (
	"errors"
	"fmt"
)

// MaxIDLength is the longest device-session or user identifier accepted.
const MaxIDLength = 128

// ErrInvalidID reports an identifier that fails ValidateID or
// ValidateUserID. A rejected identifier never reaches Redis or the backend.
var ErrInvalidID = errors.New("session: invalid identifier")

// ValidateID reports whether id is an acceptable device-session identifier:
// 1 to MaxIDLength bytes, each one of A-Z, a-z, 0-9, '-', '_' or '.', and
// not "." or ".." (which cannot travel as a URL path segment).
//
// The allowed set leaves out everything that means something to Redis or to
// a shell: glob characters (* ? [ ] \), hash-tag braces ({ }), the key
// separator ':', quotes, whitespace, control bytes and non-ASCII bytes. Every
// package of this module validates identifiers with this function before it
// builds a key or sends a request.
//
// The returned error wraps ErrInvalidID and never contains the identifier.
func ValidateID(id string) error {
	return validate("device session id", id)
}

// ValidateUserID applies the rules of ValidateID to a user identifier.
func ValidateUserID(userID string) error {
	return validate("user id", userID)
}

func validate(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidID, what)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalidID, what, len(id), MaxIDLength)
	}
	if id == "." || id == ".." {
		return fmt.Errorf("%w: %s is a dot segment", ErrInvalidID, what)
	}
	for i := 0; i < len(id); i++ {
		if !idByte[id[i]] {
			return fmt.Errorf("%w: %s has a disallowed byte 0x%02x at offset %d", ErrInvalidID, what, id[i], i)
		}
	}
	return nil
}

// idByte marks the bytes allowed in an identifier.
var idByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['-'], t['_'], t['.'] = true, true, true
	return t
}()

// Redact shortens an identifier for logs and error messages: its first four
// bytes followed by "…", so a log line never carries a full session id.
func Redact(id string) string {
	const keep = 4
	if len(id) <= keep {
		return "…"
	}
	return id[:keep] + "…"
}
