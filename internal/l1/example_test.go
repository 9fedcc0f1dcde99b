package l1_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/galaxy-game/sessioncache/internal/l1"
	"github.com/galaxy-game/sessioncache/session"
)

func Example() {
	c, err := l1.New(l1.Options{Size: 1000})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	// A lookup missed L1: take a token, read the lower tier, fill.
	tok := c.Begin()
	rec := session.Record{
		DeviceSessionID: "dev-1",
		UserID:          "user-7",
		ClientPublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		Status:          session.StatusActive,
	}
	stored, ok := c.Fill(tok, rec)
	fmt.Println("fill:", stored.Status, ok)

	// Another lookup starts reading the lower tier ...
	slow := c.Begin()
	// ... while the session is revoked.
	c.Revoke("dev-1", 1764415200000)

	got, err := c.Lookup(ctx, "dev-1")
	fmt.Println("lookup:", got.Status, *got.RevokedAtMS, err)

	// The slow read saw "active", but it cannot resurrect the session: the
	// record is stored converted to revoked.
	stored, ok = c.Fill(slow, rec)
	fmt.Println("stale fill:", stored.Status, ok)

	_, err = c.Lookup(ctx, "dev-2")
	fmt.Println("unknown:", errors.Is(err, session.ErrNotFound))
	_, err = c.Lookup(ctx, "dev-*")
	fmt.Println("invalid:", errors.Is(err, session.ErrInvalidID))
	// Output:
	// fill: active true
	// lookup: revoked 1764415200000 <nil>
	// stale fill: revoked true
	// unknown: true
	// invalid: true
}
