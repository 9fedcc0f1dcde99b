package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// startWatch runs `sessionctl watch` in a goroutine and returns once it is
// subscribed. The returned function waits for it to exit and returns its
// status.
func startWatch(t *testing.T, ctx context.Context, args ...string) (stdout *syncBuffer, wait func() int) {
	t.Helper()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() { done <- dispatch(ctx, append([]string{"watch"}, args...), stdout, stderr) }()
	stderr.waitFor(t, "subscribed to ")
	return stdout, func() int {
		t.Helper()
		select {
		case code := <-done:
			return code
		case <-time.After(10 * time.Second):
			t.Fatalf("watch did not end; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			return -1
		}
	}
}

// TestWatchPrintsMessagesAndFlagsGaps checks one line per message with the
// fields and delay, a seq skip flagged as GAP, a bad payload as MALFORMED
// without its contents, a hand-typed message, and that -count ends it.
func TestWatchPrintsMessagesAndFlagsGaps(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	seqKey := e.cache.Layout().SeqKey(0)
	e.rdb.Incr(ctx, seqKey) // earlier traffic: the counter is at 1

	stdout, wait := startWatch(t, ctx, "-redis", e.url, "-count", "5")
	if name, err := e.rdb.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text(); err != nil || !strings.Contains(name, "name="+watchClientName+" ") {
		t.Errorf("CLIENT LIST TYPE pubsub = %q, %v; want a connection named %s", name, err, watchClientName)
	}
	m1, err := e.cache.RevokeSession(ctx, "dev-a") // seq 2
	if err != nil {
		t.Fatal(err)
	}
	e.rdb.Incr(ctx, seqKey)                                      // seq 3 is lost
	if _, _, err := e.cache.RevokeUser(ctx, "u-7"); err != nil { // seq 4
		t.Fatal(err)
	}
	secret := "SECRET-PAYLOAD"
	e.rdb.Publish(ctx, session.DefaultChannel, `{"session":`+secret)
	e.rdb.Publish(ctx, session.DefaultChannel, `{"session":"hand-1"}`)
	e.rdb.Publish(ctx, session.DefaultChannel, `{"session":"fifth"}`)
	e.rdb.Publish(ctx, session.DefaultChannel, `{"session":"sixth"}`)
	if code := wait(); code != exitOK {
		t.Fatalf("watch -count 5: exit %d, want 0", code)
	}

	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("watch -count 5 printed %d lines, want 5:\n%s", len(lines), stdout.String())
	}
	wants := []struct{ has, hasNot []string }{
		{[]string{"  session dev-a  stripe 0 seq 2  at " + fmtMS(m1.AtMS) + "  delay "}, []string{"GAP"}},
		{[]string{"  user u-7  stripe 0 seq 4  at ", "  GAP (expected seq 3)"}, nil},
		{[]string{"  MALFORMED (25 bytes)"}, []string{secret}},
		{[]string{"  session hand-1  seq - (hand-typed)"}, []string{"GAP", "delay"}},
		{[]string{"  session fifth"}, nil},
	}
	for i, w := range wants {
		if _, err := time.Parse(time.RFC3339, strings.Fields(lines[i])[0]); err != nil {
			t.Errorf("line %d %q does not start with an RFC 3339 receive time: %v", i, lines[i], err)
		}
		for _, s := range w.has {
			if !strings.Contains(lines[i], s) {
				t.Errorf("line %d = %q, want it to contain %q", i, lines[i], s)
			}
		}
		for _, s := range w.hasNot {
			if strings.Contains(lines[i], s) {
				t.Errorf("line %d = %q, want no %q", i, lines[i], s)
			}
		}
	}
}

