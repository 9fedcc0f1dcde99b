// Package e2e holds the end-to-end test of the docker-compose topology
// (docker-compose.yml at the repository root), run as plain processes on
// loopback ports: a real redis-server, `sessionctl backend` and three
// `gatewayd` replicas, built from the repository once per test run.
//
// The test signs requests to every replica, revokes through the backend's
// push, by user, and by hand with redis-cli, and checks that every replica
// rejects the session at once, that the runbook's redis-cli commands show the
// revocation, and that every process ends with exit status 0 on SIGTERM.
// It fails (never skips) when redis-server or redis-cli is missing.
//
// The package has no API; it holds only tests.
package e2e
