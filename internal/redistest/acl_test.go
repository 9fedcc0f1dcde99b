package redistest

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestACLAndPassword(t *testing.T) {
	ctx := context.Background()
	const acl = "user reader on >reader-pw ~* &* -@all +get +ping\n"
	tests := []struct {
		name    string
		opts    Options
		user    string
		pass    string
		cmd     []any
		wantErr string // prefix of the error, "" for success
	}{
		{"restricted user may GET", Options{ACLFile: acl}, "reader", "reader-pw", []any{"GET", "k"}, "redis: nil"},
		{"restricted user gets NOPERM for SET", Options{ACLFile: acl}, "reader", "reader-pw", []any{"SET", "k", "v"}, "NOPERM"},
		{"restricted user gets NOPERM for FLUSHALL", Options{ACLFile: acl}, "reader", "reader-pw", []any{"FLUSHALL"}, "NOPERM"},
		{"wrong password is refused", Options{ACLFile: acl}, "reader", "nope", []any{"PING"}, "WRONGPASS"},
		{"requirepass: no password gets NOAUTH", Options{Password: "s3cret"}, "", "", []any{"SET", "k", "v"}, "NOAUTH"},
		{"requirepass: password may SET", Options{Password: "s3cret"}, "", "s3cret", []any{"SET", "k", "v"}, ""},
		{"ACL file and Password: default user needs it", Options{ACLFile: acl, Password: "s3cret"}, "", "", []any{"SET", "k", "v"}, "NOAUTH"},
		{"ACL file and Password: default user with it may SET", Options{ACLFile: acl, Password: "s3cret"}, "default", "s3cret", []any{"SET", "k", "v"}, ""},
		{"ACL file and Password: restricted user still NOPERM", Options{ACLFile: acl, Password: "s3cret"}, "reader", "reader-pw", []any{"SET", "k", "v"}, "NOPERM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Start(t, tt.opts)
			c := s.ClientWith(t, &redis.Options{Username: tt.user, Password: tt.pass, MaxRetries: -1})
			err := c.Do(ctx, tt.cmd...).Err()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("%v as %q = %v, want success", tt.cmd, tt.user, err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Fatalf("%v as %q = %v, want an error starting %q", tt.cmd, tt.user, err, tt.wantErr)
			}
			// Client authenticates as the default user with Options.Password.
			if err := s.Client(t).Set(ctx, "admin", "1", 0).Err(); err != nil {
				t.Fatalf("Client().Set = %v, want nil", err)
			}
		})
	}
}

func TestRestartKeepsPasswordAndTLS(t *testing.T) {
	ctx := context.Background()
	s := Start(t, Options{TLS: NewTestCA(t), Password: "s3cret"})
	c := s.Client(t)
	s.Restart() // fails the test unless the readiness probe speaks TLS and AUTH
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restart = %v, want nil", err)
	}
}
