package redistest

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestClusterServesEveryMasterAndFailsOver starts one cluster (three
// masters, one replica each) and runs its subtests in order: the failover
// subtest kills a master.
func TestClusterServesEveryMasterAndFailsOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Now()
	c := StartCluster(t, ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	t.Logf("StartCluster (3 masters, 3 replicas) took %v", time.Since(start).Round(time.Millisecond))
	cc := c.Client(t)

	t.Run("every node reports cluster_state ok", func(t *testing.T) {
		for _, addr := range c.Addrs() {
			s := c.server(addr)
			info, err := s.Client(t).ClusterInfo(ctx).Result()
			if err != nil {
				t.Fatalf("CLUSTER INFO on %s: %v", addr, err)
			}
			ci := parseInfo(info)
			if ci["cluster_state"] != "ok" || ci["cluster_slots_assigned"] != "16384" || ci["cluster_slots_ok"] != "16384" {
				t.Errorf("CLUSTER INFO on %s = state %q, %q slots assigned, %q ok; want ok, 16384, 16384",
					addr, ci["cluster_state"], ci["cluster_slots_assigned"], ci["cluster_slots_ok"])
			}
		}
	})

	t.Run("Nodes reports three masters with one replica each", func(t *testing.T) {
		replicasOf := make(map[string]int)
		masters, slots := 0, 0
		for _, n := range c.Nodes() {
			if n.Master {
				masters++
				for _, r := range n.Slots {
					slots += r.End - r.Start + 1
				}
			} else {
				replicasOf[n.MasterID]++
			}
		}
		if masters != 3 || slots != ClusterSlots {
			t.Errorf("Nodes() = %d masters serving %d slots, want 3 serving %d", masters, slots, ClusterSlots)
		}
		for _, n := range c.Nodes() {
			if n.Master && replicasOf[n.ID] != 1 {
				t.Errorf("master %s has %d replicas, want 1", n.Server.Addr, replicasOf[n.ID])
			}
		}
	})

	keys := keysOnEveryMaster(t, c, cc)

	t.Run("writes through the cluster client reach every master", func(t *testing.T) {
		for master, key := range keys {
			if err := cc.Set(ctx, key, "v-"+key, 0).Err(); err != nil {
				t.Fatalf("cluster SET %q: %v", key, err)
			}
			// A plain client on the master itself: the key is there, not
			// redirected.
			if got, err := master.Client(t).Get(ctx, key).Result(); err != nil || got != "v-"+key {
				t.Errorf("GET %q on master %s = %q, %v; want %q", key, master.Addr, got, err, "v-"+key)
			}
		}
	})

	t.Run("killing a master promotes its replica", func(t *testing.T) {
		first := c.MasterForSlot(0)
		key := keys[first]
		// WAIT on the connection that wrote: the replica has the value.
		cmds, err := first.Client(t).Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, "before", 0)
			p.Do(ctx, "WAIT", 1, 5000)
			return nil
		})
		if err != nil {
			t.Fatalf("SET %q; WAIT 1 on %s: %v", key, first.Addr, err)
		}
		if n, _ := cmds[1].(*redis.Cmd).Int(); n != 1 {
			t.Fatalf("WAIT 1 on %s = %d replicas, want 1", first.Addr, n)
		}

		killed := time.Now()
		victim := c.KillMaster(0)
		if victim != first {
			t.Fatalf("KillMaster(0) = %s, want the master of slot 0, %s", victim.Addr, first.Addr)
		}
		// Same hash slot as key, thanks to the hash tag.
		after := "{" + key + "}:after"
		// A default client would keep its slot map for 60s (see Client).
		fc := c.ClientWith(t, &redis.ClusterOptions{ClusterStateReloadInterval: 250 * time.Millisecond})
		var writeErr error
		recovered := pollWrite(ctx, 20*time.Second, func(ctx context.Context) error {
			writeErr = fc.Set(ctx, after, "after", 0).Err()
			return writeErr
		})
		if !recovered {
			t.Fatalf("cluster SET %q kept failing for 20s after killing %s: %v", after, victim.Addr, writeErr)
		}
		writable := time.Since(killed)
		if err := c.WaitHealthy(20 * time.Second); err != nil {
			t.Fatalf("WaitHealthy after killing %s: %v", victim.Addr, err)
		}
		healthy := time.Since(killed)
		t.Logf("killed master %s: writes succeed again after %v, WaitHealthy returned after %v",
			victim.Addr, writable.Round(time.Millisecond), healthy.Round(time.Millisecond))

		promoted := c.MasterForSlot(0)
		if promoted == victim || !promoted.alive() {
			t.Fatalf("MasterForSlot(0) = %s after failover, want a live node other than %s", promoted.Addr, victim.Addr)
		}
		pc := promoted.Client(t)
		for k, want := range map[string]string{key: "before", after: "after"} {
			if got, err := pc.Get(ctx, k).Result(); err != nil || got != want {
				t.Errorf("GET %q on promoted %s = %q, %v; want %q", k, promoted.Addr, got, err, want)
			}
		}
	})
}

