package analyzer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
)

func TestScheduleOldestDueFirst(t *testing.T) {
	var s schedule
	ans := make([]*analysis, 5)
	for i := range ans {
		ans[i] = &analysis{gen: uint64(i + 1)}
	}
	// Due in the order 3, 1, 4, 0, 2; 0 is set twice (its first entry goes stale).
	s.set(ans[0], t0, t0)
	s.set(ans[2], t0.Add(4*time.Second), t0.Add(4*time.Second))
	s.set(ans[4], t0.Add(2*time.Second), t0.Add(2*time.Second))
	s.set(ans[1], t0.Add(time.Second), t0.Add(time.Second))
	s.set(ans[3], t0, t0)
	s.set(ans[0], t0.Add(3*time.Second), t0.Add(3*time.Second))

	n, oldest := s.overdue(t0.Add(2500 * time.Millisecond))
	require.Equal(t, 3, n, "3, 1 and 4 are due at 2.5s")
	require.Equal(t, 2500*time.Millisecond, oldest)

	var order []uint64
	for {
		an, ok := s.first(t0.Add(time.Minute))
		if !ok {
			break
		}
		s.unset(an)
		order = append(order, an.gen-1)
	}
	require.Equal(t, []uint64{3, 1, 4, 0, 2}, order)
	require.Zero(t, s.live)
	_, ok := s.first(t0.Add(time.Hour))
	require.False(t, ok, "nothing left once every analysis was taken")
}

// TestScheduleEarliestDeadlineAmongTheDue: of the analyses due, the one whose interval is up
// first starts first, however early the others became due (new samples); one that is not
// due does not start, whatever its deadline; and the backlog counts only the deadlines passed.
func TestScheduleEarliestDeadlineAmongTheDue(t *testing.T) {
	var s schedule
	early := &analysis{gen: 1}  // new samples at once; its interval is up at 10s
	late := &analysis{gen: 2}   // due at 1s, its interval up at 2s
	future := &analysis{gen: 3} // not due before 20s, however near its deadline
	s.set(early, t0, t0.Add(10*time.Second))
	s.set(late, t0.Add(time.Second), t0.Add(2*time.Second))
	s.set(future, t0.Add(20*time.Second), t0)

	got, ok := s.first(t0.Add(500 * time.Millisecond))
	require.True(t, ok)
	require.Same(t, early, got, "alone due: it starts, early or not")

	now := t0.Add(5 * time.Second)
	got, ok = s.first(now)
	require.True(t, ok)
	require.Same(t, late, got, "its interval is up: it goes before the early one")
	n, oldest := s.overdue(now)
	require.Equal(t, 1, n, "the early one is not late")
	require.Equal(t, 3*time.Second, oldest)

	s.unset(late)
	got, _ = s.first(now)
	require.Same(t, early, got)
	s.unset(early)
	_, ok = s.first(now)
	require.False(t, ok, "the future one is not due, whatever its deadline")
	got, _ = s.first(t0.Add(20 * time.Second))
	require.Same(t, future, got)
}

func TestScheduleNotDueYet(t *testing.T) {
	var s schedule
	an := &analysis{gen: 1}
	s.set(an, t0.Add(time.Second), t0.Add(time.Second))
	_, ok := s.first(t0)
	require.False(t, ok)
	got, ok := s.first(t0.Add(time.Second))
	require.True(t, ok, "due at its time, not only after it")
	require.Same(t, an, got)
}

func TestScheduleStaysCompact(t *testing.T) {
	var s schedule
	ans := make([]*analysis, 10)
	for i := range ans {
		ans[i] = &analysis{gen: uint64(i + 1)}
	}
	for round := range 1000 {
		for _, an := range ans {
			s.set(an, t0.Add(time.Duration(round)*time.Second), t0.Add(time.Duration(round)*time.Second))
		}
	}
	require.LessOrEqual(t, len(s.waiting)+len(s.ready), 2*len(ans)+64+1, "stale entries are dropped")
	require.Equal(t, len(ans), s.live)
}

