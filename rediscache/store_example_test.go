package rediscache_test

import (
	"context"
	"encoding/base64"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// Fill a record fetched from the backend, revoke it, and read it back. A
// stale fill afterwards cannot make it active again.
func ExampleCache_RevokeSession() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()
	c, err := rediscache.New(rdb, rediscache.Options{})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	fetched := session.Record{
		DeviceSessionID: "dev-123",
		UserID:          "user-7",
		ClientPublicKey: base64.StdEncoding.EncodeToString(make([]byte, session.PublicKeySize)),
		Status:          session.StatusActive,
	}
	r, err := c.Fill(ctx, fetched)
	fmt.Println("fill:", r.Status, err)

	m, err := c.RevokeSession(ctx, "dev-123")
	fmt.Printf("published: session %s seq %d stripe %d, %v\n", m.SessionID, m.Seq, m.Stripe, err)

	r, err = c.Get(ctx, "dev-123")
	fmt.Println("get:", r.Status, r.UserID, r.RevokedAtMS != nil, err)

	r, err = c.Fill(ctx, fetched) // a fetch that started before the revocation
	fmt.Println("stale fill:", r.Status, err)

	fmt.Println("redis-cli HGET:", mr.HGet("session:dev-123", "status"))
	// Output:
	// fill: active <nil>
	// published: session dev-123 seq 1 stripe 0, <nil>
	// get: revoked user-7 true <nil>
	// stale fill: revoked <nil>
	// redis-cli HGET: revoked
}