// TestWatchJSONFlagsGapOnFirstMessage checks -json lines and that a stripe's
// first message is checked against the counter read at subscription.
func TestWatchJSONFlagsGapOnFirstMessage(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{Prefix: "env1:", Stripes: 2})
	l := e.cache.Layout()
	k := l.Stripe("dev-a")

	stdout, wait := startWatch(t, ctx, "-redis", e.url, "-prefix", "env1:", "-stripes", "2", "-count", "2", "-json")
	e.rdb.Incr(ctx, l.SeqKey(k)) // seq 1 of the stripe is lost
	m, err := e.cache.RevokeSession(ctx, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	e.rdb.Publish(ctx, l.Channel(), "\x00\xff")
	if code := wait(); code != exitOK {
		t.Fatalf("watch -json: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("watch -json printed %d lines, want 2:\n%s", len(lines), stdout.String())
	}
	var first, second watchLine
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line 1 %q: %v", lines[0], err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatalf("line 2 %q: %v", lines[1], err)
	}
	if first.Session != "dev-a" || first.Seq != 2 || first.Stripe == nil || *first.Stripe != k || first.AtMS != m.AtMS || first.GapExpected != 1 {
		t.Errorf("line 1 = %+v, want dev-a seq 2 stripe %d at_ms %d gap_expected_seq 1", first, k, m.AtMS)
	}
	if first.DelayMS == nil || *first.DelayMS < -50 || *first.DelayMS > 5000 {
		t.Errorf("line 1 delay_ms = %v, want a small delay on the Redis clock", first.DelayMS)
	}
	if !second.Malformed || second.Bytes == nil || *second.Bytes != 2 {
		t.Errorf("line 2 = %+v, want malformed with 2 bytes", second)
	}
}

// TestWatchEndsOnCancel checks that watch returns 0 when its context ends
// (an interrupt).
func TestWatchEndsOnCancel(t *testing.T) {
	e := newTestEnv(t, rediscache.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	_, wait := startWatch(t, ctx, "-redis", e.url)
	cancel()
	if code := wait(); code != exitOK {
		t.Errorf("watch after cancel: exit %d, want 0", code)
	}
}

// TestWatcherGapRules checks the sequence bookkeeping alone: per stripe,
// hand-typed messages skipped, a skip flagged as a gap, a counter that
// goes back flagged as a reset and not as a gap.
func TestWatcherGapRules(t *testing.T) {
	msgs := []struct {
		payload   string
		wantGap   uint64
		wantReset uint64
	}{
		{`{"session":"a","seq":5,"stripe":0}`, 0, 0}, // first on stripe 0, base 4
		{`{"session":"b","seq":1,"stripe":1}`, 0, 0}, // stripe 1 starts
		{`{"session":"c","seq":6,"stripe":0}`, 0, 0},
		{`{"session":"d"}`, 0, 0}, // hand-typed: no seq
		{`{"session":"e","seq":8,"stripe":0}`, 7, 0},
		{`{"session":"f","seq":3,"stripe":1}`, 2, 0},
		{`{"session":"g","seq":1,"stripe":0}`, 0, 8}, // counter restarted
		{`{"session":"h","seq":2,"stripe":0}`, 0, 0}, // and goes on from there
		{`{"session":"i","seq":3,"stripe":1}`, 0, 3}, // the same seq again
		{`{"session":"j","seq":6,"stripe":1}`, 4, 0}, // a gap after a reset
	}
	var out strings.Builder
	w := &watcher{out: &out, json: true, last: map[int]uint64{}, base: map[int]uint64{0: 4, 1: 0}, now: time.Now}
	for _, m := range msgs {
		w.handle([]byte(m.payload))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for i, m := range msgs {
		var l watchLine
		if err := json.Unmarshal([]byte(lines[i]), &l); err != nil {
			t.Fatal(err)
		}
		if l.GapExpected != m.wantGap || l.ResetAfter != m.wantReset {
			t.Errorf("handle(%s): gap_expected_seq %d, counter_reset_after_seq %d; want %d, %d",
				m.payload, l.GapExpected, l.ResetAfter, m.wantGap, m.wantReset)
		}
	}
}

// fuzzSeeds are the outside-data seeds every decoder is fuzzed with.
func fuzzSeeds() []string {
	return []string{
		"*", "?", "[a]", "{x}", strings.Repeat("x", 10<<10), "\x00", "a\r\nb", "\xff\xfe",
		`{"session":"dev-1","seq":41,"stripe":0,"at_ms":1764415200000}`,
		`{"user":"u-7"}`, `{"session":"a*"}`, `{"session":"x","seq":0}`,
	}
}

// FuzzWatchHandle checks that any payload prints exactly one line, and that
// a payload watch cannot parse is shown by its length only.
func FuzzWatchHandle(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		for _, asJSON := range []bool{false, true} {
			var out strings.Builder
			w := &watcher{out: &out, json: asJSON, last: map[int]uint64{}, base: map[int]uint64{}, now: time.Now}
			w.handle([]byte(payload))
			got := out.String()
			if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
				t.Fatalf("handle(%.40q) printed %q, want one line", payload, got)
			}
			if _, err := session.ParseInvalidation([]byte(payload)); err != nil {
				want := fmt.Sprintf("  MALFORMED (%d bytes)\n", len(payload))
				if asJSON {
					want = fmt.Sprintf(`,"malformed":true,"bytes":%d}`+"\n", len(payload))
				}
				if !strings.HasSuffix(got, want) || len(got) > 100 {
					t.Fatalf("handle(%.40q) printed %q, want only the time and %q", payload, got, want)
				}
			}
		}
	})
}

