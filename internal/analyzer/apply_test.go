package analyzer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
)

// readingStore counts the records read from a Store.
type readingStore struct {
	*state.Store
	gets atomic.Int64
}

func (s *readingStore) Get(ctx context.Context, key string) (state.Entry, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, key)
}

// TestStepOfOwnAnalysisIsAppliedWithoutReading: a step of a revision this replica analyses,
// its verdicts stored, is applied over the record in memory: nothing is read (the loop waits
// for one round trip, not three), and what is stored is the record with the new step.
func TestStepOfOwnAnalysisIsAppliedWithoutReading(t *testing.T) {
	h := start(t)
	st := &readingStore{Store: h.peerStore(t)}
	h.replica.stop()
	r := h.run(t, Options{Logger: zap.NewNop(), Store: st, ReplicaID: "test-replica"})
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, r.a.Handle(context.Background(), started("e1", "v2")))
	require.Eventually(t, func() bool { return len(r.sink.of(ref)) > 0 }, 5*time.Second, time.Millisecond)
	// Its verdict stored: the write holding it has been answered.
	require.Eventually(t, func() bool {
		e, err := h.store.Get(context.Background(), state.LiveKey(ref))
		return err == nil && e.Record.Sequence >= 1 && len(r.sink.of(ref)) == int(e.Record.Sequence)
	}, 5*time.Second, time.Millisecond)

	before := st.gets.Load()
	step := rollout.Event{ID: "e2", Type: rollout.EventStep, Time: t0.Add(time.Second), Rollout: ref, Revision: "v2", Step: 1, Weight: 25}
	require.NoError(t, r.a.Handle(context.Background(), step))
	require.Equal(t, before, st.gets.Load(), "nothing read to apply the step")
	e, err := h.store.Get(context.Background(), state.LiveKey(ref))
	require.NoError(t, err)
	require.Equal(t, 1, e.Record.Step)
	require.Equal(t, 25, e.Record.Weight)
	require.Equal(t, "e2", e.Record.Cause)
	require.Equal(t, "v2", e.Record.Revision)
}

// TestStepOverAnotherReplicasWriteIsAppliedOverIt: another replica changed the record after
// this one last stored it (it applied a step): a step applied here goes on from what is
// stored, not from what this replica held, whether or not its watch saw the change first.
func TestStepOverAnotherReplicasWriteIsAppliedOverIt(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)
	key := state.LiveKey(ref)
	require.Eventually(t, func() bool {
		e, err := h.store.Get(context.Background(), key)
		return err == nil && e.Record.Sequence >= 1 && len(h.sink.of(ref)) == int(e.Record.Sequence)
	}, 5*time.Second, time.Millisecond)

	// The other replica applies step 1 to the stored record.
	peer := h.peerStore(t)
	for {
		cur, err := peer.Get(context.Background(), key)
		require.NoError(t, err)
		rec := cur.Record
		rec.Step, rec.Weight, rec.StepStarted, rec.StepGen, rec.Cause = 1, 25, t0.Add(time.Second), rec.StepGen+1, "peer-step"
		if _, err := peer.Put(context.Background(), key, rec, cur.Revision); err == nil {
			break
		}
		require.ErrorIs(t, err, state.ErrConflict)
	}

	step := rollout.Event{ID: "e3", Type: rollout.EventStep, Time: t0.Add(2 * time.Second), Rollout: ref, Revision: "v2", Step: 2, Weight: 50}
	require.NoError(t, h.a.Handle(context.Background(), step))
	e, err := h.store.Get(context.Background(), key)
	require.NoError(t, err)
	require.Equal(t, 2, e.Record.Step)
	require.Equal(t, "e3", e.Record.Cause)
	require.Equal(t, uint64(2), e.Record.StepGen, "the other replica's step counted: this one's comes after it")
}

