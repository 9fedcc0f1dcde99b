// Package signing is the request-signature scheme shared by the reference
// gateway (cmd/gatewayd), its client (sessionctl sign) and the demo.
//
// A client signs each request with its device session's Ed25519 private key.
// The signed message is the canonical string
//
//	method + "\n" + path + "\n" + timestamp + "\n" + hex(sha256(body))
//
// where path is the request target as sent (path and raw query, for example
// "/v1/me?x=1"), timestamp is the signing time in Unix milliseconds written
// in decimal without sign or leading zeros, and the body hash is lower-case
// hex (the hash of the empty string for a request without a body). The
// request carries three headers: HeaderSessionID (the device session id),
// HeaderTimestamp (the timestamp above) and HeaderSignature (the 64-byte
// signature in standard, padded base64).
//
// A Verifier checks the signature against the session's public key, rejects
// timestamps outside a window around its clock and rejects a signature it
// has already accepted (a replay). Its errors wrap one of ErrMalformed,
// ErrStale, ErrBadSignature and ErrReplay. A Verifier is safe for concurrent
// use; it starts no goroutines.
package signing

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// The request headers of the scheme.
const (
	HeaderSessionID = "X-Session-Id"
	HeaderTimestamp = "X-Timestamp"
	HeaderSignature = "X-Signature"
)

// Defaults for VerifierOptions.
const (
	// DefaultWindow is how far a request's timestamp may be from the
	// verifier's clock, either way.
	DefaultWindow = 30 * time.Second
	// DefaultReplayCacheSize is the number of accepted signatures
	// remembered: enough for about 1,600 signed requests a second with the
	// default window (see VerifierOptions.ReplayCacheSize). Each entry
	// costs about 200 bytes, so the default is about 20 MB when full.
	DefaultReplayCacheSize = 100_000
	// DefaultKeyCacheSize is the number of decoded public keys kept.
	DefaultKeyCacheSize = 10_000
)

// Errors returned by Verify and the parsers, wrapped with detail.
var (
	// ErrMalformed reports a missing or badly formatted header (or public
	// key): the request was not signed by the scheme.
	ErrMalformed = errors.New("signing: malformed signature headers")
	// ErrStale reports a timestamp outside the verifier's window.
	ErrStale = errors.New("signing: timestamp outside the accepted window")
	// ErrBadSignature reports a signature that does not verify with the
	// session's public key over the request.
	ErrBadSignature = errors.New("signing: bad signature")
	// ErrReplay reports a valid signature that was already accepted.
	ErrReplay = errors.New("signing: replayed request")
)

// maxTimestampDigits bounds the timestamp header: 18 digits of
// milliseconds reach the year 31 million, and never overflow int64.
const maxTimestampDigits = 18

// Canonical returns the string that is signed for a request: method, path
// (with raw query), ts in Unix milliseconds and the hex SHA-256 of body,
// separated by newlines.
func Canonical(method, path string, ts time.Time, body []byte) string {
	return canonical(method, path, FormatTimestamp(ts), body)
}

func canonical(method, path, ts string, body []byte) string {
	sum := sha256.Sum256(body)
	b := make([]byte, 0, len(method)+len(path)+len(ts)+3+2*len(sum))
	b = append(b, method...)
	b = append(b, '\n')
	b = append(b, path...)
	b = append(b, '\n')
	b = append(b, ts...)
	b = append(b, '\n')
	b = hex.AppendEncode(b, sum[:])
	return string(b)
}

// FormatTimestamp returns ts as the HeaderTimestamp value: Unix
// milliseconds in decimal.
func FormatTimestamp(ts time.Time) string {
	return strconv.FormatInt(ts.UnixMilli(), 10)
}

// Sign returns the HeaderSignature value for a request: the standard base64
// Ed25519 signature of Canonical(method, path, ts, body). It panics if priv
// is not an Ed25519 private key (ed25519.PrivateKeySize bytes).
func Sign(priv ed25519.PrivateKey, method, path string, ts time.Time, body []byte) string {
	sig := ed25519.Sign(priv, []byte(Canonical(method, path, ts, body)))
	return base64.StdEncoding.EncodeToString(sig)
}

// SignRequest sets the three headers of the scheme on req, signing
// req.Method, req.URL.RequestURI() (the request target the client sends),
// ts and body, which must be the bytes req will send. It panics as Sign does.
func SignRequest(req *http.Request, sessionID string, priv ed25519.PrivateKey, ts time.Time, body []byte) {
	req.Header.Set(HeaderSessionID, sessionID)
	req.Header.Set(HeaderTimestamp, FormatTimestamp(ts))
	req.Header.Set(HeaderSignature, Sign(priv, req.Method, req.URL.RequestURI(), ts, body))
}

