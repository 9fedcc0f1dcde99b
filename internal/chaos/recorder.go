package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// L2Kind is the kind of a Redis-level operation on one session's hash.
type L2Kind int

// The operations the recorder sees.
const (
	L2Read   L2Kind = iota + 1 // HGETALL session:<id>
	L2Fill                     // the fill script (or, with GuardedFill disabled, a plain HSET)
	L2Revoke                   // the revoke_session script
	L2Flush                    // a redis-server restart: every hash is gone
	L2Unfill                   // the unfill script: an active record taken back after Redis lost data
	L2Delete                   // DEL of a session hash: a refused revocation's fallback, an operator, eviction
)

func (k L2Kind) String() string {
	switch k {
	case L2Read:
		return "read"
	case L2Fill:
		return "fill"
	case L2Revoke:
		return "revoke"
	case L2Flush:
		return "flush"
	case L2Unfill:
		return "unfill"
	case L2Delete:
		return "delete"
	}
	return "L2Kind(" + strconv.Itoa(int(k)) + ")"
}

// Register states and outputs of the L2 model.
const (
	StateNone    = "none"
	StateActive  = "active"
	StateRevoked = "revoked"
	OutRefused   = "refused" // an active fill refused by its time limit: nothing written
	OutRemoved   = "removed" // an unfill that removed an active record
	OutKept      = "kept"    // an unfill that found no active record
)

// L2Op is one recorded operation. Call and Return are nanoseconds since the
// recorder's start; an operation whose outcome is unknown (a timeout, a
// broken connection) has Unknown set and Return at the end of time.
type L2Op struct {
	Kind    L2Kind
	Session string
	Replica string
	Status  string // fill: the status written
	Out     string // read and fill: the status Redis returned, or OutRefused
	Unknown bool
	Call    int64
	Return  int64
}

// Recorder records the Redis-level operations on session hashes made by
// the replicas' data clients, through a go-redis hook. It is safe for
// concurrent use.
type Recorder struct {
	start  time.Time
	prefix string // the session key prefix, "session:"

	mu  sync.Mutex // guards ops
	ops []L2Op
}

// NewRecorder returns a recorder for session keys that start with prefix.
func NewRecorder(start time.Time, prefix string) *Recorder {
	return &Recorder{start: start, prefix: prefix}
}

// Ops returns a copy of the recorded operations.
func (r *Recorder) Ops() []L2Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]L2Op(nil), r.ops...)
}

// Flush records a restart or a FLUSHDB that began at call and ended at ret.
func (r *Recorder) Flush(call, ret time.Time) {
	r.add(L2Op{Kind: L2Flush, Call: r.since(call), Return: r.since(ret)})
}

// Operator records a write to one session's hash made outside the
// replicas (redis-cli by hand): kind L2Revoke for HSET status revoked,
// L2Delete for DEL.
func (r *Recorder) Operator(kind L2Kind, id string, call, ret time.Time) {
	r.add(L2Op{Kind: kind, Session: id, Replica: "operator", Call: r.since(call), Return: r.since(ret)})
}

func (r *Recorder) since(t time.Time) int64 { return t.Sub(r.start).Nanoseconds() }

func (r *Recorder) add(op L2Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
}

// Hook returns the go-redis hook that records the commands of replica.
func (r *Recorder) Hook(replica string) redis.Hook { return recorderHook{r, replica} }

type recorderHook struct {
	r       *Recorder
	replica string
}

func (h recorderHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (h recorderHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		call := time.Now()
		err := next(ctx, cmd)
		// The command's own Err is set only after the hooks return.
		h.observe(cmd, err, call, time.Now())
		return err
	}
}

func (h recorderHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		call := time.Now()
		err := next(ctx, cmds)
		ret := time.Now()
		for _, cmd := range cmds {
			cerr := cmd.Err()
			if cerr == nil && err != nil && !answered(cmd) {
				cerr = err
			}
			h.observe(cmd, cerr, call, ret)
		}
		return err
	}
}

// answered reports whether a pipelined command holds a reply.
func answered(cmd redis.Cmder) bool {
	c, ok := cmd.(*redis.Cmd)
	return ok && c.Val() != nil
}

