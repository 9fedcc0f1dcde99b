package main

// sessionctl doctor: checks the settings of the Redis a deployment relies
// on, one line per check, before an incident makes them matter.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redisconn"
	"github.com/galaxy-game/sessioncache/rediscache"
)

func init() {
	register("doctor", "check the Redis a deployment relies on: eviction, persistence, tracking, ACL, keys, subscribers", runDoctor)
}

// Check outcomes. A WARN does not fail doctor.
const (
	checkOK   = "ok"
	checkWarn = "WARN"
	checkFail = "FAIL"
)

// doctorCheck is the outcome of one check: one line of doctor's output,
// one element of its -json array.
type doctorCheck struct {
	Name   string `json:"check"`
	Status string `json:"status"` // ok, WARN or FAIL
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// aclCommand is a command a role sends, as Redis names it (the ACL rule is
// its lower-case name with '|' for the space: "CLIENT TRACKING" is
// +client|tracking), with the invocations doctor submits to ACL DRYRUN.
// A call's words are separated by spaces; <session>, <session-prefix>,
// <user-sessions>, <user-revoked>, <seq>, <log> and <channel> stand for the
// layout's key and channel names, so that DRYRUN checks the user's key and
// channel patterns too.
type aclCommand struct {
	name  string
	calls []string
}

// libraryCommands are the commands the library sends to Redis, directly or
// from its Lua scripts (which run with the caller's rights): what a gateway
// replica's Redis user needs. It must match rediscache (scripts.go,
// store.go, subscriber.go, replay.go): a command added there is added here
// and to the gateway user of deploy/redis/gateway.acl, which
// TestACLFileMatchesRoles compares with this table.
var libraryCommands = []aclCommand{
	{"PING", []string{"PING"}},
	{"CLIENT SETNAME", []string{"CLIENT SETNAME gatewayd-x"}},
	{"CLIENT ID", []string{"CLIENT ID"}},
	{"CLIENT TRACKING", []string{"CLIENT TRACKING on REDIRECT 1 BCAST PREFIX <session-prefix>"}},
	{"HGETALL", []string{"HGETALL <session>"}},
	{"EVALSHA", []string{"EVALSHA 0000000000000000000000000000000000000000 2 <session> <user-sessions>"}},
	{"EVAL", []string{"EVAL return(0) 3 <session> <seq> <log>"}},
	{"GET", []string{"GET <seq>", "GET <user-revoked>"}},
	{"XREVRANGE", []string{"XREVRANGE <log> + - COUNT 1"}},
	{"XRANGE", []string{"XRANGE <log> - + COUNT 100"}},
	{"SUBSCRIBE", []string{"SUBSCRIBE <channel>"}},
	{"WAIT", []string{"WAIT 1 100"}},
	{"TIME", []string{"TIME"}},
	{"HGET", []string{"HGET <session> status"}},
	{"HEXISTS", []string{"HEXISTS <session> revoked_at_ms"}},
	{"HSET", []string{"HSET <session> status revoked"}},
	{"HDEL", []string{"HDEL <session> revoked_at_ms"}},
	{"PTTL", []string{"PTTL <session>"}},
	{"PEXPIRE", []string{"PEXPIRE <session> 1000", "PEXPIRE <seq> 1000", "PEXPIRE <log> 1000"}},
	{"SADD", []string{"SADD <user-sessions> x"}},
	{"SMEMBERS", []string{"SMEMBERS <user-sessions>"}},
	{"SCARD", []string{"SCARD <user-sessions>"}},
	{"SSCAN", []string{"SSCAN <user-sessions> 0 COUNT 1000"}},
	{"SET", []string{"SET <user-revoked> 1 PX 20000"}},
	{"INCR", []string{"INCR <seq>"}},
	{"XADD", []string{"XADD <log> MAXLEN ~ 10000 * session x seq 1 at_ms 1"}},
	{"PUBLISH", []string{"PUBLISH <channel> x"}},
	{"DEL", []string{"DEL <session>"}},
	{"EXISTS", []string{"EXISTS <session>"}},
}

// runbookCommands are the commands of the README's runbook ("During an
// incident") and of sessionctl's read-only views (stats, doctor): what the
// operator user needs beyond the library's commands, which sessionctl
// revoke, revoke-user, inspect and watch send. The operator role is
// checked against both tables.
var runbookCommands = []aclCommand{
	{"HGETALL", []string{"HGETALL <session>"}},
	{"HSET", []string{"HSET <session> status revoked"}},
	{"HSETNX", []string{"HSETNX <session> revoked_at_ms 1"}},
	{"HDEL", []string{"HDEL <session> revoked_at_ms"}},
	{"PTTL", []string{"PTTL <session>"}},
	{"PEXPIRE", []string{"PEXPIRE <session> 86400000"}},
	{"SMEMBERS", []string{"SMEMBERS <user-sessions>"}},
	{"GET", []string{"GET <user-revoked>", "GET <seq>"}},
	{"SET", []string{"SET <user-revoked> 1 PX 20000"}},
	{"TIME", []string{"TIME"}},
	{"PUBLISH", []string{"PUBLISH <channel> x"}},
	{"SUBSCRIBE", []string{"SUBSCRIBE <channel>"}},
	{"XREVRANGE", []string{"XREVRANGE <log> + - COUNT 10"}},
	{"PUBSUB NUMSUB", []string{"PUBSUB NUMSUB <channel>"}},
	{"CLIENT LIST", []string{"CLIENT LIST TYPE pubsub"}},
	{"SCAN", []string{"SCAN 0 MATCH <session-prefix>* COUNT 1000"}},
	{"INFO", []string{"INFO memory"}},
	{"MEMORY USAGE", []string{"MEMORY USAGE <session>"}},
	{"CONFIG GET", []string{"CONFIG GET maxmemory-policy"}},
	{"ACL WHOAMI", []string{"ACL WHOAMI"}},
	{"ACL DRYRUN", []string{"ACL DRYRUN default PING"}},
	{"DEL", []string{"DEL <session>"}},
}

// Roles of -role.
const (
	roleGateway  = "gateway"
	roleOperator = "operator"
)

// roleCommands returns the commands a role needs, each name once: the
// library's for gateway; the runbook's and the library's for operator.
func roleCommands(role string) []aclCommand {
	out := slices.Clone(libraryCommands)
	if role != roleOperator {
		return out
	}
	for _, c := range runbookCommands {
		i := slices.IndexFunc(out, func(o aclCommand) bool { return o.name == c.name })
		if i < 0 {
			out = append(out, c)
			continue
		}
		calls := slices.Clone(out[i].calls)
		for _, call := range c.calls {
			if !slices.Contains(calls, call) {
				calls = append(calls, call)
			}
		}
		out[i].calls = calls
	}
	return out
}

// aclRule returns the ACL rule that grants a command: "+client|tracking".
func aclRule(name string) string {
	return "+" + strings.ToLower(strings.ReplaceAll(name, " ", "|"))
}

// doctorOptions are doctor's settings beyond the connection.
type doctorOptions struct {
	layout         rediscache.Layout
	prefix         string
	role           string
	aclUser        string // "" means ACL WHOAMI
	expectReplicas int
	timeout        time.Duration // bounds each check
}

const doctorExitCodesHelp = `
exit status:
  0  every check passed (WARN lines do not fail)
  1  a check failed, or Redis could not be reached (credentials, TLS)
  2  bad usage
`

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	var f redisFlags
	f.register(fs)
	var o doctorOptions
	fs.StringVar(&o.role, "role", roleGateway, "whose commands the ACL check covers: gateway (the library's) or operator (the runbook's and the library's)")
	fs.StringVar(&o.aclUser, "acl-user", "", "the Redis user whose ACL is checked (default: the connecting user, ACL WHOAMI); checking another user needs ACL DRYRUN")
	fs.IntVar(&o.expectReplicas, "expect-replicas", 0, "gateway replicas that must be subscribed to the channel (0: skip the subscriber check)")
	setUsageStatuses(fs, "doctor [flags]",
		`Checks the Redis a deployment relies on and prints one line per check,
"ok", "WARN" or "FAIL", with the reason and, for a failure, the fix:

  maxmemory-policy  noeviction is safe. Every key the cache writes carries a
                    TTL, so volatile-* evicts session records, seq and log
                    keys as readily as allkeys-*: a revoked record can
                    vanish.
  persistence       AOF (appendonly yes) or RDB (save): without either, a
                    restart loses every revocation made only in Redis.
  tracking          CLIENT TRACKING, by which replicas learn of hand edits,
                    DEL, expiry, eviction and flushes.
  acl               ACL DRYRUN of every command the -role sends, on the
                    layout's keys and channel, for the connecting user
                    (ACL WHOAMI) or -acl-user.
  seq/log keys      each stripe's seq and log key: missing is a WARN (normal
                    on a fresh Redis; after a loss, replicas drop their L1
                    active entries at their next resync).
  subscribers       with -expect-replicas N, at least N subscribers on the
                    channel (PUBSUB NUMSUB), named from CLIENT LIST.

On Redis Cluster every node is checked (CONFIG and ACLs are per node).
Each check is bounded by -timeout. -json prints the checks as a JSON array.`, doctorExitCodesHelp)
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	var err error
	switch {
	case o.role != roleGateway && o.role != roleOperator:
		err = fmt.Errorf("%w: -role must be %s or %s, not %q", errUsage, roleGateway, roleOperator, o.role)
	case o.expectReplicas < 0:
		err = fmt.Errorf("%w: -expect-replicas must be >= 0", errUsage)
	case strings.ContainsFunc(o.aclUser, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		err = fmt.Errorf("%w: -acl-user must not contain spaces or control characters", errUsage)
	}
	if err != nil {
		return fail(stderr, "doctor", err)
	}
	c, rdb, err := f.open(ctx, "sessionctl-doctor")
	if err != nil {
		return fail(stderr, "doctor", err)
	}
	defer rdb.Close()
	o.layout, o.prefix, o.timeout = c.Layout(), f.prefix, f.timeout

	checks := diagnose(ctx, rdb, o)
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(checks); err != nil {
			return fail(stderr, "doctor", err)
		}
	} else {
		for _, ch := range checks {
			fmt.Fprintln(stdout, ch.line())
		}
	}
	if slices.ContainsFunc(checks, func(ch doctorCheck) bool { return ch.Status == checkFail }) {
		return exitFailure
	}
	return exitOK
}

