package signing_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/signing"
)

// t0 is a fixed clock: every test passes its time explicitly.
var t0 = time.UnixMilli(1_700_000_000_123)

func newKey(t testing.TB, seed byte) (string, ed25519.PrivateKey) {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	priv := ed25519.NewKeyFromSeed(s)
	return base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)), priv
}

func newVerifier(t testing.TB, opts signing.VerifierOptions) *signing.Verifier {
	t.Helper()
	v, err := signing.NewVerifier(opts)
	if err != nil {
		t.Fatalf("NewVerifier(%+v) = %v", opts, err)
	}
	return v
}

func TestCanonical(t *testing.T) {
	emptyHash := hex.EncodeToString(sha256.New().Sum(nil))
	bodyHash := sha256.Sum256([]byte(`{"a":1}`))
	tests := []struct {
		method, path string
		body         []byte
		want         string
	}{
		{"GET", "/v1/me", nil, "GET\n/v1/me\n1700000000123\n" + emptyHash},
		{"GET", "/v1/me", []byte{}, "GET\n/v1/me\n1700000000123\n" + emptyHash},
		{"POST", "/v1/x?b=2&a=1", []byte(`{"a":1}`), "POST\n/v1/x?b=2&a=1\n1700000000123\n" + hex.EncodeToString(bodyHash[:])},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			if got := signing.Canonical(tt.method, tt.path, t0, tt.body); got != tt.want {
				t.Errorf("Canonical(%q, %q, t0, %q) = %q, want %q", tt.method, tt.path, tt.body, got, tt.want)
			}
		})
	}
}

func TestSignVerifiesWithStdlib(t *testing.T) {
	pubB64, priv := newKey(t, 1)
	sig := signing.Sign(priv, "GET", "/v1/me", t0, nil)
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		t.Fatalf("Sign returned %q, not standard base64: %v", sig, err)
	}
	pub, _ := base64.StdEncoding.DecodeString(pubB64)
	if !ed25519.Verify(pub, []byte(signing.Canonical("GET", "/v1/me", t0, nil)), raw) {
		t.Errorf("ed25519.Verify(Canonical(...), Sign(...)) = false, want true")
	}
}

func TestVerify(t *testing.T) {
	pubB64, priv := newKey(t, 1)
	otherPub, _ := newKey(t, 2)
	body := []byte(`{"amount":5}`)
	ts := signing.FormatTimestamp(t0)
	sig := signing.Sign(priv, "POST", "/v1/pay?x=1", t0, body)
	window := signing.DefaultWindow

	tests := []struct {
		name         string
		pub          string
		method, path string
		ts, sig      string
		body         []byte
		now          time.Time
		want         error
	}{
		{"valid", pubB64, "POST", "/v1/pay?x=1", ts, sig, body, t0, nil},
		{"valid at window's past edge", pubB64, "POST", "/v1/pay?x=1", ts, sig, body, t0.Add(window), nil},
		{"valid at window's future edge", pubB64, "POST", "/v1/pay?x=1", ts, sig, body, t0.Add(-window), nil},
		{"stale", pubB64, "POST", "/v1/pay?x=1", ts, sig, body, t0.Add(window + time.Millisecond), signing.ErrStale},
		{"future", pubB64, "POST", "/v1/pay?x=1", ts, sig, body, t0.Add(-window - time.Millisecond), signing.ErrStale},
		{"other method", pubB64, "PUT", "/v1/pay?x=1", ts, sig, body, t0, signing.ErrBadSignature},
		{"other path", pubB64, "POST", "/v1/pay", ts, sig, body, t0, signing.ErrBadSignature},
		{"other query", pubB64, "POST", "/v1/pay?x=2", ts, sig, body, t0, signing.ErrBadSignature},
		{"other body", pubB64, "POST", "/v1/pay?x=1", ts, sig, []byte(`{"amount":500}`), t0, signing.ErrBadSignature},
		{"other timestamp", pubB64, "POST", "/v1/pay?x=1", signing.FormatTimestamp(t0.Add(time.Millisecond)), sig, body, t0, signing.ErrBadSignature},
		{"other key", otherPub, "POST", "/v1/pay?x=1", ts, sig, body, t0, signing.ErrBadSignature},
		{"missing timestamp", pubB64, "POST", "/v1/pay?x=1", "", sig, body, t0, signing.ErrMalformed},
		{"missing signature", pubB64, "POST", "/v1/pay?x=1", ts, "", body, t0, signing.ErrMalformed},
		{"leading zero", pubB64, "POST", "/v1/pay?x=1", "0" + ts, sig, body, t0, signing.ErrMalformed},
		{"plus sign", pubB64, "POST", "/v1/pay?x=1", "+" + ts, sig, body, t0, signing.ErrMalformed},
		{"seconds with fraction", pubB64, "POST", "/v1/pay?x=1", "1700000000.123", sig, body, t0, signing.ErrMalformed},
		{"url-safe base64", pubB64, "POST", "/v1/pay?x=1", ts, strings.NewReplacer("+", "-", "/", "_").Replace(sig) + "x", body, t0, signing.ErrMalformed},
		{"short signature", pubB64, "POST", "/v1/pay?x=1", ts, sig[:80], body, t0, signing.ErrMalformed},
		{"bad public key", "not-a-key", "POST", "/v1/pay?x=1", ts, sig, body, t0, signing.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, signing.VerifierOptions{})
			err := v.Verify(tt.pub, tt.method, tt.path, tt.ts, tt.sig, tt.body, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Verify(%s) = %v, want %v", tt.name, err, tt.want)
			}
		})
	}
}

