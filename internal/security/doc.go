// Package security holds the module's security and hardening tests, run on
// real redis-server processes: hostile messages on the invalidation
// channel, the least-privilege ACL of deploy/redis/gateway.acl, TLS and
// authentication through internal/redisconn, what reaches the logs, a
// failover that loses an acknowledged revocation, and goroutine and
// file-descriptor leaks after Close. It has no API: the package exists for
// its tests, which SECURITY.md and RELIABILITY.md cite.
package security