// line formats a check as doctor prints it.
func (ch doctorCheck) line() string {
	s := fmt.Sprintf("%s %s: %s", ch.Status, ch.Name, ch.Detail)
	if ch.Fix != "" {
		s += "; fix: " + ch.Fix
	}
	return oneLine(s)
}

// diagnose runs every check, in the order doctor prints them.
func diagnose(ctx context.Context, rdb redis.UniversalClient, o doctorOptions) []doctorCheck {
	bounded := func(check func(ctx context.Context) doctorCheck) doctorCheck {
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		return check(cctx)
	}
	perNode := func(name string, check func(ctx context.Context, node *redis.Client) doctorCheck) doctorCheck {
		return bounded(func(ctx context.Context) doctorCheck { return onEveryNode(ctx, rdb, name, check) })
	}
	checks := []doctorCheck{
		perNode("maxmemory-policy", checkEviction),
		perNode("persistence", checkPersistence),
		perNode("tracking", checkTracking),
		perNode("acl", func(ctx context.Context, node *redis.Client) doctorCheck { return checkACL(ctx, node, o) }),
		bounded(func(ctx context.Context) doctorCheck { return checkLogKeys(ctx, rdb, o.layout) }),
	}
	if o.expectReplicas > 0 {
		checks = append(checks, bounded(func(ctx context.Context) doctorCheck {
			return checkSubscribers(ctx, rdb, o.layout.Channel(), o.expectReplicas)
		}))
	}
	return checks
}

