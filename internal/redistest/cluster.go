package redistest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterSlots is the number of hash slots of a Redis Cluster.
const ClusterSlots = 16384

// ClusterOptions configures StartCluster. Zero fields mean defaults.
type ClusterOptions struct {
	// Masters is the number of masters, 3 (the default) or more: redis-cli
	// refuses to create a cluster with fewer.
	Masters int
	// ReplicasPerMaster is the number of replicas of each master, 0 (the
	// default) or more.
	ReplicasPerMaster int
	// NodeTimeout is "cluster-node-timeout": how long a node may be
	// unreachable before it is failed over. Default 1s; a whole number of
	// milliseconds, at least 100ms.
	NodeTimeout time.Duration
	// Config holds extra redis.conf lines for every node.
	Config []string
}

func (o *ClusterOptions) validate() error {
	switch {
	case o.Masters == 0:
		o.Masters = 3
	case o.Masters < 3:
		return fmt.Errorf("redistest: ClusterOptions.Masters = %d, want 0 (default 3) or at least 3", o.Masters)
	}
	if o.ReplicasPerMaster < 0 {
		return fmt.Errorf("redistest: ClusterOptions.ReplicasPerMaster = %d, want 0 or more", o.ReplicasPerMaster)
	}
	switch {
	case o.NodeTimeout == 0:
		o.NodeTimeout = time.Second
	case o.NodeTimeout < 100*time.Millisecond || o.NodeTimeout%time.Millisecond != 0:
		return fmt.Errorf("redistest: ClusterOptions.NodeTimeout = %v, want 0 (default 1s) or whole milliseconds of at least 100ms", o.NodeTimeout)
	}
	return nil
}

// Cluster is a Redis Cluster of redis-server processes on loopback, created
// with "redis-cli --cluster create". Its nodes are killed at test cleanup.
type Cluster struct {
	tb      testing.TB
	servers []*Server // in start order
}

// ClusterNode is one node as the cluster currently sees it.
type ClusterNode struct {
	// Server is the node's process.
	Server *Server
	// ID is the node id.
	ID string
	// Master is true for a master, false for a replica.
	Master bool
	// MasterID is the id of a replica's master, empty for a master.
	MasterID string
	// Failed is true when the node is flagged "fail" or "fail?".
	Failed bool
	// Slots are the slot ranges a master serves.
	Slots []SlotRange
}

// SlotRange is an inclusive range of hash slots.
type SlotRange struct{ Start, End int }

// StartCluster starts Masters*(1+ReplicasPerMaster) nodes with
// "cluster-enabled yes" (and "cluster-replica-validity-factor 0", so any
// replica may fail over), creates the cluster with redis-cli, and waits
// until WaitHealthy succeeds. It fails the test when redis-server or
// redis-cli is missing or opts is invalid. Which nodes become masters is
// redis-cli's choice: ask Nodes.
func StartCluster(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	if err := opts.validate(); err != nil {
		tb.Fatal(err)
	}
	cli := Binary(tb, "redis-cli")
	Binary(tb, "redis-server")
	c := &Cluster{tb: tb}
	n := opts.Masters * (1 + opts.ReplicasPerMaster)
	for range n {
		config := []string{
			"cluster-enabled yes",
			"cluster-config-file nodes.conf",
			"cluster-node-timeout " + strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10),
			// The bus port defaults to port+10000, which may not exist.
			"cluster-port " + strconv.Itoa(FreePort(tb)),
			"cluster-replica-validity-factor 0",
		}
		c.servers = append(c.servers, Start(tb, Options{Config: append(config, opts.Config...)}))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(opts.ReplicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		tb.Fatalf("redistest: new cluster: %v", err)
	}
	// Slots agree before roles do: a replica is reported as a master
	// without slots until its CLUSTER REPLICATE has spread by gossip.
	if err := poll(30*time.Second, func(ctx context.Context) error {
		return c.formed(ctx, opts.Masters, opts.ReplicasPerMaster)
	}); err != nil {
		tb.Fatalf("redistest: new cluster: %v", err)
	}
	return c
}

// formed reports an error unless every node sees masters masters, each
// with replicas replicas whose link to it is up.
func (c *Cluster) formed(ctx context.Context, masters, replicas int) error {
	for _, s := range c.servers {
		rc := s.newClient()
		text, err := rc.ClusterNodes(ctx).Result()
		var repl map[string]string
		if err == nil {
			repl, err = serverInfo(ctx, rc, "replication")
		}
		rc.Close()
		if err != nil {
			return fmt.Errorf("node %s: %w", s.Addr, err)
		}
		nodes, err := c.parseNodes(text)
		if err != nil {
			return fmt.Errorf("node %s: %w", s.Addr, err)
		}
		seen := 0
		replicasOf := make(map[string]int)
		for _, n := range nodes {
			if n.Master {
				seen++
			} else {
				replicasOf[n.MasterID]++
			}
		}
		if seen != masters {
			return fmt.Errorf("node %s sees %d masters, want %d", s.Addr, seen, masters)
		}
		for _, n := range nodes {
			if n.Master && replicasOf[n.ID] != replicas {
				return fmt.Errorf("node %s sees %d replicas of %s, want %d", s.Addr, replicasOf[n.ID], n.Server.Addr, replicas)
			}
		}
		if repl["role"] == "slave" && repl["master_link_status"] != "up" {
			return fmt.Errorf("node %s: replica link is %s", s.Addr, repl["master_link_status"])
		}
	}
	return nil
}

