package security

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// hostileStrings are the seed strings every decoder of outside data is fed.
var hostileStrings = []string{"*", "?", "[a]", "{x}", strings.Repeat("a", 10_000), "\x00", "a\x00b", "\r\n", "a\r\nb", "\xff\xfe", "", " ", "a:b", `\`}

// forger makes the payloads of TestForgedMessagesNeverActivate.
type forger struct {
	rng     *rand.Rand
	revoked []string // sessions revoked before the flood
}

// payload returns one forged or malformed message.
func (f *forger) payload() string {
	victim := f.revoked[f.rng.IntN(len(f.revoked))]
	switch f.rng.IntN(10) {
	case 0: // random bytes, sometimes longer than a message may be
		b := make([]byte, f.rng.IntN(1200))
		for i := range b {
			b[i] = byte(f.rng.UintN(256))
		}
		return string(b)
	case 1: // a soup of JSON tokens
		tokens := []string{"{", "}", "[", "]", `"`, ":", ",", "session", "user", "seq", "stripe", "at_ms", "status", "active", victim, "1", "-1", "0", "null", " ", "\x00", "*", "\xff"}
		var b strings.Builder
		for range f.rng.IntN(40) {
			b.WriteString(tokens[f.rng.IntN(len(tokens))])
		}
		return b.String()
	case 2: // a hostile string, bare or as an id
		s := hostileStrings[f.rng.IntN(len(hostileStrings))]
		return [...]string{s, `{"session":"` + s + `"}`, `{"user":"` + s + `","seq":1}`}[f.rng.IntN(3)]
	case 3: // attempts to make a revoked session active: well-formed, so they revoke it again
		return [...]string{
			`{"session":"` + victim + `","status":"active"}`,
			`{"session":"` + victim + `","status":"active","revoked":false,"at_ms":0}`,
			`{"session":"` + victim + `","active":true,"seq":` + strconv.Itoa(1+f.rng.IntN(3)) + `}`,
		}[f.rng.IntN(3)]
	case 4: // attempts to make it active that are malformed
		return [...]string{
			`{"session":"` + victim + `","status":"active"`,
			`{"session":"` + victim + `","user":"u"}`,
			`{"session":"` + victim + `","seq":0}`,
			`{"session":"` + victim + `","stripe":` + strconv.Itoa(1+f.rng.IntN(1023)) + `}`,
			`{"session":"` + victim + `","at_ms":-1}`,
			`{"session":"` + victim + `"} {"status":"active"}`,
			`{"status":"active","session_id":"` + victim + `"}`,
			`{"session":"` + victim + `","pad":"` + strings.Repeat("x", session.MaxInvalidationSize) + `"}`,
		}[f.rng.IntN(8)]
	case 5: // a valid message mutated by one byte
		b := []byte(`{"session":"` + victim + `","seq":7,"stripe":0,"at_ms":1764415200000}`)
		b[f.rng.IntN(len(b))] = byte(f.rng.UintN(256))
		return string(b)
	case 6: // a valid message cut short or followed by garbage
		s := `{"user":"user-` + strconv.Itoa(f.rng.IntN(1000)) + `","seq":3}`
		if f.rng.IntN(2) == 0 {
			return s[:f.rng.IntN(len(s))]
		}
		return s + hostileStrings[f.rng.IntN(len(hostileStrings))]
	case 7: // forged sequence numbers and times: a gap, a counter restart
		return fmt.Sprintf(`{"session":"forged-%d","seq":%d,"stripe":0,"at_ms":%d}`, f.rng.IntN(1e6), 1+f.rng.Uint64N(1<<40), f.rng.Int64N(1<<45))
	default: // well-formed revocations of sessions and users nobody has
		if f.rng.IntN(2) == 0 {
			return fmt.Sprintf(`{"session":"nobody-%d"}`, f.rng.IntN(1e9))
		}
		return fmt.Sprintf(`{"user":"no-user-%d"}`, f.rng.IntN(1e9))
	}
}

// malformed reports whether a subscriber with one stripe drops payload as
// malformed (rediscache: ParseInvalidation fails or the stripe does not
// exist).
func malformed(payload string) bool {
	m, err := session.ParseInvalidation([]byte(payload))
	return err != nil || m.Stripe != 0
}

