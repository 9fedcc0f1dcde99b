package e2e

// Process helpers: build the commands, start them, wait until they answer,
// stop them, and make sure none outlives the test.

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bounds of the process helpers.
const (
	buildTimeout = 3 * time.Minute
	// readyTimeout bounds the wait for a process to answer HTTP.
	readyTimeout = 20 * time.Second
	// stopTimeout bounds the wait for a process to end after SIGTERM.
	stopTimeout = 5 * time.Second
	// logTail is how much of a process's log a failure prints.
	logTail = 4 << 10
)

// binaries are the commands built for the test.
type binaries struct {
	gatewayd, sessionctl string
}

// goTool returns the go command: the one in $GOROOT/bin (go test sets
// GOROOT for the tests it runs), else the one on PATH.
func goTool(t *testing.T) string {
	t.Helper()
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command in $GOROOT/bin or on PATH: %v", err)
	}
	return p
}

// buildCommands builds cmd/gatewayd and cmd/sessionctl into dir, once, and
// registers a check, run after every process's cleanup, that no process of
// those binaries is still alive.
func buildCommands(t *testing.T, dir string) binaries {
	t.Helper()
	gobin := goTool(t)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	mod, err := exec.CommandContext(ctx, gobin, "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" || strings.TrimSpace(string(mod)) == os.DevNull {
		t.Fatalf("go env GOMOD = %q, %v: want the module's go.mod", mod, err)
	}
	build := exec.CommandContext(ctx, gobin, "build", "-o", dir+string(filepath.Separator), "./cmd/gatewayd", "./cmd/sessionctl")
	build.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gatewayd ./cmd/sessionctl: %v\n%s", err, out)
	}
	b := binaries{gatewayd: filepath.Join(dir, "gatewayd"), sessionctl: filepath.Join(dir, "sessionctl")}
	t.Cleanup(func() {
		if left := runningFrom(dir); len(left) > 0 {
			t.Errorf("processes still running from %s after the test: %v", dir, left)
		}
	})
	return b
}

// runningFrom lists the processes whose executable lives in dir (Linux:
// /proc/<pid>/exe; elsewhere it finds nothing).
func runningFrom(dir string) []string {
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	var left []string
	for _, e := range exes {
		target, err := os.Readlink(e)
		if err == nil && filepath.Dir(target) == dir {
			left = append(left, filepath.Base(filepath.Dir(e))+":"+filepath.Base(target))
		}
	}
	return left
}

// proc is one started process. Its log (stdout and stderr) goes to a file
// that a failing test prints.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has ended and been reaped
}

// startProc starts bin with args. At cleanup the process is killed if it
// still runs, reaped, and its log printed when the test failed.
func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create %s: %v", logPath, err)
	}
	p := &proc{name: name, logPath: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, p.logTail())
		}
	})
	return p
}

// kill ends the process with SIGKILL, if it still runs, and waits for it.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to stopTimeout for the process to end. It
// returns the exit status and how long the process took; a process that
// does not end in time is killed and fails the test.
func (p *proc) stop(t *testing.T) (code int, took time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		p.kill()
		t.Fatalf("%s still running %v after SIGTERM; killed", p.name, stopTimeout)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}

// logTail returns the end of the process's log.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > logTail {
		b = b[len(b)-logTail:]
	}
	return string(b)
}

// waitHTTP polls url with GET until it answers want or readyTimeout
// passes, failing the test then. Polling is the only way to learn that
// another process is ready. A process that ends meanwhile fails at once.
func waitHTTP(t *testing.T, client *http.Client, p *proc, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	var last string
	for {
		if p.exited() {
			t.Fatalf("%s ended before answering GET %s: %v\n%s", p.name, url, p.cmd.ProcessState, p.logTail())
		}
		resp, err := client.Get(url)
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status + " " + strings.TrimSpace(body.String())
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %s after %v, want %d", url, last, readyTimeout, want)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// runCmd runs bin with args (bounded by 30 s) and returns its stdout,
// stderr and exit status; failing to run it at all fails the test.
func runCmd(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run %s %q: %v", filepath.Base(bin), args, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}
