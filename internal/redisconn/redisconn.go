// Package redisconn turns the Redis settings the commands accept (a URL, a
// cluster or Sentinel mode, a CA file) into a go-redis client or into the
// Redis fields of a tiered.Config, and Redis errors into one-line
// explanations for an operator.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultURL is used when neither a flag nor REDIS_URL names a server.
const DefaultURL = "redis://127.0.0.1:6379"

// ClusterStateReloadInterval is how often a cluster client may reload its
// slot map: the bound on how long it keeps sending to a master that died
// after a replica took its slots (see SCALING.md, "Failover").
const ClusterStateReloadInterval = 250 * time.Millisecond

// Config describes how to reach Redis.
type Config struct {
	// URL is redis://[user:password@]host:port[/db] or rediss:// for TLS.
	// With Cluster, more seed nodes may follow as ?addr=host:port&addr=...
	// With SentinelMaster, host:port is a sentinel's address and more
	// sentinels may follow as ?addr=host:port.
	URL string
	// Cluster selects Redis Cluster.
	Cluster bool
	// SentinelMaster selects Sentinel mode and names the monitored master.
	SentinelMaster string
	// CAFile is a PEM file of CA certificates to trust for rediss://.
	// Empty means the system roots.
	CAFile string
	// InsecureSkipTLSVerify turns certificate verification off. It exists
	// for lab set-ups only; a URL's skip_verify=true is refused without it.
	InsecureSkipTLSVerify bool
	// ClientName names the connections (CLIENT LIST shows it).
	ClientName string
	// DialerRetries, when positive, replaces go-redis's number of dial
	// attempts per connection (default 5, 100 ms apart). A command-line
	// tool sets 1, so that a refused connection is reported as such at
	// once rather than as a timeout after the retries.
	DialerRetries int
}

// RegisterFlags adds -redis, -cluster, -sentinel-master, -tls-ca and
// -tls-insecure-skip-verify to fs. The -redis default comes from
// REDIS_URL, else DefaultURL.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	def := os.Getenv("REDIS_URL")
	if def == "" {
		def = DefaultURL
	}
	fs.StringVar(&c.URL, "redis", def, "Redis URL (redis:// or rediss://); default $REDIS_URL or "+DefaultURL)
	// -h prints the default: never the password $REDIS_URL may hold.
	if u, err := url.Parse(def); err == nil {
		fs.Lookup("redis").DefValue = u.Redacted()
	} else {
		fs.Lookup("redis").DefValue = "$REDIS_URL (not shown)"
	}
	fs.BoolVar(&c.Cluster, "cluster", false, "the URL names Redis Cluster seed nodes")
	fs.StringVar(&c.SentinelMaster, "sentinel-master", "", "Sentinel mode: the monitored master's name (the URL names a sentinel)")
	fs.StringVar(&c.CAFile, "tls-ca", "", "PEM file of CA certificates to trust for rediss://")
	fs.BoolVar(&c.InsecureSkipTLSVerify, "tls-insecure-skip-verify", false, "DANGEROUS: do not verify the server's TLS certificate")
}

// NewClient returns a client for the configuration. It does not connect.
func (c Config) NewClient() (redis.UniversalClient, error) {
	o, err := c.options()
	if err != nil {
		return nil, err
	}
	switch {
	case o.cluster != nil:
		return redis.NewClusterClient(o.cluster), nil
	case o.failover != nil:
		return redis.NewFailoverClient(o.failover), nil
	default:
		return redis.NewClient(o.simple), nil
	}
}

// clientOptions are the options of exactly one kind of client, and the
// TLS configuration the flags make (nil without rediss://).
type clientOptions struct {
	simple   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
	tls      *tls.Config
}

