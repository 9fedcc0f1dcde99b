package redisconn_test

import (
	"context"
	"testing"

	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/tiered"
)

// What OpenConfig returns is what tiered.Open takes: Open, with NoWait so
// that nothing is dialled, accepts it for every mode and TLS setting.
func TestOpenConfigSuitsTieredOpen(t *testing.T) {
	ca := redistest.NewTestCA(t).CAFile()
	closed := redistest.ClosedAddr(t)
	for _, c := range []redisconn.Config{
		{URL: "redis://u:pw@" + closed + "/2?dial_timeout=3s"},
		{URL: "rediss://" + closed, CAFile: ca},
		{URL: "rediss://" + closed + "?skip_verify=true", CAFile: ca, InsecureSkipTLSVerify: true},
		{URL: "unix:///nonexistent/redis.sock?db=1"},
		{URL: "redis://" + closed + "?addr=" + closed, Cluster: true},
		{URL: "rediss://" + closed, Cluster: true, CAFile: ca},
		{URL: "rediss://" + closed, Cluster: true, InsecureSkipTLSVerify: true},
		{URL: "redis://u:pw@" + closed + "/1?addr=" + closed + "&idle_timeout=1m", SentinelMaster: "mymaster"},
		{URL: "rediss://" + closed + "?skip_verify=false", SentinelMaster: "mymaster", CAFile: ca},
		{URL: "rediss://" + closed, SentinelMaster: "mymaster", InsecureSkipTLSVerify: true},
	} {
		redisURL, caFile, conf, err := c.OpenConfig()
		if err != nil {
			t.Errorf("OpenConfig(%+v) = %v", c, err)
			continue
		}
		cache, err := tiered.Open(context.Background(), tiered.Config{
			RedisURL: redisURL, TLSCAFile: caFile, TLS: conf, BackendURL: "http://127.0.0.1:1", NoWait: true,
		})
		if err != nil {
			t.Errorf("tiered.Open of OpenConfig(%+v) = %v", c, err)
			continue
		}
		_ = cache.Close()
	}
}
