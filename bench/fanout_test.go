package bench

import (
	"context"
	"testing"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// TestFanoutScaleSmoke measures two small points of the fan-out curve: the
// three replicas alone, and beside 47 bare subscribers.
func TestFanoutScaleSmoke(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	for _, n := range []int{3, 50} {
		p, err := RunFanoutScale(context.Background(), FanoutScaleOptions{Addr: srv.Addr, Subscribers: n, Revocations: 40})
		if err != nil {
			t.Fatalf("RunFanoutScale(%d subscribers) = %v", n, err)
		}
		t.Logf("%+v", p)
		if p.Subscribers != n || p.P50 <= 0 || p.P50 > p.P99 || p.P99 > p.Max || p.CPUPerRevocation <= 0 || p.ScriptUsec <= 0 {
			t.Errorf("RunFanoutScale(%d subscribers) = %+v, want 0 < p50 <= p99 <= max and Redis time", n, p)
		}
	}
	if _, err := RunFanoutScale(context.Background(), FanoutScaleOptions{Addr: srv.Addr, Subscribers: 2}); err == nil {
		t.Errorf("RunFanoutScale(2 subscribers) = nil error, want one: three replicas are timed")
	}
}

func TestParseRedisCounters(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250000\r\nused_cpu_sys_children:9.000000\r\n\r\n" +
		"# Commandstats\r\ncmdstat_hgetall:calls=10,usec=25,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=2,usec=150,usec_per_call=75.00,rejected_calls=0,failed_calls=0\r\n"
	c, err := parseRedisCounters(info)
	if err != nil {
		t.Fatalf("parseRedisCounters = %v", err)
	}
	if c.CPUSeconds != 1.75 {
		t.Errorf("CPUSeconds = %v, want 1.75 (children not counted)", c.CPUSeconds)
	}
	if got, want := c.Commands["hgetall"], (CommandCounters{Calls: 10, Usec: 25}); got != want {
		t.Errorf("Commands[hgetall] = %+v, want %+v", got, want)
	}
	d := c.Sub(RedisCounters{CPUSeconds: 1, Commands: map[string]CommandCounters{"evalsha": {Calls: 1, Usec: 70}}})
	if got, want := d.Commands["evalsha"], (CommandCounters{Calls: 1, Usec: 80}); got != want || d.CPUSeconds != 0.75 {
		t.Errorf("Sub: evalsha %+v, CPU %v; want %+v, 0.75", got, d.CPUSeconds, want)
	}
	if _, err := parseRedisCounters("# CPU\r\nused_cpu_sys:1\r\n"); err == nil {
		t.Errorf("parseRedisCounters without used_cpu_user = nil error, want one")
	}
}

func TestRaiseOpenFiles(t *testing.T) {
	got, err := RaiseOpenFiles(64)
	if err != nil {
		t.Fatalf("RaiseOpenFiles(64) = %v", err)
	}
	if got != 0 && got < 64 {
		t.Errorf("RaiseOpenFiles(64) = %d, want at least 64", got)
	}
}
