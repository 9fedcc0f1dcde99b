package session

import (
	"errors"
	"fmt"
)

// PublicKeySize is the length in bytes of a raw Ed25519 public key.
const PublicKeySize = 32

// ErrInvalidRecord reports a record, from Redis or from the backend, that
// fails Record.Validate. Such a record is never served.
var ErrInvalidRecord = errors.New("session: invalid record")

// String returns the status as stored in Redis and sent by the backend.
func (s Status) String() string { return string(s) }

// ParseStatus converts the wire form of a status. Anything but "active" or
// "revoked" is an error wrapping ErrInvalidRecord.
func ParseStatus(s string) (Status, error) {
	switch Status(s) {
	case StatusActive:
		return StatusActive, nil
	case StatusRevoked:
		return StatusRevoked, nil
	}
	return "", fmt.Errorf("%w: unknown status (%d bytes)", ErrInvalidRecord, len(s))
}

// Validate reports whether r may be cached and served: DeviceSessionID
// passes ValidateID, UserID passes ValidateUserID, the status is known,
// ClientPublicKey is the standard base64 encoding of exactly PublicKeySize
// bytes, and RevokedAtMS is set only on a revoked record (and is not
// negative).
//
// One relaxation: a revoked record may have an empty UserID and an empty
// ClientPublicKey. That is a revocation tombstone, written when a session is
// revoked before any tier held its data; it is served as revoked.
//
// The returned error wraps ErrInvalidRecord and contains neither the key nor a
// full identifier.
func (r Record) Validate() error {
	if err := ValidateID(r.DeviceSessionID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	if !r.Status.IsKnown() {
		return fmt.Errorf("%w: unknown status (%d bytes)", ErrInvalidRecord, len(r.Status))
	}
	tombstone := r.Status == StatusRevoked
	if r.UserID != "" || !tombstone {
		if err := ValidateUserID(r.UserID); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
		}
	}
	if r.ClientPublicKey != "" || !tombstone {
		if err := ValidatePublicKey(r.ClientPublicKey); err != nil {
			return err
		}
	}
	if r.RevokedAtMS != nil {
		if r.Status != StatusRevoked {
			return fmt.Errorf("%w: revoked_at_ms set on an active record", ErrInvalidRecord)
		}
		if *r.RevokedAtMS < 0 {
			return fmt.Errorf("%w: negative revoked_at_ms", ErrInvalidRecord)
		}
	}
	return nil
}

// ValidatePublicKey reports whether key is the standard, padded base64
// encoding of exactly PublicKeySize bytes, as strict decoding accepts it:
// 43 characters of the standard alphabet, the last of which leaves its two
// unused bits zero, then one '='. It checks the characters in place, so it
// allocates nothing.
func ValidatePublicKey(key string) error {
	const n = (PublicKeySize + 2) / 3 * 4 // 44
	if len(key) != n {
		return fmt.Errorf("%w: client public key is %d base64 bytes, want %d", ErrInvalidRecord, len(key), n)
	}
	for i := range n - 1 {
		if base64Value(key[i]) < 0 {
			return errBadKey
		}
	}
	if key[n-1] != '=' || base64Value(key[n-2])&3 != 0 {
		return errBadKey
	}
	return nil
}

var errBadKey = fmt.Errorf("%w: client public key is not standard base64 of %d bytes", ErrInvalidRecord, PublicKeySize)

// base64Values maps a byte to its 6-bit value in the standard base64
// alphabet, or to -1.
var base64Values = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = int8(i)
	}
	return t
}()

// base64Value returns the 6-bit value of a standard base64 character, or
// -1 for any other byte.
func base64Value(c byte) int8 { return base64Values[c] }

// Revoked returns a copy of r with status revoked. An existing RevokedAtMS is
// kept; otherwise atMS is used when it is positive.
func (r Record) Revoked(atMS int64) Record {
	if r.Status == StatusRevoked && r.RevokedAtMS != nil {
		return r
	}
	r.Status = StatusRevoked
	if r.RevokedAtMS == nil && atMS > 0 {
		at := atMS
		r.RevokedAtMS = &at
	}
	return r
}
