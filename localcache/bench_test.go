package localcache_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/session"
)

const benchKeys = 10000

func benchRecords() []session.Record {
	recs := make([]session.Record, benchKeys)
	for i := range recs {
		recs[i] = active(fmt.Sprintf("device-session-%08d", i), fmt.Sprintf("user-%06d", i/3))
	}
	return recs
}

// BenchmarkGetHit measures a hit in a full cache of benchKeys entries.
// Compare with BenchmarkRawLRUGet, the same keys in golang-lru's
// thread-safe lru.Cache without expiry or revocation.
func BenchmarkGetHit(b *testing.B) {
	recs := benchRecords()
	c := newCache(b, localcache.Options{Size: benchKeys})
	for _, r := range recs {
		fill(b, c, r)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := c.Get(recs[i].DeviceSessionID); !ok {
				b.Fatalf("Get(%q) = miss", recs[i].DeviceSessionID)
			}
			i++
			if i == len(recs) {
				i = 0
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var next atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(7919)) % len(recs)
			for pb.Next() {
				if _, ok := c.Get(recs[i].DeviceSessionID); !ok {
					b.Errorf("Get(%q) = miss", recs[i].DeviceSessionID)
					return
				}
				i++
				if i == len(recs) {
					i = 0
				}
			}
		})
	})
}

// BenchmarkRawLRUGet is the baseline for BenchmarkGetHit.
func BenchmarkRawLRUGet(b *testing.B) {
	recs := benchRecords()
	c, err := lru.New[string, session.Record](benchKeys)
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range recs {
		c.Add(r.DeviceSessionID, r)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := c.Get(recs[i].DeviceSessionID); !ok {
				b.Fatalf("Get(%q) = miss", recs[i].DeviceSessionID)
			}
			i++
			if i == len(recs) {
				i = 0
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var next atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(7919)) % len(recs)
			for pb.Next() {
				if _, ok := c.Get(recs[i].DeviceSessionID); !ok {
					b.Errorf("Get(%q) = miss", recs[i].DeviceSessionID)
					return
				}
				i++
				if i == len(recs) {
					i = 0
				}
			}
		})
	})
}

// BenchmarkFill measures storing an active record with a fresh token.
func BenchmarkFill(b *testing.B) {
	recs := benchRecords()
	c := newCache(b, localcache.Options{Size: benchKeys})
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
