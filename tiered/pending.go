package tiered

import (
	"sync"
	"sync/atomic"

	"github.com/galaxy-game/sessioncache/session"
)

// maxPending bounds the revocations remembered while their Redis write is
// outstanding or has failed.
const maxPending = 65536

// pending remembers this replica's own revocations until Redis holds them:
// it is what the revocation worker retries, and what Stats reports as
// RevocationsPending. Between the L1 flip and the Redis write, L2 may still say
// "active" for a session L1 did not hold; a lookup in that window must not
// cache or serve that answer. Only misses consult it, and only while it is
// non-empty.
type pending struct {
	n atomic.Int64 // len(ids) + len(users), read without the lock

	mu    sync.Mutex       // guards ids and users
	ids   map[string]int64 // session id -> revocation time (Unix ms)
	users map[string]int64 // user id -> revocation time (Unix ms)
}

// snapshot returns the session and user ids owed.
func (p *pending) snapshot() (ids, users []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.ids {
		ids = append(ids, id)
	}
	for u := range p.users {
		users = append(users, u)
	}
	return ids, users
}

func newPending() *pending {
	return &pending{ids: make(map[string]int64), users: make(map[string]int64)}
}

// add remembers a revocation; it reports false when the set is full.
func (p *pending) add(id, userID string, atMS int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, key := p.ids, id
	if userID != "" {
		m, key = p.users, userID
	}
	if _, ok := m[key]; !ok {
		if len(p.ids)+len(p.users) >= maxPending {
			return false
		}
		m[key] = atMS
		p.n.Add(1)
	}
	return true
}

// done forgets a revocation that Redis now holds.
func (p *pending) done(id, userID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, key := p.ids, id
	if userID != "" {
		m, key = p.users, userID
	}
	if _, ok := m[key]; ok {
		delete(m, key)
		p.n.Add(-1)
	}
}

// check returns r revoked if it is active and its session, or (with users)
// its user, has a revocation outstanding.
func (p *pending) check(r session.Record, users bool) (session.Record, bool) {
	if p.n.Load() == 0 || r.Status != session.StatusActive {
		return r, false
	}
	p.mu.Lock()
	at, ok := p.ids[r.DeviceSessionID]
	if !ok && users && r.UserID != "" {
		at, ok = p.users[r.UserID]
	}
	p.mu.Unlock()
	if !ok {
		return r, false
	}
	return r.Revoked(at), true
}
