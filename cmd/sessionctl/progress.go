package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress prints how far a long command is on stderr: "scanned 120000 of
// 200000 keys (60%), 3.1s elapsed, ETA 2.1s". It prints a line each time
// the count crosses a multiple of every, and a last one at finish. On a
// terminal each line overwrites the previous one. A nil *progress prints
// nothing. It is safe for concurrent use (cluster nodes are scanned
// concurrently).
type progress struct {
	w     io.Writer
	term  bool
	verb  string // "scanned"
	noun  string // "keys"
	every int64
	now   func() time.Time
	start time.Time

	mu      sync.Mutex // guards total, done and printed, and orders writes to w
	total   int64      // 0: unknown
	done    int64
	printed int64 // the count last printed, -1 before the first line
}

// newProgress returns a progress printer on w, or nil when show is false.
// total may be 0 (unknown); now is the clock (time.Now outside tests).
func newProgress(show bool, w io.Writer, verb, noun string, total, every int64, now func() time.Time) *progress {
	if !show {
		return nil
	}
	return &progress{w: w, term: isTerminal(w), verb: verb, noun: noun, total: total, every: every, now: now, start: now(), printed: -1}
}

// setTotal sets the total once it is known (0: unknown).
func (p *progress) setTotal(total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = total
}

// add counts n more and prints a line when the count crosses a multiple of
// every.
func (p *progress) add(n int64) {
	if p == nil || n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	before := p.done
	p.done += n
	if p.done/p.every != before/p.every {
		p.printLocked()
	}
}

// finish prints the last line, unless the last line printed already says
// it, and on a terminal ends it.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.printed != p.done {
		p.printLocked()
	}
	if p.term {
		fmt.Fprintln(p.w)
	}
}

func (p *progress) printLocked() {
	line := p.lineLocked()
	if p.term {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line) // \x1b[K clears the rest of the previous line
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.printed = p.done
}

// lineLocked formats the current state. A total exceeded (keys written
// during a scan) counts as the count so far.
func (p *progress) lineLocked() string {
	elapsed := p.now().Sub(p.start)
	total := max(p.total, p.done)
	if p.total <= 0 || total == 0 {
		return fmt.Sprintf("%s %d %s, %s elapsed", p.verb, p.done, p.noun, fmtProgressDuration(elapsed))
	}
	s := fmt.Sprintf("%s %d of %d %s (%d%%), %s elapsed", p.verb, p.done, total, p.noun, p.done*100/total, fmtProgressDuration(elapsed))
	if p.done > 0 && p.done < total {
		eta := time.Duration(float64(elapsed) * float64(total-p.done) / float64(p.done))
		s += ", ETA " + fmtProgressDuration(eta)
	}
	return s
}

// fmtProgressDuration rounds a duration for a progress line: 0.4s, 12s,
// 3m20s.
func fmtProgressDuration(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}