// Addrs returns the address of every node, in start order, killed or not.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.servers))
	for i, s := range c.servers {
		addrs[i] = s.Addr
	}
	return addrs
}

// Client returns a cluster client seeded with every node, with go-redis's
// default options, closed at cleanup.
//
// Mind that go-redis (v9.23) reloads its slot map only on a MOVED or
// READONLY reply or when it is older than ClusterStateReloadInterval
// (default 60s): after a master dies, a default client keeps dialling it
// for up to a minute. Use ClientWith and a short interval, or call
// ReloadState on connection errors, to follow a failover.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	return c.ClientWith(tb, &redis.ClusterOptions{})
}

// FollowingClient returns a cluster client configured as a gateway's:
// ContextTimeoutEnabled, and a slot map reloaded every 250 ms, so that it
// follows a failover or a slot move within a quarter of a second instead
// of up to a minute. It is closed at cleanup.
func (c *Cluster) FollowingClient(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	return c.ClientWith(tb, &redis.ClusterOptions{
		ContextTimeoutEnabled:      true,
		ClusterStateReloadInterval: 250 * time.Millisecond,
	})
}

// ClientWith returns a cluster client with opts, closed at cleanup. It
// sets opts.Addrs to every node's address; opts is modified.
func (c *Cluster) ClientWith(tb testing.TB, opts *redis.ClusterOptions) *redis.ClusterClient {
	tb.Helper()
	opts.Addrs = c.Addrs()
	cc := redis.NewClusterClient(opts)
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Nodes returns every node, in start order, with its role as the first
// live node sees it ("CLUSTER NODES"). It fails the test when no node
// answers.
func (c *Cluster) Nodes() []ClusterNode {
	c.tb.Helper()
	var nodes []ClusterNode
	err := c.askLive(func(ctx context.Context, rc *redis.Client) error {
		text, err := rc.ClusterNodes(ctx).Result()
		if err != nil {
			return err
		}
		nodes, err = c.parseNodes(text)
		return err
	})
	if err != nil {
		c.tb.Fatalf("redistest: CLUSTER NODES: %v", err)
	}
	return nodes
}

// MasterForSlot returns the master serving slot, as the first live node
// sees it ("CLUSTER SLOTS"). It fails the test when no node answers or no
// node of this cluster serves slot.
func (c *Cluster) MasterForSlot(slot int) *Server {
	c.tb.Helper()
	var master *Server
	err := c.askLive(func(ctx context.Context, rc *redis.Client) error {
		//lint:ignore SA1019 CLUSTER SLOTS answers on the Redis 7.0 the tests run, and reads simpler here than CLUSTER SHARDS
		slots, err := rc.ClusterSlots(ctx).Result()
		if err != nil {
			return err
		}
		for _, r := range slots {
			if r.Start <= slot && slot <= r.End && len(r.Nodes) > 0 {
				master = c.server(r.Nodes[0].Addr)
			}
		}
		if master == nil {
			return fmt.Errorf("no master serves slot %d", slot)
		}
		return nil
	})
	if err != nil {
		c.tb.Fatalf("redistest: master for slot %d: %v", slot, err)
	}
	return master
}

// KillMaster kills the i-th live master, masters ordered by their first
// slot (so with three masters, 0 serves slot 0 and 2 serves slot 16383),
// and returns it. Its replica, if any, takes over after NodeTimeout and an
// election: WaitHealthy waits for that.
func (c *Cluster) KillMaster(i int) *Server {
	c.tb.Helper()
	var masters []ClusterNode
	for _, n := range c.Nodes() {
		if n.Master && !n.Failed && len(n.Slots) > 0 && n.Server.alive() {
			masters = append(masters, n)
		}
	}
	if i < 0 || i >= len(masters) {
		c.tb.Fatalf("redistest: KillMaster(%d): %d live masters", i, len(masters))
	}
	slices.SortFunc(masters, func(a, b ClusterNode) int { return a.Slots[0].Start - b.Slots[0].Start })
	s := masters[i].Server
	s.Kill()
	return s
}

// WaitHealthy polls every live node until each reports cluster_state:ok
// with all 16384 slots ok, all live nodes agree which node serves which
// slot and that node is alive, and every live replica's link to its master
// is up; or until timeout passes. After KillMaster it returns once a
// replica has been promoted in the killed master's place.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	if err := poll(timeout, c.healthy); err != nil {
		return fmt.Errorf("redistest: cluster not healthy: %w", err)
	}
	return nil
}

