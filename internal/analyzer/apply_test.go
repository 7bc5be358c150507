package analyzer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

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
