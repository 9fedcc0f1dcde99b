package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/rediscache"
)

// aclPath is the documented least-privilege ACL file.
var aclPath = filepath.Join("..", "..", "deploy", "redis", "gateway.acl")

// aclUsers returns the rules of each user of the ACL file.
func aclUsers(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string][]string{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "user" {
			users[f[1]] = f[2:]
		}
	}
	return users
}

// TestACLFileMatchesRoles checks that deploy/redis/gateway.acl grants the
// gateway user exactly the library's commands and the operator user
// exactly the runbook's and the library's (doctor's -role tables), each on
// the layout's keys and channel only.
func TestACLFileMatchesRoles(t *testing.T) {
	users := aclUsers(t)
	for _, role := range []string{roleGateway, roleOperator} {
		t.Run(role, func(t *testing.T) {
			rules, ok := users[role]
			if !ok {
				t.Fatalf("%s has no user %s", aclPath, role)
			}
			var granted, other []string
			for _, r := range rules {
				switch {
				case strings.HasPrefix(r, "+"):
					granted = append(granted, r)
				case strings.HasPrefix(r, "#"), r == "on":
				default:
					other = append(other, r)
				}
			}
			var want []string
			for _, c := range roleCommands(role) {
				want = append(want, aclRule(c.name))
			}
			slices.Sort(granted)
			slices.Sort(want)
			if !slices.Equal(granted, want) {
				t.Errorf("user %s is granted\n%v\nwant the %s role's commands\n%v", role, granted, role, want)
			}
			wantOther := []string{"resetkeys", "~session:*", "~user:*", "~session_invalidation:*", "resetchannels", "&session_invalidation", "-@all"}
			if !slices.Equal(other, wantOther) {
				t.Errorf("user %s has the other rules %v, want %v", role, other, wantOther)
			}
		})
	}
}

// Test-only passwords for the ACL file's placeholders.
const (
	gatewayPassword  = "gw-doctor-pw-41c2"
	operatorPassword = "op-doctor-pw-9d07"
)

// TestDoctorUnderShippedACL runs doctor against a safely configured
// redis-server with deploy/redis/gateway.acl: as the operator user it
// passes for the operator role, and checks the gateway user's ACL for the
// gateway role; the gateway user itself may not read the configuration.
func TestDoctorUnderShippedACL(t *testing.T) {
	b, err := os.ReadFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := func(pw string) string { s := sha256.Sum256([]byte(pw)); return hex.EncodeToString(s[:]) }
	acl := strings.NewReplacer("GATEWAY_PASSWORD_SHA256", sum(gatewayPassword), "OPERATOR_PASSWORD_SHA256", sum(operatorPassword)).Replace(string(b))
	srv := redistest.Start(t, redistest.Options{Config: safeConfig, ACLFile: acl + "user test-admin on >admin-pw ~* &* +@all\n"})
	revokeOnce(t, srv.ClientWith(t, &redis.Options{Username: "test-admin", Password: "admin-pw"}), rediscache.Options{})
	gw := srv.ClientWith(t, &redis.Options{Username: "gateway", Password: gatewayPassword, ClientName: "gatewayd-1"})
	rawSubscriber(t, gw, "session_invalidation")
	operator := "redis://operator:" + operatorPassword + "@" + srv.Addr

	t.Run("operator", func(t *testing.T) {
		code, lines := doctorLines(t, "-redis", operator, "-role", "operator", "-expect-replicas", "1")
		if code != exitOK {
			t.Errorf("doctor -role operator as operator: exit %d, want 0\n%s", code, joinLines(lines))
		}
		for name, line := range lines {
			if !strings.HasPrefix(line, "ok ") {
				t.Errorf("doctor -role operator as operator: %s is %q, want ok", name, line)
			}
		}
		if !strings.HasPrefix(lines["acl"], "ok acl: user operator may run the 38 commands of the operator role") ||
			!strings.Contains(lines["subscribers"], "gatewayd-1") {
			t.Errorf("doctor -role operator: acl %q, subscribers %q; want operator's 38 commands and gatewayd-1", lines["acl"], lines["subscribers"])
		}
	})
	t.Run("operator checks the gateway user", func(t *testing.T) {
		code, lines := doctorLines(t, "-redis", operator, "-acl-user", "gateway")
		if code != exitOK || !strings.HasPrefix(lines["acl"], "ok acl: user gateway may run the 29 commands of the gateway role") {
			t.Errorf("doctor -acl-user gateway as operator: exit %d, acl %q; want 0 and the gateway role's 29 commands", code, lines["acl"])
		}
	})
	t.Run("operator lacks nothing the gateway has", func(t *testing.T) {
		code, lines := doctorLines(t, "-redis", operator, "-acl-user", "operator", "-role", "gateway")
		if code != exitOK || !strings.HasPrefix(lines["acl"], "ok acl: user operator may run") {
			t.Errorf("doctor -role gateway for operator: exit %d, acl %q; want ok", code, lines["acl"])
		}
	})
	t.Run("gateway may not read the configuration", func(t *testing.T) {
		code, lines := doctorLines(t, "-redis", "redis://gateway:"+gatewayPassword+"@"+srv.Addr)
		if code != exitFailure || !strings.HasPrefix(lines["maxmemory-policy"], "FAIL maxmemory-policy: unknown (CONFIG GET refused") ||
			!strings.HasPrefix(lines["acl"], "FAIL acl: cannot check: ACL WHOAMI refused") || !strings.HasPrefix(lines["tracking"], "ok ") {
			t.Errorf("doctor as gateway: exit %d\n%s\nwant 1, CONFIG GET and ACL WHOAMI refused, tracking ok", code, joinLines(lines))
		}
	})
}
