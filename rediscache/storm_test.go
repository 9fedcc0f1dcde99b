package rediscache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
)

// loadUser writes n active sessions of userID the way Fill leaves them (the
// hash with its TTL, and the id in the user's index), in pipelines.
func loadUser(tb testing.TB, rdb *redis.Client, l Layout, userID, prefix string, n int) []string {
	tb.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	pipe := rdb.Pipeline()
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%07d", prefix, i)
		key := l.SessionKey(ids[i])
		pipe.HSet(ctx, key, FieldUserID, userID, FieldClientPublicKey, keyOf(ids[i]), FieldStatus, "active")
		pipe.PExpire(ctx, key, DefaultSessionTTL)
		pipe.SAdd(ctx, l.UserSessionsKey(userID, l.Stripe(ids[i])), ids[i])
		if i%1000 == 999 || i == n-1 {
			if _, err := pipe.Exec(ctx); err != nil {
				tb.Fatalf("load %d sessions: %v", n, err)
			}
		}
	}
	return ids
}

// TestRevokeUserLargeIndex revokes a user whose index is too large to read
// in the first step (it is scanned): every session ends revoked, one that
// had no hash gets a tombstone, an earlier revoked_at_ms is kept, and the
// only message is the user's, numbered and logged.
func TestRevokeUserLargeIndex(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		// Two stripes of about 1,250 sessions each: each stripe's index
		// is over inlineIndex and scanned.
		c := newCache(t, r.rdb, Options{Stripes: 2, CallTimeout: 2 * time.Second})
		l := c.Layout()
		ctx := context.Background()
		ids := loadUser(t, r.rdb, l, "user-big", "dev", 2500)
		// One indexed session whose fill has not written its hash yet,
		// and one revoked earlier.
		if err := r.rdb.SAdd(ctx, l.UserSessionsKey("user-big", l.Stripe("dev-unfilled")), "dev-unfilled").Err(); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, "dev-unfilled")
		if err := r.rdb.HSet(ctx, l.SessionKey(ids[0]), FieldStatus, "revoked", FieldRevokedAtMS, "42").Err(); err != nil {
			t.Fatal(err)
		}
		ps := subscribe(t, r.rdb, l.Channel())

		m, revoked, err := c.RevokeUser(ctx, "user-big")
		if err != nil {
			t.Fatalf("RevokeUser: %v", err)
		}
		slices.Sort(revoked)
		if want := slices.Sorted(slices.Values(ids)); !slices.Equal(revoked, want) {
			t.Fatalf("RevokeUser revoked %d ids, want the %d indexed", len(revoked), len(want))
		}
		if m.UserID != "user-big" || m.Seq != 1 || m.Stripe != l.Stripe("user-big") {
			t.Errorf("RevokeUser = %+v, want user-big seq 1 on stripe %d", m, l.Stripe("user-big"))
		}
		receiveAll(t, ps, []session.Invalidation{m})
		for i, id := range ids {
			got, err := c.Get(ctx, id)
			if err != nil || got.Status != session.StatusRevoked || got.RevokedAtMS == nil {
				t.Fatalf("Get(%q) = %s, %v; want revoked with a time", id, fmtRecord(got), err)
			}
			if i == 0 && *got.RevokedAtMS != 42 {
				t.Errorf("Get(%q) revoked_at_ms = %d, want the earlier 42", id, *got.RevokedAtMS)
			}
			if ttl := r.rdb.PTTL(ctx, l.SessionKey(id)).Val(); ttl < DefaultSessionTTL-time.Minute {
				t.Fatalf("PTTL %s = %v, want about %v", l.SessionKey(id), ttl, DefaultSessionTTL)
			}
		}
		entries, err := r.rdb.XRange(ctx, l.LogKey(m.Stripe), "-", "+").Result()
		if err != nil || len(entries) != 1 || entries[0].Values["user"] != "user-big" {
			t.Errorf("XRANGE %s = %v, %v; want the user message alone", l.LogKey(m.Stripe), entries, err)
		}
		if got := c.Stats(); got.Published != 1 || got.RevokeErrors != 0 {
			t.Errorf("Stats() = %+v, want Published 1, RevokeErrors 0", got)
		}
	})
}

