package l1_test

import (
	"fmt"
	"testing"

	"github.com/galaxy-game/sessioncache/internal/l1"
	"github.com/galaxy-game/sessioncache/session"
)

// BenchmarkFill measures storing an active record with a fresh token.
func BenchmarkFill(b *testing.B) {
	recs := make([]session.Record, 10000)
	for i := range recs {
		recs[i] = active(fmt.Sprintf("device-session-%08d", i), fmt.Sprintf("user-%06d", i/3))
	}
	c := newCache(b, l1.Options{Size: len(recs)})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Fill(c.Begin(), recs[i])
		i++
		if i == len(recs) {
			i = 0
		}
	}
}
