// Command sessionctl runs the session cache's demo and the tools on-call
// engineers use against a real Redis during an incident.
//
// Usage:
//
//	sessionctl demo [flags]                 the main job on an embedded Redis
//	sessionctl inspect <session-id>         a session as Redis holds it
//	sessionctl revoke <session-id>          revoke one session (write + publish)
//	sessionctl revoke-user <user-id>        revoke every session of a user
//	sessionctl watch                        print invalidations as they arrive
//	sessionctl stats                        sessions by status, memory, listeners
//	sessionctl doctor                       check the Redis a deployment relies on
//
// Run `sessionctl <command> -h` for a command's flags. Exit status: 0 success;
// 1 the operation failed (Redis unreachable, wrong password, TLS failure; for
// doctor, a check failed); 2 bad usage or bad input (such as an invalid
// session id); 3 the demo saw a revoked session accepted; 4 revoked in Redis
// only: revoke or revoke-user wrote the revocation, but the backend (-backend
// or SESSIONCTL_BACKEND) still answers active for the session, so the
// revocation is lost with its Redis record (flush, eviction, restart without
// persistence, DEL) until the backend revokes the session too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// Exit statuses.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitAccepted = 3
	// exitRedisOnly: a revocation written in Redis that the backend does
	// not know (it still answers active).
	exitRedisOnly = 4
)

// command is one subcommand. run returns the exit status.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands is filled by each subcommand's file in its init function.
var commands = map[string]command{}

func register(name, summary string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) int) {
	commands[name] = command{summary: summary, run: run}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sessionctl: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: sessionctl <command> [flags] [args]")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "exit status: 0 ok, 1 failed, 2 bad usage or input, 3 demo saw a revoked session accepted,")
	fmt.Fprintln(w, "             4 revoked in Redis only: the backend still answers active")
}

// parseFlags parses a subcommand's flags; it returns the exit status to
// use when parsing stopped (help or error), or -1 to continue.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	return -1
}
