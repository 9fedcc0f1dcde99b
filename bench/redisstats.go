package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisCounters is a snapshot of the counters of one redis-server that the
// cost of a phase is read from: the CPU the process used (INFO cpu,
// used_cpu_sys plus used_cpu_user) and, per command, its calls and the
// microseconds spent running it (INFO commandstats). The CPU covers the
// socket reads and writes of the event loop as well; a command's
// microseconds cover only its execution.
type RedisCounters struct {
	CPUSeconds float64
	Commands   map[string]CommandCounters // by lower-case name: "hgetall"
}

// CommandCounters are one command's cumulative counters.
type CommandCounters struct {
	Calls int64
	Usec  int64
}

// ReadRedisCounters reads INFO cpu and INFO commandstats.
func ReadRedisCounters(ctx context.Context, rdb redis.UniversalClient) (RedisCounters, error) {
	info, err := rdb.Info(ctx, "cpu", "commandstats").Result()
	if err != nil {
		return RedisCounters{}, fmt.Errorf("bench: INFO cpu commandstats: %w", err)
	}
	return parseRedisCounters(info)
}

func parseRedisCounters(info string) (RedisCounters, error) {
	c := RedisCounters{Commands: map[string]CommandCounters{}}
	var sys, user bool
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "used_cpu_sys", "used_cpu_user":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return RedisCounters{}, fmt.Errorf("bench: INFO %s:%q: %w", k, v, err)
			}
			c.CPUSeconds += f
			sys, user = sys || k == "used_cpu_sys", user || k == "used_cpu_user"
			continue
		}
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		var cc CommandCounters
		for field := range strings.SplitSeq(v, ",") {
			fk, fv, _ := strings.Cut(field, "=")
			switch fk {
			case "calls":
				cc.Calls, _ = strconv.ParseInt(fv, 10, 64)
			case "usec":
				cc.Usec, _ = strconv.ParseInt(fv, 10, 64)
			}
		}
		c.Commands[name] = cc
	}
	if !sys || !user {
		return RedisCounters{}, fmt.Errorf("bench: INFO cpu lacks used_cpu_sys or used_cpu_user")
	}
	return c, nil
}

// Sub returns the counters of the phase between earlier and c.
func (c RedisCounters) Sub(earlier RedisCounters) RedisCounters {
	d := RedisCounters{CPUSeconds: c.CPUSeconds - earlier.CPUSeconds, Commands: map[string]CommandCounters{}}
	for name, cc := range c.Commands {
		e := earlier.Commands[name]
		d.Commands[name] = CommandCounters{Calls: cc.Calls - e.Calls, Usec: cc.Usec - e.Usec}
	}
	return d
}