func TestVerifyRejectsReplay(t *testing.T) {
	pubB64, priv := newKey(t, 1)
	v := newVerifier(t, signing.VerifierOptions{})
	ts := signing.FormatTimestamp(t0)
	sig := signing.Sign(priv, "GET", "/v1/me", t0, nil)
	for i, want := range []error{nil, signing.ErrReplay, signing.ErrReplay} {
		now := t0.Add(time.Duration(i) * 10 * time.Second)
		if err := v.Verify(pubB64, "GET", "/v1/me", ts, sig, nil, now); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("Verify #%d = %v, want %v", i+1, err, want)
		}
	}
	// A fresh signature over the same request with a new timestamp is a
	// new request.
	t1 := t0.Add(time.Millisecond)
	if err := v.Verify(pubB64, "GET", "/v1/me", signing.FormatTimestamp(t1), signing.Sign(priv, "GET", "/v1/me", t1, nil), nil, t1); err != nil {
		t.Errorf("Verify(new timestamp) = %v, want nil", err)
	}
	// Past the window the replay is stale rather than a replay.
	if err := v.Verify(pubB64, "GET", "/v1/me", ts, sig, nil, t0.Add(signing.DefaultWindow+time.Second)); !errors.Is(err, signing.ErrStale) {
		t.Errorf("Verify(replay after the window) = %v, want ErrStale", err)
	}
	st := v.Stats()
	if st.Accepted != 2 || st.Replays != 2 || st.Stale != 1 {
		t.Errorf("Stats() = %+v, want Accepted 2, Replays 2, Stale 1", st)
	}
}

// A forged signature must not be remembered: the genuine request that
// follows with the same signature bytes would otherwise be refused, and an
// attacker could flush the replay cache with junk.
func TestVerifyRemembersOnlyValidSignatures(t *testing.T) {
	pubB64, priv := newKey(t, 1)
	v := newVerifier(t, signing.VerifierOptions{ReplayCacheSize: 1})
	ts := signing.FormatTimestamp(t0)
	sig := signing.Sign(priv, "GET", "/v1/me", t0, nil)
	if err := v.Verify(pubB64, "GET", "/v1/me", ts, sig, nil, t0); err != nil {
		t.Fatalf("Verify(genuine) = %v, want nil", err)
	}
	_, other := newKey(t, 9)
	for i := range 5 {
		forged := signing.Sign(other, "GET", "/v1/me", t0, []byte{byte(i)})
		if err := v.Verify(pubB64, "GET", "/v1/me", ts, forged, nil, t0); !errors.Is(err, signing.ErrBadSignature) {
			t.Fatalf("Verify(forged) = %v, want ErrBadSignature", err)
		}
	}
	if err := v.Verify(pubB64, "GET", "/v1/me", ts, sig, nil, t0); !errors.Is(err, signing.ErrReplay) {
		t.Errorf("Verify(replay after forgeries) = %v, want ErrReplay", err)
	}
}

