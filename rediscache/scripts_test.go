package rediscache

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/session"
)

// subscribe returns a raw subscriber on channel, subscribed when it returns.
func subscribe(t testing.TB, rdb *redis.Client, channel string) *redis.PubSub {
	t.Helper()
	ctx := context.Background()
	ps := rdb.Subscribe(ctx, channel)
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("SUBSCRIBE %s: %v", channel, err)
	}
	return ps
}

func receive(t testing.TB, ps *redis.PubSub) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatalf("ReceiveMessage: %v", err)
	}
	return msg.Payload
}

func marshal(t testing.TB, m session.Invalidation) string {
	t.Helper()
	b, err := m.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON(%+v): %v", m, err)
	}
	return string(b)
}

// TestRevokePublishesExactMessage checks that the bytes published by the
// scripts are the bytes session.Invalidation.MarshalJSON produces, that seq
// grows by one per message, that a session revoked and announced already is
// not announced again while one revoked by a user-wide revocation is, and
// that the log holds matching entries.
func TestRevokePublishesExactMessage(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		c := newCache(t, r.rdb, Options{})
		ctx := context.Background()
		ps := subscribe(t, r.rdb, "session_invalidation")
		for _, id := range []string{"dev-1", "dev-2"} {
			if _, err := c.Fill(ctx, activeRecord(id, "user-7")); err != nil {
				t.Fatalf("Fill(%s): %v", id, err)
			}
		}

		var sent []session.Invalidation
		m, err := c.RevokeSession(ctx, "dev-1")
		if err != nil {
			t.Fatalf("RevokeSession: %v", err)
		}
		sent = append(sent, m)
		again, err := c.RevokeSession(ctx, "dev-1") // announced already: publishes nothing
		if err != nil {
			t.Fatalf("RevokeSession again: %v", err)
		}
		if again != m {
			t.Errorf("RevokeSession of an announced session = %+v, want the first message %+v", again, m)
		}
		if st := c.Stats(); st.Published != 1 || st.AnnouncedBefore != 1 {
			t.Errorf("Stats after two revocations of one session: Published %d, AnnouncedBefore %d; want 1, 1", st.Published, st.AnnouncedBefore)
		}
		um, ids, err := c.RevokeUser(ctx, "user-7")
		if err != nil {
			t.Fatalf("RevokeUser: %v", err)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"dev-1", "dev-2"}) {
			t.Fatalf("RevokeUser ids = %v, want [dev-1 dev-2]", ids)
		}
		sent = append(sent, um)
		// RevokeUser publishes the user message alone: its sessions are
		// marked revoked in Redis without a message each, so a revocation
		// of one of them is announced.
		m, err = c.RevokeSession(ctx, "dev-2")
		if err != nil {
			t.Fatalf("RevokeSession(dev-2): %v", err)
		}
		sent = append(sent, m)
		receiveAll(t, ps, sent)
		all := sent
		for i, m := range all {
			if m.Seq != uint64(i+1) || m.Stripe != 0 || m.AtMS <= 0 {
				t.Errorf("message %d = %+v, want seq %d, stripe 0, at_ms > 0", i, m, i+1)
			}
		}
		for _, id := range ids {
			if got, err := c.Get(ctx, id); err != nil || got.Status != session.StatusRevoked || got.RevokedAtMS == nil {
				t.Errorf("Get(%q) after RevokeUser = %s, %v; want revoked with a time", id, fmtRecord(got), err)
			}
		}
		if all[1].UserID != "user-7" || all[1].SessionID != "" {
			t.Errorf("user message = %+v, want user user-7", all[1])
		}

		entries, err := r.rdb.XRange(ctx, "session_invalidation:log", "-", "+").Result()
		if err != nil || len(entries) != len(all) {
			t.Fatalf("XRANGE log = %d entries, %v; want %d", len(entries), err, len(all))
		}
		for i, e := range entries {
			m := all[i]
			kind, id := "session", m.SessionID
			if m.UserID != "" {
				kind, id = "user", m.UserID
			}
			want := map[string]any{kind: id, "seq": strconv.FormatUint(m.Seq, 10), "at_ms": strconv.FormatInt(m.AtMS, 10)}
			if fmt.Sprint(e.Values) != fmt.Sprint(want) {
				t.Errorf("log entry %d = %v, want %v", i, e.Values, want)
			}
		}
		if got := c.Stats(); got.Published != uint64(len(all)) || got.PublishedNoReceivers != 0 {
			t.Errorf("Stats() = %+v, want Published %d, PublishedNoReceivers 0", got, len(all))
		}
	})
}

