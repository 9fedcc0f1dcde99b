package redistest

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestReplicaReceivesWritesAndPromotes(t *testing.T) {
	ctx := context.Background()
	primary := Start(t, Options{})
	replica := StartReplica(t, primary, Options{})
	pc, rc := primary.Client(t), replica.Client(t)

	// WAIT on the connection that wrote: the replica has acknowledged it.
	cmds, err := pc.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "k", "v1", 0)
		p.Do(ctx, "WAIT", 1, 5000)
		return nil
	})
	if err != nil {
		t.Fatalf("SET k; WAIT 1 on primary: %v", err)
	}
	if n, _ := cmds[1].(*redis.Cmd).Int(); n != 1 {
		t.Fatalf("WAIT 1 = %d replicas, want 1", n)
	}
	if got, err := rc.Get(ctx, "k").Result(); err != nil || got != "v1" {
		t.Fatalf("replica GET k = %q, %v; want %q", got, err, "v1")
	}
	if err := rc.Set(ctx, "k", "v2", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "READONLY") {
		t.Fatalf("replica SET k = %v, want a READONLY error", err)
	}

	replica.Promote()
	if role, err := replica.Role(ctx); err != nil || role != "master" {
		t.Fatalf("Role() after Promote = %q, %v; want master", role, err)
	}
	if err := rc.Set(ctx, "k", "v2", 0).Err(); err != nil {
		t.Fatalf("SET k on promoted replica: %v", err)
	}
}
