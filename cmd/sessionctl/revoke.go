package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/session"
)

func init() {
	register("revoke", "revoke one session: write revoked in Redis, then publish", runRevoke)
	register("revoke-user", "revoke every session of a user: marker, each session, publish", runRevokeUser)
}

// revokeReport is what revoke and revoke-user print.
type revokeReport struct {
	Session string          `json:"session,omitempty"`
	User    string          `json:"user,omitempty"`
	Channel string          `json:"channel"`
	Message json.RawMessage `json:"message,omitempty"` // the user or session message, as published
	// Sessions are the sessions revoke-user revoked (one message each).
	Sessions []string `json:"sessions,omitempty"`
	// Published counts the messages published; NoReceivers those that no
	// subscriber received (PUBLISH returned 0). On a cluster PUBLISH counts
	// only the subscribers of the node that ran it (PerNode).
	Published   uint64 `json:"published"`
	NoReceivers uint64 `json:"published_no_receivers"`
	PerNode     bool   `json:"receivers_per_node,omitempty"`
	// Listeners is PUBSUB NUMSUB of the channel afterwards, summed over
	// the nodes (-1 when it could not be read).
	Listeners int64  `json:"listeners"`
	Error     string `json:"error,omitempty"`
}

func runRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return revokeCommand(ctx, "revoke", "session", args, stdout, stderr)
}

func runRevokeUser(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return revokeCommand(ctx, "revoke-user", "user", args, stdout, stderr)
}

func revokeCommand(ctx context.Context, name, what string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var f redisFlags
	f.register(fs)
	if what == "session" {
		setUsage(fs, "revoke [flags] <session-id>",
			`Revokes one device session exactly as the library does (rediscache
RevokeSession): one Lua script sets status revoked (a tombstone if Redis has
no record), keeps an earlier revoked_at_ms, sets the TTL to at least
-session-ttl, takes the stripe's next seq, appends to the stripe's log and
PUBLISHes the message, which it prints with the receiver count. Revoking a
revoked session publishes again. An id starting with '-' follows "--".`)
	} else {
		setUsage(fs, "revoke-user [flags] <user-id>",
			`Revokes every session of a user exactly as the library does (rediscache
RevokeUser): sets the user's revocation marker (refusing fills of the user for
-fill-window), publishes the user message, then revokes and publishes each
session in the user's index. Safe to repeat after a failure.`)
	}
	pos, code := parseArgs(fs, args, stderr)
	if code >= 0 {
		return code
	}
	id, err := one(pos, what+" id")
	if err == nil {
		err = checkID(what, id)
	}
	if err != nil {
		return fail(stderr, name, err)
	}
	c, rdb, err := f.open(ctx, "sessionctl-"+name)
	if err != nil {
		return fail(stderr, name, err)
	}
	defer rdb.Close()

	rep := revokeReport{Channel: c.Layout().Channel()}
	var m session.Invalidation
	var revErr error
	if what == "session" {
		rep.Session = id
		m, revErr = c.RevokeSession(ctx, id)
	} else {
		rep.User = id
		m, rep.Sessions, revErr = c.RevokeUser(ctx, id)
	}
	if m.SessionID != "" || m.UserID != "" {
		if b, err := m.MarshalJSON(); err == nil {
			rep.Message = b
		}
	}
	st := c.Stats()
	rep.Published, rep.NoReceivers = st.Published, st.PublishedNoReceivers
	_, rep.PerNode = rdb.(*redis.ClusterClient)
	rep.Listeners = numSub(ctx, rdb, rep.Channel)
	if revErr != nil {
		_, rep.Error = describe(revErr)
	}
	if f.json {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			return fail(stderr, name, err)
		}
	} else {
		printRevoke(stdout, rep)
	}
	if revErr != nil {
		return fail(stderr, name, revErr)
	}
	return exitOK
}

// numSub returns PUBSUB NUMSUB of channel summed over every node, or -1.
func numSub(ctx context.Context, rdb redis.UniversalClient, channel string) int64 {
	var total atomic.Int64
	err := forEachNode(ctx, rdb, false, func(ctx context.Context, c *redis.Client) error {
		m, err := c.PubSubNumSub(ctx, channel).Result()
		if err != nil {
			return err
		}
		total.Add(m[channel])
		return nil
	})
	if err != nil {
		return -1
	}
	return total.Load()
}

func printRevoke(w io.Writer, r revokeReport) {
	switch {
	case r.Session != "" && r.Message != nil:
		fmt.Fprintf(w, "revoked session %s\n", r.Session)
	case r.User != "" && r.Message != nil:
		fmt.Fprintf(w, "revoked user %s: marker set, %d session(s) revoked\n", r.User, len(r.Sessions))
		for _, id := range r.Sessions {
			fmt.Fprintf(w, "  %s\n", id)
		}
	}
	if r.Message != nil {
		fmt.Fprintf(w, "published on %s: %s\n", r.Channel, r.Message)
	}
	if r.Published > 1 {
		fmt.Fprintf(w, "published %d messages in all (the user message and one per session)\n", r.Published)
	}
	switch {
	case r.Published == 0:
	case r.NoReceivers == 0:
		fmt.Fprintf(w, "receivers: every message reached at least one subscriber; %s now\n", listeners(r.Listeners))
	case r.PerNode:
		fmt.Fprintf(w, "receivers: %d of %d messages had no subscriber on the node that published them (a cluster PUBLISH counts only that node's subscribers, and still reaches every node); %s now\n",
			r.NoReceivers, r.Published, listeners(r.Listeners))
	default:
		fmt.Fprintf(w, "receivers: %d of %d messages reached NO subscriber (replicas learn of them from the log when they resync); %s now\n",
			r.NoReceivers, r.Published, listeners(r.Listeners))
	}
}

func listeners(n int64) string {
	if n < 0 {
		return "listeners unknown (PUBSUB NUMSUB failed)"
	}
	return fmt.Sprintf("%d listening (PUBSUB NUMSUB)", n)
}