// receiveAll receives the messages for sent in order, checking each is
// exactly MarshalJSON of what was returned, and then that nothing else
// arrives within 100 ms.
func receiveAll(t *testing.T, ps *redis.PubSub, sent []session.Invalidation) {
	t.Helper()
	for _, m := range sent {
		if got, want := receive(t, ps), marshal(t, m); got != want {
			t.Fatalf("received %s, want %s", got, want)
		}
	}
	if msg, err := ps.ReceiveTimeout(context.Background(), 100*time.Millisecond); err == nil {
		t.Fatalf("received %v after the expected messages, want nothing", msg)
	}
}

func TestPublishWithoutReceiversIsCounted(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newCache(t, newClient(t, mr.Addr()), Options{})
	if _, err := c.RevokeSession(context.Background(), "dev-1"); err != nil {
		t.Fatalf("RevokeSession: %v", err)
	}
	if got := c.Stats(); got.Published != 1 || got.PublishedNoReceivers != 1 {
		t.Errorf("Stats() = %+v, want Published 1, PublishedNoReceivers 1", got)
	}
}

// keySlot is the Redis Cluster hash slot of key (CRC16/XMODEM of the hash
// tag or key, modulo 16384).
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// ownerOf returns the session or user id in a session or user key.
func ownerOf(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "session:"), "user:")
	if i := strings.Index(key, "}:"); i >= 0 {
		key = key[i+2:]
	}
	id, _, _ := strings.Cut(key, ":")
	return id
}

