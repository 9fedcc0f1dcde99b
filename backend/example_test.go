package backend_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/session"
)

func ExampleClient_Fetch() {
	srv := backendtest.NewServer()
	defer srv.Close()
	srv.Put(session.Record{
		DeviceSessionID: "dev-1",
		UserID:          "u-1",
		ClientPublicKey: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		Status:          session.StatusActive,
	})

	c, err := backend.New(backend.Options{BaseURL: srv.URL()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.CloseIdleConnections()
	ctx := context.Background()

	rec, err := c.Fetch(ctx, "dev-1")
	fmt.Println(rec.UserID, rec.Status, err)

	srv.Revoke("dev-1")
	rec, err = c.Fetch(ctx, "dev-1")
	fmt.Println(rec.Status, rec.RevokedAtMS != nil, err)

	_, err = c.Fetch(ctx, "dev-2")
	fmt.Println(errors.Is(err, session.ErrNotFound))

	_, err = c.Fetch(ctx, "dev-{x}")
	fmt.Println(errors.Is(err, session.ErrInvalidID), srv.Calls())
	// Output:
	// u-1 active <nil>
	// revoked true <nil>
	// true
	// true 3
}
