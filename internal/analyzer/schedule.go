package analyzer

import (
	"container/heap"
	"time"
)

// schedule orders the analyses by when their next evaluation is due, so that dispatch
// starts the oldest due first and finds them without looking at the others: at 10,000
// live rollouts a free worker must not cost a walk over all of them.
//
// Entries are never updated in place: setting an analysis's due time pushes a new entry and
// makes the older ones stale (their token no longer matches), and stale entries are dropped
// when they reach the top. An analysis has one live entry at most; the heap is compacted
// when stale entries outnumber the live ones.
type schedule struct {
	entries entryHeap
	live    int // entries whose token is current
}

type entry struct {
	due   time.Time
	an    *analysis
	token uint64
}

// set makes an's next evaluation due at t.
func (s *schedule) set(an *analysis, t time.Time) {
	an.next = t
	if an.scheduled {
		s.live--
	}
	an.token++
	an.scheduled = true
	s.live++
	heap.Push(&s.entries, entry{due: t, an: an, token: an.token})
	if len(s.entries) > 2*s.live+64 {
		s.compact()
	}
}

// unset takes an out of the schedule (it is being evaluated, final, or gone).
func (s *schedule) unset(an *analysis) {
	if an.scheduled {
		an.scheduled = false
		an.token++
		s.live--
	}
}

// first returns the analysis due first, if it is due at now; it stays scheduled until unset.
func (s *schedule) first(now time.Time) (*analysis, bool) {
	for len(s.entries) > 0 {
		top := s.entries[0]
		if top.token != top.an.token {
			heap.Pop(&s.entries)
			continue
		}
		if top.due.After(now) {
			return nil, false
		}
		return top.an, true
	}
	return nil, false
}

// overdue counts the analyses due at now and not started, and the lag of the oldest.
func (s *schedule) overdue(now time.Time) (n int, oldest time.Duration) {
	for _, e := range s.entries {
		if e.token == e.an.token && !e.due.After(now) {
			n++
			oldest = max(oldest, now.Sub(e.due))
		}
	}
	return n, oldest
}

func (s *schedule) compact() {
	kept := s.entries[:0]
	for _, e := range s.entries {
		if e.token == e.an.token {
			kept = append(kept, e)
		}
	}
	clear(s.entries[len(kept):])
	s.entries = kept
	heap.Init(&s.entries)
}

// entryHeap orders entries by due time; ties go to the analysis created first, so that the
// order does not depend on map iteration.
type entryHeap []entry

func (h entryHeap) Len() int { return len(h) }
func (h entryHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].an.gen < h[j].an.gen
}
func (h entryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)   { *h = append(*h, x.(entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = entry{}
	*h = old[:len(old)-1]
	return e
}
