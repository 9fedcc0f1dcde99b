package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/rediscache"
	"github.com/galaxy-game/sessioncache/session"
)

func init() {
	register("stats", "sessions by status (SCAN), memory, channel subscribers and their names", runStats)
}

// progressEvery is how many scanned keys separate two progress lines.
const progressEvery = 10000

// sessionCounts are the session hashes found by status.
type sessionCounts struct {
	Active     int64 `json:"active"`
	Revoked    int64 `json:"revoked"`    // tombstones included
	Tombstones int64 `json:"tombstones"` // revoked, without user_id
	Invalid    int64 `json:"invalid"`    // unknown or missing status, or not a hash
	Vanished   int64 `json:"vanished"`   // expired between SCAN and the read
	NoTTL      int64 `json:"no_ttl"`     // keys without an expiry (should be 0)
}

// nodeStats describes one Redis node.
type nodeStats struct {
	Addr            string `json:"addr"`
	Master          bool   `json:"master"`
	UsedMemoryHuman string `json:"used_memory_human,omitempty"`
	Scanned         int64  `json:"scanned,omitempty"`
	NumSub          int64  `json:"numsub"`
}

// pubsubClient is one connection in subscriber mode (CLIENT LIST TYPE pubsub).
type pubsubClient struct {
	Node string `json:"node"`
	Addr string `json:"addr"`
	Name string `json:"name"`
	Age  int64  `json:"age_s"`
	Subs int64  `json:"channels"`
}

// statsReport is what stats prints.
type statsReport struct {
	Pattern string `json:"pattern"`
	// Scanned counts the session keys (those matching Pattern); Visited
	// every key SCAN returned.
	Scanned     int64          `json:"scanned"`
	Visited     int64          `json:"keys_visited"`
	Sessions    sessionCounts  `json:"sessions"`
	Channel     string         `json:"channel"`
	Subscribers int64          `json:"subscribers"` // PUBSUB NUMSUB, summed over nodes
	Clients     []pubsubClient `json:"subscriber_clients"`
	Nodes       []nodeStats    `json:"nodes"`
}

func runStats(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	var f redisFlags
	f.register(fs)
	progress := fs.Bool("progress", false, "print progress on stderr every 10000 keys even when it is not a terminal")
	batch := fs.Int("scan-count", 1000, "COUNT hint of each SCAN call")
	setUsage(fs, "stats [flags]",
		`SCANs every master for the layout's session keys (MATCH <prefix>session:*) and
counts them by status: active, revoked, tombstones (revoked before any tier
held the data), invalid, and keys without a TTL. It also prints each node's
INFO memory used_memory_human, the channel's PUBSUB NUMSUB, and the
connections in subscriber mode with their CLIENT SETNAME names (replicas
name theirs). SCAN is incremental and safe on a live server; it walks every
key of the database and counts those matching. Progress goes to stderr when
it is a terminal or with -progress, every 10000 keys and at the end: keys
scanned of the total (the DBSIZE figure, read from INFO keyspace), elapsed
time and an estimate of the time left.`)
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if *batch <= 0 {
		return fail(stderr, "stats", fmt.Errorf("%w: -scan-count must be positive", errUsage))
	}
	c, rdb, err := f.open(ctx, "sessionctl-stats")
	if err != nil {
		return fail(stderr, "stats", err)
	}
	defer rdb.Close()

	prog := newProgress(*progress || isTerminal(stderr), stderr, "scanned", "keys", 0, progressEvery, time.Now)
	rep, err := collectStats(ctx, c.Layout(), rdb, int64(*batch), prog)
	if err != nil {
		return fail(stderr, "stats", err)
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(stderr, "stats", err)
		}
		return exitOK
	}
	printStats(stdout, rep)
	return exitOK
}

// sessionPattern is the SCAN MATCH pattern of the layout's session hashes.
// It is derived from a real key so that it follows the layout: everything
// before "session:" is the prefix, which NewLayout keeps free of glob
// characters.
func sessionPattern(l rediscache.Layout) string {
	const probe = "x"
	k := l.SessionKey(probe)
	i := strings.LastIndex(k, "session:")
	return k[:i] + "session:*"
}