func TestReplayCacheEvictionIsCounted(t *testing.T) {
	pubB64, priv := newKey(t, 1)
	v := newVerifier(t, signing.VerifierOptions{ReplayCacheSize: 2})
	sign := func(ts time.Time) (string, string) {
		return signing.FormatTimestamp(ts), signing.Sign(priv, "GET", "/", ts, nil)
	}
	ts1, sig1 := sign(t0)
	for i := range 3 {
		ts, sig := sign(t0.Add(time.Duration(i) * time.Millisecond))
		if err := v.Verify(pubB64, "GET", "/", ts, sig, nil, t0); err != nil {
			t.Fatalf("Verify #%d = %v, want nil", i, err)
		}
	}
	if got := v.Stats().ReplayEvictionsLive; got != 1 {
		t.Errorf("Stats().ReplayEvictionsLive = %d, want 1", got)
	}
	// The documented limit: the forgotten signature is accepted again.
	if err := v.Verify(pubB64, "GET", "/", ts1, sig1, nil, t0); err != nil {
		t.Errorf("Verify(evicted signature) = %v, want nil (the cache was too small)", err)
	}
	// Evicting entries whose window has passed is not counted.
	v2 := newVerifier(t, signing.VerifierOptions{ReplayCacheSize: 1})
	if err := v2.Verify(pubB64, "GET", "/", ts1, sig1, nil, t0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(time.Minute)
	tsL, sigL := sign(later)
	if err := v2.Verify(pubB64, "GET", "/", tsL, sigL, nil, later); err != nil {
		t.Fatal(err)
	}
	if got := v2.Stats().ReplayEvictionsLive; got != 0 {
		t.Errorf("Stats().ReplayEvictionsLive after expired eviction = %d, want 0", got)
	}
}

func TestConcurrentReplayAcceptsOnce(t *testing.T) {
	pubB64, priv := newKey(t, 1)
	v := newVerifier(t, signing.VerifierOptions{})
	ts := signing.FormatTimestamp(t0)
	sig := signing.Sign(priv, "GET", "/v1/me", t0, nil)
	const n = 32
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { errs <- v.Verify(pubB64, "GET", "/v1/me", ts, sig, nil, t0) })
	}
	wg.Wait()
	close(errs)
	accepted := 0
	for err := range errs {
		switch {
		case err == nil:
			accepted++
		case !errors.Is(err, signing.ErrReplay):
			t.Errorf("Verify = %v, want nil or ErrReplay", err)
		}
	}
	if accepted != 1 {
		t.Errorf("%d concurrent Verify calls of one signature accepted %d, want 1", n, accepted)
	}
}

func TestPrecheck(t *testing.T) {
	_, priv := newKey(t, 1)
	v := newVerifier(t, signing.VerifierOptions{})
	ts := signing.FormatTimestamp(t0)
	sig := signing.Sign(priv, "GET", "/", t0, nil)
	tests := []struct {
		name, ts, sig string
		now           time.Time
		want          error
	}{
		{"good", ts, sig, t0, nil},
		{"forged but well formed", ts, signing.Sign(priv, "GET", "/other", t0, nil), t0, nil},
		{"stale", ts, sig, t0.Add(time.Hour), signing.ErrStale},
		{"malformed timestamp", "x", sig, t0, signing.ErrMalformed},
		{"malformed signature", ts, "x", t0, signing.ErrMalformed},
	}
	for _, tt := range tests {
		if err := v.Precheck(tt.ts, tt.sig, tt.now); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("Precheck(%s) = %v, want %v", tt.name, err, tt.want)
		}
	}
	if st := v.Stats(); st != (signing.Stats{}) {
		t.Errorf("Stats() after Precheck = %+v, want zero", st)
	}
}

