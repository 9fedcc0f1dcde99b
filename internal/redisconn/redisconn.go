// Package redisconn turns the Redis settings the commands accept (a URL, a
// cluster or Sentinel mode, a CA file) into a go-redis client, and Redis
// errors into one-line explanations for an operator.
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
	if c.Cluster && c.SentinelMaster != "" {
		return nil, errors.New("redis: choose cluster or sentinel mode, not both")
	}
	tlsConf, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	switch {
	case c.Cluster:
		o, err := redis.ParseClusterURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("redis: bad URL: %s", redactURLError(err))
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
		return redis.NewClusterClient(o), nil
	case c.SentinelMaster != "":
		// redis.ParseURL refuses the addr option: take the extra
		// sentinels out first.
		base, extra := splitAddrs(c.URL)
		o, err := redis.ParseURL(base)
		if err != nil {
			return nil, fmt.Errorf("redis: bad URL: %s", redactURLError(err))
		}
		addrs := append([]string{o.Addr}, extra...)
		return redis.NewFailoverClient(&redis.FailoverOptions{
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
		}), nil
	default:
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("redis: bad URL: %s", redactURLError(err))
		}
		o.TLSConfig = mergeTLS(o.TLSConfig, tlsConf)
		o.ClientName = c.ClientName
		o.ContextTimeoutEnabled = true
		if c.DialerRetries > 0 {
			o.DialerRetries = c.DialerRetries
		}
		return redis.NewClient(o), nil
	}
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