func collectStats(ctx context.Context, l rediscache.Layout, rdb redis.UniversalClient, batch int64, prog *progress) (statsReport, error) {
	rep := statsReport{Pattern: sessionPattern(l), Channel: l.Channel(), Clients: []pubsubClient{}}
	var (
		mu      sync.Mutex // guards rep.Sessions, rep.Nodes, rep.Clients
		scanned atomic.Int64
		visited atomic.Int64
		total   atomic.Int64
	)
	if prog != nil {
		err := forEachNode(ctx, rdb, true, func(ctx context.Context, node *redis.Client) error {
			n, err := keyCount(ctx, node)
			total.Add(n)
			return err
		})
		if err == nil { // else the progress goes without a total
			prog.setTotal(total.Load())
		}
	}
	err := forEachNode(ctx, rdb, true, func(ctx context.Context, node *redis.Client) error {
		counts, n, err := scanNode(ctx, node, strings.TrimSuffix(rep.Pattern, "*"), batch, func(keys int64) {
			visited.Add(keys)
			prog.add(keys)
		})
		if err != nil {
			return fmt.Errorf("scan %s: %w", node.Options().Addr, err)
		}
		scanned.Add(n)
		mem, err := usedMemory(ctx, node)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		rep.Sessions.add(counts)
		rep.Nodes = append(rep.Nodes, nodeStats{Addr: node.Options().Addr, Master: true, UsedMemoryHuman: mem, Scanned: n})
		return nil
	})
	prog.finish()
	if err != nil {
		return rep, err
	}
	rep.Visited = visited.Load()
	rep.Scanned = scanned.Load()

	err = forEachNode(ctx, rdb, false, func(ctx context.Context, node *redis.Client) error {
		addr := node.Options().Addr
		m, err := node.PubSubNumSub(ctx, rep.Channel).Result()
		if err != nil {
			return err
		}
		list, err := node.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if err != nil {
			return err
		}
		clients := parseClientList(addr, list)
		mu.Lock()
		defer mu.Unlock()
		rep.Subscribers += m[rep.Channel]
		rep.Clients = append(rep.Clients, clients...)
		i := slices.IndexFunc(rep.Nodes, func(n nodeStats) bool { return n.Addr == addr })
		if i < 0 {
			rep.Nodes = append(rep.Nodes, nodeStats{Addr: addr})
			i = len(rep.Nodes) - 1
		}
		rep.Nodes[i].NumSub = m[rep.Channel]
		return nil
	})
	if err != nil {
		return rep, err
	}
	slices.SortFunc(rep.Nodes, func(a, b nodeStats) int { return strings.Compare(a.Addr, b.Addr) })
	slices.SortFunc(rep.Clients, func(a, b pubsubClient) int {
		return strings.Compare(a.Name+" "+a.Node+" "+a.Addr, b.Name+" "+b.Node+" "+b.Addr)
	})
	return rep, nil
}

func (s *sessionCounts) add(o sessionCounts) {
	s.Active += o.Active
	s.Revoked += o.Revoked
	s.Tombstones += o.Tombstones
	s.Invalid += o.Invalid
	s.Vanished += o.Vanished
	s.NoTTL += o.NoTTL
}

// scanNode counts one node's session hashes, the keys that start with
// prefix, reading each batch's hashes and TTLs in one pipeline. It SCANs
// without MATCH, so that every key it visits counts towards the progress
// (with MATCH, Redis visits as many but returns only the matches), and
// calls visited with each batch's size. A hash counts as invalid when
// DecodeHash, which every lookup applies, rejects it. It returns the
// number of session keys.
func scanNode(ctx context.Context, node *redis.Client, prefix string, batch int64, visited func(int64)) (sessionCounts, int64, error) {
	var counts sessionCounts
	var total int64
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, "", batch).Result()
		if err != nil {
			return counts, total, err
		}
		sessions := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return !strings.HasPrefix(k, prefix) })
		if len(sessions) > 0 {
			pipe := node.Pipeline()
			hashes := make([]*redis.MapStringStringCmd, len(sessions))
			ttls := make([]*redis.DurationCmd, len(sessions))
			for i, k := range sessions {
				hashes[i] = pipe.HGetAll(ctx, k)
				ttls[i] = pipe.PTTL(ctx, k)
			}
			_, _ = pipe.Exec(ctx) // read per command: a non-hash key fails alone
			for i, k := range sessions {
				classify(&counts, k, hashes[i], ttls[i])
			}
			total += int64(len(sessions))
		}
		visited(int64(len(keys)))
		if next == 0 {
			return counts, total, nil
		}
		cursor = next
	}
}