func TestKeySlotKnownValues(t *testing.T) {
	tests := map[string]int{
		"123456789":            0x31C3,
		"foo":                  12182,
		"{user1000}.following": keySlot("user1000"),
		"{}x":                  keySlot("{}x"),
	}
	for key, want := range tests {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if keySlot("{s1}:a") != keySlot("{s1}:b") || keySlot("{s1}:a") == keySlot("{s2}:a") {
		t.Errorf("keySlot ignores hash tags")
	}
}

// TestStripedScriptsTouchOneSlot records every script call with 4 stripes
// and checks that its keys carry the expected {s<k>} tag and share a slot.
func TestStripedScriptsTouchOneSlot(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		counter := &commandCounter{}
		r.rdb.AddHook(counter)
		c := newCache(t, r.rdb, Options{Stripes: 4})
		l := c.Layout()
		ctx := context.Background()
		ps := subscribe(t, r.rdb, "session_invalidation")
		counter.take()

		var ids []string
		for i := range 12 {
			id := fmt.Sprintf("dev-%d", i)
			ids = append(ids, id)
			if _, err := c.Fill(ctx, activeRecord(id, "user-7")); err != nil {
				t.Fatalf("Fill(%s): %v", id, err)
			}
		}
		stripesSeen := map[int]bool{}
		perStripe := map[int]uint64{}
		check := func(m session.Invalidation, id string) {
			t.Helper()
			perStripe[m.Stripe]++
			if m.Stripe != l.Stripe(id) || m.Seq != perStripe[m.Stripe] {
				t.Errorf("message %+v: want stripe %d, seq %d", m, l.Stripe(id), perStripe[m.Stripe])
			}
			if got, want := receive(t, ps), marshal(t, m); got != want {
				t.Errorf("received %s, want %s", got, want)
			}
		}
		for _, id := range ids[:6] {
			m, err := c.RevokeSession(ctx, id)
			if err != nil {
				t.Fatalf("RevokeSession(%s): %v", id, err)
			}
			stripesSeen[m.Stripe] = true
			check(m, id)
		}
		um, revoked, err := c.RevokeUser(ctx, "user-7")
		if err != nil || len(revoked) != len(ids) {
			t.Fatalf("RevokeUser = %v, %v; want %d ids", revoked, err, len(ids))
		}
		check(um, "user-7")
		receiveAll(t, ps, nil) // the user message alone
		userStripes := map[int]bool{}
		for _, id := range ids {
			userStripes[l.Stripe(id)] = true
		}
		if len(stripesSeen) < 2 {
			t.Fatalf("sessions used stripes %v; the test needs several", stripesSeen)
		}

		scripts, userSteps := 0, 0
		for _, cmd := range counter.take() {
			args := cmd.Args()
			name := strings.ToLower(fmt.Sprint(args[0]))
			if name != "eval" && name != "evalsha" || redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
				continue
			}
			scripts++
			n, _ := strconv.Atoi(fmt.Sprint(args[2]))
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprint(args[3+i])
			}
			id := ownerOf(keys[0])
			tag := fmt.Sprintf("{s%d}", l.Stripe(id))
			switch {
			case strings.HasPrefix(keys[0], "session_invalidation:"):
				tag = fmt.Sprintf("{s%d}", l.Stripe("user-7")) // announce_user: the user's stripe
			case strings.HasPrefix(keys[0], "user:"):
				userSteps++ // revoke_user: one per stripe, on its own tag
				tag = keys[0][strings.Index(keys[0], "{") : strings.Index(keys[0], "}")+1]
			}
			for _, k := range keys {
				if !strings.Contains(k, tag) {
					t.Errorf("script keys %v: %s lacks tag %s", keys, k, tag)
				}
				if keySlot(k) != keySlot(keys[0]) {
					t.Errorf("script keys %v span slots %d and %d", keys, keySlot(keys[0]), keySlot(k))
				}
			}
		}
		// 1 per fill, 6 revocations, and for the user revocation the
		// marker of each stripe, one marking its sessions per stripe they
		// use, and the message.
		if want := len(ids) + 6 + 4 + len(userStripes) + 1; scripts != want {
			t.Errorf("recorded %d script calls, want %d", scripts, want)
		}
		if userSteps != 4 {
			t.Errorf("RevokeUser set the marker on %d stripes, want 4", userSteps)
		}
		for k := range 4 {
			if v := r.rdb.Get(ctx, fmt.Sprintf("session_invalidation:{s%d}:seq", k)).Val(); v != strconv.FormatUint(perStripe[k], 10) && perStripe[k] > 0 {
				t.Errorf("GET session_invalidation:{s%d}:seq = %q, want %d", k, v, perStripe[k])
			}
		}
	})
}

// TestRevokeUserSurvivesFlushedScriptCache runs RevokeUser after SCRIPT
// FLUSH: the pipelines of mark_revoked send again with EVAL what Redis
// answers NOSCRIPT, so a flushed script cache cannot break them.
func TestRevokeUserSurvivesFlushedScriptCache(t *testing.T) {
	eachRedis(t, func(t *testing.T, r testRedis) {
		// On miniredis every EVAL compiles its script: on a loaded
		// machine that may take more than the default 250 ms. The
		// property here is the flushed script cache, not speed.
		c := newCache(t, r.rdb, Options{CallTimeout: 2 * time.Second})
		ctx := context.Background()
		for i := range 100 {
			if _, err := c.Fill(ctx, activeRecord(fmt.Sprintf("dev-%d", i), "user-1")); err != nil {
				t.Fatalf("Fill: %v", err)
			}
		}
		if err := r.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		_, ids, err := c.RevokeUser(ctx, "user-1")
		if err != nil || len(ids) != 100 {
			t.Fatalf("RevokeUser after SCRIPT FLUSH = %d ids, %v; want 100, nil", len(ids), err)
		}
		for i := range 100 {
			id := fmt.Sprintf("dev-%d", i)
			if rec, err := c.Get(ctx, id); err != nil || rec.Status != session.StatusRevoked {
				t.Fatalf("Get(%q) = %s, %v; want revoked", id, fmtRecord(rec), err)
			}
		}
	})
}
