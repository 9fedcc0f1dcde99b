package rediscache

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds the HGETALLs of one pipeline.
const maxBatch = 256

// reads pipelines concurrent HGETALLs: a read joins the queue, and whichever
// waiting reader holds one of a few pipeline slots takes everything queued
// and sends it as one pipeline, in one write. There is no timer and no
// goroutine of its own: at low load a read finds a slot free and goes out
// at once (a plain HGETALL); under load, the reads that arrive while the
// slots' pipelines are in flight go together in the next ones, so Redis
// answers many in one read of its socket. A reader that holds a slot sends
// its own read too, unless another slot holder took it first, so waiting
// readers do the work and none waits for a batch it could send itself.
//
// A pipeline runs on a context bounded by Options.CallTimeout and by no
// single reader's context: a reader whose context ends returns at once
// (its read is dropped from the queue, or its answer discarded) without
// failing the others; a slot holder whose context ends still finishes the
// pipeline it sent, which CallTimeout bounds.
type reads struct {
	rdb     redis.UniversalClient
	timeout func() (context.Context, context.CancelFunc)
	slots   chan struct{} // one token per pipeline in flight

	mu    sync.Mutex // guards queue
	queue []*read
}

// read is one queued HGETALL and, once done is closed, its answer.
type read struct {
	key       string
	abandoned atomic.Bool // its reader has returned: skip it
	done      chan struct{}
	h         map[string]string
	err       error
}

func newReads(rdb redis.UniversalClient, slots int, timeout func() (context.Context, context.CancelFunc)) *reads {
	return &reads{rdb: rdb, timeout: timeout, slots: make(chan struct{}, slots)}
}

// hgetall reads the hash at key, in a pipeline with the reads queued with it.
func (b *reads) hgetall(ctx context.Context, key string) (map[string]string, error) {
	r := &read{key: key, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, r)
	b.mu.Unlock()
	for {
		select {
		case <-r.done:
			return r.h, r.err
		case <-ctx.Done():
			r.abandoned.Store(true)
			return nil, ctx.Err()
		case b.slots <- struct{}{}:
			sent := b.sendQueued()
			<-b.slots
			if !sent {
				// Another slot holder took this read: wait for it.
				select {
				case <-r.done:
					return r.h, r.err
				case <-ctx.Done():
					r.abandoned.Store(true)
					return nil, ctx.Err()
				}
			}
		}
	}
}

// sendQueued takes up to maxBatch queued reads, sends them as one pipeline
// and hands each its answer. It reports whether there was anything to send.
func (b *reads) sendQueued() bool {
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	batch := make([]*read, 0, n)
	for _, r := range b.queue[:n] {
		if !r.abandoned.Load() {
			batch = append(batch, r)
		}
	}
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	b.mu.Unlock()
	if n == 0 {
		return false
	}
	if len(batch) == 0 {
		return true
	}
	ctx, cancel := b.timeout()
	defer cancel()
	if len(batch) == 1 {
		r := batch[0]
		r.h, r.err = b.rdb.HGetAll(ctx, r.key).Result()
		close(r.done)
		return true
	}
	cmds := make([]*redis.MapStringStringCmd, len(batch))
	pipe := b.rdb.Pipeline()
	for i, r := range batch {
		cmds[i] = pipe.HGetAll(ctx, r.key)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, r := range batch {
		r.h, r.err = cmds[i].Result()
		close(r.done)
	}
	return true
}
