package tiered_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/session"
	"github.com/galaxy-game/sessioncache/tiered"
)

// A gateway replica: look a session up on every request, and revoke it
// when the backend pushes a session_invalidation event. This is the
// README's quick start.
func Example() {
	ctx := context.Background()
	redisURL, backendURL, deviceSessionID, stop := exampleServers()
	defer stop()

	cache, err := tiered.Open(ctx, tiered.Config{
		RedisURL:   redisURL,   // "redis://redis.internal:6379"; Sentinel, Cluster, TLS: see tiered.Config
		BackendURL: backendURL, // "http://sessions.internal:8080"
	})
	if err != nil {
		log.Fatal(err) // one line, such as "tiered: redis at redis.internal:6379: connection refused"
	}
	defer cache.Close()

	authenticate := func(id string) {
		rec, err := cache.Lookup(ctx, id)
		switch {
		case errors.Is(err, session.ErrNotFound):
			fmt.Println("deny: unknown session")
		case err != nil: // an invalid id, or no tier could answer
			fmt.Println("deny:", err)
		case rec.Status == session.StatusRevoked:
			fmt.Println("deny: revoked")
		default:
			fmt.Println("allow: verify the request's signature with rec.ClientPublicKey")
		}
	}
	authenticate(deviceSessionID)
	authenticate("no-such-session")
	cache.MarkRevoked(deviceSessionID) // on the backend's push
	authenticate(deviceSessionID)
	// Output:
	// allow: verify the request's signature with rec.ClientPublicKey
	// deny: unknown session
	// deny: revoked
}

// Which tier answers: the backend first, then L1 in this process; another
// replica reads Redis. An invalid id costs nothing. Revoke, unlike
// MarkRevoked, returns once Redis holds the revocation.
func Example_tiers() {
	ctx := context.Background()
	redisURL, backendURL, id, stop := exampleServers()
	defer stop()

	open := func(name string) *tiered.Cache {
		c, err := tiered.Open(ctx, tiered.Config{RedisURL: redisURL, BackendURL: backendURL, Name: name})
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	a, b := open("replica-a"), open("replica-b")
	defer a.Close()
	defer b.Close()

	lookup := func(replica string, c *tiered.Cache, id string) {
		rec, tier, err := c.LookupTier(ctx, id)
		switch {
		case errors.Is(err, session.ErrInvalidID):
			fmt.Printf("%s: invalid id, no Redis command or backend call made\n", replica)
		case err != nil:
			fmt.Printf("%s: %v\n", replica, err)
		default:
			fmt.Printf("%s: %s from %s\n", replica, rec.Status, tier)
		}
	}
	lookup("a", a, id)
	lookup("a", a, id)
	lookup("b", b, id)
	lookup("a", a, "bad*id")

	if err := a.Revoke(ctx, id); err != nil {
		log.Fatal(err)
	}
	lookup("a", a, id)
	// Output:
	// a: active from backend
	// a: active from l1
	// b: active from l2
	// a: invalid id, no Redis command or backend call made
	// a: revoked from l1
}

// exampleServers starts an embedded Redis (miniredis) and an in-memory
// session backend holding one active session, and returns their URLs, the
// session's id and a function that stops both. In production both exist
// already.
func exampleServers() (redisURL, backendURL, id string, stop func()) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		log.Fatal(err)
	}
	sessions := backendtest.NewServer()
	rec, _ := sessions.NewSession("user-1")
	return "redis://" + mr.Addr(), sessions.URL(), rec.DeviceSessionID, func() {
		sessions.Close()
		mr.Close()
	}
}

// The README's first code block is part of Example, line for line, so
// that the quick start is code that runs.
func TestExampleIsTheREADMEQuickStart(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "\n```")
	lang, rest, _ := strings.Cut(rest, "\n")
	block, _, ok2 := strings.Cut(rest, "\n```\n")
	if !ok || !ok2 || lang != "go" {
		t.Fatalf("README.md's first code block is not a ```go block (it is ```%s)", lang)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	src := string(example)
	var lines []string
	for line := range strings.SplitSeq(src, "\n") {
		lines = append(lines, strings.TrimSpace(line))
	}
	// Each line of the block, in order, must follow the previous one
	// directly in example_test.go.
	var want []string
	for line := range strings.SplitSeq(block, "\n") {
		want = append(want, strings.TrimSpace(line))
	}
	for start := range lines {
		if start+len(want) <= len(lines) && slices.Equal(lines[start:start+len(want)], want) {
			return
		}
	}
	t.Fatalf("README.md's first code block is not a run of lines of example_test.go:\n%s", block)
}
