package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
)

// composeRedisCommand matches the Redis service's command line in
// docker-compose.yml: command: ["redis-server", "--flag", "value", ...].
var composeRedisCommand = regexp.MustCompile(`(?m)^\s+command: (\["redis-server",.*\])\s*$`)

// TestComposeRedisPassesDoctor starts redis-server with the flags of
// docker-compose.yml's Redis service and the shipped ACL file (with its
// placeholders filled, as the compose file's redis-acl service does), and
// checks that sessionctl doctor passes every check against it.
func TestComposeRedisPassesDoctor(t *testing.T) {
	compose, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	m := composeRedisCommand.FindSubmatch(compose)
	if m == nil {
		t.Fatal(`docker-compose.yml has no command: ["redis-server", ...] line`)
	}
	var argv []string
	if err := json.Unmarshal(m[1], &argv); err != nil {
		t.Fatalf("the Redis command %s: %v", m[1], err)
	}
	var config []string
	aclFile := false
	for i := 1; i+1 < len(argv); i += 2 {
		name, value := strings.TrimPrefix(argv[i], "--"), argv[i+1]
		if name == "aclfile" {
			aclFile = true // replaced by the rendered file below
			continue
		}
		config = append(config, name+" "+value)
	}
	if !aclFile {
		t.Errorf("the compose Redis loads no --aclfile: %v", argv)
	}
	b, err := os.ReadFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := func(pw string) string { s := sha256.Sum256([]byte(pw)); return hex.EncodeToString(s[:]) }
	acl := strings.NewReplacer("GATEWAY_PASSWORD_SHA256", sum(gatewayPassword), "OPERATOR_PASSWORD_SHA256", sum(operatorPassword)).Replace(string(b))
	srv := redistest.Start(t, redistest.Options{Config: config, ACLFile: acl + "user test-admin on >admin-pw ~* &* +@all\n"})
	revokeOnce(t, srv.ClientWith(t, &redis.Options{Username: "test-admin", Password: "admin-pw"}), rediscache.Options{})

	code, lines := doctorLines(t, "-redis", "redis://operator:"+operatorPassword+"@"+srv.Addr, "-role", "operator")
	if code != exitOK {
		t.Errorf("doctor against the compose Redis (%v): exit %d, want 0\n%s", config, code, joinLines(lines))
	}
	for name, line := range lines {
		if !strings.HasPrefix(line, "ok ") {
			t.Errorf("doctor against the compose Redis: %s is %q, want ok", name, line)
		}
	}
	t.Logf("compose Redis %v: %d checks ok", config, len(lines))
}