// ParseTimestamp parses a HeaderTimestamp value: decimal Unix milliseconds,
// 1 to 18 digits, no sign, no leading zero. Other forms would let one
// signature travel under several header values, so they are refused with an
// error wrapping ErrMalformed.
func ParseTimestamp(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("%w: missing %s", ErrMalformed, HeaderTimestamp)
	}
	if len(s) > maxTimestampDigits {
		return time.Time{}, fmt.Errorf("%w: %s longer than %d digits", ErrMalformed, HeaderTimestamp, maxTimestampDigits)
	}
	if s[0] == '0' && len(s) > 1 {
		return time.Time{}, fmt.Errorf("%w: %s has a leading zero", ErrMalformed, HeaderTimestamp)
	}
	var ms int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return time.Time{}, fmt.Errorf("%w: %s is not decimal milliseconds", ErrMalformed, HeaderTimestamp)
		}
		ms = ms*10 + int64(c-'0')
	}
	return time.UnixMilli(ms), nil
}

// ParseSignature decodes a HeaderSignature value: exactly
// ed25519.SignatureSize bytes in canonical, padded standard base64.
// Errors wrap ErrMalformed.
func ParseSignature(s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: missing %s", ErrMalformed, HeaderSignature)
	}
	if len(s) != base64.StdEncoding.EncodedLen(ed25519.SignatureSize) {
		return nil, fmt.Errorf("%w: %s is %d characters, want %d", ErrMalformed, HeaderSignature,
			len(s), base64.StdEncoding.EncodedLen(ed25519.SignatureSize))
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %s is not standard base64 of %d bytes", ErrMalformed, HeaderSignature, ed25519.SignatureSize)
	}
	return sig, nil
}

// VerifierOptions configures a Verifier. Zero fields mean the defaults.
type VerifierOptions struct {
	// Window is how far a timestamp may be from the clock passed to Verify,
	// before or after. Default DefaultWindow.
	Window time.Duration
	// ReplayCacheSize is the number of accepted signatures remembered to
	// detect replays. A signature only verifies with its own timestamp, so
	// a remembered signature is a replay for as long as that timestamp is
	// inside the window: 2 × Window. When more distinct requests than this
	// are accepted within 2 × Window, the oldest are forgotten early and a
	// replay of one of them is accepted; Stats.ReplayEvictionsLive counts
	// those early evictions. Size it to at least the peak accepted request
	// rate × 2 × Window. Default DefaultReplayCacheSize.
	ReplayCacheSize int
	// KeyCacheSize is the number of decoded public keys kept, keyed by
	// their base64 form, so that a hit costs no decoding. Default
	// DefaultKeyCacheSize.
	KeyCacheSize int
}

func (o *VerifierOptions) setDefaults() error {
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.ReplayCacheSize == 0 {
		o.ReplayCacheSize = DefaultReplayCacheSize
	}
	if o.KeyCacheSize == 0 {
		o.KeyCacheSize = DefaultKeyCacheSize
	}
	switch {
	case o.Window < 0:
		return fmt.Errorf("signing: negative Window %v", o.Window)
	case o.ReplayCacheSize < 0:
		return fmt.Errorf("signing: negative ReplayCacheSize %d", o.ReplayCacheSize)
	case o.KeyCacheSize < 0:
		return fmt.Errorf("signing: negative KeyCacheSize %d", o.KeyCacheSize)
	}
	return nil
}

// Stats counts Verify outcomes since NewVerifier.
type Stats struct {
	Accepted      uint64 // requests verified and remembered
	Malformed     uint64 // ErrMalformed
	Stale         uint64 // ErrStale
	BadSignatures uint64 // ErrBadSignature
	Replays       uint64 // ErrReplay
	// ReplayEvictionsLive counts remembered signatures forgotten while
	// their timestamp was still inside the window: ReplayCacheSize is too
	// small for the request rate.
	ReplayEvictionsLive uint64
}

// Verifier checks signed requests. Create it with NewVerifier.
type Verifier struct {
	window time.Duration
	keys   *lru.Cache[string, ed25519.PublicKey] // base64 key -> decoded key

	// mu guards seen.
	mu       sync.Mutex
	seen     *simplelru.LRU[[ed25519.SignatureSize]byte, int64] // signature -> timestamp (Unix ms)
	seenSize int                                                // capacity of seen

	accepted, malformed, stale, badSignatures, replays, evictionsLive atomic.Uint64
}