// TestDecisionOverARecordReplacedMeanwhileIsDropped: decide runs in the worker, over the
// record the evaluation began with. When the record is replaced while the evaluation runs
// (another replica wrote it: here a rollback's evidence), the decision is dropped and made
// again over the new record.
func TestDecisionOverARecordReplacedMeanwhileIsDropped(t *testing.T) {
	h := &harness{
		m: &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000),
			entered: make(chan struct{}), release: make(chan struct{})},
		clock: &clock{now: t0},
	}
	_, h.js = natstest.Connect(t, natstest.Start(t))
	h.store = storeOn(t, h.js)
	h.replica = h.run(t, Options{Logger: zap.NewNop(), Store: h.store, ReplicaID: "test-replica"})
	h.m.set("v2", ok(0.004, 5000)) // healthy: over the evidence it began with, a pause
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	<-h.m.entered // the first evaluation is measuring

	key := state.LiveKey(ref)
	peer := h.peerStore(t)
	cur, err := peer.Get(context.Background(), key)
	require.NoError(t, err)
	rec := cur.Record
	rec.Evidence.RolledBack, rec.Evidence.RollbackReason = true, "error-rate failed (another replica)"
	rec.Sequence = 1
	rec.Pending = []state.Verdict{{Verdict: rollout.Verdict{Rollout: ref, Revision: "v2", Verdict: rollout.Pause, Reason: "peer", Sequence: 1,
		DecidedAt: t0}}}
	_, err = peer.Put(context.Background(), key, rec, cur.Revision)
	require.NoError(t, err)
	require.Eventually(t, func() bool { v, ok := h.a.Latest(ref); return ok && v.Reason == "peer" }, 5*time.Second, time.Millisecond)

	close(h.m.release)
	done := make(chan struct{})
	defer close(done)
	go func() { // the evaluations that follow are let through too
		for {
			select {
			case <-h.m.entered:
			case <-done:
				return
			}
		}
	}()
	require.Eventually(t, func() bool {
		for _, v := range h.sink.of(ref) {
			if v.Sequence == 2 {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond)
	for _, v := range h.sink.of(ref) {
		if v.Sequence == 2 {
			require.Equal(t, rollout.Rollback, v.Verdict, "decided over the record as it is now: %s", v.Reason)
		}
	}
}

// TestStepEventDoesNotWaitForTheStaleEvaluation: a step event that comes while the old step's
// evaluation is measuring starts the new step's evaluation at once, without waiting for the
// stale one; the stale one's result is dropped, and the first verdict is the new step's.
func TestStepEventDoesNotWaitForTheStaleEvaluation(t *testing.T) {
	h := &harness{
		m: &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000),
			entered: make(chan struct{}), release: make(chan struct{})},
		clock: &clock{now: t0},
	}
	_, h.js = natstest.Connect(t, natstest.Start(t))
	h.store = storeOn(t, h.js)
	h.replica = h.run(t, Options{Logger: zap.NewNop(), Store: h.store, ReplicaID: "test-replica"})
	h.m.set("v2", ok(0.004, 5000))
	var released sync.Once
	release := func() { released.Do(func() { close(h.m.release) }) }
	defer release() // also when the test fails before it lets the evaluations go
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	<-h.m.entered // the first step's evaluation is measuring

	require.NoError(t, h.a.Handle(context.Background(), rollout.Event{ID: "e2", Type: rollout.EventStep,
		Time: t0.Add(time.Second), Rollout: ref, Revision: "v2", Step: 1, Weight: 25}))
	select {
	case <-h.m.entered: // the new step's, while the stale one is still held
	case <-time.After(10 * time.Second):
		t.Fatal("the new step's evaluation waited for the stale one")
	}
	release()
	vs := h.waitVerdicts(t, 1)
	require.Equal(t, 1, vs[0].Step, "the first verdict is the new step's")
	require.Equal(t, uint64(1), vs[0].Sequence)
	require.Never(t, func() bool {
		for _, v := range h.sink.of(ref) {
			if v.Step == 0 {
				return true
			}
		}
		return false
	}, 100*time.Millisecond, 5*time.Millisecond, "the stale evaluation's verdict is dropped")
}

// heldStore holds every read and write of one key until released, whatever their contexts
// say, and then makes them: a store slow for one rollout, that answers late but answers. It
// counts the calls on other keys made while one on key was held.
type heldStore struct {
	*state.Store
	key        string
	entered    chan struct{} // a call on key has begun (buffered)
	release    chan struct{}
	held       atomic.Int32
	overlapped atomic.Int32
}

func (s *heldStore) hold(key string) {
	if key != s.key {
		if s.held.Load() > 0 {
			s.overlapped.Add(1)
		}
		return
	}
	s.held.Add(1)
	defer s.held.Add(-1)
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release // not its context: the call outlives it, as one to a store that hangs would
}

