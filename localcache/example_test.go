package localcache_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/session"
)

func Example() {
	c, err := localcache.New(localcache.Options{Size: 1000})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	rec := session.Record{
		DeviceSessionID: "dev-1",
		UserID:          "user-7",
		ClientPublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		Status:          session.StatusActive,
	}

	// A miss is loaded from a slower source (the backend) and stored.
	got, err := c.Load(ctx, "dev-1", func(context.Context) (session.Record, error) { return rec, nil })
	fmt.Println("load:", got.Status, err)

	// A revocation arrives while another session is being loaded: the load
	// read "active", but it cannot resurrect the session.
	rec.DeviceSessionID = "dev-2"
	got, err = c.Load(ctx, "dev-2", func(context.Context) (session.Record, error) {
		c.MarkAllRevokedForUser("user-7")
		return rec, nil
	})
	fmt.Println("load during a revocation:", got.Status, err)

	got, err = c.Lookup(ctx, "dev-1")
	fmt.Println("lookup:", got.Status, err)
	_, err = c.Lookup(ctx, "dev-3")
	fmt.Println("unknown:", errors.Is(err, session.ErrNotFound))
	_, err = c.Lookup(ctx, "dev-*")
	fmt.Println("invalid:", errors.Is(err, session.ErrInvalidID))
	// Output:
	// load: active <nil>
	// load during a revocation: revoked <nil>
	// lookup: revoked <nil>
	// unknown: true
	// invalid: true
}
