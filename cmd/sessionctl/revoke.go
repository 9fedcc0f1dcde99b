package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
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
	// Backend is what the backend answered for the revoked sessions
	// afterwards; nil when no backend is configured or the revocation
	// failed.
	Backend *backendReport `json:"backend,omitempty"`
}

// backendEnv is the environment variable that gives -backend its default.
const backendEnv = "SESSIONCTL_BACKEND"

// backendCheckers bounds the backend requests revoke-user has in flight.
const backendCheckers = 8

// backendReport counts the backend's answers for the sessions a revocation
// covered. A session the backend still answers active is revoked in Redis
// only: a lookup after its Redis record is lost asks the backend and serves
// it. Revoked and not found sessions are refused whatever Redis loses.
type backendReport struct {
	Checked  int      `json:"checked"`
	Active   []string `json:"active"` // still active at the backend
	Revoked  int      `json:"revoked"`
	NotFound int      `json:"not_found"` // 404: the backend does not know the session
	// Failed counts the sessions the backend gave no usable answer for
	// (unreachable, timeout, 5xx, invalid answer); Error explains the
	// first.
	Failed int    `json:"failed"`
	Error  string `json:"error,omitempty"`
}

// revokeExitCodesHelp is exitCodesHelp with the backend's statuses.
const revokeExitCodesHelp = `
exit status:
  0  success: revoked in Redis and published; with -backend, the backend
     no longer answers active for any of the revoked sessions
  1  the operation failed: Redis unreachable, credentials refused, TLS
     failure, a revocation not written; or, with -backend, the revocation
     was written but the backend could not be asked
  2  bad usage or input, such as an invalid id (no Redis command is sent)
  4  revoked in Redis only: the backend still answers active, so the
     revocation is lost with the Redis record (flush, eviction, restart
     without persistence, DEL) until the backend revokes the session too
`

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
	backendURL := fs.String("backend", os.Getenv(backendEnv),
		"session backend base URL (http[s]://host:port; default $"+backendEnv+"): after the revocation, ask it whether each revoked session is still active (exit status 4 if so)")
	const backendHelp = `

With -backend (or $` + backendEnv + `), it then asks the backend (GET
/api/v1/internal/sessions/{id}, each call bounded by -timeout) about every
revoked session. A revocation the backend knows survives any loss of Redis
data: a lookup that finds no record asks the backend, which answers revoked.
One made only in Redis lives as long as its record: when the backend still
answers active, a warning goes to stderr and the exit status is 4. Without a
backend, a note on stderr says the revocation was not checked.`
	if what == "session" {
		setUsageStatuses(fs, "revoke [flags] <session-id>",
			`Revokes one device session exactly as the library does (rediscache
RevokeSession): one Lua script sets status revoked (a tombstone if Redis has
no record), keeps an earlier revoked_at_ms, sets the TTL to at least
-session-ttl, takes the stripe's next seq, appends to the stripe's log and
PUBLISHes the message, which it prints with the receiver count. Revoking a
revoked session publishes again.`+backendHelp, revokeExitCodesHelp)
	} else {
		setUsageStatuses(fs, "revoke-user [flags] <user-id>",
			`Revokes every session of a user exactly as the library does (rediscache
RevokeUser): sets the user's revocation marker (refusing fills of the user for
-fill-window), publishes the user message, then revokes and publishes each
session in the user's index. Safe to repeat after a failure.`+backendHelp, revokeExitCodesHelp)
	}
	pos, code := parseArgs(fs, args, stderr)
	if code >= 0 {
		return code
	}
	id, err := one(pos, what+" id")
	if err == nil {
		err = checkID(what, id)
	}
	var be *backend.Client
	if err == nil && *backendURL != "" {
		// backend.New's errors never quote the URL.
		if be, err = backend.New(backend.Options{BaseURL: *backendURL, Timeout: f.timeout}); err != nil {
			err = fmt.Errorf("%w: -backend: %w", errUsage, err)
		} else {
			defer be.CloseIdleConnections()
		}
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
	} else if be != nil {
		ids := rep.Sessions
		if what == "session" {
			ids = []string{id}
		}
		b := checkBackend(ctx, be, ids)
		rep.Backend = &b
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
	if be == nil {
		fmt.Fprintf(stderr, "sessionctl %s: note: no backend configured (-backend or $%s), so the backend was not asked: "+
			"unless it revoked %s too, this revocation lives only in Redis and is lost with the record (flush, eviction, restart without persistence, DEL)\n",
			name, backendEnv, map[string]string{"session": "the session", "user": "the user's sessions"}[what])
		return exitOK
	}
	return backendVerdict(stderr, name, rep)
}