// keyCount returns the number of keys in the node's database, the figure
// DBSIZE gives, read from INFO keyspace: the operator ACL user may run
// INFO, not DBSIZE.
func keyCount(ctx context.Context, node *redis.Client) (int64, error) {
	info, err := node.Info(ctx, "keyspace").Result()
	if err != nil {
		return 0, err
	}
	db := fmt.Sprintf("db%d:", node.Options().DB)
	for line := range strings.Lines(info) {
		fields, ok := strings.CutPrefix(strings.TrimSpace(line), db)
		if !ok {
			continue
		}
		for f := range strings.SplitSeq(fields, ",") {
			if v, ok := strings.CutPrefix(f, "keys="); ok {
				return strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return 0, nil // an empty database has no line
}

// classify counts one scanned key. The session id is what follows the last
// ':' of the key (ids cannot contain one).
func classify(c *sessionCounts, key string, hash *redis.MapStringStringCmd, ttl *redis.DurationCmd) {
	d, err := ttl.Result()
	switch {
	case err == nil && d == -2:
		c.Vanished++
		return
	case err == nil && d == -1:
		c.NoTTL++
	}
	h, err := hash.Result()
	if err != nil {
		c.Invalid++ // WRONGTYPE: not a hash
		return
	}
	if len(h) == 0 {
		c.Vanished++
		return
	}
	rec, err := rediscache.DecodeHash(key[strings.LastIndexByte(key, ':')+1:], h)
	switch {
	case err != nil:
		c.Invalid++
	case rec.Status == session.StatusActive:
		c.Active++
	default:
		c.Revoked++
		if rec.UserID == "" {
			c.Tombstones++
		}
	}
}

// usedMemory returns INFO memory's used_memory_human.
func usedMemory(ctx context.Context, node *redis.Client) (string, error) {
	info, err := node.Info(ctx, "memory").Result()
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory_human:"); ok {
			return v, nil
		}
	}
	return "", errors.New("INFO memory has no used_memory_human")
}

// parseClientList reads CLIENT LIST output: one client a line, space
// separated key=value fields.
func parseClientList(node, text string) []pubsubClient {
	var out []pubsubClient
	for line := range strings.Lines(text) {
		var c pubsubClient
		c.Node = node
		for f := range strings.FieldsSeq(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			switch k {
			case "addr":
				c.Addr = v
			case "name":
				c.Name = v
			case "age":
				c.Age, _ = strconv.ParseInt(v, 10, 64)
			case "sub":
				c.Subs, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if c.Addr != "" {
			out = append(out, c)
		}
	}
	return out
}

func printStats(w io.Writer, r statsReport) {
	s := r.Sessions
	fmt.Fprintf(w, "sessions      %d keys matching %s\n", r.Scanned, r.Pattern)
	fmt.Fprintf(w, "  active      %d\n", s.Active)
	fmt.Fprintf(w, "  revoked     %d (tombstones %d)\n", s.Revoked, s.Tombstones)
	if s.Invalid > 0 {
		fmt.Fprintf(w, "  INVALID     %d (lookups of these fail; see sessionctl inspect)\n", s.Invalid)
	}
	if s.Vanished > 0 {
		fmt.Fprintf(w, "  expired     %d (during the scan)\n", s.Vanished)
	}
	if s.NoTTL > 0 {
		fmt.Fprintf(w, "  NO TTL      %d (every key should expire: written by hand?)\n", s.NoTTL)
	}
	for _, n := range r.Nodes {
		if n.Master {
			fmt.Fprintf(w, "memory        %s on %s\n", n.UsedMemoryHuman, n.Addr)
		}
	}
	fmt.Fprintf(w, "channel       %s: %d subscriber(s) (PUBSUB NUMSUB)\n", r.Channel, r.Subscribers)
	fmt.Fprintf(w, "pubsub conns  %d (CLIENT LIST TYPE pubsub, any channel)\n", len(r.Clients))
	for _, c := range r.Clients {
		name := c.Name
		if name == "" {
			name = "(unnamed)"
		}
		fmt.Fprintf(w, "  %-28s %-22s age %ds", name, c.Addr, c.Age)
		if len(r.Nodes) > 1 {
			fmt.Fprintf(w, " on %s", c.Node)
		}
		fmt.Fprintln(w)
	}
}