// TestForgedMessagesNeverActivate publishes 10,000 forged and malformed
// messages on the invalidation channel of a real redis-server to three
// replicas that hold revoked and active sessions, while lookups of the
// revoked sessions run: no revoked session is ever answered active, every
// malformed message is counted, no subscriber panics or stops, and the
// active sessions no message named stay active.
func TestForgedMessagesNeverActivate(t *testing.T) {
	const (
		messages = 10_000
		sessions = 100
	)
	rng := newRand(t)
	srv := redistest.Start(t, redistest.Options{})
	admin := srv.Client(t)
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	replicas := make([]*tiered.Cache, 3)
	for i := range replicas {
		name := fmt.Sprintf("r%d", i+1)
		replicas[i] = startReplica(t, replicaConfig{name: name, client: plainClient(srv.Addr, name), backendURL: be.URL()})
	}

	var active, revoked []string
	userOf := map[string]string{}
	for i := range 2 * sessions {
		rec, _ := be.NewSession(fmt.Sprintf("user-%d", i))
		userOf[rec.DeviceSessionID] = rec.UserID
		for _, r := range replicas {
			if _, err := r.Lookup(ctx, rec.DeviceSessionID); err != nil {
				t.Fatalf("warm-up Lookup(%q): %v", rec.DeviceSessionID, err)
			}
		}
		if i%2 == 0 {
			active = append(active, rec.DeviceSessionID)
			continue
		}
		revoked = append(revoked, rec.DeviceSessionID)
		be.Revoke(rec.DeviceSessionID)
		if err := replicas[i%3].Revoke(ctx, rec.DeviceSessionID); err != nil {
			t.Fatalf("Revoke(%q): %v", rec.DeviceSessionID, err)
		}
	}
	for _, r := range replicas {
		for _, id := range revoked {
			// Held revoked, or not held at all: a warm-up fill that L1
			// refused twice (Redis reported the key changed after each
			// read) leaves no entry, and the revocation then has none to
			// flip. Either way L1 serves no "active" for it.
			eventually(t, 5*time.Second, func() bool { rec, held, _ := r.Peek(id); return !held || rec.Status == session.StatusRevoked },
				"revocation of %s not applied", session.Redact(id))
		}
	}
	malformedBefore := make([]uint64, len(replicas))
	receivedBefore := make([]uint64, len(replicas))
	for i, r := range replicas {
		st := r.Stats().Channel
		malformedBefore[i], receivedBefore[i] = st.Malformed, st.Received
	}

	// Lookups of revoked sessions on every replica for the whole flood.
	var wrong atomic.Int64
	var lookups atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := replicas[g]
			pace := time.NewTicker(200 * time.Microsecond) // leave the CPU to the subscribers
			defer pace.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
				id := revoked[(g*31+i)%len(revoked)]
				rec, err := r.Lookup(ctx, id)
				lookups.Add(1)
				if err == nil && rec.Status != session.StatusRevoked {
					wrong.Add(1)
				}
			}
		}()
	}

	start := time.Now()
	f := &forger{rng: rng, revoked: revoked}
	want := uint64(0)
	namedUsers := map[string]bool{}
	for sent := 0; sent < messages; {
		pipe := admin.Pipeline()
		for range min(250, messages-sent) {
			p := f.payload()
			if malformed(p) {
				want++
			} else if m, _ := session.ParseInvalidation([]byte(p)); m.UserID != "" {
				namedUsers[m.UserID] = true // a well-formed user revocation: it revokes
			}
			pipe.Publish(ctx, session.DefaultChannel, p)
			sent++
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("PUBLISH: %v", err)
		}
	}
	// A last genuine revocation. Each subscriber handles messages one at
	// a time, in order: once it has received this one, it has handled
	// every forged message.
	barrier, _ := be.NewSession("user-barrier")
	if err := replicas[0].Revoke(ctx, barrier.DeviceSessionID); err != nil {
		t.Fatalf("Revoke(barrier): %v", err)
	}
	for i, r := range replicas {
		eventually(t, time.Minute, func() bool { return r.Stats().Channel.Received >= receivedBefore[i]+messages+1 },
			"replica %d received %d of %d messages", i, r.Stats().Channel.Received-receivedBefore[i], messages+1)
	}
	close(stop)
	wg.Wait()

	if n := wrong.Load(); n != 0 {
		t.Errorf("revoked sessions answered active %d times in %d lookups during the flood, want 0", n, lookups.Load())
	}
	for i, r := range replicas {
		st := r.Stats().Channel
		if got := st.Malformed - malformedBefore[i]; got != want {
			t.Errorf("replica %d: malformed count = %d, want %d", i, got, want)
		}
		if !st.Subscribed {
			t.Errorf("replica %d: subscriber not subscribed after the flood", i)
		}
		for _, id := range append(revoked, barrier.DeviceSessionID) {
			if got, err := r.Lookup(ctx, id); err != nil || got.Status != session.StatusRevoked {
				t.Errorf("replica %d: Lookup(%q) = %v, %v; want revoked", i, id, got.Status, err)
			}
		}
		for _, id := range active {
			if namedUsers[userOf[id]] {
				continue // a well-formed message revoked the user: a denial, which publishers can cause
			}
			if got, err := r.Lookup(ctx, id); err != nil || got.Status != session.StatusActive {
				t.Errorf("replica %d: Lookup(%q) = %v, %v; want active (no message named it)", i, id, got.Status, err)
			}
		}
		t.Logf("replica %d: received %d, malformed %d, gaps %d, resyncs %d, drop-active %d", i, st.Received, st.Malformed, st.Gaps, st.Resyncs, st.DropActive)
	}
	t.Logf("%d messages, %d malformed, handled by 3 replicas in %v; %d lookups of revoked sessions during the flood, %d answered active", messages, want, time.Since(start).Round(time.Millisecond), lookups.Load(), wrong.Load())
}
