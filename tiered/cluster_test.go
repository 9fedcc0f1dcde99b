package tiered

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
)

// TestCluster runs the core invariants on a real Redis Cluster of three
// masters, each with one replica, and Stripes 16: lookups through every
// tier, revocations reaching three replicas, the fill race 200 times per way
// of revoking, a hand-typed message from redis-cli -c, killed subscribers
// that replay, the fan-out of PUBLISH against sharded pub/sub, and, last, a
// master failover. One cluster serves every subtest.
func TestCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{ReplicasPerMaster: 1})
	topo := clusterTopology(t, cluster)

	scaleCore(t, topo)
	t.Run("FanoutPublishVsSpublish", func(t *testing.T) {
		fanoutPublishVsSpublish(t, cluster, topo)
	})
	t.Run("MasterFailover", func(t *testing.T) {
		// The replicas' subscribers (unnamed) are on the master serving the
		// channel name's slot: kill that one.
		victim := cluster.MasterForSlot(keySlot(session.DefaultChannel))
		e := newScaleEnv(t, topo)
		kill := func() {
			list, err := victim.Client(t).Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"r1", "r2", "r3", "probe"} {
				if !strings.Contains(list, "name="+name+" ") {
					t.Fatalf("replica %s has no subscriber on %s, the master to be killed:\n%s", name, victim.Addr, list)
				}
			}
			victim.Kill()
		}
		onVictim := func(key string) bool { return cluster.MasterForSlot(keySlot(key)) == victim }
		res := scaleFailover(t, e, onVictim, kill, func() error { return cluster.WaitHealthy(30 * time.Second) })
		if bound := 15 * time.Second; res.recovery > bound {
			t.Fatalf("lookups recovered %v after the kill, want within %v", res.recovery, bound)
		}
	})
}

// keySlot is the Redis Cluster hash slot of key: CRC16/XMODEM of its hash
// tag (or of the key), modulo 16384.
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
	return int(crc) % redistest.ClusterSlots
}

// busStats sums, over every live node, the cluster-bus messages that carry
// published messages: PUBLISH (broadcast to every node) and SPUBLISH (to the
// shard's replicas).
type busStats struct{ publish, publishShard int64 }

func readBus(t *testing.T, topo *topology) busStats {
	t.Helper()
	var s busStats
	for _, n := range topo.nodes(t) {
		text, err := n.ClusterInfo(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(text) {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			x, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "cluster_stats_messages_publish_sent":
				s.publish += x
			case "cluster_stats_messages_publishshard_sent":
				s.publishShard += x
			}
		}
	}
	return s
}

func (s busStats) minus(o busStats) busStats {
	return busStats{s.publish - o.publish, s.publishShard - o.publishShard}
}

// rawSubscriber is a prototype receiver: one or more go-redis PubSub
// connections whose messages are forwarded to got.
type rawSubscriber struct {
	got chan string
	pss []*redis.PubSub
	wg  sync.WaitGroup
}

func newRawSubscriber(t *testing.T, pss ...*redis.PubSub) *rawSubscriber {
	t.Helper()
	s := &rawSubscriber{got: make(chan string, 1024), pss: pss}
	for _, ps := range pss {
		if _, err := ps.Receive(ctx); err != nil { // the first confirmation
			t.Fatal(err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for m := range ps.Channel() {
				s.got <- m.Payload
			}
		}()
	}
	t.Cleanup(func() {
		for _, ps := range s.pss {
			_ = ps.Close()
		}
		s.wg.Wait()
	})
	return s
}

// waitFor waits for payload, failing the test after 5s.
func (s *rawSubscriber) waitFor(t *testing.T, payload string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got := <-s.got:
			if got == payload {
				return
			}
		case <-timeout:
			t.Fatalf("message %s not received within 5s", payload)
		}
	}
}

