package redisconn

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// secret is the password in the URLs of these tests: no error may show it.
const secret = "hunter2-pw"

func TestOpenConfig(t *testing.T) {
	ca := redistest.NewTestCA(t).CAFile()
	tests := []struct {
		name    string
		c       Config
		url, ca string
		// insecure: want a TLS configuration that skips verification;
		// roots: with CAFile's authorities.
		insecure, roots bool
	}{
		{"redis", Config{URL: "redis://u:" + secret + "@127.0.0.1:6390/2?dial_timeout=3s"},
			"redis://u:" + secret + "@127.0.0.1:6390/2?dial_timeout=3s", "", false, false},
		{"rediss with -tls-ca", Config{URL: "rediss://redis.internal:6380", CAFile: ca},
			"rediss://redis.internal:6380", ca, false, false},
		{"rediss with -tls-insecure-skip-verify", Config{URL: "rediss://redis.internal", InsecureSkipTLSVerify: true},
			"rediss://redis.internal", "", true, false},
		{"rediss with -tls-ca and -tls-insecure-skip-verify", Config{URL: "rediss://redis.internal", CAFile: ca, InsecureSkipTLSVerify: true},
			"rediss://redis.internal", "", true, true},
		{"skip_verify=true with -tls-insecure-skip-verify", Config{URL: "rediss://redis.internal?skip_verify=true", InsecureSkipTLSVerify: true},
			"rediss://redis.internal", "", true, false},
		{"skip_verify=false", Config{URL: "rediss://redis.internal?skip_verify=false&pool_size=20"},
			"rediss://redis.internal?pool_size=20", "", false, false},
		{"unix", Config{URL: "unix:///run/redis.sock?db=1"}, "unix:///run/redis.sock?db=1", "", false, false},
		{"-tls-insecure-skip-verify without TLS", Config{URL: "redis://127.0.0.1:6390", InsecureSkipTLSVerify: true},
			"redis://127.0.0.1:6390", "", false, false},
		{"-cluster", Config{URL: "redis://u:" + secret + "@n1:7000?addr=n2:7001&addr=n3:7002", Cluster: true},
			"redis+cluster://u:" + secret + "@n1:7000?addr=n2:7001&addr=n3:7002", "", false, false},
		{"-cluster database 0", Config{URL: "redis://n1:7000/0", Cluster: true}, "redis+cluster://n1:7000/0", "", false, false},
		{"-cluster rediss with -tls-ca", Config{URL: "rediss://n1:7000", Cluster: true, CAFile: ca},
			"rediss+cluster://n1:7000", ca, false, false},
		{"-cluster rediss with -tls-insecure-skip-verify", Config{URL: "rediss://n1:7000", Cluster: true, InsecureSkipTLSVerify: true},
			"rediss+cluster://n1:7000", "", true, false},
		{"-sentinel-master", Config{URL: "redis://u:" + secret + "@s1:26379/1?addr=s2:26379&addr=s3:26379", SentinelMaster: "mymaster"},
			"redis+sentinel://u:" + secret + "@s1:26379/1?addr=s2%3A26379&addr=s3%3A26379&master_name=mymaster", "", false, false},
		{"-sentinel-master rediss with -tls-ca and options", Config{URL: "rediss://s1:26379?dial_timeout=3s&idle_timeout=1m&max_conn_age=1h", SentinelMaster: "m", CAFile: ca},
			"rediss+sentinel://s1:26379?conn_max_idle_time=1m&conn_max_lifetime=1h&dial_timeout=3s&master_name=m", ca, false, false},
		{"-sentinel-master rediss with skip_verify and -tls-insecure-skip-verify", Config{URL: "rediss://s1:26379?skip_verify=true", SentinelMaster: "m", InsecureSkipTLSVerify: true},
			"rediss+sentinel://s1:26379?master_name=m", "", true, false},
		{"-sentinel-master name to escape", Config{URL: "redis://s1:26379", SentinelMaster: "a b&c"},
			"redis+sentinel://s1:26379?master_name=a+b%26c", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, caFile, conf, err := tt.c.OpenConfig()
			if err != nil {
				t.Fatalf("OpenConfig() = %v", err)
			}
			if u != tt.url || caFile != tt.ca {
				t.Errorf("OpenConfig() = %q, %q; want %q, %q", u, caFile, tt.url, tt.ca)
			}
			switch {
			case !tt.insecure && conf != nil:
				t.Errorf("OpenConfig() TLS = %+v, want nil", conf)
			case tt.insecure && (conf == nil || !conf.InsecureSkipVerify || conf.MinVersion < tls.VersionTLS12):
				t.Errorf("OpenConfig() TLS = %+v, want verification off, TLS 1.2 or later", conf)
			case tt.insecure && (conf.RootCAs != nil) != tt.roots:
				t.Errorf("OpenConfig() TLS roots set: %v, want %v", conf.RootCAs != nil, tt.roots)
			}
			checkSameTarget(t, tt.c, u)
		})
	}
}

