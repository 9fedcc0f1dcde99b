package redisconn

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// TestFlagsNeverPrintThePassword checks that -h shows $REDIS_URL's
// password masked, while the flag's value stays the whole URL.
func TestFlagsNeverPrintThePassword(t *testing.T) {
	const secret = "s3cret-pw-4471"
	t.Setenv("REDIS_URL", "redis://gateway:"+secret+"@127.0.0.1:6390/0")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var c Config
	c.RegisterFlags(fs)
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.PrintDefaults()
	if strings.Contains(help.String(), secret) {
		t.Errorf("PrintDefaults shows the password:\n%s", help.String())
	}
	if !strings.Contains(help.String(), "redis://gateway:xxxxx@127.0.0.1:6390/0") {
		t.Errorf("PrintDefaults = %q, want the URL with its password masked", help.String())
	}
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.URL, secret) {
		t.Errorf("Config.URL = %q, want $REDIS_URL as it is", c.URL)
	}
}