// TestRevokeUserAnnouncesAfterMarking checks the order that makes the
// sessions' own messages unnecessary: the user message is published after
// every session is marked revoked in Redis.
func TestRevokeUserAnnouncesAfterMarking(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		rec := &scriptRecorder{}
		r.rdb.AddHook(rec)
		c := newCache(t, r.rdb, Options{Stripes: 4})
		l := c.Layout()
		loadUser(t, r.rdb, l, "user-7", "dev", 600)
		rec.take()
		if _, _, err := c.RevokeUser(context.Background(), "user-7"); err != nil {
			t.Fatalf("RevokeUser: %v", err)
		}
		var order []string
		markers := 0
		for _, cmd := range rec.scripts() {
			keys := scriptKeys(cmd)
			switch {
			case strings.HasPrefix(keys[0], "user:"):
				if n := len(order); n == 0 || order[n-1] != "markers" {
					order = append(order, "markers")
				}
				markers++
			case strings.HasPrefix(keys[0], "session_invalidation:"):
				order = append(order, "message")
			default:
				if len(keys) > markBatch {
					t.Errorf("a script marks %d sessions, want at most %d", len(keys), markBatch)
				}
				if n := len(order); n == 0 || order[n-1] != "marks" {
					order = append(order, "marks")
				}
			}
		}
		if want := []string{"markers", "marks", "message"}; !slices.Equal(order, want) {
			t.Errorf("RevokeUser ran %v, want %v", order, want)
		}
		if markers != 4 {
			t.Errorf("RevokeUser set %d markers, want one per stripe (4)", markers)
		}
	})
}

// refusal is an error Redis could have sent: isRefusal accepts it.
type refusal string

func (r refusal) Error() string { return string(r) }
func (refusal) RedisError()     {}

// refuser is a go-redis hook that answers the EVALs whose script contains
// match with an OOM refusal, without sending them.
type refuser struct {
	mu    sync.Mutex // guards match
	match string
}

func (h *refuser) set(match string) {
	h.mu.Lock()
	h.match = match
	h.mu.Unlock()
}

func (h *refuser) refused(cmd redis.Cmder) bool {
	h.mu.Lock()
	match := h.match
	h.mu.Unlock()
	args := cmd.Args()
	if match == "" || len(args) < 2 || strings.ToLower(fmt.Sprint(args[0])) != "eval" {
		return false
	}
	if strings.Contains(fmt.Sprint(args[1]), match) {
		cmd.SetErr(refusal("OOM command not allowed when used memory > 'maxmemory'."))
		return true
	}
	return false
}

func (h *refuser) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *refuser) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.refused(cmd) {
			return cmd.Err()
		}
		return next(ctx, cmd)
	}
}

func (h *refuser) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var rest []redis.Cmder
		for _, cmd := range cmds {
			if !h.refused(cmd) {
				rest = append(rest, cmd)
			}
		}
		if len(rest) == 0 {
			return nil
		}
		return next(ctx, rest)
	}
}

// TestRevokeUserMarksRefused has Redis refuse the scripts that mark the
// sessions: RevokeUser deletes those records (a lookup then asks the
// backend), still publishes the user message, returns an error, and keeps
// the index, so that the retry marks them all.
func TestRevokeUserMarksRefused(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		h := &refuser{}
		r.rdb.AddHook(h)
		c := newCache(t, r.rdb, Options{})
		l := c.Layout()
		ctx := context.Background()
		ids := loadUser(t, r.rdb, l, "user-7", "dev", 300)
		ps := subscribe(t, r.rdb, l.Channel())

		h.set("return #KEYS") // mark_revoked
		m, revoked, err := c.RevokeUser(ctx, "user-7")
		if err == nil || !strings.Contains(err.Error(), "OOM") || len(revoked) != 0 {
			t.Fatalf("RevokeUser with marks refused = %d ids, %v; want none and an OOM error", len(revoked), err)
		}
		receiveAll(t, ps, []session.Invalidation{m})
		wantDeleted(t, r.rdb, l, ids, "after the refused mark")
		if got := c.Stats(); got.Fallbacks == 0 || got.RevokeErrors != uint64(len(ids)) {
			t.Errorf("Stats() = %+v, want Fallbacks > 0, RevokeErrors %d", got, len(ids))
		}

		h.set("")
		if _, revoked, err := c.RevokeUser(ctx, "user-7"); err != nil || len(revoked) != len(ids) {
			t.Fatalf("RevokeUser retried = %d ids, %v; want %d, nil", len(revoked), err, len(ids))
		}
		wantRevoked(t, c, ids, "after the retry")
	})
}

