package analyzer

import (
	"container/heap"
	"time"
)

// schedule orders the analyses by when their next evaluation may start and when it must,
// so that dispatch finds the next to start without looking at the others: at 10,000 live
// rollouts a free worker must not cost a walk over all of them.
//
// Each analysis has a due time (its next evaluation may start: new samples can have come)
// and a deadline (it must start, for a verdict every interval: the template's interval after
// the last evaluation; an event's evaluation is due and must start at once). Analyses wait
// in a heap by due time; once due they move to a heap by deadline, and dispatch starts the
// earliest deadline first. With workers to spare every due evaluation starts at once, at the
// data's pace; when they are short, the evaluations that new samples made possible wait
// behind those whose interval is up, so that every rollout still gets its verdict every
// interval and only the early ones are given up.
//
// Entries are never updated in place: setting an analysis's times pushes a new entry and
// makes the older ones stale (their token no longer matches), and stale entries are dropped
// when they reach the top. An analysis has one live entry at most; the heaps are compacted
// when stale entries outnumber the live ones.
type schedule struct {
	waiting entryHeap[byDue]      // not due yet
	ready   entryHeap[byDeadline] // due
	live    int                   // entries whose token is current
}

type entry struct {
	due, deadline time.Time
	an            *analysis
	token         uint64
}

// set makes an's next evaluation due at due, to start by deadline (not before due).
func (s *schedule) set(an *analysis, due, deadline time.Time) {
	if deadline.Before(due) {
		deadline = due
	}
	an.next, an.deadline = due, deadline
	if an.scheduled {
		s.live--
	}
	an.token++
	an.scheduled = true
	s.live++
	e := entry{due: due, deadline: deadline, an: an, token: an.token}
	heap.Push(&s.waiting, e)
	if len(s.waiting)+len(s.ready) > 2*s.live+64 {
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

// first returns the due analysis with the earliest deadline, if any is due at now; it stays
// scheduled until unset.
func (s *schedule) first(now time.Time) (*analysis, bool) {
	for len(s.waiting) > 0 {
		top := s.waiting[0]
		if top.token == top.an.token && top.due.After(now) {
			break
		}
		heap.Pop(&s.waiting)
		if top.token == top.an.token {
			heap.Push(&s.ready, top)
		}
	}
	for len(s.ready) > 0 {
		top := s.ready[0]
		if top.token != top.an.token {
			heap.Pop(&s.ready)
			continue
		}
		return top.an, true
	}
	return nil, false
}

// overdue counts the analyses whose deadline has passed at now without their evaluation
// started (the real backlog: not those merely due early), and how late the oldest is.
func (s *schedule) overdue(now time.Time) (n int, oldest time.Duration) {
	count := func(entries []entry) {
		for _, e := range entries {
			if e.token == e.an.token && !e.deadline.After(now) {
				n++
				oldest = max(oldest, now.Sub(e.deadline))
			}
		}
	}
	count(s.waiting)
	count(s.ready)
	return n, oldest
}

func (s *schedule) compact() {
	s.waiting.compact()
	s.ready.compact()
}

// entryHeap orders entries by the time O takes of them; ties go to the analysis created
// first, so that the order does not depend on map iteration.
type entryHeap[O order] []entry

type order interface{ of(entry) time.Time }

type (
	byDue      struct{}
	byDeadline struct{}
)

func (byDue) of(e entry) time.Time      { return e.due }
func (byDeadline) of(e entry) time.Time { return e.deadline }

func (h entryHeap[O]) Len() int { return len(h) }
func (h entryHeap[O]) Less(i, j int) bool {
	var o O
	if a, b := o.of(h[i]), o.of(h[j]); !a.Equal(b) {
		return a.Before(b)
	}
	return h[i].an.gen < h[j].an.gen
}
func (h entryHeap[O]) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *entryHeap[O]) Push(x any)   { *h = append(*h, x.(entry)) }
func (h *entryHeap[O]) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = entry{}
	*h = old[:len(old)-1]
	return e
}

// compact drops the stale entries.
func (h *entryHeap[O]) compact() {
	kept := (*h)[:0]
	for _, e := range *h {
		if e.token == e.an.token {
			kept = append(kept, e)
		}
	}
	clear((*h)[len(kept):])
	*h = kept
	heap.Init(h)
}
