package bench

import (
	"context"
	"os"
	"testing"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// TestClusterFanoutSmoke starts a cluster, measures a small point of each
// mode (RunClusterFanout fails unless every subscriber received every
// message), and checks that Close leaves no node or directory behind.
func TestClusterFanoutSmoke(t *testing.T) {
	redistest.Binary(t, "redis-server")
	redistest.Binary(t, "redis-cli")
	ctx := context.Background()
	c, err := StartCluster(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("StartCluster = %v", err)
	}
	defer c.Close()
	if len(c.Masters) != ClusterMasters {
		t.Fatalf("Masters = %v, want %d", c.Masters, ClusterMasters)
	}
	const subscribers, messages = 10, 50
	for _, c2 := range []struct {
		mode FanoutMode
		bus  float64 // publication messages over the bus per message
	}{
		// PUBLISH reaches every other master over the bus; SPUBLISH only
		// the shard's replicas, and there are none.
		{ModePublish, ClusterMasters - 1},
		{ModeSPublish, 0},
	} {
		p, err := RunClusterFanout(ctx, ClusterFanoutOptions{Cluster: c, Subscribers: subscribers, Messages: messages, Mode: c2.mode})
		if err != nil {
			t.Fatalf("RunClusterFanout(%s) = %v", c2.mode, err)
		}
		t.Logf("%+v", p)
		if p.Mode != c2.mode || p.Subscribers != subscribers || p.Messages != messages {
			t.Errorf("RunClusterFanout(%s) = %+v, want its options echoed", c2.mode, p)
		}
		if p.P50 <= 0 || p.P50 > p.P99 || p.P99 > p.Max || p.CPUPerMessage <= 0 {
			t.Errorf("RunClusterFanout(%s) = %+v, want 0 < p50 <= p99 <= max and Redis CPU", c2.mode, p)
		}
		if p.BusPerMessage != c2.bus {
			t.Errorf("RunClusterFanout(%s): %v bus messages per message, want %v", c2.mode, p.BusPerMessage, c2.bus)
		}
	}
	for _, bad := range []ClusterFanoutOptions{
		{Subscribers: 1, Mode: ModePublish},
		{Cluster: c, Subscribers: 0, Mode: ModePublish},
		{Cluster: c, Subscribers: 1, Mode: "XPUBLISH"},
	} {
		if _, err := RunClusterFanout(ctx, bad); err == nil {
			t.Errorf("RunClusterFanout(%+v) = nil error, want one", bad)
		}
	}

	c.Close()
	if _, err := os.Stat(c.dir); !os.IsNotExist(err) {
		t.Errorf("after Close, the cluster's directory: %v, want it removed", err)
	}
	for _, addr := range c.Masters {
		if err := ping(addr); err == nil {
			t.Errorf("after Close, %s answers PING", addr)
		}
	}
}