// keysOnEveryMaster returns, for each master, a key whose slot it serves.
func keysOnEveryMaster(t *testing.T, c *Cluster, cc *redis.ClusterClient) map[*Server]string {
	t.Helper()
	ctx := context.Background()
	keys := make(map[*Server]string)
	for i := 0; len(keys) < 3 && i < 1000; i++ {
		key := "key-" + strconv.Itoa(i)
		slot, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", key, err)
		}
		m := c.MasterForSlot(int(slot))
		if _, ok := keys[m]; !ok {
			keys[m] = key
		}
	}
	if len(keys) != 3 {
		t.Fatalf("found keys on %d masters, want 3", len(keys))
	}
	return keys
}

// pollWrite retries write every 20ms until it succeeds or timeout passes:
// the failover is done by other processes, which offer no hook.
func pollWrite(ctx context.Context, timeout time.Duration, write func(context.Context) error) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		attempt, done := context.WithTimeout(ctx, time.Second)
		err := write(attempt)
		done()
		if err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

func TestClusterOptionsValidate(t *testing.T) {
	tests := []struct {
		in      ClusterOptions
		want    ClusterOptions
		wantErr bool
	}{
		{in: ClusterOptions{}, want: ClusterOptions{Masters: 3, NodeTimeout: time.Second}},
		{in: ClusterOptions{Masters: 4, ReplicasPerMaster: 1, NodeTimeout: 500 * time.Millisecond},
			want: ClusterOptions{Masters: 4, ReplicasPerMaster: 1, NodeTimeout: 500 * time.Millisecond}},
		{in: ClusterOptions{Masters: 2}, wantErr: true},
		{in: ClusterOptions{Masters: -1}, wantErr: true},
		{in: ClusterOptions{ReplicasPerMaster: -1}, wantErr: true},
		{in: ClusterOptions{NodeTimeout: 50 * time.Millisecond}, wantErr: true},
		{in: ClusterOptions{NodeTimeout: 1500 * time.Microsecond}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.in), func(t *testing.T) {
			got := tt.in
			err := got.validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("validate(%+v) = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("validate(%+v) set %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseClusterNodes(t *testing.T) {
	c := &Cluster{servers: []*Server{
		{Addr: "127.0.0.1:30001"}, {Addr: "127.0.0.1:30002"}, {Addr: "127.0.0.1:30003"},
	}}
	text := "" +
		"aaa 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 6000 [7000->-bbb]\n" +
		"bbb 127.0.0.1:30002@40002,host.example master,fail - 0 0 2 connected\n" +
		"ccc 127.0.0.1:30003@40003 slave aaa 0 0 1 connected\n"
	nodes, err := c.parseNodes(text)
	if err != nil {
		t.Fatalf("parseNodes: %v", err)
	}
	want := []string{
		"127.0.0.1:30001 aaa master=true of= failed=false slots=[{0 5460} {6000 6000}]",
		"127.0.0.1:30002 bbb master=true of= failed=true slots=[]",
		"127.0.0.1:30003 ccc master=false of=aaa failed=false slots=[]",
	}
	for i, n := range nodes {
		got := fmt.Sprintf("%s %s master=%t of=%s failed=%t slots=%v", n.Server.Addr, n.ID, n.Master, n.MasterID, n.Failed, n.Slots)
		if got != want[i] {
			t.Errorf("node %d = %q, want %q", i, got, want[i])
		}
	}
	if _, err := c.parseNodes("zzz 127.0.0.1:1@2 master - 0 0 1 connected\n"); err == nil {
		t.Errorf("parseNodes(unknown address) = nil error, want an error")
	}
}
