// Package incident tests the session cache against what operators and Redis
// itself do to session keys during an incident: hand edits typed into
// redis-cli, DEL, PEXPIRE, FLUSHDB and FLUSHALL, restarts with and without
// persistence, eviction under allkeys-lru, refused writes under noeviction,
// killed subscriber connections and typos in a record.
//
// Every test runs a real redis-server (internal/redistest), performs each
// operator action with the real redis-cli binary, serves sessions from the
// in-memory backend (backend/backendtest) and runs three replicas of the
// tiered cache in-process, each with its own Redis client. A workload
// goroutine per replica looks a fixed set of sessions up continuously, and a
// Checker records every answer with the time its lookup began. The figure
// that matters is the number of revoked sessions answered active: an active
// answer to a lookup that began more than a bound after the revocation
// completed (HandBound after a hand-typed HSET, Bound otherwise). A
// revocation the backend knows must never be answered active after its
// bound; one made only in Redis is lost with its record, and the tests log
// the exposure they measure for it instead of failing.
//
// The package is test support: its constructors take a *testing.T, fail
// the test on setup errors and stop what they start at cleanup. Methods of
// Env that fail the test must be called from the test's own goroutine; the
// Checker is safe for concurrent use.
package incident