// fanoutPublishVsSpublish measures, on the same cluster, the delay from a
// publication to its arrival at three subscribers, and the cluster-bus
// messages it costs, for three ways of fanning out: the library's path
// (Revoke: script + PUBLISH, then the L1 flip on three replicas), raw
// PUBLISH on the global channel, and a raw prototype of sharded pub/sub:
// one channel per stripe, session_invalidation:{s<k>}, published with
// SPUBLISH and received by SSUBSCRIBE on each master.
func fanoutPublishVsSpublish(t *testing.T, cluster *redistest.Cluster, topo *topology) {
	const n = 500
	nodes := len(topo.nodes(t))
	report := func(name string, lat []time.Duration, bus busStats) {
		slices.Sort(lat)
		slow := len(lat) - sort.Search(len(lat), func(i int) bool { return lat[i] > 30*time.Millisecond })
		t.Logf("%-30s %d deliveries: p50 %-10v p90 %-10v p99 %-10v max %-10v over 30ms %d | bus messages: PUBLISH %d (%.1f per message), SPUBLISH %d (%.1f per message)",
			name, len(lat), percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), lat[len(lat)-1], slow,
			bus.publish, float64(bus.publish)/n, bus.publishShard, float64(bus.publishShard)/n)
		t.Logf("slowest: %v", lat[len(lat)-slow:])
	}

	// The library's path, from Revoke to the L1 flip on three replicas.
	e := newScaleEnv(t, topo)
	before := readBus(t, topo)
	lat := scaleRevocationReachesEveryReplica(t, e, n)
	bus := readBus(t, topo).minus(before)
	// One lookup per replica per revocation also ran; only the
	// revocations publish. Each reached every other node once.
	if want := int64(n * (nodes - 1)); bus.publish != want {
		t.Errorf("library path: %d PUBLISH bus messages for %d revocations on %d nodes, want %d", bus.publish, n, nodes, want)
	}
	report("library Revoke -> 3 L1 flips", slices.Clone(lat), bus)

	payload := func(i int) string {
		return fmt.Sprintf(`{"session":"dev-fanout-%d","seq":%d,"stripe":%d,"at_ms":1800000000000}`, i, i+1, i%16)
	}

	// Raw PUBLISH, three subscribers on whatever node go-redis picks.
	const global = "fanout_global"
	var subs []*rawSubscriber
	for range 3 {
		subs = append(subs, newRawSubscriber(t, topo.admin.Subscribe(ctx, global)))
	}
	pub := topo.client("publisher")
	defer pub.Close()
	before = readBus(t, topo)
	lat = lat[:0]
	for i := range n {
		start := time.Now()
		if err := pub.Publish(ctx, global, payload(i)).Err(); err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			s.waitFor(t, payload(i))
		}
		lat = append(lat, time.Since(start))
	}
	bus = readBus(t, topo).minus(before)
	if want := int64(n * (nodes - 1)); bus.publish != want {
		t.Errorf("raw PUBLISH: %d bus messages, want %d", bus.publish, want)
	}
	report("raw PUBLISH -> 3 subscribers", slices.Clone(lat), bus)

	// Raw SPUBLISH on 16 sharded channels: each subscriber holds one
	// connection per master, subscribed to the channels of its slots.
	channel := func(k int) string { return "fanout_sharded:{s" + strconv.Itoa(k) + "}" }
	byMaster := map[*redistest.Server][]string{}
	for k := range 16 {
		m := cluster.MasterForSlot(keySlot(channel(k)))
		byMaster[m] = append(byMaster[m], channel(k))
	}
	subs = subs[:0]
	for range 3 {
		var pss []*redis.PubSub
		for m, chans := range byMaster {
			// One SSUBSCRIBE per slot: Redis refuses sharded channels of
			// several slots in one command (CROSSSLOT).
			ps := m.Client(t).SSubscribe(ctx, chans[0])
			for _, ch := range chans[1:] {
				if err := ps.SSubscribe(ctx, ch); err != nil {
					t.Fatal(err)
				}
			}
			pss = append(pss, ps)
		}
		// newRawSubscriber reads the first confirmation of each
		// connection; Channel drops the others.
		subs = append(subs, newRawSubscriber(t, pss...))
	}
	before = readBus(t, topo)
	lat = lat[:0]
	for i := range n {
		start := time.Now()
		if err := pub.SPublish(ctx, channel(i%16), payload(i)).Err(); err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			s.waitFor(t, payload(i))
		}
		lat = append(lat, time.Since(start))
	}
	bus = readBus(t, topo).minus(before)
	if want := int64(n * (nodes/3 - 1)); bus.publishShard != want || bus.publish != 0 {
		t.Errorf("raw SPUBLISH: bus messages %+v, want %d shard messages (one per replica of the shard) and no broadcast", bus, want)
	}
	report("raw SPUBLISH -> 3 subscribers", slices.Clone(lat), bus)
}
