package main

// What every command shares on its command line: flags before or after
// the arguments, ids that start with '-', one-line errors (a JSON object on
// stdout with -json), and -h texts that never print a secret.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/galaxy-game/sessioncache/session"
)

// console is the stderr that dispatch hands a command. Writes go through to
// the process's stderr (notes, warnings, progress, -h); report reads the
// rest: whether the command's errors are JSON (-json), whether stdout
// already holds the command's output, and the ids the operator typed.
// A command writes to it from one goroutine, or through a lockedWriter.
type console struct {
	io.Writer
	stdout *countingWriter
	// json is true once -json is known to be set: from the raw arguments
	// at first (so that a flag error is JSON too), then as parsed.
	json bool
	// ids are the arguments parseArgs took as ids; report writes them in
	// full where the library's messages redact them.
	ids []string
}

// countingWriter remembers whether anything was written through it.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// underlying returns the writer a console or countingWriter wraps, so that
// isTerminal sees the file.
func underlying(w io.Writer) io.Writer {
	for {
		switch v := w.(type) {
		case *console:
			w = v.Writer
		case *countingWriter:
			w = v.w
		case *lockedWriter:
			w = v.w
		default:
			return w
		}
	}
}

// jsonError is what an error looks like with -json: the one object on
// stdout.
type jsonError struct {
	Command string `json:"command"`
	Error   string `json:"error"`
	Exit    int    `json:"exit"`
}

// report prints a command's error: one line on stderr, "sessionctl <name>:
// <msg>"; with -json, and when the command has printed nothing on stdout
// yet, a jsonError on stdout instead, so that stdout always holds exactly
// one JSON value (when a report was printed first, it says what failed and
// the line goes to stderr).
func report(stderr io.Writer, name string, code int, msg string) {
	if c, ok := stderr.(*console); ok {
		msg = unredact(msg, c.ids)
		if c.json && c.stdout.n.Load() == 0 {
			b, _ := json.Marshal(jsonError{Command: name, Error: msg, Exit: code}) // strings and an int always encode
			fmt.Fprintf(c.stdout, "%s\n", b)
			return
		}
	}
	if name == "" {
		fmt.Fprintf(stderr, "sessionctl: %s\n", msg)
		return
	}
	fmt.Fprintf(stderr, "sessionctl %s: %s\n", name, msg)
}

// libraryIDPrefixes are the library's error prefixes that name the id a
// call was given, redacted.
var libraryIDPrefixes = []string{"rediscache: get ", "rediscache: revoke session ", "rediscache: revoke user "}

// unredact restores, in a library error message, the ids the operator
// typed: the library shortens ids in its errors ("dev-…"), but an operator
// who typed one needs to see which. Only the library's own "<op> <id>: "
// prefixes are rewritten, so another id that happens to share the
// shortened form stays as it is.
func unredact(msg string, ids []string) string {
	for _, id := range ids {
		if session.ValidateID(id) != nil && session.ValidateUserID(id) != nil {
			continue // never echo bytes that are not an id
		}
		for _, p := range libraryIDPrefixes {
			msg = strings.ReplaceAll(msg, p+session.Redact(id)+": ", p+id+": ")
		}
	}
	return msg
}

// jsonRequested reports whether the raw arguments set -json (before any
// "--"), so that an error met while parsing them is JSON too.
func jsonRequested(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "json" {
			continue
		}
		if !hasValue {
			return true
		}
		v, err := strconv.ParseBool(value)
		return err == nil && v
	}
	return false
}

// jsonFlag reports whether fs has a -json flag set to true.
func jsonFlag(fs *flag.FlagSet) bool {
	f := fs.Lookup("json")
	return f != nil && f.Value.String() == "true"
}

// idsHelp is the -h paragraph of the commands that take an id.
const idsHelp = `
arguments:
  Flags may come before or after the id. An argument that starts with '-'
  is a flag when it names one of the flags above (-json, --json,
  -timeout=1s, -timeout 1s); otherwise, if it is a valid id, it is the id:
  backend ids such as -LNc_te8x need no quoting (sessionctl revoke
  -LNc_te8x). After --, every argument is an id: use it for an id that is
  also a flag's name (sessionctl revoke -- -json).
`

// parseArgs parses the command line of a command that takes ids (see
// idsHelp) and returns them. A status >= 0 means stop with it: 0 after -h,
// exitUsage after a flag error, reported on one line.
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, int) {
	return parseCommand(fs, args, stderr, true)
}