// onEveryNode runs check on every node of a cluster (or on the one Redis)
// and merges the outcomes into one check: the same outcome everywhere is
// reported once; otherwise the worst status, with each node's detail.
func onEveryNode(ctx context.Context, rdb redis.UniversalClient, name string, check func(ctx context.Context, node *redis.Client) doctorCheck) doctorCheck {
	type result struct {
		addr string
		ch   doctorCheck
	}
	var (
		mu      sync.Mutex // guards results
		results []result
	)
	err := forEachNode(ctx, rdb, false, func(ctx context.Context, node *redis.Client) error {
		ch := check(ctx, node)
		ch.Name = name
		mu.Lock()
		defer mu.Unlock()
		results = append(results, result{node.Options().Addr, ch})
		return nil
	})
	if err != nil || len(results) == 0 {
		return cannotCheck(name, "listing the nodes", err)
	}
	if len(results) == 1 {
		return results[0].ch
	}
	slices.SortFunc(results, func(a, b result) int { return strings.Compare(a.addr, b.addr) })
	same := true
	for _, r := range results[1:] {
		same = same && r.ch == results[0].ch
	}
	if same {
		ch := results[0].ch
		ch.Detail += fmt.Sprintf(" (every node, %d)", len(results))
		return ch
	}
	merged := doctorCheck{Name: name, Status: checkOK}
	var details []string
	for _, r := range results {
		details = append(details, r.addr+": "+r.ch.Detail)
		if rank(r.ch.Status) > rank(merged.Status) {
			merged.Status, merged.Fix = r.ch.Status, r.ch.Fix
		}
	}
	merged.Detail = strings.Join(details, " | ")
	return merged
}