// TestFreeWorkerStartsTheOldestDueAtOnce: with one worker and the loop's tick an hour away,
// each evaluation that ends starts the next due one (no rollout waits for a tick), and they
// start in the order they became due, not in the map's.
func TestFreeWorkerStartsTheOldestDueAtOnce(t *testing.T) {
	h := &harness{
		m:     &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000)},
		clock: &clock{now: t0},
	}
	h.m.entered, h.m.release = make(chan struct{}), make(chan struct{})
	h.store = openStore(t)
	h.replica = h.run(t, Options{Logger: zap.NewNop(), Store: h.store, ReplicaID: "r", Workers: 1, Resolution: time.Hour})

	const n = 6
	for i := range n {
		ev := started(fmt.Sprintf("e%d", i), "v2")
		ev.Rollout = rollout.Ref{Namespace: "prod", Name: fmt.Sprintf("svc-%d", i)}
		ev.Args = map[string]string{"service": ev.Rollout.Name}
		require.NoError(t, h.a.Handle(context.Background(), ev))
		if i == 0 {
			<-h.m.entered // the only worker is busy from now on
		}
		h.clock.Advance(time.Second) // each later rollout becomes due a second after the one before
	}
	for range n - 1 {
		h.m.release <- struct{}{}
		select {
		case <-h.m.entered: // the next evaluation started as the previous ended
		case <-time.After(10 * time.Second):
			t.Fatal("an evaluation ended and the next due one did not start")
		}
	}
	h.m.release <- struct{}{}

	require.Eventually(t, func() bool {
		h.sink.mu.Lock()
		defer h.sink.mu.Unlock()
		return len(h.sink.verdicts) == n
	}, 5*time.Second, time.Millisecond)
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	var order []string
	for _, target := range h.m.targets {
		order = append(order, target.Args["service"])
	}
	require.Equal(t, []string{"svc-0", "svc-1", "svc-2", "svc-3", "svc-4", "svc-5"}, order)
}

// slowLiveStore holds Live until released.
type slowLiveStore struct {
	Store
	release chan struct{}
}

func (s slowLiveStore) Live(ctx context.Context) ([]state.Entry, error) {
	<-s.release
	return s.Store.Live(ctx)
}

// TestNotLoadedUntilTheStoredAnalysesAre: the replica says it is not loaded (so /readyz
// fails) while it reads the stored analyses, and is once it has them.
func TestNotLoadedUntilTheStoredAnalysesAre(t *testing.T) {
	h := &harness{
		m:     &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000)},
		clock: &clock{now: t0},
	}
	h.store = openStore(t)
	store := slowLiveStore{Store: h.store, release: make(chan struct{})}
	r := h.run(t, Options{Logger: zap.NewNop(), Store: store, ReplicaID: "r"})
	require.False(t, r.a.Loaded())
	close(store.release)
	require.Eventually(t, r.a.Loaded, 5*time.Second, time.Millisecond)
}

// gatedStore holds the first write of a record that carries a verdict until released.
type gatedStore struct {
	Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) Put(ctx context.Context, key string, r state.Record, revision uint64) (uint64, error) {
	if r.Sequence > 0 && g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Store.Put(ctx, key, r, revision)
}

// TestEventWaitsForTheWriteInFlight: an event applied while the record's write is in flight
// (it runs off the loop) is applied over what the write holds: a rollback decided just before
// a step event stays final, and nothing is evaluated after it.
func TestEventWaitsForTheWriteInFlight(t *testing.T) {
	h := &harness{
		m:     &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000)},
		clock: &clock{now: t0},
	}
	h.store = openStore(t)
	store := &gatedStore{Store: h.store, entered: make(chan struct{}), release: make(chan struct{})}
	store.armed.Store(true)
	h.replica = h.run(t, Options{Logger: zap.NewNop(), Store: store, ReplicaID: "r"})
	h.m.set("v2", ok(0.10, 5000)) // far above the critical guard: rollback at once
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	<-store.entered // the rollback's write is in flight

	stepped := make(chan error, 1)
	go func() {
		stepped <- h.a.Handle(context.Background(), rollout.Event{ID: "e2", Type: rollout.EventStep, Time: t0.Add(time.Second),
			Rollout: ref, Revision: "v2", Step: 1, Weight: 25})
	}()
	close(store.release)
	require.NoError(t, <-stepped)
	vs := h.waitVerdicts(t, 1)
	require.Equal(t, rollout.Rollback, vs[0].Verdict)

	h.clock.Advance(time.Minute)
	require.Never(t, func() bool { return len(h.sink.of(ref)) > 1 }, 100*time.Millisecond, 5*time.Millisecond,
		"rollback is final: nothing is evaluated after it")
	entries, err := h.store.Live(context.Background())
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.True(t, entries[0].Record.Final, "the stored record is final")
	require.Equal(t, uint64(1), entries[0].Record.Sequence)
}

