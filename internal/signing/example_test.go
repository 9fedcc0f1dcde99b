package signing_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/galaxy-game/sessioncache/internal/signing"
)

// A client signs a request; the gateway verifies it with the session's
// public key and refuses the same request a second time.
func Example() {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	pub := base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
	now := time.UnixMilli(1_700_000_000_000)

	// Client side: the three headers.
	ts := signing.FormatTimestamp(now)
	sig := signing.Sign(priv, "GET", "/v1/me?verbose=1", now, nil)
	fmt.Println("X-Timestamp:", ts)

	// Gateway side.
	v, err := signing.NewVerifier(signing.VerifierOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println("first:", v.Verify(pub, "GET", "/v1/me?verbose=1", ts, sig, nil, now.Add(time.Second)))
	err = v.Verify(pub, "GET", "/v1/me?verbose=1", ts, sig, nil, now.Add(2*time.Second))
	fmt.Println("again is a replay:", errors.Is(err, signing.ErrReplay))
	err = v.Verify(pub, "GET", "/v1/me?verbose=1", ts, sig, nil, now.Add(time.Minute))
	fmt.Println("a minute later is stale:", errors.Is(err, signing.ErrStale))
	// Output:
	// X-Timestamp: 1700000000000
	// first: <nil>
	// again is a replay: true
	// a minute later is stale: true
}
