package tiered

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/rediscache"
)

// New refuses each bad setting with an error that names it, before it
// starts anything.
func TestNewNamesTheBadOption(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	l2, err := rediscache.New(rdb, rediscache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	be, err := backend.New(backend.Options{BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no Redis", func(o *Options) { o.Redis = nil }, "tiered: Options.Redis is required"},
		{"no backend", func(o *Options) { o.Backend = nil }, "tiered: Options.Backend is required"},
		{"StaleBound", func(o *Options) { o.StaleBound = -time.Second }, "tiered: negative StaleBound -1s"},
		{"HeartbeatTimeout", func(o *Options) { o.HeartbeatTimeout = -time.Second }, "tiered: negative HeartbeatTimeout -1s"},
		{"HeartbeatTimeout without a heartbeat", func(o *Options) { o.HeartbeatInterval, o.HeartbeatTimeout = -1, time.Second },
			"tiered: HeartbeatTimeout 1s is set but the heartbeat is off (negative HeartbeatInterval)"},
		{"SubscriberName", func(o *Options) { o.SubscriberName = "gw 1" }, "tiered: Options.SubscriberName has a disallowed byte 0x20 at offset 2"},
		{"FetchTimeout", func(o *Options) { o.FetchTimeout = 6 * time.Second },
			"tiered: FetchTimeout 6s is more than half of the rediscache FillWindow 10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Redis: l2, Backend: be}
			tc.edit(&opts)
			c, err := New(opts)
			if err == nil {
				c.Close()
				t.Fatalf("New accepted %s", tc.name)
			}
			if err.Error() != tc.want {
				t.Fatalf("New error = %q, want %q", err, tc.want)
			}
		})
	}
}