// parseFlags parses the command line of a command that takes no
// arguments; it returns the status to stop with, or -1 to continue.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	pos, code := parseCommand(fs, args, stderr, false)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		report(stderr, fs.Name(), exitUsage, fmt.Sprintf("%s takes no arguments (got %s)", fs.Name(), strconv.Quote(pos[0])))
		return exitUsage
	}
	return -1
}

// parseCommand splits args into flags and positional arguments (splitArgs),
// parses the flags and returns the positional arguments, or the status to
// stop with. Flag errors are one line, not the usage: the flag package's
// message and where the flags are listed.
func parseCommand(fs *flag.FlagSet, args []string, stderr io.Writer, takesIDs bool) ([]string, int) {
	if c, ok := stderr.(*flagCollector); ok {
		c.fs = fs
		return nil, exitOK
	}
	flags, pos := splitArgs(fs, args, takesIDs)
	fs.SetOutput(io.Discard)
	err := fs.Parse(flags)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return nil, exitOK
	case err != nil:
		report(stderr, fs.Name(), exitUsage, err.Error()+"; sessionctl help "+fs.Name()+" lists the flags")
		return nil, exitUsage
	}
	pos = append(pos, fs.Args()...) // none: splitArgs passes values with their flags
	if c, ok := stderr.(*console); ok {
		if fs.Lookup("json") != nil {
			c.json = jsonFlag(fs)
		}
		if takesIDs {
			c.ids = pos
		}
	}
	return pos, -1
}

// splitArgs sorts a command line into flag arguments, in order and with
// the values of non-boolean flags, and positional arguments. "--" ends the
// flags. An argument that starts with '-' is a flag when it names one of
// fs's flags, or -h/-help; otherwise, for a command that takes ids, it is
// an id if it is a valid one; anything else is left to fs.Parse to reject
// as an undefined flag.
func splitArgs(fs *flag.FlagSet, args []string, takesIDs bool) (flags, pos []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(pos, args[i+1:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		if f == nil && name != "h" && name != "help" && takesIDs && (session.ValidateID(a) == nil || session.ValidateUserID(a) == nil) {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		if f != nil && !hasValue && !isBoolFlag(f) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, pos
}

// isBoolFlag reports whether f takes no value (-json, not -json true).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// setUsage installs a -h text: the synopsis, what the command does, its
// flags and the exit statuses common to the incident commands.
func setUsage(fs *flag.FlagSet, synopsis, about string) {
	setUsageStatuses(fs, synopsis, about, exitCodesHelp)
}

// setUsageStatuses is setUsage with a command's own exit statuses text.
// A synopsis that names an id ("<session-id>", "<user-id>") gets idsHelp.
func setUsageStatuses(fs *flag.FlagSet, synopsis, about, statuses string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: sessionctl %s\n\n%s\n\nflags:\n", synopsis, about)
		printDefaults(w, fs)
		if strings.Contains(synopsis, "-id>") {
			fmt.Fprint(w, idsHelp)
		}
		fmt.Fprint(w, statuses)
	}
}

// printDefaults is flag.PrintDefaults, but a default that is a URL with a
// password (-redis from $REDIS_URL) is shown with the password redacted.
func printDefaults(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		var b strings.Builder
		fmt.Fprintf(&b, "  -%s", f.Name)
		name, usage := flag.UnquoteUsage(f)
		if name != "" {
			b.WriteString(" " + name)
		}
		if b.Len() <= 4 { // "  -x": the usage fits on the same line
			b.WriteString("\t")
		} else {
			b.WriteString("\n    \t")
		}
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch def := f.DefValue; {
		case def == "" || def == "false" || def == "0" || def == "0s":
		case name == "string":
			fmt.Fprintf(&b, " (default %q)", redactURL(def))
		default:
			fmt.Fprintf(&b, " (default %v)", def)
		}
		fmt.Fprintln(w, b.String())
	})
}

// redactURL returns s with the password of a URL replaced by "xxxxx". A
// string that looks like a URL with credentials but does not parse is not
// shown at all.
func redactURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil && strings.Contains(s, "://") && strings.Contains(s, "@"):
		return "(not shown: it may hold a password)"
	case err != nil || u.User == nil:
		return s
	}
	if _, ok := u.User.Password(); !ok {
		return s
	}
	return u.Redacted()
}

// flagCollector stands in for a command's stderr to learn its flags (for
// completion): parseArgs and parseFlags record the FlagSet and stop the
// command before it does anything.
type flagCollector struct {
	fs *flag.FlagSet
}

func (*flagCollector) Write(p []byte) (int, error) { return len(p), nil }