// checkBackend asks the backend about each revoked session, at most
// backendCheckers at a time. Active lists the sessions still active there,
// sorted.
func checkBackend(ctx context.Context, be *backend.Client, ids []string) backendReport {
	type answer struct {
		status session.Status
		err    error
	}
	answers := make([]answer, len(ids))
	sem := make(chan struct{}, backendCheckers)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rec, err := be.Fetch(ctx, id)
			answers[i] = answer{rec.Status, err}
		})
	}
	wg.Wait()
	r := backendReport{Checked: len(ids), Active: []string{}}
	for i, a := range answers {
		switch {
		case errors.Is(a.err, session.ErrNotFound):
			r.NotFound++
		case a.err != nil:
			r.Failed++
			if r.Error == "" {
				r.Error = oneLine(a.err.Error())
			}
		case a.status == session.StatusActive:
			r.Active = append(r.Active, ids[i])
		default:
			r.Revoked++
		}
	}
	slices.Sort(r.Active)
	return r
}

// backendVerdict prints the warning or the failure the backend's answers
// call for, on one line, and returns the exit status.
func backendVerdict(stderr io.Writer, name string, rep revokeReport) int {
	b := rep.Backend
	unanswered := ""
	if b.Failed > 0 {
		unanswered = fmt.Sprintf("; %d more could not be checked: %s", b.Failed, b.Error)
	}
	switch {
	case len(b.Active) > 0 && rep.Session != "":
		fmt.Fprintf(stderr, "sessionctl %s: WARNING: the backend still answers active for %s: this revocation lives only in Redis "+
			"and is lost with the record (flush, eviction, restart without persistence, DEL) until the backend revokes the session too\n",
			name, rep.Session)
		return exitRedisOnly
	case len(b.Active) > 0:
		fmt.Fprintf(stderr, "sessionctl %s: WARNING: the backend still answers active for %d of the %d revoked session(s) (%s): "+
			"these revocations live only in Redis and are lost with their records (flush, eviction, restart without persistence, DEL) "+
			"until the backend revokes them too%s\n",
			name, len(b.Active), b.Checked, strings.Join(b.Active, " "), unanswered)
		return exitRedisOnly
	case b.Failed > 0:
		fmt.Fprintf(stderr, "sessionctl %s: the revocation is written in Redis, but the backend could not be asked whether %d of the %d revoked session(s) are still active there: %s\n",
			name, b.Failed, b.Checked, b.Error)
		return exitFailure
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
	if r.Backend != nil {
		printBackend(w, r)
	}
}

// printBackend prints the backend's answers on one line.
func printBackend(w io.Writer, r revokeReport) {
	b := r.Backend
	if r.Session != "" {
		switch {
		case len(b.Active) > 0:
			fmt.Fprintln(w, "backend: ACTIVE: revoked in Redis only")
		case b.Revoked > 0:
			fmt.Fprintln(w, "backend: revoked: the revocation survives any loss of Redis data")
		case b.NotFound > 0:
			fmt.Fprintln(w, "backend: not found: a lookup that finds no Redis record is refused")
		default:
			fmt.Fprintf(w, "backend: no answer: %s\n", b.Error)
		}
		return
	}
	fmt.Fprintf(w, "backend: %d of %d revoked session(s) still active there", len(b.Active), b.Checked)
	if len(b.Active) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(b.Active, " "))
	}
	fmt.Fprintf(w, "; %d revoked, %d not found, %d not answered\n", b.Revoked, b.NotFound, b.Failed)
}

func listeners(n int64) string {
	if n < 0 {
		return "listeners unknown (PUBSUB NUMSUB failed)"
	}
	return fmt.Sprintf("%d listening (PUBSUB NUMSUB)", n)
}
