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
// TestPrometheusSubscriberAlert runs the real prometheus binary against the
// same topology with short scrape and evaluation intervals and the rule
// files of deploy/prometheus (the subscriber alert's `for:` shortened),
// blackholes one replica's Redis connection through a toxiproxy proxy, and
// waits, within deadlines derived from those intervals, for
// SessioncacheSubscriberDown to fire for that replica alone and to resolve
// once the network heals; it logs the seconds from the blackhole to the
// alert firing, and checks that every dashboard query returns series. It
// fails (never skips) when prometheus is missing (Debian's prometheus
// package; .ci/run installs it).
//
// The package has no API; it holds only tests.
package e2e