// Every combination of the flags, on URLs of every kind: OpenConfig
// accepts what NewClient accepts, refuses the rest with NewClient's error,
// and its URL names what NewClient's client would reach; its three own
// refusals are those its documentation lists.
func TestOpenConfigEveryFlagCombination(t *testing.T) {
	ca := redistest.NewTestCA(t).CAFile()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("no certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	urls := []string{
		"redis://u:" + secret + "@127.0.0.1:6390",
		"rediss://u:" + secret + "@127.0.0.1:6390/0",
		"unix://u:" + secret + "@/run/redis.sock",
		"redis://u:" + secret + "@127.0.0.1:6390/3",
		"redis://u:" + secret + "@127.0.0.1:6390?addr=127.0.0.1:6391",
		"rediss://u:" + secret + "@127.0.0.1:6390?addr=127.0.0.1:6391&addr=127.0.0.1:6392",
		"redis://u:" + secret + "@127.0.0.1:6390?addr=nohost",
		"rediss://u:" + secret + "@127.0.0.1:6390?skip_verify=true",
		"rediss://u:" + secret + "@127.0.0.1:6390?skip_verify=false",
		"redis://u:" + secret + "@127.0.0.1:6390?skip_verify=true",
		"rediss://u:" + secret + "@127.0.0.1:6390?pool_size=5&dial_timeout=2s",
		"redis://u:" + secret + "@127.0.0.1:6390?idle_timeout=1m",
		"redis://u:" + secret + "@127.0.0.1:6390?colour=blue",
		"nope://u:" + secret + "@127.0.0.1:6390",
		"redis://u:" + secret + "@[::1",
	}
	accepted, refused := 0, 0
	for _, raw := range urls {
		for _, mode := range []string{"", "cluster", "sentinel", "both"} {
			for _, caFile := range []string{"", ca, missing, notPEM} {
				for _, insecure := range []bool{false, true} {
					c := Config{URL: raw, Cluster: mode == "cluster" || mode == "both", CAFile: caFile, InsecureSkipTLSVerify: insecure}
					if mode == "sentinel" || mode == "both" {
						c.SentinelMaster = "mymaster"
					}
					name := fmt.Sprintf("%s mode=%q ca=%q insecure=%v", raw, mode, filepath.Base(caFile), insecure)
					_, clientErr := c.options()
					u, gotCA, conf, err := c.OpenConfig()
					for _, e := range []error{clientErr, err} {
						if e != nil && strings.Contains(e.Error(), secret) {
							t.Errorf("%s: the error %q shows the password", name, e)
						}
					}
					own := ownRefusal(c)
					switch {
					case clientErr != nil:
						refused++
						if err == nil || err.Error() != clientErr.Error() {
							t.Errorf("%s: OpenConfig() = %v; want NewClient's error %q", name, err, clientErr)
						}
						continue
					case own != "":
						refused++
						if err == nil || !strings.Contains(err.Error(), own) {
							t.Errorf("%s: OpenConfig() = %v; want an error saying %q", name, err, own)
						}
						continue
					case err != nil:
						t.Errorf("%s: OpenConfig() = %v; NewClient accepts it", name, err)
						continue
					}
					accepted++
					rediss := strings.HasPrefix(raw, "rediss:")
					if wantCA := map[bool]string{true: caFile}[rediss && !insecure]; gotCA != wantCA {
						t.Errorf("%s: TLS CA file = %q, want %q", name, gotCA, wantCA)
					}
					if (conf != nil) != (rediss && insecure) || (conf != nil && !conf.InsecureSkipVerify) {
						t.Errorf("%s: TLS = %+v; want one that skips verification exactly with rediss and -tls-insecure-skip-verify", name, conf)
					}
					if strings.Contains(u, "skip_verify") {
						t.Errorf("%s: URL %q keeps skip_verify, which tiered refuses", name, u)
					}
					checkSameTarget(t, c, u)
				}
			}
		}
	}
	t.Logf("%d combinations accepted, %d refused", accepted, refused)
	if accepted < 40 || refused < 40 {
		t.Errorf("%d combinations accepted and %d refused; the table no longer covers both", accepted, refused)
	}
}