// TestWatchResubscribesAfterKill checks that a killed subscriber connection
// is reported on stderr, replaced, and that messages after it are printed.
func TestWatchResubscribesAfterKill(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() { done <- dispatch(ctx, []string{"watch", "-redis", e.url, "-count", "2"}, stdout, stderr) }()
	stderr.waitFor(t, "subscribed to session_invalidation as sessionctl-watch")
	if _, err := e.cache.RevokeSession(ctx, "dev-a"); err != nil {
		t.Fatal(err)
	}
	stdout.waitFor(t, "session dev-a")
	if n, err := e.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Int(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want the watch connection killed", n, err)
	}
	stderr.waitFor(t, "sessionctl watch: subscription lost: ")
	stderr.waitFor(t, "sessionctl watch: resubscribed to session_invalidation")
	if _, err := e.cache.RevokeSession(ctx, "dev-b"); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != exitOK || !strings.Contains(stdout.String(), "session dev-b  stripe 0 seq 2") {
			t.Errorf("watch after a kill: exit %d, stdout:\n%s\nwant 0 and dev-b printed", code, stdout.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("watch did not end after the second message; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
}

// TestWatchTellsACounterResetFromAGap checks that watch reports a sequence
// that goes back (the counter started again) as a reset, not as a gap.
func TestWatchTellsACounterResetFromAGap(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	stdout, wait := startWatch(t, ctx, "-redis", e.url, "-count", "4")
	for _, id := range []string{"dev-a", "dev-b"} { // seq 1, 2
		if _, err := e.cache.RevokeSession(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.rdb.Del(ctx, e.cache.Layout().SeqKey(0)).Err(); err != nil { // as a flush or a restart would
		t.Fatal(err)
	}
	for _, id := range []string{"dev-c", "dev-d"} { // seq 1 again, 2
		if _, err := e.cache.RevokeSession(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if code := wait(); code != exitOK {
		t.Fatalf("watch: exit %d", code)
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("watch printed %d lines, want 4:\n%s", len(lines), stdout.String())
	}
	if l := lines[2]; !strings.Contains(l, "session dev-c  stripe 0 seq 1") || !strings.Contains(l, "  COUNTER RESET (after seq 2: Redis restarted or flushed?)") || strings.Contains(l, "GAP") {
		t.Errorf("line 3 = %q, want dev-c seq 1 flagged as a counter reset, not a gap", l)
	}
	for _, i := range []int{0, 1, 3} {
		if strings.Contains(lines[i], "RESET") || strings.Contains(lines[i], "GAP") {
			t.Errorf("line %d = %q, want neither a reset nor a gap", i+1, lines[i])
		}
	}
}