// rank orders the statuses: FAIL is worst.
func rank(status string) int {
	return map[string]int{checkOK: 0, checkWarn: 1, checkFail: 2}[status]
}

// cannotCheck is the failure of a check whose command (what) did not run.
func cannotCheck(name, what string, err error) doctorCheck {
	ch := doctorCheck{Name: name, Status: checkFail, Detail: "cannot check: " + what + " failed", Fix: "run doctor again when Redis answers"}
	if err != nil {
		ch.Detail += ": " + redisconn.Explain(err)
	}
	if refused(err) {
		ch.Fix = "run doctor as a user who may run " + what + " (the operator user of deploy/redis/gateway.acl may)"
	}
	return ch
}

// refused reports whether err is Redis refusing a command: not permitted
// (NOPERM), or unknown (renamed, disabled, too old a Redis, a proxy).
func refused(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "NOPERM") || strings.HasPrefix(msg, "ERR unknown command") || strings.HasPrefix(msg, "ERR unknown subcommand")
}

// configFix is the fix for a refused CONFIG GET.
const configFix = "grant the user +config|get (the operator user of deploy/redis/gateway.acl has it) or run doctor as a user who may; " +
	"on a managed Redis, read the setting in the provider's console"

// configGet returns one configuration parameter, and whether CONFIG GET
// was refused (err is then the refusal).
func configGet(ctx context.Context, node *redis.Client, param string) (string, bool, error) {
	m, err := node.ConfigGet(ctx, param).Result()
	if err != nil {
		return "", refused(err), err
	}
	v, ok := m[param]
	if !ok {
		return "", true, fmt.Errorf("CONFIG GET %s returned nothing", param)
	}
	return v, false, nil
}

// checkEviction checks maxmemory-policy: only noeviction keeps every
// record; a full Redis then refuses writes, and a revocation falls back to
// what Redis still runs (DEL and PUBLISH).
func checkEviction(ctx context.Context, node *redis.Client) doctorCheck {
	ch := doctorCheck{Name: "maxmemory-policy"}
	policy, denied, err := configGet(ctx, node, "maxmemory-policy")
	switch {
	case denied:
		ch.Status, ch.Detail, ch.Fix = checkFail, "unknown (CONFIG GET refused: "+redisconn.Explain(err)+")", configFix
	case err != nil:
		return cannotCheck(ch.Name, "CONFIG GET", err)
	case policy == "noeviction":
		ch.Status, ch.Detail = checkOK, "noeviction: Redis evicts nothing; when full it refuses writes, and a revocation falls back to DEL and PUBLISH"
	case strings.HasPrefix(policy, "allkeys-"), strings.HasPrefix(policy, "volatile-"):
		ch.Status = checkFail
		ch.Detail = policy + ": a full Redis evicts keys, and every key the cache writes carries a TTL, so volatile-* evicts " +
			"session records, seq and log keys as readily as allkeys-*: a revoked record can vanish, and a revocation made only in Redis with it"
		ch.Fix = "CONFIG SET maxmemory-policy noeviction, and the same in redis.conf (maxmemory-policy noeviction)"
	default:
		ch.Status, ch.Detail = checkFail, fmt.Sprintf("%q: not a policy this check knows", policy)
		ch.Fix = "CONFIG SET maxmemory-policy noeviction, and the same in redis.conf"
	}
	return ch
}

