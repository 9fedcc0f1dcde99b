package security

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/galaxy-game/sessioncache/backend/backendtest"
	"github.com/galaxy-game/sessioncache/internal/redistest"
	"github.com/galaxy-game/sessioncache/session"
)

// openFDs returns the number of open file descriptors of the process.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(entries)
}

// TestCloseReleasesGoroutinesAndFDs creates 200 tiered caches against one
// redis-server, one after the other, each with its own Redis and backend
// clients: it waits for its subscription, looks a session up, revokes it,
// and is closed. Afterwards the goroutines are those of before (goleak)
// and the open file descriptors have not grown beyond a small margin.
func TestCloseReleasesGoroutinesAndFDs(t *testing.T) {
	const (
		caches = 200
		margin = 8 // descriptors the runtime or the servers may still hold
	)
	srv := redistest.Start(t, redistest.Options{})
	be := backendtest.NewServer()
	t.Cleanup(be.Close)
	cycle := func(i int) {
		t.Helper()
		rec, _ := be.NewSession(fmt.Sprintf("user-%d", i))
		name := fmt.Sprintf("leak-%d", i)
		// A subtest owns the cleanups: the cache and its clients are
		// closed when it returns.
		t.Run(name, func(t *testing.T) {
			c := startReplica(t, replicaConfig{name: name, client: plainClient(srv.Addr, name), backendURL: be.URL()})
			if got, err := c.Lookup(ctx, rec.DeviceSessionID); err != nil || got.Status != session.StatusActive {
				t.Fatalf("Lookup = %v, %v; want active", got.Status, err)
			}
			if err := c.Revoke(ctx, rec.DeviceSessionID); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
		})
	}
	cycle(-1) // warm up: HTTP transport, connection pools of the helpers
	// Without the collector, a socket nobody closed stays open (its
	// finalizer would close it), so a missing Close shows.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	ignore := goleak.IgnoreCurrent()
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)
	for i := range caches {
		cycle(i)
	}
	peakFD := openFDs(t)
	// The backend server's side of a connection closes when it reads the
	// client's close: poll for it.
	deadline := time.Now().Add(10 * time.Second)
	fds := openFDs(t)
	for fds > baseFD+margin && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		fds = openFDs(t)
	}
	if err := goleak.Find(ignore); err != nil {
		t.Errorf("goroutines left after %d caches were closed: %v", caches, err)
	}
	t.Logf("%d caches: goroutines %d before, %d after; open fds %d before, %d right after the last Close, %d settled",
		caches, baseG, runtime.NumGoroutine(), baseFD, peakFD, fds)
	if fds > baseFD+margin {
		t.Errorf("open file descriptors grew from %d to %d after %d caches were closed, want at most +%d", baseFD, fds, caches, margin)
	}
}

// TestGoroutineStartersCheckLeaks walks the module: every package whose
// non-test code starts a goroutine (a go statement, context.AfterFunc or
// time.AfterFunc) must check for leaked goroutines in its TestMain
// (goleak.VerifyTestMain, directly or through redistest.VerifyTestMain).
func TestGoroutineStartersCheckLeaks(t *testing.T) {
	root := filepath.Join("..", "..")
	starters := map[string]bool{} // dir -> has a go statement
	checked := map[string]bool{}  // dir -> TestMain verifies leaks
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		if strings.HasSuffix(path, "_test.go") {
			for _, decl := range f.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if ok && fn.Name.Name == "TestMain" && fn.Recv == nil && callsLeakCheck(fn) {
					checked[dir] = true
				}
			}
			return nil
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if startsGoroutine(n) {
				starters[dir] = true
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatalf("walk the module: %v", err)
	}
	if len(starters) == 0 {
		t.Fatal("found no package that starts a goroutine: the walk is broken")
	}
	for dir := range starters {
		rel, _ := filepath.Rel(root, dir)
		if !checked[dir] {
			t.Errorf("package ./%s starts goroutines but its TestMain does not check for leaks (goleak.VerifyTestMain or redistest.VerifyTestMain)", filepath.ToSlash(rel))
		} else {
			t.Logf("./%s: starts goroutines, TestMain checks for leaks", filepath.ToSlash(rel))
		}
	}
}

// startsGoroutine reports whether n is a go statement or a call of
// context.AfterFunc or time.AfterFunc, which run a function on a goroutine
// of their own.
func startsGoroutine(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.GoStmt:
		return true
	case *ast.CallExpr:
		sel, ok := n.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "AfterFunc" {
			return false
		}
		pkg, ok := sel.X.(*ast.Ident)
		return ok && (pkg.Name == "context" || pkg.Name == "time")
	}
	return false
}

// callsLeakCheck reports whether fn calls a VerifyTestMain function.
func callsLeakCheck(fn *ast.FuncDecl) bool {
	found := false
	ast.Inspect(fn, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok {
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "VerifyTestMain" {
				found = true
			}
			if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "VerifyTestMain" {
				found = true
			}
		}
		return !found
	})
	return found
}
