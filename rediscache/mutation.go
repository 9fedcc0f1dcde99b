package rediscache

import (
	"context"
	"fmt"
	"strconv"

	"github.com/galaxy-game/sessioncache/session"
)

// fillUnguarded is Fill without its guard: a plain HSET that overwrites a
// revoked record. Only a test binary built with the sessioncache_mutation
// tag calls it, with mutation.GuardedFill disabled, to show that the chaos
// checker notices a resurrection; in ordinary builds the call is compiled
// away.
func (c *Cache) fillUnguarded(ctx context.Context, r session.Record) (session.Record, error) {
	fields := []any{FieldUserID, r.UserID, FieldClientPublicKey, r.ClientPublicKey, FieldStatus, string(r.Status)}
	if r.RevokedAtMS != nil {
		fields = append(fields, FieldRevokedAtMS, strconv.FormatInt(*r.RevokedAtMS, 10))
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	if err := c.rdb.HSet(cctx, c.layout.SessionKey(r.DeviceSessionID), fields...).Err(); err != nil {
		return session.Record{}, fmt.Errorf("rediscache: fill %s: %w", session.Redact(r.DeviceSessionID), err)
	}
	return r, nil
}