// TestRevokeSessions revokes sessions of several stripes in one call:
// every valid id gets its own message, numbered per stripe in order,
// logged and published with the bytes MarshalJSON produces, and an invalid
// id gets an error and sends nothing.
func TestRevokeSessions(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{Stripes: 4, CallTimeout: 2 * time.Second})
		l := c.Layout()
		ctx := context.Background()
		ids := loadUser(t, r.rdb, l, "user-7", "dev", 300)
		ids = append(ids, "dev-unknown", "bad id")
		ps := subscribe(t, r.rdb, l.Channel())

		msgs, errs := c.RevokeSessions(ctx, ids)
		if len(msgs) != len(ids) || len(errs) != len(ids) {
			t.Fatalf("RevokeSessions = %d messages, %d errors; want %d each", len(msgs), len(errs), len(ids))
		}
		want := map[string]string{}
		perStripe := map[int]uint64{}
		for i, id := range ids {
			if id == "bad id" {
				if errs[i] == nil || !errors.Is(errs[i], session.ErrInvalidID) {
					t.Errorf("RevokeSessions error for %q = %v, want ErrInvalidID", id, errs[i])
				}
				continue
			}
			if errs[i] != nil {
				t.Fatalf("RevokeSessions error for %q = %v", id, errs[i])
			}
			m := msgs[i]
			perStripe[m.Stripe]++
			if m.SessionID != id || m.Stripe != l.Stripe(id) || m.Seq != perStripe[m.Stripe] || m.AtMS <= 0 {
				t.Errorf("message for %q = %+v, want stripe %d, seq %d", id, m, l.Stripe(id), perStripe[m.Stripe])
			}
			want[marshal(t, m)] = id
			if got, err := c.Get(ctx, id); err != nil || got.Status != session.StatusRevoked {
				t.Fatalf("Get(%q) = %s, %v; want revoked", id, fmtRecord(got), err)
			}
		}
		for range want {
			p := receive(t, ps)
			if _, ok := want[p]; !ok {
				t.Fatalf("received %s, not one of the messages returned", p)
			}
			delete(want, p)
		}
		for k, n := range perStripe {
			if got := r.rdb.XLen(ctx, l.LogKey(k)).Val(); got != int64(n) {
				t.Errorf("XLEN %s = %d, want %d", l.LogKey(k), got, n)
			}
		}
		if got := c.Stats(); got.Published != 301 || got.RevokeErrors != 1 {
			t.Errorf("Stats() = %+v, want Published 301, RevokeErrors 1", got)
		}
	})
}

// TestRevokeSessionsRefused has Redis refuse the revocation scripts: each
// session's record is deleted and an unnumbered message published for it,
// and each gets an error; a retry succeeds.
func TestRevokeSessionsRefused(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		h := &refuser{}
		r.rdb.AddHook(h)
		c := newCache(t, r.rdb, Options{})
		l := c.Layout()
		ctx := context.Background()
		ids := loadUser(t, r.rdb, l, "user-7", "dev", 100)
		ps := subscribe(t, r.rdb, l.Channel())

		h.set("'session', ARGV[6 + i]") // revoke_session
		_, errs := c.RevokeSessions(ctx, ids)
		var unnumbered []session.Invalidation
		for i, id := range ids {
			if errs == nil || errs[i] == nil || !strings.Contains(errs[i].Error(), "OOM") {
				t.Fatalf("RevokeSessions refused: error for %q = %v, want OOM", id, errs)
			}
			unnumbered = append(unnumbered, session.Invalidation{SessionID: id})
		}
		wantDeleted(t, r.rdb, l, ids, "after the refused revocations")
		receiveAll(t, ps, unnumbered)

		h.set("")
		if _, errs := c.RevokeSessions(ctx, ids); errs != nil {
			t.Fatalf("RevokeSessions retried: %v", errs)
		}
		wantRevoked(t, c, ids, "after the retry")
	})
}