func TestVerifierOptions(t *testing.T) {
	tests := []struct {
		opts    signing.VerifierOptions
		wantErr bool
	}{
		{signing.VerifierOptions{}, false},
		{signing.VerifierOptions{Window: time.Second, ReplayCacheSize: 1, KeyCacheSize: 1}, false},
		{signing.VerifierOptions{Window: -time.Second}, true},
		{signing.VerifierOptions{ReplayCacheSize: -1}, true},
		{signing.VerifierOptions{KeyCacheSize: -1}, true},
	}
	for _, tt := range tests {
		v, err := signing.NewVerifier(tt.opts)
		if (err != nil) != tt.wantErr {
			t.Errorf("NewVerifier(%+v) error = %v, want error %v", tt.opts, err, tt.wantErr)
		}
		if err == nil && tt.opts.Window == 0 && v.Window() != signing.DefaultWindow {
			t.Errorf("NewVerifier(%+v).Window() = %v, want %v", tt.opts, v.Window(), signing.DefaultWindow)
		}
	}
}

func TestCustomWindow(t *testing.T) {
	pubB64, priv := newKey(t, 1)
	v := newVerifier(t, signing.VerifierOptions{Window: 2 * time.Second})
	ts := signing.FormatTimestamp(t0)
	sig := signing.Sign(priv, "GET", "/", t0, nil)
	if err := v.Verify(pubB64, "GET", "/", ts, sig, nil, t0.Add(3*time.Second)); !errors.Is(err, signing.ErrStale) {
		t.Errorf("Verify(3s old, window 2s) = %v, want ErrStale", err)
	}
}

func TestSignRequestRoundTrip(t *testing.T) {
	pubB64, priv := newKey(t, 3)
	v := newVerifier(t, signing.VerifierOptions{})
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(body)
		got <- v.Verify(pubB64, r.Method, r.RequestURI, r.Header.Get(signing.HeaderTimestamp),
			r.Header.Get(signing.HeaderSignature), body, t0)
	}))
	defer srv.Close()
	body := []byte("hello")
	req, err := http.NewRequest("POST", srv.URL+"/a%2Fb/c?q=x%20y&z", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	signing.SignRequest(req, "dev-1", priv, t0, body)
	if req.Header.Get(signing.HeaderSessionID) != "dev-1" {
		t.Errorf("SignRequest set %s = %q, want %q", signing.HeaderSessionID, req.Header.Get(signing.HeaderSessionID), "dev-1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-got; err != nil {
		t.Errorf("server Verify of a SignRequest request = %v, want nil", err)
	}
}

func TestParseTimestamp(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1700000000123", 1700000000123, true},
		{"999999999999999999", 999999999999999999, true},
		{"", 0, false},
		{"01", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1e3", 0, false},
		{" 1", 0, false},
		{"1\x00", 0, false},
		{"1000000000000000000", 0, false},
		{"\xff", 0, false},
	}
	for _, tt := range tests {
		got, err := signing.ParseTimestamp(tt.in)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, signing.ErrMalformed)) {
			t.Errorf("ParseTimestamp(%q) error = %v, want ok %v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && got.UnixMilli() != tt.want {
			t.Errorf("ParseTimestamp(%q) = %d, want %d", tt.in, got.UnixMilli(), tt.want)
		}
	}
}

// BenchmarkVerify measures one accepted request: parse, window, cached key,
// Ed25519 verification and the replay cache.
func BenchmarkVerify(b *testing.B) {
	pubB64, priv := newKey(b, 1)
	v := newVerifier(b, signing.VerifierOptions{ReplayCacheSize: b.N + 1})
	type req struct {
		ts  time.Time
		h   string
		sig string
	}
	reqs := make([]req, b.N)
	for i := range reqs {
		ts := t0.Add(time.Duration(i) * time.Millisecond)
		reqs[i] = req{ts, signing.FormatTimestamp(ts), signing.Sign(priv, "GET", "/v1/me", ts, nil)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := v.Verify(pubB64, "GET", "/v1/me", reqs[i].h, reqs[i].sig, nil, reqs[i].ts); err != nil {
			b.Fatalf("Verify = %v", err)
		}
	}
}
