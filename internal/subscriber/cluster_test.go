package subscriber

import (
	"context"
	"encoding/base64"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// clusterStripes is the stripe count of the cluster subtests that check
// stripes one by one: at least 4 × the three masters, as
// rediscache.Options.Stripes advises.
const clusterStripes = 16

// idOnStripe returns the first id prefix-<n> that lands on stripe k.
func idOnStripe(l rediscache.Layout, prefix string, k int) string {
	for n := 0; ; n++ {
		if id := prefix + "-" + strconv.Itoa(n); l.Stripe(id) == k {
			return id
		}
	}
}

// keySlot returns key's hash slot, as the cluster computes it.
func keySlot(t *testing.T, rdb *redis.ClusterClient, key string) int {
	t.Helper()
	slot, err := rdb.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
	}
	return int(slot)
}

// masterOf returns the address of the master serving key.
func masterOf(t *testing.T, c *redistest.Cluster, rdb *redis.ClusterClient, key string) string {
	t.Helper()
	return c.MasterForSlot(keySlot(t, rdb, key)).Addr
}

// activeRecord returns an active record of id for userID.
func activeRecord(id, userID string) session.Record {
	return session.Record{DeviceSessionID: id, UserID: userID, ClientPublicKey: base64.StdEncoding.EncodeToString(make([]byte, 32)), Status: session.StatusActive}
}

// revokeUnpublished writes a session revocation of id the way the
// revocation script does (status, counter, log) but publishes nothing, and
// returns the message a subscriber should replay for it.
func revokeUnpublished(t *testing.T, rdb redis.UniversalClient, l rediscache.Layout, id string) session.Invalidation {
	t.Helper()
	k := l.Stripe(id)
	res, err := rdb.Eval(context.Background(), `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'status', 'revoked', 'revoked_at_ms', string.format('%d', now))
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], '*', 'session', ARGV[1], 'seq', string.format('%d', seq), 'at_ms', string.format('%d', now))
return {seq, now}
`, []string{l.SessionKey(id), l.SeqKey(k), l.LogKey(k)}, id).Int64Slice()
	if err != nil {
		t.Fatalf("unpublished revocation of %s: %v", id, err)
	}
	return session.Invalidation{SessionID: id, Seq: uint64(res[0]), Stripe: k, AtMS: res[1]}
}

// migrateSlot moves slot and its keys to master to, the way
// "redis-cli --cluster reshard" does: IMPORTING on the target, MIGRATING on
// the source, MIGRATE of every key, then SETSLOT NODE on every master.
func migrateSlot(t *testing.T, c *redistest.Cluster, slot int, to *redistest.Server) {
	t.Helper()
	ctx := context.Background()
	from := c.MasterForSlot(slot)
	ids := map[*redistest.Server]string{}
	var masters []*redistest.Server
	for _, n := range c.Nodes() {
		ids[n.Server] = n.ID
		if n.Master {
			masters = append(masters, n.Server)
		}
	}
	src, dst := from.Client(t), to.Client(t)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("migrate slot %d: %s: %v", slot, what, err)
		}
	}
	must("IMPORTING", dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[from]).Err())
	must("MIGRATING", src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to]).Err())
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must("GETKEYSINSLOT", err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", to.Port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must("MIGRATE", src.Do(ctx, args...).Err())
	}
	// The target first, then the source, then the others.
	slices.SortStableFunc(masters, func(a, b *redistest.Server) int {
		rank := func(s *redistest.Server) int {
			switch s {
			case to:
				return 0
			case from:
				return 1
			}
			return 2
		}
		return rank(a) - rank(b)
	})
	for _, m := range masters {
		must("SETSLOT NODE", m.Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[to]).Err())
	}
	if err := c.WaitHealthy(15 * time.Second); err != nil {
		t.Fatal(err)
	}
}
