package main

import (
	"strings"
	"testing"
	"time"
)

// fakeClock advances by step at every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	c.t = c.t.Add(c.step)
	return c.t
}

// TestProgressLines checks the lines progress prints: one each time the
// count crosses a multiple of every, the last at finish, with the total,
// the share, the elapsed time and the time left; without a total, the count
// and the elapsed time.
func TestProgressLines(t *testing.T) {
	tests := []struct {
		name  string
		total int64
		adds  []int64
		step  time.Duration
		want  []string
	}{
		{"with a total", 300, []int64{64, 64, 64, 64, 44}, time.Second, []string{
			"scanned 128 of 300 keys (42%), 1.0s elapsed, ETA 1.3s",
			"scanned 256 of 300 keys (85%), 2.0s elapsed, ETA 0.3s",
			"scanned 300 of 300 keys (100%), 3.0s elapsed", // and finish says nothing new
		}},
		{"the end between two multiples", 250, []int64{120, 130}, 20 * time.Second, []string{
			"scanned 120 of 250 keys (48%), 20s elapsed, ETA 22s",
			"scanned 250 of 250 keys (100%), 40s elapsed",
		}},
		{"total unknown", 0, []int64{150}, 20 * time.Second, []string{
			"scanned 150 keys, 20s elapsed",
		}},
		{"more than the total (keys written during the scan)", 100, []int64{150}, time.Minute, []string{
			"scanned 150 of 150 keys (100%), 1m0s elapsed",
		}},
		{"nothing to do", 0, nil, time.Second, []string{"scanned 0 keys, 1.0s elapsed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(0, 0), step: tt.step}
			var out strings.Builder
			p := newProgress(true, &out, "scanned", "keys", 0, 100, clock.now)
			p.setTotal(tt.total)
			for _, n := range tt.adds {
				p.add(n)
			}
			p.finish()
			got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("progress printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	var nilProgress *progress // disabled: every method is a no-op
	nilProgress.setTotal(1)
	nilProgress.add(1)
	nilProgress.finish()
	if p := newProgress(false, &strings.Builder{}, "x", "y", 0, 1, time.Now); p != nil {
		t.Errorf("newProgress(false, ...) = %+v, want nil", p)
	}
}
