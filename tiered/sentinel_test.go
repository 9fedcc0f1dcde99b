package tiered

import (
	"strings"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// TestSentinel runs the core invariants through Sentinel (a primary, a
// replica and three sentinels; the replicas use go-redis's failover client):
// lookups through every tier, revocations reaching three replicas, the fill
// race 200 times per way of revoking, a hand-typed message, killed
// subscribers that replay, and, last, the primary killed and replaced by
// its replica. One Sentinel group serves every subtest. The sentinels
// wait 3 s (not the harness's 1 s) before they call the primary down: on a
// loaded machine running -race a busy primary can miss pings for a second,
// and a failover nobody asked for leaves the subtests writing to a replica.
func TestSentinel(t *testing.T) {
	sg := redistest.StartSentinel(t, redistest.SentinelOptions{DownAfter: 3 * time.Second})
	topo := sentinelTopology(t, sg)

	scaleCore(t, topo)
	t.Run("PrimaryFailover", func(t *testing.T) {
		e := newScaleEnv(t, topo)
		primary := sg.Primary()
		kill := func() {
			list, err := primary.Client(t).Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"r1", "r2", "r3", "probe"} {
				if !strings.Contains(list, "name="+name+" ") {
					t.Fatalf("replica %s has no subscriber on the primary %s:\n%s", name, primary.Addr, list)
				}
			}
			sg.KillPrimary()
		}
		healthy := func() error {
			promoted, err := sg.WaitFailover(30 * time.Second)
			if err == nil && promoted == primary {
				t.Fatalf("WaitFailover named the killed primary %s", primary.Addr)
			}
			return err
		}
		res := scaleFailover(t, e, func(string) bool { return true }, kill, healthy)
		if bound := 20 * time.Second; res.recovery > bound {
			t.Fatalf("lookups recovered %v after the kill, want within %v", res.recovery, bound)
		}
	})
	t.Run("HandEditsAfterFailover", func(t *testing.T) {
		scaleHandEdits(t, newScaleEnv(t, topo))
	})
}