// ownRefusal returns what OpenConfig's error must say for a configuration
// NewClient accepts but no tiered URL expresses, or "".
func ownRefusal(c Config) string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return ""
	}
	switch {
	case c.Cluster && strings.Trim(u.Path, "/") != "" && strings.Trim(u.Path, "/") != "0":
		return "Redis Cluster has database 0 only"
	case c.SentinelMaster != "" && u.Scheme == "unix":
		return "not a unix socket"
	case c.SentinelMaster != "" && slices.ContainsFunc(u.Query()["addr"], func(a string) bool { return !strings.Contains(a, ":") }):
		return "not host:port"
	}
	return ""
}

// checkSameTarget parses the tiered URL as tiered.Open does (go-redis's
// parser for its form) and checks that it reaches what NewClient's client
// reaches: the same addresses, database, credentials, master and TLS.
func checkSameTarget(t *testing.T, c Config, tieredURL string) {
	t.Helper()
	want, err := c.options()
	if err != nil {
		t.Fatalf("NewClient refuses what OpenConfig accepts: %v", err)
	}
	u, err := url.Parse(tieredURL)
	if err != nil {
		t.Fatalf("tiered URL does not parse: %v", err)
	}
	base, kind, _ := strings.Cut(u.Scheme, "+")
	plain := *u
	plain.Scheme = base
	type target struct {
		addrs                  []string
		db                     int
		user, password, master string
		tls                    bool
	}
	var got, exp target
	switch kind {
	case "":
		o, err := redis.ParseURL(tieredURL)
		if err != nil || want.simple == nil {
			t.Fatalf("%s: ParseURL = %v; NewClient makes a plain client: %v", tieredURL, err, want.simple != nil)
		}
		got = target{[]string{o.Network + " " + o.Addr}, o.DB, o.Username, o.Password, "", o.TLSConfig != nil}
		w := want.simple
		exp = target{[]string{w.Network + " " + w.Addr}, w.DB, w.Username, w.Password, "", w.TLSConfig != nil}
	case "cluster":
		o, err := redis.ParseClusterURL(plain.String())
		if err != nil || want.cluster == nil {
			t.Fatalf("%s: ParseClusterURL = %v; NewClient makes a cluster client: %v", tieredURL, err, want.cluster != nil)
		}
		got = target{o.Addrs, 0, o.Username, o.Password, "", o.TLSConfig != nil}
		w := want.cluster
		exp = target{w.Addrs, 0, w.Username, w.Password, "", w.TLSConfig != nil}
	case "sentinel":
		o, err := redis.ParseFailoverURL(plain.String())
		if err != nil || want.failover == nil {
			t.Fatalf("%s: ParseFailoverURL = %v; NewClient makes a failover client: %v", tieredURL, err, want.failover != nil)
		}
		// tiered: the sentinels' credentials are the master's unless the
		// URL has username= or password=.
		user, password := o.Username, o.Password
		if user == "" && password == "" {
			user, password = o.SentinelUsername, o.SentinelPassword
		}
		if o.SentinelUsername != user || o.SentinelPassword != password {
			t.Errorf("%s: sentinel credentials differ from the master's", tieredURL)
		}
		got = target{o.SentinelAddrs, o.DB, user, password, o.MasterName, o.TLSConfig != nil}
		w := want.failover
		exp = target{w.SentinelAddrs, w.DB, w.Username, w.Password, w.MasterName, w.TLSConfig != nil}
	default:
		t.Fatalf("tiered URL %q has scheme %q", tieredURL, u.Scheme)
	}
	if fmt.Sprint(got) != fmt.Sprint(exp) {
		t.Errorf("%s reaches %+v; NewClient's client reaches %+v", tieredURL, got, exp)
	}
}