// options checks the configuration and returns what NewClient needs.
func (c Config) options() (clientOptions, error) {
	if c.Cluster && c.SentinelMaster != "" {
		return clientOptions{}, errors.New("redis: choose cluster or sentinel mode, not both")
	}
	tlsConf, err := c.tlsConfig()
	if err != nil {
		return clientOptions{}, err
	}
	switch {
	case c.Cluster:
		o, err := redis.ParseClusterURL(c.URL)
		if err != nil {
			return clientOptions{}, fmt.Errorf("redis: bad URL: %s", redactURLError(err))
		}
		if o.TLSConfig != nil || tlsConf != nil {
			o.TLSConfig = mergeTLS(o.TLSConfig, tlsConf)
		}
		o.ClientName = c.ClientName
		o.ContextTimeoutEnabled = true
		if c.DialerRetries > 0 {
			o.DialerRetries = c.DialerRetries
		}
		// go-redis keeps its slot map until a MOVED reply or this
		// interval (default 60s): after a master dies, the default left
		// its slots unreachable for longer than the 30s a test waited.
		o.ClusterStateReloadInterval = ClusterStateReloadInterval
		return clientOptions{cluster: o, tls: tlsConf}, nil
	case c.SentinelMaster != "":
		// redis.ParseURL refuses the addr option: take the extra
		// sentinels out first.
		base, extra := splitAddrs(c.URL)
		o, err := redis.ParseURL(base)
		if err != nil {
			return clientOptions{}, fmt.Errorf("redis: bad URL: %s", redactURLError(err))
		}
		addrs := append([]string{o.Addr}, extra...)
		return clientOptions{failover: &redis.FailoverOptions{
			MasterName:       c.SentinelMaster,
			SentinelAddrs:    addrs,
			Username:         o.Username,
			Password:         o.Password,
			SentinelUsername: o.Username,
			SentinelPassword: o.Password,
			DB:               o.DB,
			TLSConfig:        mergeTLS(o.TLSConfig, tlsConf),
			ClientName:       c.ClientName,
			// Per-call deadlines (rediscache's CallTimeout) apply to
			// socket reads only with this set.
			ContextTimeoutEnabled: true,
			DialerRetries:         c.DialerRetries,
		}, tls: tlsConf}, nil
	default:
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			return clientOptions{}, fmt.Errorf("redis: bad URL: %s", redactURLError(err))
		}
		o.TLSConfig = mergeTLS(o.TLSConfig, tlsConf)
		o.ClientName = c.ClientName
		o.ContextTimeoutEnabled = true
		if c.DialerRetries > 0 {
			o.DialerRetries = c.DialerRetries
		}
		return clientOptions{simple: o, tls: tlsConf}, nil
	}
}

// OpenConfig translates the configuration into the Redis fields of a
// tiered.Config: RedisURL, in one of the forms tiered.Config.RedisURL
// documents, TLSCAFile and TLS. It does not connect. URL becomes
//
//	neither mode:    URL as it is
//	Cluster:         redis+cluster:// (rediss+cluster://), its addr= options kept
//	SentinelMaster:  redis+sentinel:// (rediss+sentinel://), its addr= options
//	                 kept, with master_name=SentinelMaster
//
// and a skip_verify= option is taken out, since tiered refuses it (and
// NewClient lets the flag alone decide). With a rediss:// URL, CAFile
// becomes tlsCAFile; with InsecureSkipTLSVerify too, tlsConf is instead the
// TLS configuration NewClient would use (verification off; CAFile's
// authorities as its RootCAs) and tlsCAFile is empty, since tiered takes
// one of the two. Without rediss://, InsecureSkipTLSVerify does nothing,
// as in NewClient.
//
// OpenConfig refuses what NewClient refuses, with the same error, and
// three kinds of URL that NewClient takes but no tiered URL expresses:
//
//   - with Cluster, a path naming a database other than 0: NewClient
//     ignores it; Redis Cluster has database 0 only;
//   - with SentinelMaster, a unix:// URL: a sentinel is reached over TCP,
//     and NewClient's client could never dial it;
//   - with SentinelMaster, an addr= option that is not host:port, which
//     NewClient passes to go-redis as it is.
//
// With SentinelMaster, NewClient applies none of the URL's query options
// but db; tiered applies them all (dial_timeout=, pool_size=, ...), and
// the old names idle_timeout= and max_conn_age=, which its Sentinel parser
// does not know, become conn_max_idle_time= and conn_max_lifetime=.
// ClientName and DialerRetries have no counterpart in the result:
// tiered.Config.Name names the connections, and tiered.Open's ping does
// not retry. Errors never hold the URL.
func (c Config) OpenConfig() (redisURL, tlsCAFile string, tlsConf *tls.Config, err error) {
	o, err := c.options()
	if err != nil {
		return "", "", nil, err
	}
	u, err := url.Parse(c.URL) // options parsed it already
	if err != nil {
		return "", "", nil, errors.New("redis: bad URL")
	}
	q := u.Query()
	// The URL is rebuilt only when something changes, so that one
	// without a mode reaches tiered byte for byte.
	rebuild, editQuery := false, false
	if q.Has("skip_verify") {
		q.Del("skip_verify")
		rebuild, editQuery = true, true
	}
	switch {
	case c.Cluster:
		if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
			return "", "", nil, errors.New("redis: -cluster: the URL names a database, but Redis Cluster has database 0 only: remove the path")
		}
		u.Scheme += "+cluster"
		rebuild = true
	case c.SentinelMaster != "":
		if u.Scheme == "unix" {
			return "", "", nil, errors.New("redis: -sentinel-master: the URL must name a sentinel's host:port, not a unix socket")
		}
		for _, a := range q["addr"] {
			if h, p, err := net.SplitHostPort(a); err != nil || h == "" || p == "" {
				return "", "", nil, errors.New("redis: -sentinel-master: an addr= option of the URL is not host:port")
			}
		}
		for old, current := range map[string]string{"idle_timeout": "conn_max_idle_time", "max_conn_age": "conn_max_lifetime"} {
			if v, ok := q[old]; ok {
				q[current] = v
				delete(q, old)
			}
		}
		q.Set("master_name", c.SentinelMaster)
		u.Scheme += "+sentinel"
		rebuild, editQuery = true, true
	}
	redisURL = c.URL
	if rebuild {
		if editQuery {
			u.RawQuery = q.Encode()
		}
		redisURL = u.String()
	}
	switch {
	case o.tls == nil:
	case c.InsecureSkipTLSVerify:
		tlsConf = o.tls
	default:
		tlsCAFile = c.CAFile
	}
	return redisURL, tlsCAFile, tlsConf, nil
}