func (s *heldStore) Get(ctx context.Context, key string) (state.Entry, error) {
	s.hold(key)
	return s.Store.Get(context.WithoutCancel(ctx), key)
}

func (s *heldStore) Put(ctx context.Context, key string, r state.Record, rev uint64) (uint64, error) {
	s.hold(key)
	return s.Store.Put(context.WithoutCancel(ctx), key, r, rev)
}

// TestEventOfASlowRolloutHoldsNoOther: while the store takes its time over one rollout's
// event, the events of other rollouts are applied and their analyses evaluated and published;
// the slow rollout's next event waits for its first, and both are applied in order once the
// store answers.
func TestEventOfASlowRolloutHoldsNoOther(t *testing.T) {
	h := start(t)
	slow := rollout.Ref{Namespace: "prod", Name: "slow"}
	st := &heldStore{Store: h.peerStore(t), key: state.LiveKey(slow), entered: make(chan struct{}, 1), release: make(chan struct{})}
	h.replica.stop()
	r := h.run(t, Options{Logger: zap.NewNop(), Store: st, ReplicaID: "test-replica", Lease: time.Hour})
	h.m.set("v2", ok(0.004, 5000))
	var released sync.Once
	release := func() { released.Do(func() { close(st.release) }) }
	defer release()

	slowStart := started("slow-start", "v2")
	slowStart.Rollout = slow
	slowStep := rollout.Event{ID: "slow-step", Type: rollout.EventStep, Time: t0.Add(time.Second), Rollout: slow, Revision: "v2", Step: 1, Weight: 25}
	answers := make(chan error, 2)
	go func() { answers <- r.a.Handle(context.Background(), slowStart) }()
	<-st.entered // its start is being applied, and the store holds it
	go func() { answers <- r.a.Handle(context.Background(), slowStep) }()

	hctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.a.Handle(hctx, started("other", "v2")), "another rollout's event is applied meanwhile")
	require.Eventually(t, func() bool { return len(r.sink.of(ref)) > 0 }, 10*time.Second, time.Millisecond,
		"and its analysis evaluated and published")
	require.Empty(t, answers, "the slow rollout's events are still waiting for the store")

	release()
	require.NoError(t, <-answers)
	require.NoError(t, <-answers)
	e, err := h.store.Get(context.Background(), state.LiveKey(slow))
	require.NoError(t, err)
	require.Equal(t, 1, e.Record.Step, "its step applied after its start")
	require.Equal(t, "slow-step", e.Record.Cause)
}

// TestTakeoverOfASlowRolloutHoldsNoOther: when a dead replica's rollouts are taken over and
// the store takes its time over one of them, the others are taken over and evaluated
// meanwhile; the slow one is taken over once the store answers.
func TestTakeoverOfASlowRolloutHoldsNoOther(t *testing.T) {
	h := start(t)
	h.stop()
	h.m.set("v2", ok(0.004, 5000))
	slow := rollout.Ref{Namespace: "prod", Name: "slow"}
	r1 := startReplica(t, h, h.peerStore(t), "r1", nil)
	slowStart := started("slow-start", "v2")
	slowStart.Rollout = slow
	require.NoError(t, r1.a.Handle(context.Background(), slowStart))
	require.NoError(t, r1.a.Handle(context.Background(), started("e1", "v2")))
	r1.wait(t, 1)
	require.Eventually(t, func() bool { return len(r1.sink.of(slow)) > 0 }, 5*time.Second, time.Millisecond)
	r1.stop()

	st := &heldStore{Store: h.peerStore(t), key: state.LiveKey(slow), entered: make(chan struct{}, 1), release: make(chan struct{})}
	var released sync.Once
	release := func() { released.Do(func() { close(st.release) }) }
	defer release()
	r2 := startReplica(t, h, st, "r2", publishedIn(r1.sink))
	h.clock.Advance(16 * time.Second) // past the lease
	<-st.entered                      // the slow rollout's claim is held by the store
	vs := r2.wait(t, 1)
	require.Equal(t, uint64(2), vs[0].Sequence, "the other rollout is taken over and evaluated")
	require.NotZero(t, st.overlapped.Load(), "meanwhile: its record written while the slow one's claim was held")
	require.Empty(t, r2.sink.of(slow))

	release()
	require.Eventually(t, func() bool { return len(r2.sink.of(slow)) > 0 }, 5*time.Second, time.Millisecond,
		"the slow one is taken over once the store answers")
	require.Equal(t, uint64(2), r2.sink.of(slow)[0].Sequence)
}