// checkPersistence checks that a restart keeps the data: AOF, or RDB
// snapshots.
func checkPersistence(ctx context.Context, node *redis.Client) doctorCheck {
	ch := doctorCheck{Name: "persistence"}
	aof, denied, err := configGet(ctx, node, "appendonly")
	var save string
	if err == nil {
		save, denied, err = configGet(ctx, node, "save")
	}
	switch {
	case denied:
		ch.Status, ch.Detail, ch.Fix = checkFail, "unknown (CONFIG GET refused: "+redisconn.Explain(err)+")", configFix
	case err != nil:
		return cannotCheck(ch.Name, "CONFIG GET", err)
	case aof == "yes":
		ch.Status, ch.Detail = checkOK, "AOF on (appendonly yes)"
	case strings.TrimSpace(save) != "":
		ch.Status, ch.Detail = checkOK, fmt.Sprintf("RDB snapshots (save %q; appendonly no): a restart loses what was written since the last snapshot", save)
	default:
		ch.Status = checkFail
		ch.Detail = `none (appendonly no, save ""): a restart loses every session record and every revocation made only in Redis (sessionctl revoke, redis-cli)`
		ch.Fix = "CONFIG SET appendonly yes, and the same in redis.conf (appendonly yes)"
	}
	return ch
}

// checkTracking checks that Redis accepts CLIENT TRACKING, by which
// replicas learn of changes the channel does not carry. "CLIENT TRACKING
// off" changes nothing on a connection that does not track.
func checkTracking(ctx context.Context, node *redis.Client) doctorCheck {
	ch := doctorCheck{Name: "tracking"}
	err := node.Do(ctx, "CLIENT", "TRACKING", "off").Err()
	switch {
	case err == nil:
		ch.Status, ch.Detail = checkOK, "CLIENT TRACKING accepted: replicas learn of hand edits, DEL, expiry, eviction and flushes"
	case refused(err):
		ch.Status = checkFail
		ch.Detail = "CLIENT TRACKING refused (" + redisconn.Explain(err) + "): replicas then see only the library's revocations, " +
			"not hand edits, DEL, expiry, eviction or flushes"
		ch.Fix = "grant the user +client|tracking and +client|id (deploy/redis/gateway.acl); tracking needs Redis 6 or later, without a proxy that hides it"
	default:
		return cannotCheck(ch.Name, "CLIENT TRACKING", err)
	}
	return ch
}

