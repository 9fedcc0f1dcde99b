package redistest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakGrace is how long VerifyTestMain lets goroutines end by themselves.
const leakGrace = 5 * time.Second

// VerifyTestMain is goleak.VerifyTestMain with a grace period: after the
// tests pass it checks for leaked goroutines for up to 5s before failing.
// goleak alone gives up after about half a second, but a closed go-redis
// (v9.23) client whose server was killed keeps a dial prober
// (pool.(*ConnPool).tryDial) asleep for up to a second before it notices
// the close. Use it as
//
//	func TestMain(m *testing.M) { redistest.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := findLeaks(leakGrace, opts...); err != nil {
			fmt.Fprintf(os.Stderr, "redistest: goroutines leaked after a successful run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// findLeaks polls goleak.Find until it finds nothing or grace passes:
// nothing signals the end of another library's goroutine.
func findLeaks(grace time.Duration, opts ...goleak.Option) error {
	deadline := time.Now().Add(grace)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
