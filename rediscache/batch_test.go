package rediscache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
)

// pipelineGate is a go-redis hook that counts pipelines and their
// commands, and single HGETALLs, and can hold each of them until released.
type pipelineGate struct {
	mu        sync.Mutex
	pipelines int
	commands  int
	singles   int
	held      chan struct{} // while non-nil, pipelines wait for it to close
	entered   chan struct{} // receives once per pipeline that waits
}

func (g *pipelineGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *pipelineGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		g.mu.Lock()
		if cmd.Name() == "hgetall" {
			g.singles++
		}
		held, entered := g.held, g.entered
		g.mu.Unlock()
		if held != nil {
			entered <- struct{}{}
			<-held
		}
		return next(ctx, cmd)
	}
}

func (g *pipelineGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.mu.Lock()
		reads := 0
		for _, cmd := range cmds {
			if cmd.Name() == "hgetall" {
				reads++
			}
		}
		if reads > 0 { // not a connection's handshake
			g.pipelines++
			g.commands += reads
		}
		held, entered := g.held, g.entered
		g.mu.Unlock()
		if held != nil {
			entered <- struct{}{}
			<-held
		}
		return next(ctx, cmds)
	}
}

func (g *pipelineGate) counts() (pipelines, commands, singles int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pipelines, g.commands, g.singles
}

// TestGetsShareAPipeline checks that concurrent Gets go to Redis in shared
// pipelines, each with the right answer, and that a lone Get is one plain
// HGETALL.
func TestGetsShareAPipeline(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := newClient(t, srv.Addr)
	c := newCache(t, rdb, Options{})
	ctx := context.Background()
	const n = 64
	for i := range n {
		if _, err := c.Fill(ctx, activeRecord(fmt.Sprintf("dev-%d", i), fmt.Sprintf("user-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	gate := &pipelineGate{}
	rdb.AddHook(gate)

	if _, err := c.Get(ctx, "dev-0"); err != nil {
		t.Fatal(err)
	}
	if p, _, s := gate.counts(); p != 0 || s != 1 {
		t.Fatalf("a lone Get sent %d pipelines and %d HGETALLs, want 0 and 1", p, s)
	}

	// Hold the first pipelines, so that the other Gets queue behind them.
	gate.mu.Lock()
	gate.held, gate.entered = make(chan struct{}), make(chan struct{}, n)
	gate.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("dev-%d", i)
			rec, err := c.Get(ctx, id)
			if err == nil && (rec.DeviceSessionID != id || rec.UserID != fmt.Sprintf("user-%d", i)) {
				err = fmt.Errorf("Get(%q) = %+v", id, rec)
			}
			errs <- err
		})
	}
	<-gate.entered // one pipeline is in flight (or a single read, if it was alone)
	gate.mu.Lock()
	close(gate.held)
	gate.held = nil
	gate.mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	p, cmds, s := gate.counts()
	t.Logf("%d concurrent Gets: %d pipelines carrying %d HGETALLs, %d single HGETALLs", n, p, cmds, s-1)
	if cmds+s-1 != n {
		t.Errorf("%d HGETALLs sent for %d Gets, want exactly one each", cmds+s-1, n)
	}
	if p+s-1 > n/4 {
		t.Errorf("%d round trips for %d concurrent Gets, want them batched (at most %d)", p+s-1, n, n/4)
	}
}

// TestGetLeavesPipelineOnCancel checks that a Get whose context ends while
// it waits returns at once with the context's error, and that the reads
// queued with it are answered all the same.
func TestGetLeavesPipelineOnCancel(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := newClient(t, srv.Addr)
	c := newCache(t, rdb, Options{CallTimeout: 2 * time.Second, FillWindow: 10 * time.Second})
	ctx := context.Background()
	for _, id := range []string{"dev-a", "dev-b", "dev-c", "dev-d"} {
		if _, err := c.Fill(ctx, activeRecord(id, "user-1")); err != nil {
			t.Fatal(err)
		}
	}
	gate := &pipelineGate{held: make(chan struct{}), entered: make(chan struct{}, 8)}
	rdb.AddHook(gate)
	results := make(chan error, 3)
	start := func(id string) {
		go func() {
			_, err := c.Get(ctx, id)
			results <- err
		}()
	}
	// Two Gets, each alone in its slot, held in Redis's client.
	start("dev-a")
	<-gate.entered
	start("dev-b")
	<-gate.entered
	// Both slots are held: this Get waits, and its context ends.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(cctx, "dev-c")
		done <- err
	}()
	start("dev-d")
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Get with a cancelled context = %v, want context.Canceled", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Get with a cancelled context did not return while the pipelines were held")
	}
	gate.mu.Lock()
	close(gate.held)
	gate.held = nil
	gate.mu.Unlock()
	for range 3 {
		if err := <-results; err != nil {
			t.Errorf("Get queued with the cancelled one = %v, want nil", err)
		}
	}
	if _, err := c.Get(ctx, "dev-missing"); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("Get after the cancellation = %v, want ErrNotFound", err)
	}
}
