package localcache_test

import (
	"testing"

	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/session"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name        string
		revoke      func(c *localcache.Cache) // after the token
		wantRevoked bool
	}{
		{"no invalidation", func(*localcache.Cache) {}, false},
		{"session revoked", func(c *localcache.Cache) { c.Revoke("dev-a", 7) }, true},
		{"user revoked", func(c *localcache.Cache) { c.RevokeUser("user-1", 7) }, true},
		{"other session revoked", func(c *localcache.Cache) { c.Revoke("dev-b", 7) }, false},
		{"other user revoked", func(c *localcache.Cache) { c.RevokeUser("user-2", 7) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, localcache.Options{})
			tok := c.Begin()
			tt.revoke(c)
			got := c.Check(tok, active("dev-a", "user-1"))
			if (got.Status == session.StatusRevoked) != tt.wantRevoked {
				t.Fatalf("Check(tok, active) status = %v, want revoked=%v", got.Status, tt.wantRevoked)
			}
			if tt.wantRevoked && (got.RevokedAtMS == nil || *got.RevokedAtMS != 7) {
				t.Fatalf("Check(tok, active).RevokedAtMS = %v, want 7", got.RevokedAtMS)
			}
			if c.Len() != 0 {
				t.Fatalf("Len() after Check = %d, want 0: Check must not store", c.Len())
			}
		})
	}
	t.Run("revoked before the token", func(t *testing.T) {
		c := newCache(t, localcache.Options{})
		c.Revoke("dev-a", 7)
		if got := c.Check(c.Begin(), active("dev-a", "user-1")); got.Status != session.StatusActive {
			t.Fatalf("Check(token after revoke, active) = %v, want active", got.Status)
		}
	})
}
