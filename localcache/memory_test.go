package localcache_test

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"runtime"
	"testing"

	"github.com/galaxy-game/sessioncache/localcache"
	"github.com/galaxy-game/sessioncache/session"
)

// maxHeapPerEntry is the heap budget of one cached active session,
// including its decoded strings, the LRU's bookkeeping and the user index.
const maxHeapPerEntry = 400

// heapPerEntry fills a new cache with n active sessions (three per user)
// whose strings are freshly allocated, as a decoder would, and returns the
// live heap growth per entry.
func heapPerEntry(t testing.TB, n int) float64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := newCache(t, localcache.Options{Size: n})
	for i := range n {
		sum := sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
		r := session.Record{
			DeviceSessionID: fmt.Sprintf("device-session-%08d", i),
			UserID:          fmt.Sprintf("user-%06d", i/3),
			ClientPublicKey: base64.StdEncoding.EncodeToString(sum[:]),
			Status:          session.StatusActive,
		}
		store(c, r)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := c.Len(); got != n {
		t.Fatalf("Len() = %d, want %d", got, n)
	}
	runtime.KeepAlive(c)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

func TestHeapPerEntry(t *testing.T) {
	const n = 50000
	per := heapPerEntry(t, n)
	t.Logf("%.0f bytes of heap per entry (%d entries)", per, n)
	if per > maxHeapPerEntry {
		t.Errorf("heap per entry = %.0f bytes, want at most %d", per, maxHeapPerEntry)
	}
}

// BenchmarkHeapPerEntry reports the heap cost of one entry as a metric.
func BenchmarkHeapPerEntry(b *testing.B) {
	var per float64
	for b.Loop() {
		per = heapPerEntry(b, 10000)
	}
	b.ReportMetric(per, "heap-B/entry")
}