// TestEventOverheadIsMeasuredOncePerEvent: the overhead metric observes the first verdict
// published after each event that asks for one (a start, a step), once, and not the
// verdicts that follow nor an event that changed nothing.
func TestEventOverheadIsMeasuredOncePerEvent(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	observed := func() uint64 {
		var m dto.Metric
		require.NoError(t, h.a.metrics.eventOverhead.Write(&m))
		return m.GetHistogram().GetSampleCount()
	}
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)
	require.Eventually(t, func() bool { return observed() == 1 }, 5*time.Second, time.Millisecond)
	h.clock.Advance(10 * time.Second)
	h.waitVerdicts(t, 2)
	require.Equal(t, uint64(1), observed(), "the start's first verdict only")

	step := rollout.Event{ID: "e2", Type: rollout.EventStep, Time: t0.Add(10 * time.Second), Rollout: ref, Revision: "v2", Step: 1, Weight: 25}
	require.NoError(t, h.a.Handle(context.Background(), step))
	h.waitVerdicts(t, 3)
	require.Eventually(t, func() bool { return observed() == 2 }, 5*time.Second, time.Millisecond)

	step.ID = "e3" // the same step again: a duplicate, no verdict asked for
	require.NoError(t, h.a.Handle(context.Background(), step))
	h.clock.Advance(10 * time.Second)
	h.waitVerdicts(t, 4)
	require.Equal(t, uint64(2), observed())
}

// TestEvaluationsWithoutNewSamplesBackOff: after evaluations in a row that found no sample
// newer than the evidence holds, the next waits 1 s, 2 s, 4 s, 8 s, then the interval; one
// that finds a new sample goes back to the data's pace.
func TestEvaluationsWithoutNewSamplesBackOff(t *testing.T) {
	tmpl := testTemplate(t)
	an := &analysis{template: tmpl}
	an.rec.Evidence.Checks = map[string]decide.CheckEvidence{"error-rate": {Through: t0}}
	measured := func(through time.Time) result {
		// The scrape awaited was due 2 s after through (already past): as compare says.
		return result{measurements: []rollout.Measurement{{Check: "error-rate", Through: through, NextSample: through.Add(2 * time.Second)}}}
	}
	now := t0.Add(5 * time.Second)
	var waits []time.Duration
	for range 6 {
		next := an.nextAfter(job{now: now}, measured(t0))
		waits = append(waits, next.Sub(now))
		now = next
	}
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}, waits)

	fresh := now.Add(-time.Second) // a new sample: the next scrape is due 2 s after it
	require.Equal(t, fresh.Add(2*time.Second), an.nextAfter(job{now: now}, measured(fresh)))
	require.Zero(t, an.idle)

	// The first evaluation of a new step, with no new sample yet: the evidence's Through
	// is the previous step's, so it is not idle.
	an.idle = 3
	an.rec.StepStarted = t0.Add(time.Minute)
	require.Equal(t, now.Add(time.Second), an.nextAfter(job{now: now}, measured(t0)))
	require.Zero(t, an.idle)
	an.rec.StepStarted = time.Time{}

	// A step changed while it ran: not taken for a lack of samples (the data's pace, at
	// least a second, as compare says).
	an.idle = 3
	an.rec.StepGen = 1
	require.Equal(t, now.Add(time.Second), an.nextAfter(job{now: now}, measured(t0)))
	require.Zero(t, an.idle)
}

