// Command gatewayd is a reference gateway replica: an HTTP server that
// authenticates every request through the tiered session cache.
//
// A request carries its device session id and an Ed25519 signature
// (package internal/signing: headers X-Session-Id, X-Timestamp and
// X-Signature over method, path and query, timestamp and body hash). The
// gateway looks the session up (L1, Redis, backend), rejects it when
// unknown or revoked, verifies the signature with the session's public key
// and refuses stale or replayed timestamps:
//
//	200  {"user_id": "...", "device_session_id": "<redacted>"}
//	401  {"error": "<reason>"}: missing_session, invalid_session_id,
//	     malformed_signature, stale_timestamp, unknown_session, revoked,
//	     bad_signature, replay
//	413  body_too_large
//	503  {"error": "unavailable"}: no tier could answer (fail closed)
//
// Other endpoints:
//
//	GET  /metrics         Prometheus metrics (sessioncache_*, Go, process)
//	GET  /healthz         Redis ping, subscription and backend state as JSON;
//	                      200 when all are OK, 503 otherwise
//	POST /internal/push   one session_invalidation event in the channel's
//	                      JSON form, {"session":"id"} or {"user":"uid"};
//	                      calls MarkRevoked or MarkAllRevokedForUser and
//	                      answers 202. With -push-token it requires
//	                      "Authorization: Bearer <token>".
//	GET  /debug/sessions/{id}
//	                      what this replica would do now with a request of
//	                      session {id}, as JSON: "decision" (accept,
//	                      reject_revoked, reject_unknown, deny_error), the
//	                      "tier" that decides (l1, l2, backend, none) and
//	                      what L1, Redis and the backend hold. It changes
//	                      no cache: L1 is peeked, Redis read with HGETALL,
//	                      the backend asked with one GET, nothing filled or
//	                      counted. It takes the same bearer token as the
//	                      push; an invalid id is a 400. `sessionctl inspect
//	                      <id> -gateways URL,...` asks every replica.
//
// Logs are JSON lines on stderr (log/slog) and never hold a full session id.
// SIGTERM or SIGINT stops accepting connections, lets requests in flight
// finish (up to 10 s) and closes the cache. Run `gatewayd -h` for the flags.
//
// `gatewayd healthcheck` GETs /healthz on the local listen address (or any
// -url) and exits 0 when it answers 200 (or -status), 1 otherwise: a
// container healthcheck for the image, which has no shell and no curl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// shutdownTimeout bounds the wait for requests in flight at shutdown.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses the flags, starts the gateway and serves until ctx ends, or
// runs the healthcheck subcommand. It returns the exit status: 0 after a
// graceful shutdown, 1 on a failure, 2 on bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return runHealthcheck(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("gatewayd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	cfg.registerFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gatewayd [flags]\n       gatewayd healthcheck [-listen addr | -url URL] [-status code] [-timeout d]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gatewayd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	g, err := newGateway(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "gatewayd: %v\n", err)
		return 2
	}
	defer g.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "gatewayd: %v\n", err)
		return 1
	}
	if err := g.serve(ctx, ln); err != nil {
		fmt.Fprintf(stderr, "gatewayd: %v\n", err)
		return 1
	}
	return 0
}

// serve waits for the invalidation channel (up to -sync-timeout), then
// serves on ln until ctx ends, and shuts down gracefully: it stops
// accepting, waits for requests in flight and closes the gateway.
func (g *gateway) serve(ctx context.Context, ln net.Listener) error {
	if g.cfg.PushToken == "" {
		g.log.Warn("no -push-token: anyone who reaches " + pushPath + " can revoke sessions, and " +
			debugSessionsPath + " answers anyone")
	}
	g.waitSynced(ctx)
	srv := &http.Server{
		Handler:           g.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	g.log.Info("gatewayd listening", "addr", ln.Addr().String(), "backend", g.cfg.BackendURL)
	select {
	case err := <-errc:
		g.Close()
		return err
	case <-ctx.Done():
	}
	g.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	g.Close()
	return err
}