// checkACL submits every command of the role to ACL DRYRUN for the user,
// with the layout's keys and channel.
func checkACL(ctx context.Context, node *redis.Client, o doctorOptions) doctorCheck {
	ch := doctorCheck{Name: "acl"}
	user := o.aclUser
	if user == "" {
		var err error
		if user, err = node.Do(ctx, "ACL", "WHOAMI").Text(); err != nil {
			if !refused(err) {
				return cannotCheck(ch.Name, "ACL WHOAMI", err)
			}
			ch.Status, ch.Detail = checkFail, "cannot check: ACL WHOAMI refused ("+redisconn.Explain(err)+")"
			ch.Fix = "grant the user +acl|whoami and +acl|dryrun (the operator user of deploy/redis/gateway.acl has them), or run doctor as such a user with -acl-user <user>"
			return ch
		}
	}
	names := strings.NewReplacer(
		"<session>", o.layout.SessionKey("doctor-probe"),
		"<session-prefix>", o.layout.SessionKeyPrefix(),
		"<user-sessions>", o.layout.UserSessionsKey("doctor-probe", 0),
		"<user-revoked>", o.layout.UserRevokedKey("doctor-probe", 0),
		"<seq>", o.layout.SeqKey(0),
		"<log>", o.layout.LogKey(0),
		"<channel>", o.layout.Channel(),
	)
	type probe struct {
		name string
		cmd  *redis.Cmd
	}
	cmds := roleCommands(o.role)
	var probes []probe
	pipe := node.Pipeline()
	for _, c := range cmds {
		for _, call := range c.calls {
			args := []any{"ACL", "DRYRUN", user}
			for _, w := range strings.Fields(call) {
				args = append(args, names.Replace(w))
			}
			probes = append(probes, probe{c.name, pipe.Do(ctx, args...)})
		}
	}
	_, _ = pipe.Exec(ctx) // each reply is read below

	var commands, keys, channels []string // denied
	addOnce := func(list *[]string, s string) {
		if !slices.Contains(*list, s) {
			*list = append(*list, s)
		}
	}
	for _, p := range probes {
		reply, err := p.cmd.Text()
		switch {
		case refused(err):
			ch.Status, ch.Detail = checkFail, "cannot check: ACL DRYRUN refused ("+redisconn.Explain(err)+")"
			ch.Fix = "grant the user +acl|dryrun (the operator user of deploy/redis/gateway.acl has it; ACL DRYRUN needs Redis 7.0), " +
				"or run doctor as such a user with -acl-user " + user
			return ch
		case err != nil && strings.Contains(err.Error(), "not found"):
			ch.Status, ch.Detail = checkFail, fmt.Sprintf("user %q does not exist (%s)", user, oneLine(err.Error()))
			ch.Fix = "create the user from deploy/redis/gateway.acl, or name the right one with -acl-user"
			return ch
		case err != nil:
			return cannotCheck(ch.Name, "ACL DRYRUN "+p.name, err)
		case reply == "OK":
		case strings.HasSuffix(reply, "' key"):
			addOnce(&keys, quoted(reply))
		case strings.HasSuffix(reply, "' channel"):
			addOnce(&channels, quoted(reply))
		case strings.HasSuffix(reply, "' command"):
			addOnce(&commands, p.name)
		default:
			addOnce(&commands, p.name+" ("+reply+")")
		}
	}
	if len(commands)+len(keys)+len(channels) == 0 {
		ch.Status = checkOK
		ch.Detail = fmt.Sprintf("user %s may run the %d commands of the %s role on the layout's keys and channel (ACL DRYRUN)", user, len(cmds), o.role)
		return ch
	}
	var denied, rules []string
	if len(commands) > 0 {
		denied = append(denied, "commands "+strings.Join(commands, ", "))
		for _, c := range commands {
			name, _, _ := strings.Cut(c, " (")
			rules = append(rules, aclRule(name))
		}
	}
	if len(keys) > 0 {
		denied = append(denied, "keys "+strings.Join(keys, ", "))
		rules = append(rules, "~"+o.prefix+"session:*", "~"+o.prefix+"user:*", "~"+o.prefix+"session_invalidation:*")
	}
	if len(channels) > 0 {
		denied = append(denied, "channel "+strings.Join(channels, ", "))
		rules = append(rules, "&"+o.layout.Channel())
	}
	ch.Status = checkFail
	ch.Detail = fmt.Sprintf("user %s lacks what the %s role needs (ACL DRYRUN): %s", user, o.role, strings.Join(denied, "; "))
	ch.Fix = "add to the user's ACL: " + strings.Join(rules, " ") + " (deploy/redis/gateway.acl has the " + o.role + " user)"
	return ch
}

// quoted returns what an ACL DRYRUN reply quotes: the key or channel in
// "This user has no permissions to access the 'k' key".
func quoted(reply string) string {
	i, j := strings.IndexByte(reply, '\''), strings.LastIndexByte(reply, '\'')
	if i < 0 || j <= i {
		return reply
	}
	return reply[i+1 : j]
}

