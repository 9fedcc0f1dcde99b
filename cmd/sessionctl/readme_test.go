package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/galaxy-game/sessioncache/internal/redistest"
)

// TestREADMEListsTheExitStatuses checks that the README lists the exit
// statuses the usage prints, word for word.
func TestREADMEListsTheExitStatuses(t *testing.T) {
	b, err := os.ReadFile(runbookPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "```text\n"+exitStatusHelp+"```\n") {
		t.Errorf("%s does not list the exit statuses as the usage does; want a ```text block holding\n%s", runbookPath, exitStatusHelp)
	}
}

// readmeGatewayBlock returns the README's block that starts a gateway by
// hand: the lines from "go build" to the end of the fence.
func readmeGatewayBlock(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(runbookPath)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n```\ngo build -o bin/ ./cmd/...")
	if !ok {
		t.Fatalf("%s has no block starting with go build -o bin/ ./cmd/...", runbookPath)
	}
	block, _, ok := strings.Cut("go build -o bin/ ./cmd/..."+rest, "\n```\n")
	if !ok {
		t.Fatalf("%s: the go build block is not closed", runbookPath)
	}
	return strings.Split(block, "\n")
}

// TestREADMEGatewayQuickStartRuns runs the README's block that starts
// Redis, the test backend and a gateway and sends signed requests, in sh,
// on free ports: it builds before it runs anything, waits for the gateway
// before the first request, and the request before and after the
// revocation answer what the comments say.
func TestREADMEGatewayQuickStartRuns(t *testing.T) {
	lines := readmeGatewayBlock(t)
	for _, l := range lines {
		if strings.Contains(l, "go run") {
			t.Errorf("README gateway block: %q runs a compilation; build first (go build -o bin/ ./cmd/...)", l)
		}
	}
	redistest.Binary(t, "redis-server")
	needTool(t, "curl")
	gobin := goCommand(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ports := map[string]string{
		"6379": strconv.Itoa(redistest.FreePort(t)),
		"8080": strconv.Itoa(redistest.FreePort(t)),
		"8081": strconv.Itoa(redistest.FreePort(t)),
	}
	pidfile := filepath.Join(dir, "redis.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidfile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	var script strings.Builder
	// Background jobs end with the script; the test kills its process
	// group too if it hangs.
	script.WriteString("pids=\ntrap 'kill $pids 2>/dev/null; wait' EXIT\n")
	for _, l := range lines {
		for from, to := range ports {
			l = strings.ReplaceAll(l, "127.0.0.1:"+from, "127.0.0.1:"+to)
			l = strings.ReplaceAll(l, "--port "+from, "--port "+to)
		}
		switch {
		case strings.HasPrefix(l, "go build "):
			l, _, _ = strings.Cut(l, " #")
			l = "(cd " + shellQuote(root) + " && " + shellQuote(gobin) + strings.TrimPrefix(l, "go") + ") || exit 1"
			l = strings.Replace(l, " -o bin/ ", " -o "+shellQuote(filepath.Join(dir, "bin")+"/")+" ", 1)
		case strings.HasPrefix(l, "redis-server "):
			l += " --dir " + shellQuote(dir) + " --pidfile " + shellQuote(pidfile)
		}
		l = strings.ReplaceAll(l, "<device_session_id>", `$(sed -n 's/.*"device_session_id":"\([^"]*\)".*/\1/p' alice.json)`)
		script.WriteString(l + "\n")
		if strings.HasSuffix(strings.TrimSpace(l), "&") {
			script.WriteString("pids=\"$pids $!\"\n")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script.String())
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://127.0.0.1:"+ports["6379"])
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	got := out.String()
	ok := strings.Index(got, "HTTP/1.1 200 OK")
	unauthorized := strings.Index(got, "HTTP/1.1 401 Unauthorized\n{\"error\":\"revoked\"}")
	if ctx.Err() != nil || ok < 0 || unauthorized < ok {
		t.Errorf("the README's gateway block (%v) printed:\n%s\nwant a 200 OK, then a 401 revoked", err, got)
	}
}

// shellQuote quotes s for sh in single quotes.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
