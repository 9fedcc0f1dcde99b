package signing_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/signing"
)

var hostileSeeds = []string{"*", "?", "[a]", "{x}", strings.Repeat("a", 10_000), "a\x00b", "a\r\nb", "\xff\xfe", "", "0", "01", "-1"}

// FuzzParseTimestamp: any header either parses to a value that formats
// back to the same header, or fails with ErrMalformed.
func FuzzParseTimestamp(f *testing.F) {
	for _, s := range append(hostileSeeds, "1700000000123", "999999999999999999", "1000000000000000000") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := signing.ParseTimestamp(s)
		if err != nil {
			if !errors.Is(err, signing.ErrMalformed) {
				t.Fatalf("ParseTimestamp(%q) error %v does not wrap ErrMalformed", s, err)
			}
			return
		}
		if got := signing.FormatTimestamp(ts); got != s {
			t.Fatalf("FormatTimestamp(ParseTimestamp(%q)) = %q: two headers for one timestamp", s, got)
		}
	})
}

// FuzzParseSignature: any header either decodes to 64 bytes whose
// encoding is the header itself, or fails with ErrMalformed.
func FuzzParseSignature(f *testing.F) {
	priv, _ := keyForFuzz()
	good := signing.Sign(priv, "GET", "/", time.UnixMilli(0), nil)
	for _, s := range append(hostileSeeds, good, good[:len(good)-1]+"=", strings.ToUpper(good)) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := signing.ParseSignature(s)
		if err != nil {
			if !errors.Is(err, signing.ErrMalformed) {
				t.Fatalf("ParseSignature(%q) error %v does not wrap ErrMalformed", s, err)
			}
			return
		}
		if len(sig) != 64 {
			t.Fatalf("ParseSignature(%q) returned %d bytes, want 64", s, len(sig))
		}
	})
}

// FuzzVerify: arbitrary headers, key and request never panic, and never
// verify unless they are the genuine signed request.
func FuzzVerify(f *testing.F) {
	priv, pub := keyForFuzz()
	now := time.UnixMilli(1_700_000_000_000)
	good := signing.Sign(priv, "GET", "/", now, nil)
	f.Add(pub, "GET", "/", signing.FormatTimestamp(now), good, []byte(nil))
	for _, s := range hostileSeeds {
		f.Add(pub, "GET", s, s, s, []byte(s))
		f.Add(s, s, "/", signing.FormatTimestamp(now), good, []byte(nil))
	}
	f.Fuzz(func(t *testing.T, pubKey, method, path, ts, sig string, body []byte) {
		v, err := signing.NewVerifier(signing.VerifierOptions{ReplayCacheSize: 4, KeyCacheSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		err = v.Verify(pubKey, method, path, ts, sig, body, now)
		if err == nil {
			genuine := pubKey == pub && method == "GET" && path == "/" && ts == signing.FormatTimestamp(now) && sig == good && len(body) == 0
			if !genuine {
				t.Fatalf("Verify(%q, %q, %q, %q, %q, %q) = nil for a request that was not signed", pubKey, method, path, ts, sig, body)
			}
			return
		}
		for _, want := range []error{signing.ErrMalformed, signing.ErrStale, signing.ErrBadSignature, signing.ErrReplay} {
			if errors.Is(err, want) {
				return
			}
		}
		t.Fatalf("Verify error %v wraps none of the package's errors", err)
	})
}

func keyForFuzz() (priv ed25519.PrivateKey, pubB64 string) {
	priv = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	return priv, base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
}
