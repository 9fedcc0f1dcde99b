package rediscache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
)

// overfill writes 2 MB of junk and lowers maxmemory below what Redis
// uses, with noeviction: Redis then refuses every write that may grow
// memory (OOM), as a full production Redis does, and still runs DEL and
// PUBLISH.
func overfill(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	junk := strings.Repeat("x", 64<<10)
	for i := range 32 {
		if err := rdb.Set(ctx, fmt.Sprintf("junk:%d", i), junk, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	used, err := rdb.MemoryUsage(ctx, "junk:0").Result()
	if err != nil {
		t.Fatal(err)
	}
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			total, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if total == 0 {
		t.Fatalf("no used_memory in INFO memory")
	}
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(total-8*used, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "junk:probe", "x", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("SET on the overfilled Redis = %v, want OOM", err)
	}
}

// TestRevokeRefusedByFullRedisLeavesNoActive checks that a revocation Redis
// refuses (OOM under noeviction) deletes the active record and publishes
// an unnumbered message, which Redis still runs, and reports the error so
// that the caller retries; the retry succeeds once memory is freed.
func TestRevokeRefusedByFullRedisLeavesNoActive(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := newClient(t, srv.Addr)
	c := newCache(t, rdb, Options{})
	ctx := context.Background()
	rec := activeRecord("dev-oom", "user-oom")
	if _, err := c.Fill(ctx, rec); err != nil {
		t.Fatal(err)
	}
	sub := rdb.Subscribe(ctx, c.Layout().Channel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	overfill(t, rdb)

	_, err := c.RevokeSession(ctx, rec.DeviceSessionID)
	if err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("RevokeSession on a full Redis = %v, want an OOM error", err)
	}
	if _, err := c.Get(ctx, rec.DeviceSessionID); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("Get after the refused revocation = %v, want ErrNotFound (record deleted)", err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := session.ParseInvalidation([]byte(msg.Payload))
	if err != nil || m.SessionID != rec.DeviceSessionID || m.Seq != 0 {
		t.Errorf("message after the refused revocation = %q (%v), want an unnumbered revocation of the session", msg.Payload, err)
	}
	if n := c.Stats().Fallbacks; n != 1 {
		t.Errorf("Stats().Fallbacks = %d, want 1", n)
	}
	// A fill meanwhile cannot write either.
	if _, err := c.Fill(ctx, rec); err == nil {
		t.Errorf("Fill on a full Redis succeeded")
	}

	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevokeSession(ctx, rec.DeviceSessionID); err != nil {
		t.Fatalf("RevokeSession after memory was freed: %v", err)
	}
	if got, err := c.Get(ctx, rec.DeviceSessionID); err != nil || got.Status != session.StatusRevoked {
		t.Errorf("Get after the retry = %s, %v; want revoked", fmtRecord(got), err)
	}
}
