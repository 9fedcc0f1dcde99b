package l1

// The entries live in a segmented LRU (SLRU). A new entry enters the
// probationary segment; a hit there promotes it to the protected segment,
// which holds at most protectedShare of the entries and, when full, demotes
// its least recently used entry to the front of probation. Eviction takes
// the least recently used probationary entry. A session that is read again
// while on probation therefore outlives a stream of sessions read once,
// which is the long tail of a Zipf popularity: at Zipf s = 1.1 over 100,000
// sessions with 10,000 entries, the hit ratio is about 87.5% where a plain
// LRU gets 84.5% (localcache's BenchmarkHitRatio and TestHitRatioZipf11).
//
// The lists are intrusive (the links are fields of entry), so a hit, a
// promotion and a demotion move pointers and allocate nothing. A hit on a
// protected entry that is already among the most recent quarter of its
// segment does not move it (the order within that quarter never decides
// an eviction), so that the hottest sessions are read without writing to
// their neighbours' cache lines.

// protectedShare is the largest share of Size in the protected segment, as
// a fraction protectedNum/protectedDen.
const (
	protectedNum = 4
	protectedDen = 5
)

// segment is a circular doubly-linked list of entries with a sentinel:
// root.next is the most recently used entry, root.prev the least.
type segment struct {
	root entry
	n    int
}

func (s *segment) init() {
	s.root.next, s.root.prev = &s.root, &s.root
}

func (s *segment) pushFront(e *entry) {
	e.prev, e.next = &s.root, s.root.next
	s.root.next.prev = e
	s.root.next = e
	s.n++
}

func (s *segment) remove(e *entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
	s.n--
}

func (s *segment) moveToFront(e *entry) {
	if s.root.next == e {
		return
	}
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = &s.root, s.root.next
	s.root.next.prev = e
	s.root.next = e
}

// back returns the least recently used entry, or nil.
func (s *segment) back() *entry {
	if s.n == 0 {
		return nil
	}
	return s.root.prev
}

// slru is the bounded map of entries. It is not safe for concurrent use:
// Cache calls it with Cache.mu held.
type slru struct {
	items        map[string]*entry
	probation    segment
	protected    segment
	size         int // the bound on len(items)
	protectedCap int // the bound on protected.n
	// moves counts the entries put at the front of the protected segment;
	// an entry's stamp is moves at its last move, so moves-stamp bounds
	// its distance from the front.
	moves uint64
	// recent is the distance from the front within which a protected
	// entry is not moved by a hit: protectedCap/4.
	recent uint64
}

func (l *slru) init(size int) {
	l.items = make(map[string]*entry)
	l.size = size
	l.protectedCap = size * protectedNum / protectedDen
	l.recent = uint64(l.protectedCap / 4)
	l.probation.init()
	l.protected.init()
}

func (l *slru) len() int { return len(l.items) }

// peek returns the entry for id without marking it used.
func (l *slru) peek(id string) *entry { return l.items[id] }

// touch marks e used: a protected entry moves to the front of its segment;
// a probationary one is promoted, demoting the least recently used
// protected entry when the protected segment is full.
func (l *slru) touch(e *entry) {
	switch {
	case e.protected:
		if l.moves-e.stamp < l.recent {
			return
		}
		l.protected.moveToFront(e)
		l.moves++
		e.stamp = l.moves
	case l.protectedCap == 0:
		l.probation.moveToFront(e)
	default:
		l.probation.remove(e)
		e.protected = true
		l.protected.pushFront(e)
		l.moves++
		e.stamp = l.moves
		if l.protected.n > l.protectedCap {
			old := l.protected.back()
			l.protected.remove(old)
			old.protected = false
			l.probation.pushFront(old)
		}
	}
}

// add inserts the new entry e for id on probation. When that exceeds the
// size bound it removes and returns the least recently used probationary
// entry (protected.n < size, so there is one), else nil.
func (l *slru) add(id string, e *entry) (evicted *entry) {
	l.items[id] = e
	l.probation.pushFront(e)
	if len(l.items) <= l.size {
		return nil
	}
	old := l.probation.back()
	l.remove(old)
	return old
}

// remove takes e out of the map and of its segment.
func (l *slru) remove(e *entry) {
	delete(l.items, e.rec.DeviceSessionID)
	if e.protected {
		l.protected.remove(e)
		e.protected = false
	} else {
		l.probation.remove(e)
	}
}
