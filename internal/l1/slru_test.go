package l1

import (
	"fmt"
	"testing"

	"github.com/galaxy-game/sessioncache/session"
)

// TestSLRUTouch checks the promotion rules: a hit on probation promotes,
// a full protected segment demotes its least recently used entry, and a
// hit on a protected entry moves it to the front unless it is already in
// the most recent quarter.
func TestSLRUTouch(t *testing.T) {
	var l slru
	l.init(10) // protectedCap 8, recent 2
	es := make([]*entry, 10)
	for i := range es {
		id := fmt.Sprintf("s-%d", i)
		es[i] = &entry{rec: session.Record{DeviceSessionID: id}}
		if old := l.add(id, es[i]); old != nil {
			t.Fatalf("add(%q) evicted %q from a cache with room", id, old.rec.DeviceSessionID)
		}
	}
	order := func(s *segment) string {
		var ids []string
		for e := s.root.next; e != &s.root; e = e.next {
			ids = append(ids, e.rec.DeviceSessionID)
		}
		return fmt.Sprint(ids)
	}
	for i := range 8 {
		l.touch(es[i])
	}
	if got, want := order(&l.protected), "[s-7 s-6 s-5 s-4 s-3 s-2 s-1 s-0]"; got != want {
		t.Fatalf("protected after promoting s-0..s-7 = %s, want %s", got, want)
	}
	l.touch(es[8]) // promotes s-8, demotes s-0
	if got, want := order(&l.probation), "[s-0 s-9]"; got != want {
		t.Errorf("probation after promoting s-8 = %s, want %s", got, want)
	}
	l.touch(es[7]) // second most recent: within the recent quarter, stays
	if got, want := order(&l.protected), "[s-8 s-7 s-6 s-5 s-4 s-3 s-2 s-1]"; got != want {
		t.Errorf("protected after a hit on s-7 = %s, want %s (unchanged)", got, want)
	}
	l.touch(es[1]) // the least recent protected entry moves to the front
	if got, want := order(&l.protected), "[s-1 s-8 s-7 s-6 s-5 s-4 s-3 s-2]"; got != want {
		t.Errorf("protected after a hit on s-1 = %s, want %s", got, want)
	}
	if old := l.add("s-10", &entry{rec: session.Record{DeviceSessionID: "s-10"}}); old != es[9] {
		t.Errorf("add to a full cache evicted %v, want s-9 (the probation tail)", old)
	}
}