func (c Config) tlsConfig() (*tls.Config, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, errors.New("redis: bad URL")
	}
	if u.Query().Get("skip_verify") == "true" && !c.InsecureSkipTLSVerify {
		return nil, errors.New("redis: the URL asks for skip_verify=true; refusing without -tls-insecure-skip-verify")
	}
	if u.Scheme != "rediss" {
		if c.CAFile != "" {
			return nil, errors.New("redis: -tls-ca given for a plaintext redis:// URL")
		}
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname(), InsecureSkipVerify: c.InsecureSkipTLSVerify}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis: no certificates in %s", c.CAFile)
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

// mergeTLS keeps go-redis's parsed settings but applies ours when given.
func mergeTLS(parsed, ours *tls.Config) *tls.Config {
	if ours == nil {
		return parsed
	}
	return ours
}

// splitAddrs returns the URL without its addr options, and their values.
// A URL that does not parse is returned as it is, for ParseURL to reject.
func splitAddrs(raw string) (string, []string) {
	u, err := url.Parse(raw)
	if err != nil {
		return raw, nil
	}
	q := u.Query()
	addrs := q["addr"]
	if len(addrs) == 0 {
		return raw, nil
	}
	q.Del("addr")
	u.RawQuery = q.Encode()
	return u.String(), addrs
}

// redactURLError drops anything that could carry the URL's password.
func redactURLError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "://"); i >= 0 {
		return "malformed URL"
	}
	return msg
}

// Ping checks that Redis answers, within ctx.
func Ping(ctx context.Context, rdb redis.UniversalClient) error {
	return rdb.Ping(ctx).Err()
}

// Explain returns a one-line, operator-facing description of a Redis error.
func Explain(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	var netErr net.Error
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return "TLS certificate not trusted (wrong CA or server name; see -tls-ca): " + msg
	case errors.As(err, &recordErr), strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "TLS handshake failed: the server does not speak TLS on that port (use redis://, not rediss://)"
	case strings.HasPrefix(msg, "WRONGPASS"), strings.Contains(msg, "invalid username-password"):
		return "Redis refused the credentials (wrong user or password)"
	case strings.HasPrefix(msg, "NOAUTH"):
		return "Redis requires a password (put it in the URL: redis://user:password@host:port)"
	case strings.HasPrefix(msg, "NOPERM"):
		return "the Redis user lacks a permission: " + msg
	case errors.Is(err, context.DeadlineExceeded):
		return "Redis did not answer in time"
	case errors.As(err, &netErr), strings.Contains(msg, "connection refused"):
		return "Redis unreachable: " + msg
	case strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset"):
		return "Redis closed the connection (a TLS server spoken to in plaintext, or a network fault): " + msg
	}
	return msg
}
