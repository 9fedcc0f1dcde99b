package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

func init() {
	// go-redis logs dial failures and retries to stderr through a
	// process-wide logger; the commands report each failure once, as one
	// line (see fail), so its lines would only repeat them.
	redis.SetLogger(quietLogger{})
}

// quietLogger discards go-redis's internal log lines.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// defaultTimeout bounds each Redis call of the incident commands.
const defaultTimeout = 2 * time.Second

// defaultListLimit is the default -limit of the commands that list a user's
// sessions: enough to read, few enough that a user with 100,000 sessions
// does not flood the terminal.
const defaultListLimit = 20

// redisFlags are the flags shared by the incident commands (inspect, revoke,
// revoke-user, watch, stats, doctor): how to reach Redis, and the library
// options that decide key names and what a revocation writes. They must
// match the fleet's rediscache.Options.
type redisFlags struct {
	conn       redisconn.Config
	prefix     string
	channel    string
	stripes    int
	sessionTTL time.Duration
	fillWindow time.Duration
	timeout    time.Duration
	json       bool
}

func (f *redisFlags) register(fs *flag.FlagSet) {
	f.conn.RegisterFlags(fs)
	fs.StringVar(&f.prefix, "prefix", "", "key and channel prefix (rediscache Options.Prefix)")
	fs.StringVar(&f.channel, "channel", "", "invalidation channel before the prefix (default "+session.DefaultChannel+")")
	fs.IntVar(&f.stripes, "stripes", 1, "keyspace stripes (rediscache Options.Stripes; more than 1 on Redis Cluster)")
	fs.DurationVar(&f.sessionTTL, "session-ttl", rediscache.DefaultSessionTTL, "minimum lifetime of a revoked record (rediscache Options.SessionTTL)")
	fs.DurationVar(&f.fillWindow, "fill-window", rediscache.DefaultFillWindow, "fills refused after a user-wide revocation (rediscache Options.FillWindow)")
	fs.DurationVar(&f.timeout, "timeout", defaultTimeout, "bound on the connection check and on each library call (read, revoke); must be under -fill-window/4")
	fs.BoolVar(&f.json, "json", false, jsonUsage)
}

// layout returns the key layout the flags describe. It needs no Redis.
func (f *redisFlags) layout() (rediscache.Layout, error) {
	return rediscache.NewLayout(f.prefix, f.channel, f.stripes)
}

// jsonUsage is the -json flag's help.
const jsonUsage = `print JSON on stdout; an error is then {"command":...,"error":...,"exit":N} on stdout`

// errUsage marks an error caused by the command line (exit status 2).
var errUsage = errors.New("bad usage")

// open validates the flags, builds the client and the Cache, and checks that
// Redis answers (PING within -timeout), so that a connection problem is
// reported once, with redisconn.Explain, before any work. The caller closes
// the returned client.
func (f *redisFlags) open(ctx context.Context, clientName string) (*rediscache.Cache, redis.UniversalClient, error) {
	if f.timeout <= 0 {
		return nil, nil, fmt.Errorf("%w: -timeout must be positive", errUsage)
	}
	if 4*f.timeout >= f.fillWindow {
		return nil, nil, fmt.Errorf("%w: -fill-window %v must exceed 4 × -timeout (%v)", errUsage, f.fillWindow, f.timeout)
	}
	if _, err := f.layout(); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	conf := f.conn
	conf.ClientName = clientName
	conf.DialerRetries = 1 // "unreachable" at once, not a timeout after retries
	rdb, err := conf.NewClient()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	c, err := rediscache.New(rdb, rediscache.Options{
		Prefix:      f.prefix,
		Channel:     f.channel,
		Stripes:     f.stripes,
		SessionTTL:  f.sessionTTL,
		FillWindow:  f.fillWindow,
		CallTimeout: f.timeout,
	})
	if err != nil {
		_ = rdb.Close()
		return nil, nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	pctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if err := redisconn.Ping(pctx, rdb); err != nil {
		_ = rdb.Close()
		if answer, ok := protocolError(err); ok {
			return nil, nil, fmt.Errorf("not a Redis server at %s: it answered %s (check the -redis host and port)", urlHost(f.conn.URL), answer)
		}
		if errors.Is(err, context.DeadlineExceeded) && strings.HasPrefix(f.conn.URL, "rediss://") {
			// A TLS client waits for a handshake that a plaintext port
			// never answers.
			return nil, nil, &hintError{err: err, hint: "with rediss://, a port that speaks plaintext looks like this"}
		}
		return nil, nil, err
	}
	return c, rdb, nil
}

// protocolError reports whether err is go-redis failing to read a reply
// in the Redis protocol, as when the port belongs to an HTTP server, and
// returns the start of what the server answered, quoted as go-redis
// quotes it (at most 100 bytes, control bytes escaped).
func protocolError(err error) (string, bool) {
	msg := err.Error()
	if !strings.Contains(msg, "redis: can't parse") && !strings.Contains(msg, "redis: invalid reply") {
		return "", false
	}
	if i := strings.IndexByte(msg, '"'); i >= 0 {
		if q, err := strconv.QuotedPrefix(msg[i:]); err == nil {
			return q, true
		}
	}
	return "an unreadable reply", true
}

// urlHost is the host:port of a Redis URL, without credentials.
func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "the -redis address"
	}
	return u.Host
}