// TestLogTrimmedAndRenewed checks the lighter upkeep of a stripe's counter
// and log: the log is trimmed every 100 numbers, a TTL that runs low is
// renewed, and a log created afresh gets one at once.
func TestLogTrimmedAndRenewed(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{LogMaxLen: 50, CallTimeout: 2 * time.Second})
		l := c.Layout()
		ctx := context.Background()
		ids := make([]string, 500)
		for i := range ids {
			ids[i] = "dev-" + strconv.Itoa(i)
		}
		if _, errs := c.RevokeSessions(ctx, ids); errs != nil {
			t.Fatalf("RevokeSessions: %v", errs)
		}
		// An approximate trim keeps at least MAXLEN entries and removes
		// whole nodes of 100 only.
		if n := r.rdb.XLen(ctx, l.LogKey(0)).Val(); n < 50 || n > 50+200 {
			t.Errorf("XLEN after 500 revocations with LogMaxLen 50 = %d, want 50 to 250", n)
		}
		for _, key := range []string{l.SeqKey(0), l.LogKey(0)} {
			if ttl := r.rdb.PTTL(ctx, key).Val(); ttl < LogTTL-time.Minute {
				t.Errorf("PTTL %s = %v, want about %v", key, ttl, LogTTL)
			}
		}

		// A TTL above the renewal point stays; one below it is renewed.
		for _, tc := range []struct {
			ttl     time.Duration
			renewed bool
		}{{LogTTL - logRenewEvery/2, false}, {LogTTL - 2*logRenewEvery, true}} {
			for _, key := range []string{l.SeqKey(0), l.LogKey(0)} {
				if err := r.rdb.PExpire(ctx, key, tc.ttl).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.RevokeSession(ctx, "dev-x"); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{l.SeqKey(0), l.LogKey(0)} {
				ttl := r.rdb.PTTL(ctx, key).Val()
				if renewed := ttl > tc.ttl+time.Minute/2; renewed != tc.renewed {
					t.Errorf("PTTL %s set to %v, after a revocation = %v; want renewed %v", key, tc.ttl, ttl, tc.renewed)
				}
			}
		}

		// A log deleted by hand is created again with its TTL.
		if err := r.rdb.Del(ctx, l.LogKey(0)).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RevokeSession(ctx, "dev-y"); err != nil {
			t.Fatal(err)
		}
		if ttl := r.rdb.PTTL(ctx, l.LogKey(0)).Val(); ttl < LogTTL-time.Minute {
			t.Errorf("PTTL of a log created again = %v, want about %v", ttl, LogTTL)
		}
	})
}

