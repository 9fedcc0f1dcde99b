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
//	sessionctl help <command>               a command's flags and exit statuses
//	sessionctl completion bash|zsh          a shell completion script
//	sessionctl version                      the module version and Go version
//
// Flags may come before or after the arguments. An argument that starts
// with '-' and is not one of the command's flags is an id, so backend ids
// such as -LNc_te8x need no quoting; after "--", every argument is an id.
// With -json a command prints one JSON value on stdout (watch: one a line,
// per message), an error included: {"command":"revoke","error":"...","exit":2}.
//
// Exit status: 0 success; 1 the operation failed (Redis unreachable or not
// a Redis server, wrong password, TLS failure, a session not found,
// revoke-user of a user with no indexed session; for doctor, a check
// failed); 2 bad usage or bad input (such as an invalid session id); 3 the
// demo saw a revoked session accepted; 4 revoked in Redis only: revoke or
// revoke-user wrote the revocation, but the backend (-backend or
// SESSIONCTL_BACKEND) still answers active for the session, so the
// revocation is lost with its Redis record (flush, eviction, restart without
// persistence, DEL) until the backend revokes the session too; 5 revoke or
// revoke-user wrote and published the revocation, but no gateway subscriber
// heard it (only sessionctl watch connections, or nobody, listened). When 4
// and 5 both apply, the status is 4.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
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
	// exitUnheard: a revocation written and published that no gateway
	// subscriber received.
	exitUnheard = 5
)

// exitStatusHelp is the exit status list of the top-level usage and of the
// README.
const exitStatusHelp = `exit status:
  0  success
  1  the operation failed: Redis unreachable or not a Redis server,
     credentials refused, TLS failure, a session not found, revoke-user of
     a user with no indexed session, a doctor check failed
  2  bad usage or input, such as an invalid id (no Redis command is sent)
  3  demo: a request was accepted after its session's revocation reached
     the replica
  4  revoke, revoke-user: revoked in Redis only: the backend still answers
     active
  5  revoke, revoke-user: written and published, but no gateway subscriber
     heard it (4 wins when both apply)
`

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

// dispatch runs the command args name. The command gets stdout through a
// countingWriter and stderr as a console (see report).
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stderr)
		return exitOK
	}
	cmd, ok := commands[args[0]]
	out := &countingWriter{w: stdout}
	con := &console{Writer: stderr, stdout: out, json: jsonRequested(args[1:])}
	if !ok {
		report(con, "", exitUsage, fmt.Sprintf("unknown command %s; sessionctl help lists the commands", strconv.Quote(args[0])))
		return exitUsage
	}
	return cmd.run(ctx, args[1:], out, con)
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: sessionctl <command> [flags] [args]\n\ncommands:\n")
	for _, n := range commandNames() {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Flags may come before or after the arguments. An argument that starts with
'-' and is not one of the command's flags is an id (sessionctl revoke
-LNc_te8x); after --, every argument is an id. With -json, a command prints
one JSON value on stdout (watch: one a line, per message), an error
included: {"command":...,"error":...,"exit":N}. "sessionctl help <command>"
prints a command's flags and exit statuses.

`)
	fmt.Fprint(w, exitStatusHelp)
}

// commandNames returns the registered commands, sorted.
func commandNames() []string {
	return slices.Sorted(maps.Keys(commands))
}

func init() {
	register("help", "print the usage, or a command's flags and exit statuses", runHelp)
}

// runHelp prints the usage, or "help <command>": the command's -h text, on
// stdout.
func runHelp(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("help", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), "usage: sessionctl help [command]\n") }
	if jsonRequested(args) {
		report(stderr, "help", exitUsage, "help prints text: -json does not apply")
		return exitUsage
	}
	pos, code := parseArgs(fs, args, stderr)
	if code >= 0 {
		return code
	}
	switch {
	case len(pos) == 0:
		usage(stdout)
		return exitOK
	case len(pos) > 1:
		report(stderr, "help", exitUsage, "want at most one command")
		return exitUsage
	}
	cmd, ok := commands[pos[0]]
	if !ok || pos[0] == "help" {
		if !ok {
			report(stderr, "help", exitUsage, fmt.Sprintf("unknown command %s; sessionctl help lists the commands", strconv.Quote(pos[0])))
			return exitUsage
		}
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	}
	return cmd.run(ctx, []string{"-h"}, stdout, &console{Writer: stdout, stdout: &countingWriter{w: stdout}})
}