// observe records cmd, which returned err, if it touches a session hash.
func (h recorderHook) observe(cmd redis.Cmder, err error, call, ret time.Time) {
	if ids, ok := h.revokedBatch(cmd.Args()); ok {
		var rerr redis.Error
		if err != nil && errors.As(err, &rerr) {
			return
		}
		for _, id := range ids {
			h.r.add(L2Op{Kind: L2Revoke, Session: id, Replica: h.replica,
				Call: h.r.since(call), Return: h.r.since(ret), Unknown: err != nil})
		}
		return
	}
	op, ok := h.classify(cmd.Args())
	if !ok {
		return
	}
	op.Replica = h.replica
	op.Call = h.r.since(call)
	op.Return = h.r.since(ret)
	var rerr redis.Error
	switch {
	case err == nil:
	case errors.As(err, &rerr):
		// Redis answered with an error (NOSCRIPT before the EVAL
		// fallback, a refused command): nothing was written.
		return
	case op.Kind == L2Read:
		return // a failed read tells nothing
	default:
		// No answer: the write took effect or not. The data proxies
		// delay only replies, and a restart loses what was not
		// executed, so it did so, if at all, before the client gave up:
		// Return stays.
		op.Unknown = true
		h.r.add(op)
		return
	}
	switch op.Kind {
	case L2Read:
		c, ok := cmd.(*redis.MapStringStringCmd)
		if !ok {
			return
		}
		op.Out = statusOf(c.Val())
	case L2Fill:
		switch c := cmd.(type) {
		case *redis.Cmd: // the fill script: {now, "ok", HGETALL of the result...} or a refusal
			v, ok := c.Val().([]any)
			if !ok || len(v) < 2 {
				return
			}
			switch v[1] {
			case "ok":
				op.Out = statusOf(pairs(v[2:]))
			case "late", "marker":
				op.Out = OutRefused
			default:
				return
			}
		case *redis.IntCmd: // a plain HSET: it wrote what it was given
			op.Out = op.Status
		default:
			return
		}
	case L2Unfill:
		c, ok := cmd.(*redis.Cmd)
		if !ok {
			return
		}
		op.Out = OutKept
		if n, _ := c.Val().(int64); n == 1 {
			op.Out = OutRemoved
		}
	}
	h.r.add(op)
}

// revokedBatch recognises the scripts that revoke several sessions: the
// revoke_session script for n sessions (n session hashes, then the
// stripe's counter and log) and mark_revoked (session hashes only, with the
// TTL as its one argument). It returns their session ids.
func (h recorderHook) revokedBatch(args []any) ([]string, bool) {
	if len(args) < 4 {
		return nil, false
	}
	name := strings.ToLower(fmt.Sprint(args[0]))
	if name != "eval" && name != "evalsha" {
		return nil, false
	}
	n, err := strconv.Atoi(fmt.Sprint(args[2]))
	if err != nil || n < 1 || len(args) < 3+n {
		return nil, false
	}
	keys, argv := args[3:3+n], args[3+n:]
	var ids []string
	for _, k := range keys {
		id, ok := h.session(k)
		if !ok {
			break
		}
		ids = append(ids, id)
	}
	switch {
	case len(ids) == n && len(argv) == 1: // mark_revoked
		return ids, true
	case len(ids) == n-2 && n > 3: // revoke_session of several sessions
		return ids, true
	}
	return nil, false
}

// classify recognises the commands on session hashes from their arguments.
func (h recorderHook) classify(args []any) (L2Op, bool) {
	if len(args) < 2 {
		return L2Op{}, false
	}
	name := strings.ToLower(fmt.Sprint(args[0]))
	switch name {
	case "hgetall":
		id, ok := h.session(args[1])
		return L2Op{Kind: L2Read, Session: id}, ok
	case "del":
		id, ok := h.session(args[1])
		return L2Op{Kind: L2Delete, Session: id}, ok && len(args) == 2
	case "hset":
		id, ok := h.session(args[1])
		if !ok {
			return L2Op{}, false
		}
		op := L2Op{Kind: L2Fill, Session: id}
		for i := 2; i+1 < len(args); i += 2 {
			if fmt.Sprint(args[i]) == "status" {
				op.Status = fmt.Sprint(args[i+1])
			}
		}
		return op, op.Status != ""
	case "eval", "evalsha":
		if len(args) < 4 {
			return L2Op{}, false
		}
		n, err := strconv.Atoi(fmt.Sprint(args[2]))
		if err != nil || n < 1 || len(args) < 3+n {
			return L2Op{}, false
		}
		id, ok := h.session(args[3])
		if !ok {
			return L2Op{}, false
		}
		argv := args[3+n:]
		// A fill's keys are the session hash and, for a record with a
		// user, the user's index and marker.
		fill := n == 1 || n == 3 && strings.HasSuffix(fmt.Sprint(args[4]), ":sessions")
		switch {
		case fill && len(argv) >= 3: // fill: user, key, status, ...
			return L2Op{Kind: L2Fill, Session: id, Status: fmt.Sprint(argv[2])}, true
		case n == 1 && len(argv) == 0: // unfill
			return L2Op{Kind: L2Unfill, Session: id}, true
		case n == 3: // revoke_session: session hash, counter, log
			return L2Op{Kind: L2Revoke, Session: id}, true
		}
	}
	return L2Op{}, false
}

func (h recorderHook) session(key any) (string, bool) {
	k, ok := key.(string)
	if !ok || !strings.HasPrefix(k, h.r.prefix) {
		return "", false
	}
	return k[len(h.r.prefix):], true
}

func statusOf(h map[string]string) string {
	switch s := h["status"]; s {
	case "":
		return StateNone
	default:
		return s
	}
}

func pairs(v []any) map[string]string {
	m := make(map[string]string, len(v)/2)
	for i := 0; i+1 < len(v); i += 2 {
		k, _ := v[i].(string)
		val, _ := v[i+1].(string)
		m[k] = val
	}
	return m
}