func (c *Cluster) healthy(ctx context.Context) error {
	var want string
	for _, s := range c.servers {
		if !s.alive() {
			continue
		}
		if err := c.nodeHealthy(ctx, s, &want); err != nil {
			return fmt.Errorf("node %s: %w", s.Addr, err)
		}
	}
	if want == "" {
		return errors.New("no live node")
	}
	return nil
}

// nodeHealthy checks one node; *layout is the slot layout seen by the
// nodes checked before it ("" for the first).
func (c *Cluster) nodeHealthy(ctx context.Context, s *Server, layout *string) error {
	rc := s.newClient()
	defer rc.Close()
	info, err := rc.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	ci := parseInfo(info)
	if ci["cluster_state"] != "ok" || ci["cluster_slots_ok"] != strconv.Itoa(ClusterSlots) {
		return fmt.Errorf("cluster_state:%s cluster_slots_ok:%s", ci["cluster_state"], ci["cluster_slots_ok"])
	}
	//lint:ignore SA1019 CLUSTER SLOTS answers on the Redis 7.0 the tests run, and reads simpler here than CLUSTER SHARDS
	slots, err := rc.ClusterSlots(ctx).Result()
	if err != nil {
		return err
	}
	slices.SortFunc(slots, func(a, b redis.ClusterSlot) int { return a.Start - b.Start })
	var b strings.Builder
	covered := 0
	for _, r := range slots {
		if len(r.Nodes) == 0 {
			return fmt.Errorf("slots %d-%d have no node", r.Start, r.End)
		}
		m := c.server(r.Nodes[0].Addr)
		if m == nil || !m.alive() {
			return fmt.Errorf("slots %d-%d served by %s, which is not a live node", r.Start, r.End, r.Nodes[0].Addr)
		}
		covered += r.End - r.Start + 1
		fmt.Fprintf(&b, "%d-%d:%s ", r.Start, r.End, r.Nodes[0].Addr)
	}
	if covered != ClusterSlots {
		return fmt.Errorf("CLUSTER SLOTS covers %d slots", covered)
	}
	switch {
	case *layout == "":
		*layout = b.String()
	case *layout != b.String():
		return fmt.Errorf("slot layout %q, another node sees %q", b.String(), *layout)
	}
	repl, err := serverInfo(ctx, rc, "replication")
	if err != nil {
		return err
	}
	if repl["role"] == "slave" && repl["master_link_status"] != "up" {
		return fmt.Errorf("replica link to %s:%s is %s", repl["master_host"], repl["master_port"], repl["master_link_status"])
	}
	return nil
}

// askLive calls ask with a client of each live node in turn until one call
// succeeds.
func (c *Cluster) askLive(ask func(ctx context.Context, rc *redis.Client) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := errors.New("no live node")
	for _, s := range c.servers {
		if !s.alive() {
			continue
		}
		rc := s.newClient()
		err = ask(ctx, rc)
		rc.Close()
		if err == nil {
			return nil
		}
	}
	return err
}

// server returns the node listening on addr, or nil.
func (c *Cluster) server(addr string) *Server {
	for _, s := range c.servers {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// parseNodes parses CLUSTER NODES output: "<id> <ip:port@cport[,host]>
// <flags> <master> <ping> <pong> <epoch> <link> <slot>...".
func (c *Cluster) parseNodes(text string) ([]ClusterNode, error) {
	byAddr := make(map[string]ClusterNode)
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		s := c.server(addr)
		if s == nil {
			return nil, fmt.Errorf("unknown node address %q", addr)
		}
		flags := strings.Split(f[2], ",")
		n := ClusterNode{
			Server: s,
			ID:     f[0],
			Master: slices.Contains(flags, "master"),
			Failed: slices.Contains(flags, "fail") || slices.Contains(flags, "fail?"),
		}
		if f[3] != "-" {
			n.MasterID = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			start, err1 := strconv.Atoi(lo)
			end, err2 := strconv.Atoi(hi)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("slot range %q: %w", r, err)
			}
			n.Slots = append(n.Slots, SlotRange{Start: start, End: end})
		}
		byAddr[addr] = n
	}
	nodes := make([]ClusterNode, 0, len(c.servers))
	for _, s := range c.servers {
		n, ok := byAddr[s.Addr]
		if !ok {
			return nil, fmt.Errorf("node %s missing from CLUSTER NODES", s.Addr)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}
