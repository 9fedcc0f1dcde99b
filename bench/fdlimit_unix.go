//go:build linux || darwin

package bench

import (
	"fmt"
	"syscall"
)

// RaiseOpenFiles makes sure this process may hold at least need open
// files, raising the soft limit (RLIMIT_NOFILE) up to the hard one if it
// is lower, and returns the soft limit in force.
func RaiseOpenFiles(need int) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("bench: getrlimit: %w", err)
	}
	if lim.Cur >= uint64(need) {
		return lim.Cur, nil
	}
	if lim.Max < uint64(need) {
		return lim.Cur, fmt.Errorf("bench: %d open files needed, hard limit %d (raise it with ulimit -Hn)", need, lim.Max)
	}
	lim.Cur = uint64(need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("bench: setrlimit %d open files: %w", need, err)
	}
	return lim.Cur, nil
}
