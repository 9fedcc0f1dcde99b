package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

// rawSubscriber subscribes a plain go-redis client to channel and returns
// once the subscription is confirmed.
func rawSubscriber(t *testing.T, rdb *redis.Client, channel string) *redis.PubSub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps := rdb.Subscribe(ctx, channel)
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	return ps
}

// nextMessage returns the next payload a subscriber receives.
func nextMessage(t *testing.T, ps *redis.PubSub) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatalf("no message: %v", err)
	}
	return m.Payload
}

// TestRevokeWritesAndPublishes checks that revoke writes revoked in Redis and
// publishes exactly the message it prints, which a raw subscriber receives.
func TestRevokeWritesAndPublishes(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	fillActive(t, e.cache, "dev-a", "u-7")
	ps := rawSubscriber(t, e.rdb, session.DefaultChannel)

	code, stdout, stderr := runCmd(t, "revoke", "-redis", e.url, "dev-a")
	if code != exitOK {
		t.Fatalf("revoke dev-a: exit %d, stderr %q", code, stderr)
	}
	got := nextMessage(t, ps)
	m, err := session.ParseInvalidation([]byte(got))
	if err != nil || m.SessionID != "dev-a" || m.Seq != 1 || m.AtMS == 0 {
		t.Errorf("subscriber received %q (%+v, %v), want the session message with seq 1", got, m, err)
	}
	for _, want := range []string{
		"revoked session dev-a\n",
		"published on session_invalidation: " + got + "\n",
		"receivers: every message reached at least one subscriber; 1 listening (PUBSUB NUMSUB) now",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("revoke stdout does not contain %q:\n%s", want, stdout)
		}
	}
	rec, err := e.cache.Get(ctx, "dev-a")
	if err != nil || rec.Status != session.StatusRevoked || rec.RevokedAtMS == nil || *rec.RevokedAtMS != m.AtMS {
		t.Errorf("Get(%q) = %+v, %v; want revoked at %d", "dev-a", rec, err, m.AtMS)
	}

	t.Run("again publishes again, JSON", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "revoke", "-json", "-redis", e.url, "dev-a")
		if code != exitOK {
			t.Fatalf("revoke again: exit %d, stderr %q", code, stderr)
		}
		var rep revokeReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("revoke -json output does not parse: %v\n%s", err, stdout)
		}
		got := nextMessage(t, ps)
		if string(rep.Message) != got || rep.Published != 1 || rep.NoReceivers != 0 || rep.Listeners != 1 {
			t.Errorf("revoke -json = %+v, want message %s published once to 1 listener", rep, got)
		}
		m2, _ := session.ParseInvalidation([]byte(got))
		rec, _ := e.cache.Get(ctx, "dev-a")
		if m2.Seq != 2 || *rec.RevokedAtMS != m.AtMS {
			t.Errorf("second revoke: seq %d, revoked_at_ms %d; want seq 2 and the first revocation time %d kept", m2.Seq, *rec.RevokedAtMS, m.AtMS)
		}
	})

	t.Run("unknown session writes a tombstone", func(t *testing.T) {
		code, stdout, _ := runCmd(t, "revoke", "-redis", e.url, "ghost-1")
		nextMessage(t, ps)
		rec, err := e.cache.Get(ctx, "ghost-1")
		if code != exitOK || err != nil || rec.Status != session.StatusRevoked || rec.UserID != "" {
			t.Errorf("revoke ghost-1: exit %d, Get = %+v, %v; want a revoked tombstone\n%s", code, rec, err, stdout)
		}
	})

	t.Run("no subscriber", func(t *testing.T) {
		ps.Close()
		code, stdout, _ := runCmd(t, "revoke", "-redis", e.url, "dev-a")
		if code != exitOK || !strings.Contains(stdout, "1 of 1 messages reached NO subscriber") {
			t.Errorf("revoke with nobody listening: exit %d, stdout %q; want the no-receiver warning", code, stdout)
		}
	})
}

// TestRevokeUserWritesAndPublishes checks that revoke-user sets the user's
// marker, revokes every indexed session and publishes the user message and
// one message per session.
func TestRevokeUserWritesAndPublishes(t *testing.T) {
	ctx := context.Background()
	e := newTestEnv(t, rediscache.Options{})
	ids := []string{"dev-a", "dev-b", "dev-c"}
	for _, id := range ids {
		fillActive(t, e.cache, id, "u-7")
	}
	fillActive(t, e.cache, "dev-other", "u-8")
	ps := rawSubscriber(t, e.rdb, session.DefaultChannel)

	code, stdout, stderr := runCmd(t, "revoke-user", "-json", "-redis", e.url, "u-7")
	if code != exitOK {
		t.Fatalf("revoke-user u-7: exit %d, stderr %q", code, stderr)
	}
	var rep revokeReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("revoke-user -json output does not parse: %v\n%s", err, stdout)
	}
	first := nextMessage(t, ps)
	if string(rep.Message) != first {
		t.Errorf("revoke-user printed %s, subscriber received %s first", rep.Message, first)
	}
	if m, err := session.ParseInvalidation([]byte(first)); err != nil || m.UserID != "u-7" {
		t.Errorf("first message %q (%v), want the user message for u-7", first, err)
	}
	var published []string
	for range ids {
		m, err := session.ParseInvalidation([]byte(nextMessage(t, ps)))
		if err != nil {
			t.Fatal(err)
		}
		published = append(published, m.SessionID)
	}
	slices.Sort(published)
	slices.Sort(rep.Sessions)
	if !slices.Equal(published, ids) || !slices.Equal(rep.Sessions, ids) || rep.Published != 4 {
		t.Errorf("revoke-user: published sessions %v, reported %v (%d messages); want %v and 4", published, rep.Sessions, rep.Published, ids)
	}
	for _, id := range ids {
		if rec, err := e.cache.Get(ctx, id); err != nil || rec.Status != session.StatusRevoked {
			t.Errorf("Get(%q) = %+v, %v; want revoked", id, rec, err)
		}
	}
	if rec, err := e.cache.Get(ctx, "dev-other"); err != nil || rec.Status != session.StatusActive {
		t.Errorf("Get(%q) = %+v, %v; want another user's session still active", "dev-other", rec, err)
	}
	if _, err := e.rdb.Get(ctx, "user:u-7:revoked_at_ms").Result(); errors.Is(err, redis.Nil) {
		t.Errorf("user:u-7:revoked_at_ms is absent, want the marker set")
	}

	t.Run("text", func(t *testing.T) {
		code, stdout, _ := runCmd(t, "revoke-user", "-redis", e.url, "u-7")
		for _, want := range []string{"revoked user u-7: marker set, 3 session(s) revoked\n", "  dev-b\n", `published on session_invalidation: {"user":"u-7","seq":`, "published 4 messages in all"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("revoke-user (exit %d) stdout does not contain %q:\n%s", code, want, stdout)
			}
		}
	})
}