// byHand builds an analyzer whose loop the test drives, calling its steps itself, over a real
// store, with one live analysis of ref at step 0 owned by it.
func byHand(t *testing.T, m *fakeMeasurer) (*Analyzer, *analysis) {
	t.Helper()
	store := openStore(t)
	a, err := New(Options{Store: store, ReplicaID: "r1", Templates: map[string]*compare.Template{"t": testTemplate(t)},
		Measurer: m, Sink: &fakeSink{}, Now: (&clock{now: t0}).Now, Registerer: prometheus.NewRegistry(), Lease: time.Hour})
	require.NoError(t, err)
	rec := state.Record{Rollout: ref, Revision: "v2", Template: "t", Started: t0, StepStarted: t0, Owner: "r1",
		LeaseUntil: t0.Add(time.Hour), Args: map[string]string{"service": "checkout"},
		Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"}}
	rev, err := store.Put(context.Background(), state.LiveKey(ref), rec, 0)
	require.NoError(t, err)
	a.adopt(rec, rev, true)
	return a, a.live[ref]
}

// TestEvaluationEndedWhileAStepIsAppliedIsGivenUp: an evaluation that began before a step
// event and ends while the event is being applied decides nothing: its verdict (a rollback
// here) would be lost under the step's record, applied over the one it began from; the new
// step is evaluated instead.
func TestEvaluationEndedWhileAStepIsAppliedIsGivenUp(t *testing.T) {
	ctx := context.Background()
	a, an := byHand(t, &fakeMeasurer{canary: map[string]rollout.Reading{"v2": ok(0.10, 5000)}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000)})
	a.sched.unset(an) // dispatched
	j := an.job(t0, a.opts.Tracer)
	an.inFlight = true
	res := a.evaluate(ctx, j)
	require.Equal(t, rollout.Rollback, res.decision.Decision, "the old step's evaluation decides a rollback")

	reply := make(chan error, 1)
	a.apply(ctx, eventRequest{ctx: ctx, reply: reply, received: time.Now(), ev: rollout.Event{ID: "step", Type: rollout.EventStep,
		Time: t0.Add(time.Second), Rollout: ref, Revision: "v2", Step: 1, Weight: 25}})
	a.complete(ctx, res) // ends while the step is applied
	a.finish(ctx, <-a.applied)
	require.NoError(t, <-reply)

	an = a.live[ref]
	require.Equal(t, 1, an.rec.Step)
	require.Zero(t, an.rec.Sequence, "the evaluation begun before the step decided nothing")
	require.Empty(t, an.unstored)
	require.False(t, an.rec.Final)
	require.True(t, an.scheduled, "the new step is evaluated")
}

// TestDuplicateEventWaitingForAWriteDelaysNoEvaluation: an analysis due while its record is
// written waits for the write; a duplicate event that came meanwhile (waiting for the write
// too) does not make it wait longer once the write is answered.
func TestDuplicateEventWaitingForAWriteDelaysNoEvaluation(t *testing.T) {
	ctx := context.Background()
	a, an := byHand(t, &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000)})
	an.unstored = []state.Verdict{{Verdict: rollout.Verdict{Rollout: ref, Revision: "v2", Sequence: 1, Verdict: rollout.Pause}}}
	an.rec.Sequence = 1
	a.store(ctx, an)
	require.True(t, an.writing)
	var workers sync.WaitGroup
	a.dispatch(ctx, &workers, make(chan struct{}, 1)) // due, but its write is in flight
	require.False(t, an.scheduled, "it waits for the write")

	a.seen.put("dup", struct{}{})
	reply := make(chan error, 1)
	a.apply(ctx, eventRequest{ctx: ctx, reply: reply, received: time.Now(), ev: rollout.Event{ID: "dup", Type: rollout.EventStep,
		Time: t0.Add(time.Second), Rollout: ref, Revision: "v2", Step: 1, Weight: 25}})
	require.Empty(t, reply, "the event waits for the write")
	a.stored(ctx, <-a.written)
	require.NoError(t, <-reply, "answered as a duplicate")
	require.False(t, a.busy(ref))
	require.True(t, an.scheduled, "evaluated once the write is answered")
	workers.Wait()
}
