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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

func init() {
	register("revoke", "revoke one session: write revoked in Redis, then publish", runRevoke)
	register("revoke-user", "revoke every session of a user: marker, sessions marked, then one user message", runRevokeUser)
}

// revokeReport is what revoke and revoke-user print.
type revokeReport struct {
	Session string          `json:"session,omitempty"`
	User    string          `json:"user,omitempty"`
	Channel string          `json:"channel"`
	Message json.RawMessage `json:"message,omitempty"` // the user or session message, as published
	// Sessions are the sessions revoke-user marked revoked (no message
	// of their own: the user message covers them), sorted, all of them
	// (the text lists -limit).
	Sessions []string `json:"sessions,omitempty"`
	// Published counts the messages published; NoReceivers those that no
	// subscriber received (PUBLISH returned 0). On a cluster PUBLISH counts
	// only the subscribers of the node that ran it (PerNode).
	Published   uint64 `json:"published"`
	NoReceivers uint64 `json:"published_no_receivers"`
	// AnnouncedBefore is true when the session was revoked and announced
	// by an earlier revocation: Message is that announcement, and nothing
	// was published again.
	AnnouncedBefore bool `json:"announced_before,omitempty"`
	PerNode         bool `json:"receivers_per_node,omitempty"`
	// Listeners is PUBSUB NUMSUB of the channel just before the
	// revocation, summed over the nodes (-1 when it could not be read). Watchers counts the
	// connections in subscriber mode named sessionctl-watch (CLIENT LIST
	// TYPE pubsub, every node; -1 when it could not be read, as by the
	// gateway ACL user). Gateways is Listeners minus Watchers: the gateway
	// replicas listening (-1: unknown).
	Listeners int64 `json:"listeners"`
	Watchers  int64 `json:"watchers"`
	Gateways  int64 `json:"gateway_subscribers"`
	// Unheard is true when no gateway subscriber heard the revocation:
	// no subscriber received it, or only sessionctl watch connections
	// listened (exit status 5).
	Unheard bool   `json:"unheard,omitempty"`
	Error   string `json:"error,omitempty"`
	// Backend is what the backend answered for the revoked sessions
	// afterwards; nil when no backend is configured or the revocation
	// failed.
	Backend *backendReport `json:"backend,omitempty"`
	// Exit is the command's exit status.
	Exit int `json:"exit"`
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

// revokeExitCodesHelp is exitCodesHelp with the backend's and the
// subscribers' statuses.
const revokeExitCodesHelp = `
exit status:
  0  success: revoked in Redis and published, and a gateway subscriber
     heard it; with -backend, the backend no longer answers active for any
     of the revoked sessions
  1  the operation failed: Redis unreachable or not a Redis server,
     credentials refused, TLS failure, a revocation not written; revoke-user
     found no session in the user's index (a misspelled user id?); or, with
     -backend, the revocation was written but the backend could not be asked
  2  bad usage or input, such as an invalid id (no Redis command is sent)
  4  revoked in Redis only: the backend still answers active, so the
     revocation is lost with the Redis record (flush, eviction, restart
     without persistence, DEL) until the backend revokes the session too
  5  written and published, but no gateway subscriber heard it: nobody
     received the message, or only sessionctl watch connections listened
     (gateways are told apart from watchers by the name sessionctl-watch
     in CLIENT LIST TYPE pubsub); 4 wins when both apply
`

// revokeProgressEvery is how many revoked sessions separate two progress
// lines of revoke-user.
const revokeProgressEvery = 1000

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
	const afterHelp = `

It counts the gateways listening, just before: PUBSUB NUMSUB of the channel
minus the connections named sessionctl-watch (CLIENT LIST TYPE pubsub). When no
subscriber received the message, or only watchers did, a warning goes to
stderr and the exit status is 5: the gateways are down or not subscribed
(sessionctl stats lists the subscribers), and each applies the revocation
from the log when it subscribes again.

With -backend (or $` + backendEnv + `), it then asks the backend (GET
/api/v1/internal/sessions/{id}, each call bounded by -timeout) about every
revoked session. A revocation the backend knows survives any loss of Redis
data: a lookup that finds no record asks the backend, which answers revoked.
One made only in Redis lives as long as its record: when the backend still
answers active, a warning goes to stderr and the exit status is 4. Without a
backend, a note on stderr says the revocation was not checked.`
	var progress *bool
	var limit *int
	if what == "session" {
		setUsageStatuses(fs, "revoke [flags] <session-id>",
			`Revokes one device session exactly as the library does (rediscache
RevokeSession): one Lua script sets status revoked (a tombstone if Redis has
no record), keeps an earlier revoked_at_ms, sets the TTL to at least
-session-ttl, takes the stripe's next seq, appends to the stripe's log and
PUBLISHes the message, which it prints with the receiver count, and records
its seq in the hash. Revoking a session revoked and announced that way
publishes nothing again: every gateway received that message or noticed the
gap in the numbers. It prints the earlier message and the redis-cli PUBLISH
that announces it again by hand.`+afterHelp, revokeExitCodesHelp)
	} else {
		progress = fs.Bool("progress", false, "print progress on stderr (sessions revoked of the index, elapsed time, time left) even when it is not a terminal")
		limit = fs.Int("limit", defaultListLimit, "list at most this many of the revoked sessions (0: all; -json lists all)")
		setUsageStatuses(fs, "revoke-user [flags] <user-id>",
			`Revokes every session of a user exactly as the library does (rediscache
RevokeUser), in this order:
  1. one Lua script sets the user's revocation marker (refusing fills of the
     user for -fill-window) and reads the user's index (up to 1,000
     sessions; a larger index is then read with SSCAN);
  2. each session of the index is marked revoked as revoke does (status
     revoked, TTL at least -session-ttl), up to 128 to a script, without a
     message of its own;
  3. then one script numbers, logs and publishes the user message: one
     message however many sessions the user has. Its at_ms is the time it
     was published, a few milliseconds after the marker's.
It prints the revoked sessions (up to -limit). A user with no session in
its index is reported (a misspelled id?) with exit status 1, after the
marker and the user message. Progress (sessions marked) goes to stderr when
it is a terminal or with -progress. Safe to repeat after a failure.`+afterHelp, revokeExitCodesHelp)
	}
	pos, code := parseArgs(fs, args, stderr)
	if code >= 0 {
		return code
	}
	id, err := one(pos, what+" id")
	if err == nil {
		err = checkID(what, id)
	}
	if err == nil && limit != nil && *limit < 0 {
		err = fmt.Errorf("%w: -limit must be >= 0", errUsage)
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
	// Counted before the revocation, which is what could hear it: a
	// subscriber that leaves once it has the message (watch -count 1)
	// still counts.
	rep.Listeners, rep.Watchers = subscribers(ctx, rdb, rep.Channel)
	rep.Gateways = gatewaySubscribers(rep.Listeners, rep.Watchers)
	var m session.Invalidation
	var revErr error
	if what == "session" {
		rep.Session = id
		m, revErr = c.RevokeSession(ctx, id)
	} else {
		rep.User = id
		prog := newProgress(*progress || isTerminal(stderr), stderr, "revoked", "sessions", 0, revokeProgressEvery, time.Now)
		if prog != nil {
			// Without the count (an ACL that refuses SCARD), progress
			// has no total.
			if n, err := indexSize(ctx, rdb, c.Layout(), id); err == nil {
				prog.setTotal(n)
			}
			rdb.AddHook(revokeCounter{prog: prog, layout: c.Layout()})
		}
		m, rep.Sessions, revErr = c.RevokeUser(ctx, id)
		prog.finish()
		slices.Sort(rep.Sessions)
	}
	if m.SessionID != "" || m.UserID != "" {
		if b, err := m.MarshalJSON(); err == nil {
			rep.Message = b
		}
	}
	st := c.Stats()
	rep.Published, rep.NoReceivers = st.Published, st.PublishedNoReceivers
	rep.AnnouncedBefore = st.AnnouncedBefore > 0
	_, rep.PerNode = rdb.(*redis.ClusterClient)
	rep.Unheard = rep.Published > 0 && (rep.Gateways == 0 || !rep.PerNode && rep.NoReceivers == rep.Published)

	// The verdict: the first that applies of a failure, an empty user, the
	// backend's answers (4, or 1 when it could not be asked), and no
	// gateway heard it (5). Every warning that applies is printed.
	var lines []string
	code = exitOK
	verdict := func(c int, line string) {
		if code == exitOK {
			code = c
		}
		lines = append(lines, line)
	}
	switch {
	case revErr != nil:
		code, rep.Error = describe(revErr)
		rep.Error = unredact(rep.Error, []string{id})
	case what == "user" && len(rep.Sessions) == 0:
		verdict(exitFailure, fmt.Sprintf("user %s has no session in its index (%s): nothing revoked but the user message and the marker; a misspelled user id, another -prefix, or sessions that expired?",
			id, indexKeys(c.Layout(), id)))
	case be != nil:
		ids := rep.Sessions
		if what == "session" {
			ids = []string{id}
		}
		b := checkBackend(ctx, be, ids)
		rep.Backend = &b
		var w strings.Builder
		if c := backendVerdict(&w, name, rep); c != exitOK {
			verdict(c, strings.TrimPrefix(strings.TrimSuffix(w.String(), "\n"), "sessionctl "+name+": "))
		}
	}
	if revErr == nil && rep.Unheard {
		verdict(exitUnheard, "WARNING: no gateway subscriber heard this revocation ("+heardBy(rep)+"): the gateways are down or not subscribed "+
			"(sessionctl stats lists the subscribers); each applies it from the log when it subscribes again")
	}
	rep.Exit = code

	if f.json {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			return fail(stderr, name, err)
		}
	} else {
		printRevoke(stdout, rep, limitOr(limit))
	}
	if revErr != nil {
		return fail(stderr, name, revErr)
	}
	for _, l := range lines {
		report(stderr, name, code, l)
	}
	if be == nil && code != exitFailure {
		fmt.Fprintf(stderr, "sessionctl %s: note: no backend configured (-backend or $%s), so the backend was not asked: "+
			"unless it revoked %s too, this revocation lives only in Redis and is lost with the record (flush, eviction, restart without persistence, DEL)\n",
			name, backendEnv, map[string]string{"session": "the session", "user": "the user's sessions"}[what])
	}
	return code
}

