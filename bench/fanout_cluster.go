package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/workload"
	"github.com/galaxy-game/sessioncache/session"
)

// ClusterMasters is the number of masters of the cluster StartCluster
// starts: the fewest redis-cli creates a cluster with.
const ClusterMasters = 3

// ShardedChannels is the number of sharded channels of the SPUBLISH mode,
// session_invalidation:{s0} to session_invalidation:{s15}: one per stripe
// of a keyspace of 16 stripes, each in its stripe's slot.
const ShardedChannels = 16

// Cluster is a Redis Cluster of ClusterMasters masters without replicas,
// each a redis-server on free loopback ports with its directory under a
// temporary directory of its own; StartCluster starts it and Close stops
// it and removes that directory.
type Cluster struct {
	// Masters are the masters' addresses, ordered by the first slot they
	// serve.
	Masters []string
	servers []*Server
	dir     string
	slots   []clusterSlots // ordered by start
}

// clusterSlots is a range of slots and the index in Masters of the master
// serving it.
type clusterSlots struct{ start, end, master int }

// StartCluster starts ClusterMasters redis-server processes with
// "cluster-enabled yes" (found on the PATH, as redis-cli), with their
// directories in a new temporary directory under parent (os.TempDir()
// when ""), creates the cluster with "redis-cli --cluster create", and
// waits until every node reports cluster_state:ok. On error it stops what
// it started and removes the directory.
func StartCluster(ctx context.Context, parent string) (c *Cluster, err error) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("bench: redis-server not found on PATH (install Debian's redis-server): %w", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("bench: redis-cli not found on PATH (install Debian's redis-tools): %w", err)
	}
	dir, err := os.MkdirTemp(parent, "cluster-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	c = &Cluster{dir: dir}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	// A node's client port and cluster bus port, held together so that
	// no two of them are the same.
	ports, err := freePorts(2 * ClusterMasters)
	if err != nil {
		return nil, err
	}
	for i := range ClusterMasters {
		s, err := startClusterNode(server, filepath.Join(dir, "node"+strconv.Itoa(i)), ports[2*i], ports[2*i+1])
		if err != nil {
			return nil, err
		}
		c.servers = append(c.servers, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.servers {
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench: redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := c.waitOK(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if err := c.readSlots(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close kills the nodes, waits for them and removes the cluster's
// directory. It is idempotent.
func (c *Cluster) Close() {
	for _, s := range c.servers {
		s.Close()
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// startClusterNode starts one cluster node as StartServer starts the
// suite's redis-server, in dir, which it creates.
func startClusterNode(bin, dir string, port, busPort int) (*Server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return startServer(bin, dir, port,
		"cluster-enabled yes",
		"cluster-config-file nodes.conf",
		// The bus port defaults to port+10000, which may not exist.
		"cluster-port "+strconv.Itoa(busPort),
		// Generous: a node starved of CPU by the fan-out must not be
		// flagged as failing, which would stop the cluster.
		"cluster-node-timeout 15000")
}

// waitOK polls every node until each reports cluster_state:ok with every
// slot ok, or until timeout passes.
func (c *Cluster) waitOK(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.checkOK(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: new cluster not ok after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) checkOK(ctx context.Context) error {
	for _, s := range c.servers {
		rc := redis.NewClient(&redis.Options{Addr: s.Addr, ClientName: "cluster-admin"})
		info, err := rc.ClusterInfo(ctx).Result()
		rc.Close()
		if err != nil {
			return fmt.Errorf("node %s: CLUSTER INFO: %w", s.Addr, err)
		}
		f := infoFields(info)
		if f["cluster_state"] != "ok" || f["cluster_slots_ok"] != "16384" {
			return fmt.Errorf("node %s: cluster_state:%s cluster_slots_ok:%s", s.Addr, f["cluster_state"], f["cluster_slots_ok"])
		}
	}
	return nil
}

// readSlots reads the slot map (CLUSTER SLOTS of the first node) into
// c.slots and c.Masters.
func (c *Cluster) readSlots(ctx context.Context) error {
	rc := redis.NewClient(&redis.Options{Addr: c.servers[0].Addr, ClientName: "cluster-admin"})
	defer rc.Close()
	//lint:ignore SA1019 CLUSTER SLOTS answers on Redis 7.0, and reads simpler here than CLUSTER SHARDS
	ranges, err := rc.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("bench: CLUSTER SLOTS: %w", err)
	}
	slices.SortFunc(ranges, func(a, b redis.ClusterSlot) int { return a.Start - b.Start })
	index := map[string]int{}
	for _, r := range ranges {
		if len(r.Nodes) == 0 {
			return fmt.Errorf("bench: CLUSTER SLOTS: slots %d-%d have no node", r.Start, r.End)
		}
		addr := r.Nodes[0].Addr
		i, ok := index[addr]
		if !ok {
			i = len(c.Masters)
			index[addr] = i
			c.Masters = append(c.Masters, addr)
		}
		c.slots = append(c.slots, clusterSlots{start: r.Start, end: r.End, master: i})
	}
	if len(c.Masters) != ClusterMasters {
		return fmt.Errorf("bench: CLUSTER SLOTS names %d masters, want %d: %v", len(c.Masters), ClusterMasters, c.Masters)
	}
	return nil
}

// masterOf returns the index in Masters of the master serving slot, or
// -1.
func (c *Cluster) masterOf(slot int) int {
	for _, r := range c.slots {
		if r.start <= slot && slot <= r.end {
			return r.master
		}
	}
	return -1
}

// infoFields parses "key:value" lines (INFO, CLUSTER INFO).
func infoFields(text string) map[string]string {
	f := map[string]string{}
	for line := range strings.Lines(text) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	return f
}

// FanoutMode is how RunClusterFanout publishes.
type FanoutMode string

const (
	// ModePublish publishes with PUBLISH on session_invalidation to the
	// first master; the cluster forwards every message over its bus to
	// the other masters, and each delivers it to its own subscribers.
	ModePublish FanoutMode = "PUBLISH"
	// ModeSPublish publishes with SPUBLISH, round-robin over the
	// ShardedChannels sharded channels, each to the master serving its
	// slot, which alone delivers it.
	ModeSPublish FanoutMode = "SPUBLISH"
)

// ClusterFanoutOptions configures one point of the fan-out curve on a
// Redis Cluster: raw pub/sub, Messages messages published one at a time to
// Subscribers bare subscribers.
type ClusterFanoutOptions struct {
	// Cluster is the cluster, from StartCluster. Required.
	Cluster *Cluster
	// Subscribers is the number of subscribers, at least 1. With
	// ModePublish each is one connection SUBSCRIBEd to
	// session_invalidation, on the masters in turn; with ModeSPublish each
	// holds one connection per master, SSUBSCRIBEd to the sharded
	// channels whose slots that master serves. Required.
	Subscribers int
	// Messages is the number of messages timed. Default 1,000.
	Messages int
	// Mode is ModePublish or ModeSPublish. Required.
	Mode FanoutMode
}

// ClusterFanoutPoint is one measured point of the fan-out curve on a
// Redis Cluster.
type ClusterFanoutPoint struct {
	Mode                  FanoutMode
	Subscribers, Messages int
	// P50, P99 and Max are the time from the publishing call to the
	// reading of the message by the last subscriber.
	P50, P99, Max time.Duration
	// CPUPerMessage is the growth of INFO cpu's used_cpu_sys +
	// used_cpu_user over the timed phase, summed over the masters, per
	// message.
	CPUPerMessage time.Duration
	// BusPerMessage is the messages the masters sent over the cluster
	// bus to carry publications (CLUSTER INFO's
	// cluster_stats_messages_publish_sent plus
	// cluster_stats_messages_publishshard_sent, summed over the masters)
	// in the timed phase, per message.
	BusPerMessage float64
}

func (o *ClusterFanoutOptions) setDefaults() error {
	if o.Messages == 0 {
		o.Messages = 1000
	}
	switch {
	case o.Cluster == nil || len(o.Cluster.Masters) != ClusterMasters:
		return fmt.Errorf("bench: ClusterFanoutOptions.Cluster is required, from StartCluster")
	case o.Subscribers < 1:
		return fmt.Errorf("bench: ClusterFanoutOptions.Subscribers %d, want at least 1", o.Subscribers)
	case o.Messages < 0:
		return fmt.Errorf("bench: negative ClusterFanoutOptions.Messages %d", o.Messages)
	case o.Mode != ModePublish && o.Mode != ModeSPublish:
		return fmt.Errorf("bench: ClusterFanoutOptions.Mode %q, want %q or %q", o.Mode, ModePublish, ModeSPublish)
	}
	return nil
}

// ShardedChannel returns the k-th sharded channel of the SPUBLISH mode,
// session_invalidation:{s<k>}: it hashes to the slot of the stripe k's
// keys.
func ShardedChannel(k int) string {
	return session.DefaultChannel + ":{s" + strconv.Itoa(k) + "}"
}

// clusterMessage returns the i-th message: a revocation message's fields
// and size, for the session ids the suite uses.
func clusterMessage(i, stripe int) string {
	return fmt.Sprintf(`{"session":%q,"seq":%d,"stripe":%d,"at_ms":%d}`, workload.ID(i), i+1, stripe, time.Now().UnixMilli())
}

// RunClusterFanout subscribes opts.Subscribers bare subscribers on the
// cluster, publishes opts.Messages messages one at a time in opts.Mode,
// and times each from the publishing call until the last subscriber has
// read it. It fails unless every subscriber received every message, and
// unless each publishing call reports the receivers expected on its
// master.
func RunClusterFanout(ctx context.Context, opts ClusterFanoutOptions) (ClusterFanoutPoint, error) {
	if err := opts.setDefaults(); err != nil {
		return ClusterFanoutPoint{}, err
	}
	c := opts.Cluster
	masters := len(c.Masters)
	perSub := 1 // connections per subscriber
	if opts.Mode == ModeSPublish {
		perSub = masters
	}
	if _, err := RaiseOpenFiles(opts.Subscribers*perSub + 256); err != nil {
		return ClusterFanoutPoint{}, err
	}
	var clients []*redis.Client
	defer func() {
		for _, rc := range clients {
			rc.Close()
		}
	}()
	client := func(addr, name string) *redis.Client {
		rc := redis.NewClient(&redis.Options{Addr: addr, ClientName: name, ContextTimeoutEnabled: true})
		clients = append(clients, rc)
		return rc
	}
	var admins, pubs []*redis.Client
	for _, addr := range c.Masters {
		admin := client(addr, "fanout-admin")
		if cfg, err := admin.ConfigGet(ctx, "maxclients").Result(); err != nil {
			return ClusterFanoutPoint{}, fmt.Errorf("bench: %s: CONFIG GET maxclients: %w", addr, err)
		} else if m, _ := strconv.Atoi(cfg["maxclients"]); m < opts.Subscribers+64 {
			return ClusterFanoutPoint{}, fmt.Errorf("bench: %s: maxclients %d, want at least %d (its open-files limit lowers it)", addr, m, opts.Subscribers+64)
		}
		admins = append(admins, admin)
		pubs = append(pubs, client(addr, "fanout-publisher"))
	}

	// The channels each master serves, and the messages' channels.
	channels := make([][]string, masters) // by master
	var publishTo []int                   // by message: the master published to
	var publishOn []string                // by message: the channel
	switch opts.Mode {
	case ModePublish:
		for m := range masters {
			channels[m] = []string{session.DefaultChannel}
		}
		for range opts.Messages {
			publishTo, publishOn = append(publishTo, 0), append(publishOn, session.DefaultChannel)
		}
	case ModeSPublish:
		owner := make([]int, ShardedChannels)
		for k := range ShardedChannels {
			slot, err := admins[0].ClusterKeySlot(ctx, ShardedChannel(k)).Result()
			if err != nil {
				return ClusterFanoutPoint{}, fmt.Errorf("bench: CLUSTER KEYSLOT %s: %w", ShardedChannel(k), err)
			}
			if owner[k] = c.masterOf(int(slot)); owner[k] < 0 {
				return ClusterFanoutPoint{}, fmt.Errorf("bench: no master serves slot %d of %s", slot, ShardedChannel(k))
			}
			channels[owner[k]] = append(channels[owner[k]], ShardedChannel(k))
		}
		for m, chs := range channels {
			if len(chs) == 0 {
				return ClusterFanoutPoint{}, fmt.Errorf("bench: no sharded channel hashes to a slot of master %s: the channels do not spread", c.Masters[m])
			}
		}
		for i := range opts.Messages {
			publishTo, publishOn = append(publishTo, owner[i%ShardedChannels]), append(publishOn, ShardedChannel(i%ShardedChannels))
		}
	}

	// The subscribers. Every message read counts towards delivered; the
	// read that brings it to target, the deliveries owed once the message
	// being timed has reached everyone, notes its time and signals done.
	base := time.Now()
	var delivered, target, last atomic.Int64
	done := make(chan struct{}, 1)
	onMessage := func() {
		if delivered.Add(1) == target.Load() {
			last.Store(int64(time.Since(base)))
			select {
			case done <- struct{}{}:
			default:
			}
		}
	}
	subs := make([][]*bareSubscriber, opts.Subscribers) // by subscriber, by master ([0] only with PUBLISH)
	var readers sync.WaitGroup
	defer func() {
		for _, conns := range subs {
			for _, s := range conns {
				if s != nil {
					s.conn.Close()
				}
			}
		}
		readers.Wait()
	}()
	for i := range opts.Subscribers {
		subs[i] = make([]*bareSubscriber, masters)
		for m := range masters {
			if opts.Mode == ModePublish && m != i%masters {
				continue
			}
			command := "SUBSCRIBE"
			if opts.Mode == ModeSPublish {
				command = "SSUBSCRIBE"
			}
			s, br, err := subscribeBare(c.Masters[m], command, channels[m]...)
			if err != nil {
				return ClusterFanoutPoint{}, fmt.Errorf("bench: subscriber %d of %d on %s: %w", i+1, opts.Subscribers, c.Masters[m], err)
			}
			s.onMessage = onMessage
			subs[i][m] = s
			readers.Go(func() { s.read(br) })
		}
	}
	// Each master counts its own subscribers; connections of an earlier
	// run may still be closing.
	want := make([]int64, masters) // subscribers of each master's channels
	for i := range opts.Subscribers {
		for m := range masters {
			if subs[i][m] != nil {
				want[m]++
			}
		}
	}
	if err := waitSubscribed(ctx, admins, opts.Mode, channels, want); err != nil {
		return ClusterFanoutPoint{}, err
	}
	for m, pub := range pubs { // dialled before the timed phase
		if err := pub.Ping(ctx).Err(); err != nil {
			return ClusterFanoutPoint{}, fmt.Errorf("bench: %s: PING: %w", c.Masters[m], err)
		}
	}

	before, err := readClusterCounters(ctx, admins)
	if err != nil {
		return ClusterFanoutPoint{}, err
	}
	var hist Histogram
	perMaster := make([]int64, masters) // messages published on each master's channels
	for i := range opts.Messages {
		m, ch := publishTo[i], publishOn[i]
		msg := clusterMessage(i, i%ShardedChannels)
		select {
		case <-done:
		default:
		}
		target.Store(int64(i+1) * int64(opts.Subscribers))
		start := int64(time.Since(base))
		var n int64
		var err error
		if opts.Mode == ModePublish {
			n, err = pubs[m].Publish(ctx, ch, msg).Result()
		} else {
			n, err = pubs[m].SPublish(ctx, ch, msg).Result()
		}
		if err != nil {
			return ClusterFanoutPoint{}, fmt.Errorf("bench: %s %s on %s: %w", opts.Mode, ch, c.Masters[m], err)
		}
		// Each master reports only its own receivers.
		if n != want[m] {
			return ClusterFanoutPoint{}, fmt.Errorf("bench: %s %s on %s reached %d subscribers there, want %d", opts.Mode, ch, c.Masters[m], n, want[m])
		}
		perMaster[m]++
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			return ClusterFanoutPoint{}, fmt.Errorf("bench: message %d of %d (%s) read %d times within 5s, want %d",
				i+1, opts.Messages, opts.Mode, delivered.Load()-int64(i)*int64(opts.Subscribers), opts.Subscribers)
		case <-ctx.Done():
			return ClusterFanoutPoint{}, ctx.Err()
		}
		hist.Record(time.Duration(last.Load() - start))
	}
	after, err := readClusterCounters(ctx, admins)
	if err != nil {
		return ClusterFanoutPoint{}, err
	}

	// Every subscriber received every message, each on the connection to
	// the master of its channel (with PUBLISH: its one connection).
	for i, conns := range subs {
		for m, s := range conns {
			if s == nil {
				continue
			}
			want := int64(opts.Messages)
			if opts.Mode == ModeSPublish {
				want = perMaster[m]
			}
			if got := s.msgs.Load(); got != want {
				return ClusterFanoutPoint{}, fmt.Errorf("bench: subscriber %d received %d messages from %s, want %d", i+1, got, c.Masters[m], want)
			}
		}
	}

	n := float64(max(opts.Messages, 1))
	return ClusterFanoutPoint{
		Mode: opts.Mode, Subscribers: opts.Subscribers, Messages: opts.Messages,
		P50: hist.Quantile(0.50), P99: hist.Quantile(0.99), Max: hist.Quantile(1),
		CPUPerMessage: time.Duration((after.cpu - before.cpu) * float64(time.Second) / n),
		BusPerMessage: float64(after.bus-before.bus) / n,
	}, nil
}

// waitSubscribed polls the masters until each counts want[m] subscribers
// of each of its channels (PUBSUB NUMSUB, or SHARDNUMSUB for sharded
// ones), for up to 5 s.
func waitSubscribed(ctx context.Context, admins []*redis.Client, mode FanoutMode, channels [][]string, want []int64) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := func() error {
			for m, admin := range admins {
				var counts map[string]int64
				var err error
				if mode == ModePublish {
					counts, err = admin.PubSubNumSub(ctx, channels[m]...).Result()
				} else {
					counts, err = admin.PubSubShardNumSub(ctx, channels[m]...).Result()
				}
				if err != nil {
					return fmt.Errorf("bench: PUBSUB: %w", err)
				}
				for _, ch := range channels[m] {
					if counts[ch] != want[m] {
						return fmt.Errorf("bench: master %d counts %d subscribers of %s, want %d", m, counts[ch], ch, want[m])
					}
				}
			}
			return nil
		}()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// clusterCounters are the masters' counters summed: CPU seconds (INFO cpu)
// and publication messages sent over the cluster bus (CLUSTER INFO).
type clusterCounters struct {
	cpu float64
	bus int64
}

func readClusterCounters(ctx context.Context, admins []*redis.Client) (clusterCounters, error) {
	var sum clusterCounters
	for _, admin := range admins {
		rc, err := ReadRedisCounters(ctx, admin)
		if err != nil {
			return clusterCounters{}, err
		}
		sum.cpu += rc.CPUSeconds
		info, err := admin.ClusterInfo(ctx).Result()
		if err != nil {
			return clusterCounters{}, fmt.Errorf("bench: CLUSTER INFO: %w", err)
		}
		f := infoFields(info)
		for _, k := range []string{"cluster_stats_messages_publish_sent", "cluster_stats_messages_publishshard_sent"} {
			if v, ok := f[k]; ok { // absent until the first such message
				x, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return clusterCounters{}, fmt.Errorf("bench: CLUSTER INFO %s:%q: %w", k, v, err)
				}
				sum.bus += x
			}
		}
	}
	return sum, nil
}