// NewVerifier returns a Verifier for opts.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	keys, err := lru.New[string, ed25519.PublicKey](opts.KeyCacheSize)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	seen, err := simplelru.NewLRU[[ed25519.SignatureSize]byte, int64](opts.ReplayCacheSize, nil)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return &Verifier{window: opts.Window, keys: keys, seen: seen, seenSize: opts.ReplayCacheSize}, nil
}

// Window returns the accepted clock difference.
func (v *Verifier) Window() time.Duration { return v.window }

// Precheck runs the checks that need no public key, header format
// (ErrMalformed) and timestamp window (ErrStale), so that a caller can
// refuse junk before it looks the session up. Verify repeats them. Precheck
// counts nothing in Stats.
func (v *Verifier) Precheck(tsHeader, sigHeader string, now time.Time) error {
	_, _, err := v.checkHeaders(tsHeader, sigHeader, now)
	return err
}

func (v *Verifier) checkHeaders(tsHeader, sigHeader string, now time.Time) (time.Time, []byte, error) {
	ts, err := ParseTimestamp(tsHeader)
	if err != nil {
		return time.Time{}, nil, err
	}
	sig, err := ParseSignature(sigHeader)
	if err != nil {
		return time.Time{}, nil, err
	}
	if d := now.Sub(ts); d > v.window || d < -v.window {
		return time.Time{}, nil, fmt.Errorf("%w: %v from the server's clock, more than %v", ErrStale, d.Round(time.Millisecond), v.window)
	}
	return ts, sig, nil
}

// Verify checks a request signed by the scheme: pubKeyB64 is the session's
// public key (standard base64 of 32 bytes), method and path the request's
// method and target as received (path and raw query), tsHeader and sigHeader
// the values of HeaderTimestamp and HeaderSignature, body the request body,
// and now the verifier's clock.
//
// The checks run in order: header format (ErrMalformed), timestamp within
// ±Window of now (ErrStale), public key format (ErrMalformed), signature
// (ErrBadSignature), and finally replay (ErrReplay): only a valid signature
// is remembered, so forged requests cannot flush the replay cache.
func (v *Verifier) Verify(pubKeyB64, method, path, tsHeader, sigHeader string, body []byte, now time.Time) error {
	ts, sig, err := v.checkHeaders(tsHeader, sigHeader, now)
	switch {
	case errors.Is(err, ErrStale):
		v.stale.Add(1)
		return err
	case err != nil:
		v.malformed.Add(1)
		return err
	}
	pub, err := v.publicKey(pubKeyB64)
	if err != nil {
		v.malformed.Add(1)
		return err
	}
	if !ed25519.Verify(pub, []byte(canonical(method, path, tsHeader, body)), sig) {
		v.badSignatures.Add(1)
		return ErrBadSignature
	}
	if !v.remember([ed25519.SignatureSize]byte(sig), ts.UnixMilli(), now) {
		v.replays.Add(1)
		return ErrReplay
	}
	v.accepted.Add(1)
	return nil
}

// remember records an accepted signature; it reports false when the
// signature was already there. A signature verifies only with its own
// timestamp, which Verify has checked is inside the window, so a remembered
// signature is always a replay.
func (v *Verifier) remember(sig [ed25519.SignatureSize]byte, tsMS int64, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen.Contains(sig) {
		return false
	}
	if v.seen.Len() >= v.seenSize {
		if _, oldTS, ok := v.seen.RemoveOldest(); ok && now.Sub(time.UnixMilli(oldTS)) <= v.window {
			v.evictionsLive.Add(1)
		}
	}
	v.seen.Add(sig, tsMS)
	return true
}

// publicKey decodes a session's public key, from the cache when it can.
func (v *Verifier) publicKey(b64 string) (ed25519.PublicKey, error) {
	if pub, ok := v.keys.Get(b64); ok {
		return pub, nil
	}
	if len(b64) != base64.StdEncoding.EncodedLen(ed25519.PublicKeySize) {
		return nil, fmt.Errorf("%w: public key is not standard base64 of %d bytes", ErrMalformed, ed25519.PublicKeySize)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key is not standard base64 of %d bytes", ErrMalformed, ed25519.PublicKeySize)
	}
	pub := ed25519.PublicKey(raw)
	v.keys.Add(b64, pub)
	return pub, nil
}

// Stats returns the counters. It is cheap and safe for concurrent use.
func (v *Verifier) Stats() Stats {
	return Stats{
		Accepted:            v.accepted.Load(),
		Malformed:           v.malformed.Load(),
		Stale:               v.stale.Load(),
		BadSignatures:       v.badSignatures.Load(),
		Replays:             v.replays.Load(),
		ReplayEvictionsLive: v.evictionsLive.Load(),
	}
}