// TestHeirSpreadsEvenly: a dead replica's rollouts go to the survivors in about equal shares,
// for replica ids as a StatefulSet names them (one character apart) and as the bench does.
func TestHeirSpreadsEvenly(t *testing.T) {
	for _, replicas := range [][]string{
		{"analyzerd-0", "analyzerd-1"},
		{"analyzerd-0", "analyzerd-1", "analyzerd-2"},
		{"bench-2", "bench-3"},
	} {
		const n = 3000
		got := map[string]int{}
		for i := range n {
			got[heir(rollout.Ref{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}, replicas)]++
		}
		for _, r := range replicas {
			require.InDelta(t, n/len(replicas), got[r], 0.1*n/float64(len(replicas)), "%v: %v", replicas, got)
		}
	}
}

// TestAliveLeavesOutAnOwnerWithAnExpiredLease: a replica one of whose leases expired is dead,
// although its other leases, renewed later, still run: the takeover is shared among the others.
func TestAliveLeavesOutAnOwnerWithAnExpiredLease(t *testing.T) {
	entry := func(owner string, until time.Time) state.Entry {
		return state.Entry{Record: state.Record{Owner: owner, LeaseUntil: until}}
	}
	a := &Analyzer{opts: Options{ReplicaID: "r1"}, others: map[rollout.Ref]state.Entry{
		{Namespace: "p", Name: "a"}: entry("r2", t0.Add(time.Second)),
		{Namespace: "p", Name: "b"}: entry("r2", t0.Add(-time.Second)), // expired: r2 died
		{Namespace: "p", Name: "c"}: entry("r3", t0.Add(time.Second)),
		{Namespace: "p", Name: "d"}: entry("r4", t0.Add(-time.Second)),
	}}
	require.Equal(t, []string{"r1", "r3"}, a.alive(t0))
}

// TestLeaseRenewedByTheNextEvaluation: a lease with a third of it left is renewed on its own
// only when no evaluation writes the record first; a quarter before its end it is renewed
// whatever is planned.
func TestLeaseRenewedByTheNextEvaluation(t *testing.T) {
	a := &Analyzer{opts: Options{Lease: 15 * time.Second, Resolution: time.Second}}
	until := t0.Add(15 * time.Second)
	for _, tc := range []struct {
		name     string
		now      time.Time
		inFlight bool
		deadline time.Time // zero: not scheduled
		final    bool
		want     bool
	}{
		{name: "evaluation in flight", now: t0.Add(10500 * time.Millisecond), inFlight: true, want: true},
		{name: "evaluation due before the last quarter", now: t0.Add(10500 * time.Millisecond), deadline: t0.Add(11 * time.Second), want: true},
		{name: "evaluation overdue", now: t0.Add(10500 * time.Millisecond), deadline: t0.Add(9 * time.Second), want: true},
		{name: "evaluation due in the last quarter", now: t0.Add(10500 * time.Millisecond), deadline: t0.Add(12 * time.Second)},
		{name: "nothing planned", now: t0.Add(10500 * time.Millisecond)},
		{name: "final", now: t0.Add(10500 * time.Millisecond), deadline: t0.Add(11 * time.Second), final: true},
		{name: "last quarter, in flight", now: t0.Add(11250 * time.Millisecond), inFlight: true},
		{name: "last quarter, overdue", now: t0.Add(12 * time.Second), deadline: t0.Add(9 * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			an := &analysis{inFlight: tc.inFlight, scheduled: !tc.deadline.IsZero(), deadline: tc.deadline}
			an.rec.LeaseUntil, an.rec.Final = until, tc.final
			require.Equal(t, tc.want, a.renewedSoon(an, tc.now))
		})
	}
	short := &Analyzer{opts: Options{Lease: 4 * time.Second, Resolution: time.Second}}
	an := &analysis{inFlight: true}
	an.rec.LeaseUntil = t0.Add(4 * time.Second)
	require.False(t, short.renewedSoon(an, t0.Add(2800*time.Millisecond)), "a lease too short for a scan between: renewed at a third")
}
