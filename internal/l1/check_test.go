package l1_test

import (
	"testing"

	"github.com/galaxy-game/sessioncache/internal/l1"
	"github.com/galaxy-game/sessioncache/session"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name        string
		revoke      func(c *l1.Cache) // after the token
		wantRevoked bool
	}{
		{"no invalidation", func(*l1.Cache) {}, false},
		{"session revoked", func(c *l1.Cache) { c.Revoke("dev-a", 7) }, true},
		{"user revoked", func(c *l1.Cache) { c.RevokeUser("user-1", 7) }, true},
		{"other session revoked", func(c *l1.Cache) { c.Revoke("dev-b", 7) }, false},
		{"other user revoked", func(c *l1.Cache) { c.RevokeUser("user-2", 7) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, l1.Options{})
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
		c := newCache(t, l1.Options{})
		c.Revoke("dev-a", 7)
		if got := c.Check(c.Begin(), active("dev-a", "user-1")); got.Status != session.StatusActive {
			t.Fatalf("Check(token after revoke, active) = %v, want active", got.Status)
		}
	})
}