// checkLogKeys checks that every stripe's seq and log keys exist. They are
// created by the first revocation of the stripe and live rediscache.LogTTL
// after the last one; a replica whose position is past a missing counter
// drops its L1 active entries when it next resyncs.
func checkLogKeys(ctx context.Context, rdb redis.UniversalClient, l rediscache.Layout) doctorCheck {
	ch := doctorCheck{Name: "seq/log keys"}
	var keys []string
	for k := range l.Stripes() {
		keys = append(keys, l.SeqKey(k), l.LogKey(k))
	}
	pipe := rdb.Pipeline()
	exists := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		exists[i] = pipe.Exists(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // each reply is read below
	var missing []string
	for i, c := range exists {
		n, err := c.Result()
		if err != nil {
			return cannotCheck(ch.Name, "EXISTS", err)
		}
		if n == 0 {
			missing = append(missing, keys[i])
		}
	}
	if len(missing) == 0 {
		ch.Status, ch.Detail = checkOK, fmt.Sprintf("the seq and log keys of all %d stripe(s) exist", l.Stripes())
		return ch
	}
	shown := missing
	if len(shown) > 6 {
		shown = append(slices.Clone(shown[:6]), "...")
	}
	ch.Status = checkWarn
	ch.Detail = fmt.Sprintf("%d of %d missing (%s): normal on a Redis that has seen no revocation (they live %d days after the last one); "+
		"otherwise they were lost (flush, eviction, restart without persistence), and replicas drop their L1 active entries at their next resync",
		len(missing), len(keys), strings.Join(shown, " "), int(rediscache.LogTTL.Hours()/24))
	return ch
}

// checkSubscribers compares the channel's subscribers, summed over the
// nodes, with the replicas expected, and names the connections in
// subscriber mode (replicas name theirs). Connections named
// sessionctl-watch are not replicas: they are not counted (when CLIENT
// LIST may be read).
func checkSubscribers(ctx context.Context, rdb redis.UniversalClient, channel string, want int) doctorCheck {
	ch := doctorCheck{Name: "subscribers"}
	var (
		mu       sync.Mutex // guards n, watchers, names, listErr
		n        int64
		watchers int64
		names    []string
		listErr  error
	)
	err := forEachNode(ctx, rdb, false, func(ctx context.Context, node *redis.Client) error {
		m, err := node.PubSubNumSub(ctx, channel).Result()
		if err != nil {
			return err
		}
		list, lerr := node.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		mu.Lock()
		defer mu.Unlock()
		n += m[channel]
		if lerr != nil {
			listErr = lerr
			return nil
		}
		for _, c := range parseClientList(node.Options().Addr, list) {
			name := c.Name
			if name == "" {
				name = "(unnamed)"
			}
			if name == watchClientName {
				watchers++
			}
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return cannotCheck(ch.Name, "PUBSUB NUMSUB", err)
	}
	on := channel
	if watchers > 0 && listErr == nil {
		n = max(n-watchers, 0)
		on = fmt.Sprintf("%s (and %d sessionctl watch, not counted)", channel, watchers)
	}
	slices.Sort(names)
	who := "connections in subscriber mode (any channel): " + strings.Join(names, ", ")
	switch {
	case listErr != nil:
		who = "names unknown (CLIENT LIST refused: " + redisconn.Explain(listErr) + ")"
	case len(names) == 0:
		who = "no connection in subscriber mode"
	}
	if n >= int64(want) {
		ch.Status = checkOK
		ch.Detail = fmt.Sprintf("%d subscriber(s) on %s, %d expected; %s", n, on, want, who)
		return ch
	}
	ch.Status = checkFail
	ch.Detail = fmt.Sprintf("%d subscriber(s) on %s, %d expected (-expect-replicas): a replica that is not subscribed hears no revocation: "+
		"it serves L1 active entries for up to its StaleBound, then reads Redis on every lookup; %s", n, on, want, who)
	ch.Fix = "find the replicas missing from the names (gatewayd -name) and read their subscriber logs or restart them; sessionctl stats lists the connections"
	return ch
}
