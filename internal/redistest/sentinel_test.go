package redistest

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestSentinelFailoverSwitchesClient starts one Sentinel group; its
// subtests run in order, the last kills the primary.
func TestSentinelFailoverSwitchesClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Now()
	sg := StartSentinel(t, SentinelOptions{})
	t.Logf("StartSentinel (primary, replica, 3 sentinels) took %v", time.Since(start).Round(time.Millisecond))
	fc := sg.FailoverClient(t)
	oldPrimary, oldReplica := sg.Primary(), sg.Replica()

	t.Run("clients reach the primary through the sentinels", func(t *testing.T) {
		if got := len(sg.SentinelAddrs()); got != 3 {
			t.Fatalf("len(SentinelAddrs()) = %d, want 3", got)
		}
		for name, c := range map[string]redis.UniversalClient{"FailoverClient": fc, "UniversalClient": sg.UniversalClient(t)} {
			port, err := c.ConfigGet(ctx, "port").Result()
			if err != nil || port["port"] != strconv.Itoa(oldPrimary.Port) {
				t.Errorf("%s CONFIG GET port = %v, %v; want %d (the primary)", name, port, err, oldPrimary.Port)
			}
		}
		// WAIT on the connection that wrote: the replica has the value.
		cmds, err := fc.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "k", "before", 0)
			p.Do(ctx, "WAIT", 1, 5000)
			return nil
		})
		if err != nil {
			t.Fatalf("SET k; WAIT 1 through the failover client: %v", err)
		}
		if n, _ := cmds[1].(*redis.Cmd).Int(); n != 1 {
			t.Fatalf("WAIT 1 = %d replicas, want 1", n)
		}
	})

	t.Run("killing the primary switches the failover client to the replica", func(t *testing.T) {
		killed := time.Now()
		if got := sg.KillPrimary(); got != oldPrimary {
			t.Fatalf("KillPrimary() = %s, want %s", got.Addr, oldPrimary.Addr)
		}
		var writeErr error
		recovered := pollWrite(ctx, 30*time.Second, func(ctx context.Context) error {
			writeErr = fc.Set(ctx, "k2", "after", 0).Err()
			return writeErr
		})
		if !recovered {
			t.Fatalf("failover client SET kept failing for 30s after killing %s: %v", oldPrimary.Addr, writeErr)
		}
		writable := time.Since(killed)
		promoted, err := sg.WaitFailover(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		reported := time.Since(killed)
		t.Logf("killed primary %s: failover client writes again after %v, sentinels agree on the new primary after %v",
			oldPrimary.Addr, writable.Round(time.Millisecond), reported.Round(time.Millisecond))

		if promoted != oldReplica || sg.Primary() != oldReplica || sg.Replica() != oldPrimary {
			t.Fatalf("WaitFailover() = %s, Primary() = %s, Replica() = %s; want %s, %s, %s",
				promoted.Addr, sg.Primary().Addr, sg.Replica().Addr, oldReplica.Addr, oldReplica.Addr, oldPrimary.Addr)
		}
		port, err := fc.ConfigGet(ctx, "port").Result()
		if err != nil || port["port"] != strconv.Itoa(promoted.Port) {
			t.Errorf("failover client CONFIG GET port = %v, %v; want %d (the promoted replica)", port, err, promoted.Port)
		}
		pc := promoted.Client(t)
		for k, want := range map[string]string{"k": "before", "k2": "after"} {
			if got, err := pc.Get(ctx, k).Result(); err != nil || got != want {
				t.Errorf("GET %q on promoted %s = %q, %v; want %q", k, promoted.Addr, got, err, want)
			}
		}
	})
}

func TestSentinelOptionsValidate(t *testing.T) {
	tests := []struct {
		in      SentinelOptions
		want    SentinelOptions
		wantErr bool
	}{
		{in: SentinelOptions{}, want: SentinelOptions{MasterName: "mymaster", Sentinels: 3, Quorum: 2, DownAfter: time.Second, FailoverTimeout: 3 * time.Second}},
		{in: SentinelOptions{MasterName: "m", Sentinels: 5, DownAfter: 500 * time.Millisecond},
			want: SentinelOptions{MasterName: "m", Sentinels: 5, Quorum: 3, DownAfter: 500 * time.Millisecond, FailoverTimeout: 3 * time.Second}},
		{in: SentinelOptions{MasterName: "my master"}, wantErr: true},
		{in: SentinelOptions{Sentinels: -1}, wantErr: true},
		{in: SentinelOptions{Quorum: 4}, wantErr: true},
		{in: SentinelOptions{DownAfter: 10 * time.Millisecond}, wantErr: true},
		{in: SentinelOptions{FailoverTimeout: 1500 * time.Microsecond}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.in), func(t *testing.T) {
			got := tt.in
			err := got.validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("validate(%+v) = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("validate(%+v) set %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}