// fail reports an error (see report: one line, or JSON with -json) and
// returns the exit status it deserves (see describe).
func fail(stderr io.Writer, name string, err error) int {
	code, msg := describe(err)
	report(stderr, name, code, msg)
	return code
}

// describe returns the exit status an error deserves, exitUsage for errUsage
// and invalid ids and exitFailure otherwise, and a one-line message; Redis
// errors are explained for an operator (redisconn.Explain).
func describe(err error) (int, string) {
	switch {
	case errors.Is(err, errUsage):
		return exitUsage, oneLine(strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
	case errors.Is(err, session.ErrInvalidID):
		return exitUsage, oneLine(err.Error())
	}
	msg := redisconn.Explain(err)
	var h *hintError
	if errors.As(err, &h) {
		msg += " (" + h.hint + ")"
	}
	return exitFailure, oneLine(msg)
}

// hintError adds a likely cause to an error that Explain cannot tell.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + " (" + e.hint + ")" }
func (e *hintError) Unwrap() error { return e.err }

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

const exitCodesHelp = `
exit status:
  0  success
  1  the operation failed: Redis unreachable, credentials refused, TLS
     failure, a record not found or invalid, a revocation not written
  2  bad usage or input, such as an invalid id (no Redis command is sent)
`

// checkID validates a device session or user id before anything connects.
func checkID(what, id string) error {
	if what == "user" {
		return session.ValidateUserID(id)
	}
	return session.ValidateID(id)
}

// one returns the single positional argument, or a usage error. An extra
// argument that starts with '-' is likely a mistyped flag, taken as an id
// (see idsHelp): the error says so.
func one(pos []string, what string) (string, error) {
	if len(pos) != 1 {
		hint := ""
		for _, a := range pos {
			if strings.HasPrefix(a, "-") && len(pos) > 1 {
				hint = fmt.Sprintf(" (%q is taken as an id: there is no flag %s)", a, a)
				break
			}
		}
		return "", fmt.Errorf("%w: want exactly one %s, got %d arguments%s", errUsage, what, len(pos), hint)
	}
	return pos[0], nil
}

// forEachNode runs fn on every master (masters true) or every node of a
// Redis Cluster, concurrently, or once on a single Redis (Sentinel
// included). fn must be safe for concurrent use.
func forEachNode(ctx context.Context, rdb redis.UniversalClient, masters bool, fn func(ctx context.Context, c *redis.Client) error) error {
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		if masters {
			return c.ForEachMaster(ctx, fn)
		}
		return c.ForEachShard(ctx, fn)
	case *redis.Client:
		return fn(ctx, c)
	}
	return fmt.Errorf("unsupported client type %T", rdb)
}

// redisTime returns the Redis server time (the one clock the library uses
// for revoked_at_ms and at_ms).
func redisTime(ctx context.Context, rdb redis.UniversalClient) (time.Time, error) {
	return rdb.Time(ctx).Result()
}

// fmtMS formats Unix milliseconds as RFC 3339 in UTC with milliseconds.
func fmtMS(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// fmtAge rounds an age for people: 1.234s, 3m12s, 5h0m0s.
func fmtAge(d time.Duration) string {
	switch {
	case d < 0:
		return "in the future by " + fmtAge(-d)
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := underlying(w).(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// lockedWriter serialises writes from goroutines (cluster nodes are
// scanned concurrently).
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