// indexSize is the number of sessions in a user's indexes, one per stripe,
// counted with SCARD in one pipeline.
func indexSize(ctx context.Context, rdb redis.UniversalClient, l rediscache.Layout, userID string) (int64, error) {
	pipe := rdb.Pipeline()
	cards := make([]*redis.IntCmd, l.Stripes())
	for k := range cards {
		cards[k] = pipe.SCard(ctx, l.UserSessionsKey(userID, k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	var n int64
	for _, c := range cards {
		n += c.Val()
	}
	return n, nil
}

// indexKeys names a user's indexes for a message: the key, or with several
// stripes the first and how many more.
func indexKeys(l rediscache.Layout, userID string) string {
	if l.Stripes() == 1 {
		return l.UserSessionsKey(userID, 0)
	}
	return fmt.Sprintf("%s and the other %d stripes'", l.UserSessionsKey(userID, 0), l.Stripes()-1)
}

// limitOr returns *limit, or 0 (no limit) for a command without -limit.
func limitOr(limit *int) int {
	if limit == nil {
		return 0
	}
	return *limit
}

// gatewaySubscribers is the number of gateway replicas listening: the
// channel's subscribers minus the sessionctl watch connections, -1 when
// the subscribers could not be counted. With the watchers unknown, every
// subscriber counts as a gateway.
func gatewaySubscribers(listeners, watchers int64) int64 {
	switch {
	case listeners < 0:
		return -1
	case watchers < 0:
		return listeners
	}
	return max(listeners-watchers, 0)
}

// heardBy says why no gateway heard a revocation.
func heardBy(r revokeReport) string {
	switch {
	case r.Listeners == 0:
		return "nobody is subscribed to " + r.Channel
	case r.Gateways == 0 && r.Watchers > 0:
		return fmt.Sprintf("the %d subscriber(s) are all sessionctl watch", r.Listeners)
	}
	return "no subscriber received it"
}

// revokeCounter is a go-redis hook that feeds revoke-user's progress with
// the sessions marked revoked. The library marks a user's sessions with
// scripts whose keys are session hashes only (mark_revoked, up to 128
// sessions a script), most in pipelines of EVALSHA and a single one
// without a pipeline, and sends EVAL again after NOSCRIPT; its other
// scripts (the marker and index read, the user message) name no session
// key. So each such script Redis ran without error is as many sessions
// done as it has keys.
type revokeCounter struct {
	prog   *progress
	layout rediscache.Layout // tells session hash keys from the others
}

func (revokeCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h revokeCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.prog.add(h.marked(cmd))
		return err
	}
}

func (h revokeCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		var n int64
		for _, c := range cmds {
			n += h.marked(c)
		}
		h.prog.add(n)
		return err
	}
}

// marked returns the sessions a command marked revoked: the number of keys
// of an EVAL or EVALSHA that succeeded and names session hashes only, else
// 0.
func (h revokeCounter) marked(cmd redis.Cmder) int64 {
	if name := cmd.Name(); (name != "eval" && name != "evalsha") || cmd.Err() != nil {
		return 0
	}
	args := cmd.Args() // eval, script or sha, numkeys, keys..., args...
	if len(args) < 3 {
		return 0
	}
	var n int
	switch v := args[2].(type) {
	case int:
		n = v
	case int64:
		n = int(v)
	default:
		return 0
	}
	if n <= 0 || len(args) < 3+n {
		return 0
	}
	for _, k := range args[3 : 3+n] {
		key, ok := k.(string)
		if !ok {
			return 0
		}
		if _, ok := h.layout.SessionIDOfKey(key); !ok {
			return 0
		}
	}
	return int64(n)
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

// subscribers returns PUBSUB NUMSUB of channel and the number of
// connections in subscriber mode named watchClientName, each summed over
// every node, or -1 for a figure that could not be read (the gateway ACL
// user may not run CLIENT LIST). A watch of another channel on the same
// Redis counts as a watcher too: the count of gateways errs low, towards
// the warning.
func subscribers(ctx context.Context, rdb redis.UniversalClient, channel string) (listeners, watchers int64) {
	var subs, watch atomic.Int64
	var watchErr atomic.Bool
	err := forEachNode(ctx, rdb, false, func(ctx context.Context, c *redis.Client) error {
		m, err := c.PubSubNumSub(ctx, channel).Result()
		if err != nil {
			return err
		}
		subs.Add(m[channel])
		list, err := c.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if err != nil {
			watchErr.Store(true)
			return nil
		}
		for _, cl := range parseClientList(c.Options().Addr, list) {
			if cl.Name == watchClientName {
				watch.Add(1)
			}
		}
		return nil
	})
	listeners, watchers = subs.Load(), watch.Load()
	if err != nil {
		listeners = -1
	}
	if err != nil || watchErr.Load() {
		watchers = -1
	}
	return listeners, watchers
}

func printRevoke(w io.Writer, r revokeReport, limit int) {
	switch {
	case r.Session != "" && r.AnnouncedBefore:
		fmt.Fprintf(w, "session %s was revoked and announced already; nothing published again\n", r.Session)
		fmt.Fprintf(w, "announced earlier on %s: %s\n", r.Channel, r.Message)
		fmt.Fprintf(w, "to announce it again by hand: redis-cli PUBLISH %s '{\"session\":\"%s\"}'\n", r.Channel, r.Session)
	case r.Session != "" && r.Message != nil:
		fmt.Fprintf(w, "revoked session %s\n", r.Session)
	case r.User != "" && r.Message != nil:
		fmt.Fprintf(w, "revoked user %s: marker set, then %d session(s) revoked, then the user message published\n", r.User, len(r.Sessions))
		shown := r.Sessions
		if limit > 0 && len(shown) > limit {
			shown = shown[:limit]
		}
		for _, id := range shown {
			fmt.Fprintf(w, "  %s\n", id)
		}
		if more := len(r.Sessions) - len(shown); more > 0 {
			fmt.Fprintf(w, "  … and %d more (-limit 0 lists them all)\n", more)
		}
	}
	if r.Message != nil && !r.AnnouncedBefore {
		fmt.Fprintf(w, "published on %s: %s\n", r.Channel, r.Message)
	}
	if r.Published > 1 {
		fmt.Fprintf(w, "published %d messages in all\n", r.Published)
	}
	switch {
	case r.Published == 0:
	case r.NoReceivers == 0:
		fmt.Fprintf(w, "receivers: every message reached at least one subscriber; %s\n", listeners(r))
	case r.PerNode:
		fmt.Fprintf(w, "receivers: %d of %d messages had no subscriber on the node that published them (a cluster PUBLISH counts only that node's subscribers, and still reaches every node); %s\n",
			r.NoReceivers, r.Published, listeners(r))
	default:
		fmt.Fprintf(w, "receivers: %d of %d messages reached NO subscriber (replicas learn of them from the log when they resync); %s\n",
			r.NoReceivers, r.Published, listeners(r))
	}
	switch {
	case r.Published == 0:
	case r.Unheard:
		fmt.Fprintf(w, "gateways: NONE heard it (%s)\n", heardBy(r))
	case r.Gateways < 0:
		fmt.Fprintln(w, "gateways: unknown (PUBSUB NUMSUB failed)")
	default:
		fmt.Fprintf(w, "gateways: %d subscribed\n", r.Gateways)
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

// listeners describes the channel's subscribers: how many, and how many
// of them are sessionctl watch connections.
func listeners(r revokeReport) string {
	switch {
	case r.Listeners < 0:
		return "listeners unknown (PUBSUB NUMSUB failed)"
	case r.Watchers > 0:
		return fmt.Sprintf("%d listening (PUBSUB NUMSUB), %d of them sessionctl watch", r.Listeners, r.Watchers)
	case r.Watchers < 0:
		return fmt.Sprintf("%d listening (PUBSUB NUMSUB; CLIENT LIST refused, so watchers count as gateways)", r.Listeners)
	}
	return fmt.Sprintf("%d listening (PUBSUB NUMSUB)", r.Listeners)
}