// BenchmarkRevokeUserStorm revokes a user with 100,000 sessions on a real
// redis-server (redis-cli-style keys, one stripe) while another client looks
// up other users' sessions, and reports: the time RevokeUser takes
// (revoke-ms), the messages a subscriber received (messages), the longest
// command SLOWLOG recorded during it (slowest-ms), and the p99 of the other
// lookups before and during it (lookup-p99-us, base-p99-us).
//
// The other lookups go through a client and Cache of their own, as they
// come from other gateways in production: they share no connection pool
// with the revoking Cache. SLOWLOG is reset right before the revocation, so
// that slowest-ms is the revocation's alone.
func BenchmarkRevokeUserStorm(b *testing.B) {
	const sessions = 100_000
	srv := redistest.Start(b, redistest.Options{})
	rdb := newClient(b, srv.Addr)
	ctx := context.Background()
	c := newCache(b, rdb, Options{})
	l := c.Layout()
	// Another gateway: its own client, pool and Cache.
	other := newCache(b, newClient(b, srv.Addr), Options{})
	others := loadUser(b, rdb, l, "user-other", "other", 1000)
	var revokeMS, slowestMS, messages, lookupP99, baseP99 float64
	for i := range b.N {
		b.StopTimer()
		user := "user-storm-" + strconv.Itoa(i)
		loadUser(b, rdb, l, user, "storm"+strconv.Itoa(i), sessions)
		if err := rdb.ConfigSet(ctx, "slowlog-log-slower-than", "1000").Err(); err != nil {
			b.Fatal(err)
		}
		ps := subscribe(b, rdb, l.Channel())
		var received sync.WaitGroup
		var got int
		var finished atomic.Bool
		received.Go(func() {
			// Until 2 s pass without a message after RevokeUser
			// returned: a slow run must not end the count early.
			for {
				_, err := ps.ReceiveTimeout(ctx, 2*time.Second)
				if err == nil {
					got++
					continue
				}
				var nerr net.Error
				if !errors.As(err, &nerr) || !nerr.Timeout() || finished.Load() {
					return
				}
			}
		})
		base := lookups(b, other, others, nil)
		done := make(chan struct{})
		var during []time.Duration
		var looked sync.WaitGroup
		looked.Go(func() { during = lookups(b, other, others, done) })
		if err := rdb.SlowLogReset(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		_, revoked, err := c.RevokeUser(ctx, user)
		d := time.Since(start)
		b.StopTimer()
		finished.Store(true)
		close(done)
		looked.Wait()
		received.Wait()
		ps.Close()
		if err != nil || len(revoked) != sessions {
			b.Fatalf("RevokeUser = %d ids, %v; want %d", len(revoked), err, sessions)
		}
		slow, err := rdb.SlowLogGet(ctx, 128).Result()
		if err != nil {
			b.Fatal(err)
		}
		var slowest time.Duration
		var slowestCmd string
		for _, e := range slow {
			if e.Duration > slowest {
				slowest, slowestCmd = e.Duration, fmt.Sprint(e.Args[0])
			}
		}
		revokeMS += float64(d.Milliseconds())
		slowestMS += float64(slowest) / float64(time.Millisecond)
		messages += float64(got)
		lookupP99 += float64(pct(during, 0.99).Microseconds())
		baseP99 += float64(pct(base, 0.99).Microseconds())
		b.Logf("RevokeUser of %d sessions: %v, %d messages, slowest command %v (%s), other lookups p99 %v (before: %v, %d lookups during)",
			sessions, d, got, slowest, slowestCmd, pct(during, 0.99), pct(base, 0.99), len(during))
	}
	n := float64(b.N)
	b.ReportMetric(revokeMS/n, "revoke-ms")
	b.ReportMetric(messages/n, "messages")
	b.ReportMetric(slowestMS/n, "slowest-ms")
	b.ReportMetric(lookupP99/n, "lookup-p99-us")
	b.ReportMetric(baseP99/n, "base-p99-us")
	b.ReportMetric(0, "ns/op")
}

// lookups reads ids one after another, from one goroutine, until done is
// closed (or, with done nil, 2,000 times), and returns each read's time.
func lookups(tb testing.TB, c *Cache, ids []string, done <-chan struct{}) []time.Duration {
	var ds []time.Duration
	for i := 0; ; i++ {
		if done == nil && i == 2000 {
			return ds
		}
		if done != nil {
			select {
			case <-done:
				return ds
			default:
			}
		}
		start := time.Now()
		if _, err := c.Get(context.Background(), ids[i%len(ids)]); err != nil {
			tb.Errorf("Get: %v", err)
			return ds
		}
		ds = append(ds, time.Since(start))
	}
}

// pct returns the q-quantile (nearest rank) of ds, which it sorts.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// BenchmarkRevokeScripts reports the Redis time per revoked session
// (INFO commandstats, on a real redis-server, with one subscriber): one
// RevokeSession at a time (single-us), RevokeSessions over 10,000 ids
// (batch-us) and RevokeUser's marking of 10,000 sessions (mark-us).
func BenchmarkRevokeScripts(b *testing.B) {
	rdb, c := scriptBench(b)
	ctx := context.Background()
	l := c.Layout()
	const n = 10_000
	var single, batch, mark float64
	for i := range b.N {
		ids := loadUser(b, rdb, l, "user-a"+strconv.Itoa(i), "a"+strconv.Itoa(i), n)
		resetStat(b, rdb)
		for _, id := range ids {
			if _, err := c.RevokeSession(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		single += scriptMicros(b, rdb) / n

		ids = loadUser(b, rdb, l, "user-b"+strconv.Itoa(i), "b"+strconv.Itoa(i), n)
		resetStat(b, rdb)
		if _, errs := c.RevokeSessions(ctx, ids); errs != nil {
			b.Fatal(errs)
		}
		batch += scriptMicros(b, rdb) / n

		ids = loadUser(b, rdb, l, "user-c"+strconv.Itoa(i), "c"+strconv.Itoa(i), n)
		resetStat(b, rdb)
		if _, _, err := c.markRevoked(ctx, ids); err != nil {
			b.Fatal(err)
		}
		mark += scriptMicros(b, rdb) / n
	}
	b.ReportMetric(single/float64(b.N), "single-us")
	b.ReportMetric(batch/float64(b.N), "batch-us")
	b.ReportMetric(mark/float64(b.N), "mark-us")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRevokeScriptParts tells where revoke_session's Redis time goes
// when revocations come one at a time, as in the fan-out benchmark: Redis
// idles between them (for pace), and a script then costs several times what
// it costs back to back. Each part is a script that does a prefix of
// revoke_session's work, run on fresh sessions with a subscriber on the
// channel, the parts interleaved; the metrics are Redis's time per call
// (INFO commandstats): an empty script (evalsha-us), TIME and PUBLISH
// (publish-us), announce's INCR, XADD and PUBLISH (announce-us), and the
// whole script (revoke-us).
func BenchmarkRevokeScriptParts(b *testing.B) {
	const pace = 300 * time.Microsecond
	rdb, c := scriptBench(b)
	ctx := context.Background()
	l := c.Layout()
	parts := []struct {
		metric string
		script *redis.Script
	}{
		{"evalsha-us", redis.NewScript("return 1")},
		{"publish-us", redis.NewScript(luaNow + "return redis.call('PUBLISH', ARGV[3], ARGV[7])")},
		{"announce-us", redis.NewScript(luaNow + luaAnnounce +
			"return announce(KEYS[2], KEYS[3], 'session', ARGV[7], ARGV[2], ARGV[3], ARGV[4], now)")},
		{"revoke-us", revokeSessionScript},
	}
	total := make([]float64, len(parts))
	const n = 1000
	for i := range b.N {
		for j, p := range parts {
			ids := loadUser(b, rdb, l, "user-"+strconv.Itoa(i), fmt.Sprintf("p%d-%d", i, j), n)
			resetStat(b, rdb)
			for _, id := range ids {
				call := c.revokeSessionsCall([]string{id})
				if err := p.script.Run(ctx, rdb, call.keys, call.args...).Err(); err != nil {
					b.Fatal(err)
				}
				time.Sleep(pace) // Redis idles between revocations
			}
			total[j] += scriptMicros(b, rdb) / n
		}
	}
	for j, p := range parts {
		b.ReportMetric(total[j]/float64(b.N), p.metric)
	}
	b.ReportMetric(0, "ns/op")
}

// scriptBench starts a redis-server with a subscriber of the channel that
// reads every message (so that PUBLISH has a receiver) until the benchmark
// ends, and returns a client of it and a Cache on that client.
func scriptBench(b *testing.B) (*redis.Client, *Cache) {
	b.Helper()
	srv := redistest.Start(b, redistest.Options{})
	rdb := newClient(b, srv.Addr)
	c := newCache(b, rdb, Options{})
	ps := subscribe(b, rdb, c.Layout().Channel())
	var stop sync.WaitGroup
	stop.Go(func() {
		for {
			if _, err := ps.ReceiveMessage(context.Background()); err != nil {
				return
			}
		}
	})
	b.Cleanup(func() {
		ps.Close()
		stop.Wait()
	})
	return rdb, c
}

func resetStat(tb testing.TB, rdb *redis.Client) {
	tb.Helper()
	if err := rdb.ConfigResetStat(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
}

// scriptMicros returns the microseconds Redis spent in EVAL and EVALSHA
// since the last CONFIG RESETSTAT (INFO commandstats).
func scriptMicros(tb testing.TB, rdb *redis.Client) float64 {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var total float64
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "cmdstat_eval:")
		if !ok {
			if rest, ok = strings.CutPrefix(line, "cmdstat_evalsha:"); !ok {
				continue
			}
		}
		for field := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(field, "usec="); ok {
				us, err := strconv.ParseFloat(v, 64)
				if err != nil {
					tb.Fatalf("usec %q: %v", v, err)
				}
				total += us
			}
		}
	}
	return total
}

// wantRevoked fails t unless Get answers revoked for every id.
func wantRevoked(t *testing.T, c *Cache, ids []string, when string) {
	t.Helper()
	for _, id := range ids {
		if got, err := c.Get(context.Background(), id); err != nil || got.Status != session.StatusRevoked {
			t.Fatalf("Get(%q) %s = %s, %v; want revoked", id, when, fmtRecord(got), err)
		}
	}
}

// wantDeleted fails t unless no id has a session hash in Redis.
func wantDeleted(t *testing.T, rdb *redis.Client, l Layout, ids []string, when string) {
	t.Helper()
	for _, id := range ids {
		if n := rdb.Exists(context.Background(), l.SessionKey(id)).Val(); n != 0 {
			t.Fatalf("EXISTS %s %s = %d, want 0 (deleted)", l.SessionKey(id), when, n)
		}
	}
}
