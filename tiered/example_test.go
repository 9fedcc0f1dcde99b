package tiered_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// A gateway replica: look a session up on every request, and revoke it
// when the backend pushes a session_invalidation event.
func Example() {
	ctx := context.Background()
	mr := miniredis.NewMiniRedis() // an embedded Redis; use your own in production
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	sessions := backendtest.NewServer() // stands in for the session backend
	defer sessions.Close()
	rec, _ := sessions.NewSession("user-1")

	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()
	l2, err := rediscache.New(rdb, rediscache.Options{})
	if err != nil {
		panic(err)
	}
	be, err := backend.New(backend.Options{BaseURL: sessions.URL()})
	if err != nil {
		panic(err)
	}
	cache, err := tiered.New(tiered.Options{Redis: l2, Backend: be})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	if err := cache.WaitSynced(ctx); err != nil {
		panic(err)
	}

	authenticate := func(id string) string {
		r, tier, err := cache.LookupTier(ctx, id)
		switch {
		case err != nil:
			return "deny (" + errorKind(err) + ")"
		case r.Status == session.StatusRevoked:
			return "deny (revoked, from " + tier.String() + ")"
		default:
			return "verify the signature with the key from " + tier.String()
		}
	}
	fmt.Println(authenticate(rec.DeviceSessionID))
	fmt.Println(authenticate(rec.DeviceSessionID))
	fmt.Println(authenticate("no-such-session"))
	fmt.Println(authenticate("bad*id"))

	if err := cache.Revoke(ctx, rec.DeviceSessionID); err != nil {
		panic(err)
	}
	fmt.Println(authenticate(rec.DeviceSessionID))
	fmt.Println("redis says:", mr.HGet("session:"+rec.DeviceSessionID, "status"))
	// Output:
	// verify the signature with the key from backend
	// verify the signature with the key from l1
	// deny (unknown session)
	// deny (invalid id)
	// deny (revoked, from l1)
	// redis says: revoked
}

func errorKind(err error) string {
	switch {
	case errors.Is(err, session.ErrNotFound):
		return "unknown session"
	case errors.Is(err, session.ErrInvalidID):
		return "invalid id"
	}
	return "no tier could answer"
}
