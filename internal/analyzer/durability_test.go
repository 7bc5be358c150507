package analyzer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
)

// startReplica starts another analyzer named id on store (a replica's process has a Store
// of its own: see peerStore), with the harness's measurer and clock.
func startReplica(t *testing.T, h *harness, store Store, id string, published Published) *replica {
	t.Helper()
	return h.run(t, Options{Store: store, ReplicaID: id, Published: published})
}

// publishedIn answers what the sinks hold, as the verdict stream would.
func publishedIn(sinks ...*fakeSink) Published {
	return func(_ context.Context, rf rollout.Ref) (string, uint64, bool, error) {
		var last rollout.Verdict
		found := false
		for _, s := range sinks {
			for _, v := range s.of(rf) {
				if !found || v.Sequence > last.Sequence {
					last, found = v, true
				}
			}
		}
		return last.Revision, last.Sequence, found, nil
	}
}

func (r *replica) wait(t *testing.T, n int) []rollout.Verdict {
	t.Helper()
	require.Eventually(t, func() bool { return len(r.sink.of(ref)) >= n }, 5*time.Second, time.Millisecond)
	return r.sink.of(ref)
}

// TestRestartResumesWhereItStopped: a replica stopped and started again (a crash: the state
// is stored at every evaluation) resumes the analysis at once, with its baseline and its
// sequence; the baseline is not captured again.
func TestRestartResumesWhereItStopped(t *testing.T) {
	h := start(t)
	h.stop() // the harness's own analyzer is not used
	h.m.set("v2", ok(0.004, 5000))
	first := startReplica(t, h, h.peerStore(t), "r1", nil)
	require.NoError(t, first.a.Handle(context.Background(), started("e1", "v2")))
	first.wait(t, 1)
	h.clock.Advance(10 * time.Second)
	first.wait(t, 2)
	first.stop()
	require.Equal(t, 1, h.m.captures)

	again := startReplica(t, h, h.peerStore(t), "r1", publishedIn(first.sink))
	h.clock.Advance(10 * time.Second)
	vs := again.wait(t, 1)
	require.Equal(t, uint64(3), vs[0].Sequence, "the sequence goes on")
	require.Equal(t, "e1", vs[0].Cause)
	require.Equal(t, 1, h.m.captures, "the stored baseline is used, not captured again")
	latest, ok := again.a.Latest(ref)
	require.True(t, ok)
	require.Equal(t, uint64(3), latest.Sequence)
}

// TestTakeoverAfterTheLeaseExpires: when the owner stops, another replica takes the rollout
// over once the lease has expired, and goes on with the next sequence number; the two never
// publish the same number.
func TestTakeoverAfterTheLeaseExpires(t *testing.T) {
	h := start(t)
	h.stop()
	h.m.set("v2", ok(0.004, 5000))
	r1 := startReplica(t, h, h.peerStore(t), "r1", nil)
	r2 := startReplica(t, h, h.peerStore(t), "r2", publishedIn(r1.sink))
	require.NoError(t, r1.a.Handle(context.Background(), started("e1", "v2")))
	r1.wait(t, 1)
	require.Eventually(t, func() bool { _, ok := r2.a.Latest(ref); return ok }, 5*time.Second, time.Millisecond,
		"every replica serves every rollout's latest verdict")
	h.clock.Advance(10 * time.Second)
	r1.wait(t, 2)
	require.Never(t, func() bool { return len(r2.sink.of(ref)) > 0 }, 50*time.Millisecond, 5*time.Millisecond,
		"the lease holds: the other replica does not evaluate")

	r1.stop()
	h.clock.Advance(16 * time.Second) // past the lease
	vs := r2.wait(t, 1)
	require.Equal(t, uint64(3), vs[0].Sequence)
	seen := map[uint64]bool{}
	for _, v := range append(r1.sink.of(ref), r2.sink.of(ref)...) {
		require.False(t, seen[v.Sequence], "sequence %d published twice", v.Sequence)
		seen[v.Sequence] = true
	}
}

// TestEventOnAnotherReplicaReachesTheOwner: an event is applied by whichever replica gets it;
// the owner evaluates the new step.
func TestEventOnAnotherReplicaReachesTheOwner(t *testing.T) {
	h := start(t)
	h.stop()
	h.m.set("v2", ok(0.004, 5000))
	r1 := startReplica(t, h, h.peerStore(t), "r1", nil)
	r2 := startReplica(t, h, h.peerStore(t), "r2", nil)
	require.NoError(t, r1.a.Handle(context.Background(), started("e1", "v2")))
	r1.wait(t, 1)
	step := started("e2", "v2")
	step.Type, step.Step, step.Weight, step.Time = rollout.EventStep, 1, 50, t0.Add(time.Minute)
	require.NoError(t, r2.a.Handle(context.Background(), step))
	require.Eventually(t, func() bool {
		vs := r1.sink.of(ref)
		return vs[len(vs)-1].Weight == 50
	}, 5*time.Second, time.Millisecond)
	require.Empty(t, r2.sink.of(ref))

	done := started("e3", "v2")
	done.Type, done.Time = rollout.EventCompleted, t0.Add(2*time.Minute)
	require.NoError(t, r2.a.Handle(context.Background(), done))
	require.Eventually(t, func() bool { _, ok := r1.a.Latest(ref); return !ok }, 5*time.Second, time.Millisecond)
	_, err := h.store.Get(context.Background(), state.LiveKey(ref))
	require.ErrorIs(t, err, state.ErrNotFound)
}

// TestStoredVerdictsNotPublishedArePublishedOnResume: verdicts stored but not published
// before a crash are published by whoever resumes, those the stream holds excepted.
func TestStoredVerdictsNotPublishedArePublishedOnResume(t *testing.T) {
	h := start(t)
	h.stop()
	ctx := context.Background()
	v := func(seq uint64) state.Verdict {
		return state.Verdict{Verdict: rollout.Verdict{Rollout: ref, Revision: "v2", Sequence: seq, Verdict: rollout.Pause}}
	}
	rec := state.Record{Rollout: ref, Revision: "v2", Template: "t", Started: t0, StepStarted: t0, Sequence: 7,
		Pending: []state.Verdict{v(5), v(6), v(7)}, Owner: "r1", LeaseUntil: t0.Add(time.Minute), Final: true,
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"}}
	_, err := h.store.Put(ctx, state.LiveKey(ref), rec, 0)
	require.NoError(t, err)
	published := func(context.Context, rollout.Ref) (string, uint64, bool, error) { return "v2", 5, true, nil }
	r := startReplica(t, h, h.peerStore(t), "r1", published)
	vs := r.wait(t, 2)
	require.Equal(t, []uint64{6, 7}, []uint64{vs[0].Sequence, vs[1].Sequence})
	require.Never(t, func() bool { return len(r.sink.of(ref)) > 2 }, 50*time.Millisecond, 5*time.Millisecond)
}

// TestVerdictsPublishedBeforeACrashCountAsAcknowledged: a crash after verdicts were
// published but before their acknowledgement was stored leaves them pending in the record;
// whoever resumes finds them in the stream and counts them acknowledged, so that the rollout
// is evaluated again (with maxUnacknowledged of them pending it never was: the chaos test saw
// rollouts stop for good) and the store's pending list empties.
func TestVerdictsPublishedBeforeACrashCountAsAcknowledged(t *testing.T) {
	h := start(t)
	h.stop()
	h.m.set("v2", ok(0.004, 5000))
	ctx := context.Background()
	var pending []state.Verdict
	for seq := uint64(1); seq <= maxUnacknowledged; seq++ {
		pending = append(pending, state.Verdict{Verdict: rollout.Verdict{Rollout: ref, Revision: "v2", Sequence: seq, Verdict: rollout.Pause}})
	}
	rec := state.Record{Rollout: ref, Revision: "v2", Template: "t", Started: t0, StepStarted: t0, Sequence: maxUnacknowledged,
		Pending: pending, Owner: "r1", LeaseUntil: t0.Add(time.Minute), Cause: "e1",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"}}
	_, err := h.store.Put(ctx, state.LiveKey(ref), rec, 0)
	require.NoError(t, err)
	inStream := func(context.Context, rollout.Ref) (string, uint64, bool, error) {
		return "v2", maxUnacknowledged, true, nil
	}
	r := startReplica(t, h, h.peerStore(t), "r1", inStream)
	h.clock.Advance(10 * time.Second)
	vs := r.wait(t, 1)
	require.Equal(t, uint64(maxUnacknowledged+1), vs[0].Sequence, "evaluated again, the sequence going on; none republished")
	require.Eventually(t, func() bool {
		entry, err := h.store.Get(ctx, state.LiveKey(ref))
		return err == nil && entry.Record.Published >= maxUnacknowledged && len(entry.Record.Pending) <= 1
	}, 5*time.Second, time.Millisecond, "the verdicts the stream holds leave the store's pending list")
}

// TestStreamAheadOfTheRecordIsAnEarlierAnalysis: a stream holding a higher number of the
// revision than its record (an earlier analysis's, whose ended record expired) acknowledges
// nothing of this one: its pending verdicts are published and it goes on.
func TestStreamAheadOfTheRecordIsAnEarlierAnalysis(t *testing.T) {
	h := start(t)
	h.stop()
	h.m.set("v2", ok(0.004, 5000))
	ctx := context.Background()
	v := func(seq uint64) state.Verdict {
		return state.Verdict{Verdict: rollout.Verdict{Rollout: ref, Revision: "v2", Sequence: seq, Verdict: rollout.Pause}}
	}
	rec := state.Record{Rollout: ref, Revision: "v2", Template: "t", Started: t0, StepStarted: t0, Sequence: 2,
		Pending: []state.Verdict{v(1), v(2)}, Owner: "r1", LeaseUntil: t0.Add(time.Minute), Cause: "e1",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"}}
	_, err := h.store.Put(ctx, state.LiveKey(ref), rec, 0)
	require.NoError(t, err)
	earlier := func(context.Context, rollout.Ref) (string, uint64, bool, error) { return "v2", 50, true, nil }
	r := startReplica(t, h, h.peerStore(t), "r1", earlier)
	h.clock.Advance(10 * time.Second)
	vs := r.wait(t, 3)
	require.Equal(t, []uint64{1, 2, 3}, []uint64{vs[0].Sequence, vs[1].Sequence, vs[2].Sequence})
}

// flakyStore fails every write while down is set.
type flakyStore struct {
	Store
	mu   sync.Mutex
	down bool
}

func (f *flakyStore) set(down bool) { f.mu.Lock(); f.down = down; f.mu.Unlock() }

func (f *flakyStore) Put(ctx context.Context, key string, r state.Record, rev uint64) (uint64, error) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		return 0, errors.New("nats: connection closed")
	}
	return f.Store.Put(ctx, key, r, rev)
}

// TestVerdictsWaitForTheStore: while the state cannot be stored, verdicts are decided but
// held back; once it can, they are published in order, each number once.
func TestVerdictsWaitForTheStore(t *testing.T) {
	h := start(t)
	h.stop()
	h.m.set("v2", ok(0.004, 5000))
	store := &flakyStore{Store: h.peerStore(t)}
	r := startReplica(t, h, store, "r1", nil)
	require.NoError(t, r.a.Handle(context.Background(), started("e1", "v2")))
	r.wait(t, 1)
	store.set(true)
	h.clock.Advance(10 * time.Second)
	require.Eventually(t, func() bool { return counterValue(r.a.metrics.evaluations) >= 2 }, 5*time.Second, time.Millisecond,
		"the second verdict is decided while the store is down")
	require.Never(t, func() bool { return len(r.sink.of(ref)) > 1 }, 100*time.Millisecond, 5*time.Millisecond,
		"nothing is published while the state cannot be stored")
	store.set(false)
	h.clock.Advance(time.Second)
	vs := r.wait(t, 2)
	for i, v := range vs {
		require.Equal(t, uint64(i+1), v.Sequence)
	}
	entry, err := h.store.Get(context.Background(), state.LiveKey(ref))
	require.NoError(t, err)
	require.Equal(t, vs[len(vs)-1].Sequence, entry.Record.Sequence)
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// TestEvaluationsBackOffWhileTheSourceIsUnreachable: while every query fails for want of
// the metrics source, verdicts stay pause and evaluations space out (interval, then doubled,
// up to a minute); the first evaluation that reaches the source again resets the pace.
func TestEvaluationsBackOffWhileTheSourceIsUnreachable(t *testing.T) {
	h := start(t)
	down := rollout.Reading{Status: rollout.StatusError, Message: compare.ErrUnavailable.Error() + ": connection refused"}
	h.m.mu.Lock()
	h.m.stable = down
	h.m.mu.Unlock()
	h.m.set("v2", down)
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1) // t0; the next at +10s
	// Due times after each unreachable evaluation: +10s, then +20s, +40s.
	for i, wait := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second} {
		n := len(h.sink.of(ref))
		h.clock.Advance(wait - time.Second)
		require.Never(t, func() bool { return len(h.sink.of(ref)) > n }, 30*time.Millisecond, 5*time.Millisecond, "step %d: not due yet", i)
		h.clock.Advance(time.Second)
		vs := h.waitVerdicts(t, n+1)
		require.Equal(t, rollout.Pause, vs[len(vs)-1].Verdict)
		require.Equal(t, rollout.Error, vs[len(vs)-1].Checks[0].Outcome)
	}
	// Back: the next evaluation (due in 80s, capped at 60s) reaches the source, and the
	// pace is the interval again.
	h.m.mu.Lock()
	h.m.stable = ok(0.004, 10000)
	h.m.mu.Unlock()
	h.m.set("v2", ok(0.004, 5000))
	n := len(h.sink.of(ref))
	h.clock.Advance(time.Minute)
	h.waitVerdicts(t, n+1)
	h.clock.Advance(10 * time.Second)
	h.waitVerdicts(t, n+2)
}

// unacknowledged starts an analysis whose sink acknowledges nothing, and waits for its
// maxUnacknowledged verdicts.
func (h *harness) unacknowledged(t *testing.T) {
	t.Helper()
	h.m.set("v2", ok(0.004, 5000))
	h.sink.setHold(true)
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	for i := 1; i <= maxUnacknowledged; i++ {
		h.waitVerdicts(t, i)
		h.clock.Advance(10 * time.Second)
	}
}

// TestUnacknowledgedVerdictsHoldEvaluations: while JetStream does not acknowledge a rollout's
// verdicts, at most maxUnacknowledged wait; the rollout is evaluated again once they are.
func TestUnacknowledgedVerdictsHoldEvaluations(t *testing.T) {
	h := start(t)
	h.unacknowledged(t)
	require.Never(t, func() bool { return len(h.sink.of(ref)) > maxUnacknowledged }, 100*time.Millisecond, 5*time.Millisecond,
		"no new number while %d wait", maxUnacknowledged)
	entry, err := h.store.Get(context.Background(), state.LiveKey(ref))
	require.NoError(t, err)
	require.Len(t, entry.Record.Pending, maxUnacknowledged, "the store keeps every unacknowledged verdict")

	for _, v := range h.sink.of(ref) {
		h.a.Acknowledged(v)
	}
	h.sink.setHold(false)
	h.clock.Advance(10 * time.Second)
	h.waitVerdicts(t, maxUnacknowledged+1)
	require.Eventually(t, func() bool {
		entry, err := h.store.Get(context.Background(), state.LiveKey(ref))
		return err == nil && len(entry.Record.Pending) <= 1 && entry.Record.Published >= maxUnacknowledged
	}, 5*time.Second, time.Millisecond, "acknowledged verdicts leave the store's pending list")
}

// TestDroppedVerdictsHoldNoEvaluation: verdicts the sink dropped (its queue full) are never
// acknowledged; they do not hold the rollout's evaluations as unacknowledged ones do.
func TestDroppedVerdictsHoldNoEvaluation(t *testing.T) {
	h := start(t)
	h.unacknowledged(t)
	for _, v := range h.sink.of(ref) {
		h.a.Dropped(v)
	}
	h.clock.Advance(10 * time.Second)
	vs := h.waitVerdicts(t, maxUnacknowledged+1)
	require.Equal(t, uint64(maxUnacknowledged+1), vs[maxUnacknowledged].Sequence)
}

// TestEventsOutOfOrder: events of one rollout may be handled out of order (replicas handle
// them at once; a failed start comes again after what followed it). An end that comes before
// its start keeps the start from starting an analysis that would never end; an end older than
// the analysis it finds is stale.
func TestEventsOutOfOrder(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	done := started("e2", "v2")
	done.Type, done.Time = rollout.EventCompleted, t0.Add(time.Minute)
	require.NoError(t, h.a.Handle(context.Background(), done))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")), "the start, late")
	_, err := h.store.Get(context.Background(), state.LiveKey(ref))
	require.ErrorIs(t, err, state.ErrNotFound, "no analysis of a revision that already ended")
	require.Never(t, func() bool { return len(h.sink.of(ref)) > 0 }, 50*time.Millisecond, 5*time.Millisecond)

	// A later start of the revision (a retry) is analysed; an end from before it is stale.
	again := started("e3", "v2")
	again.Time = t0.Add(2 * time.Minute)
	require.NoError(t, h.a.Handle(context.Background(), again))
	h.waitVerdicts(t, 1)
	late := started("e4", "v2")
	late.Type, late.Time = rollout.EventAborted, t0.Add(90*time.Second)
	require.NoError(t, h.a.Handle(context.Background(), late))
	_, err = h.store.Get(context.Background(), state.LiveKey(ref))
	require.NoError(t, err, "the analysis goes on")
}

// TestAcknowledgementsOfEndedAnalysesAreForgotten: the acknowledgements the publisher reports
// do not pile up for analyses this replica no longer owns.
func TestAcknowledgementsOfEndedAnalysesAreForgotten(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)
	gone := rollout.Key{Ref: rollout.Ref{Namespace: "prod", Name: "gone"}, Revision: "v9"}
	h.a.Acknowledged(rollout.Verdict{Rollout: gone.Ref, Revision: gone.Revision, Sequence: 3})
	require.Eventually(t, func() bool { return h.a.ackedOf(gone) == 0 }, 5*time.Second, time.Millisecond)
	require.Equal(t, uint64(1), h.a.ackedOf(rollout.Key{Ref: ref, Revision: "v2"}), "a live analysis keeps its own")
}

// TestRolloutsArePlacedAndTakenOverEvenly: once three replicas see each other, a new rollout
// is analysed by its heir among them, whichever replica its start reached; when one stops,
// its rollouts go to both others (each to its heir), not all to the first that notices, and
// every one of them is evaluated again.
func TestRolloutsArePlacedAndTakenOverEvenly(t *testing.T) {
	h := start(t)
	h.stop()
	ids := []string{"r1", "r2", "r3"}
	replicas := []*replica{
		startReplica(t, h, h.peerStore(t), "r1", nil),
		startReplica(t, h, h.peerStore(t), "r2", nil),
		startReplica(t, h, h.peerStore(t), "r3", nil),
	}
	ctx := context.Background()
	// Each replica owns one rollout already (stored, as after a restart): they see each
	// other's leases.
	for i, id := range ids {
		seed := rollout.Ref{Namespace: "seed", Name: id}
		rec := state.Record{Rollout: seed, Revision: "v2", Template: "t", Started: t0, StepStarted: t0,
			Owner: id, LeaseUntil: t0.Add(time.Minute),
			Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"}}
		_, err := h.store.Put(ctx, state.LiveKey(seed), rec, 0)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return len(replicas[i].sink.of(seed)) > 0 }, 5*time.Second, time.Millisecond)
	}
	for _, r := range replicas {
		require.Eventually(t, func() bool { return len(r.a.peersSeen()) == 3 }, 5*time.Second, time.Millisecond)
	}

	const n = 30
	refs := make([]rollout.Ref, n)
	for i := range refs {
		refs[i] = rollout.Ref{Namespace: "prod", Name: fmt.Sprintf("svc-%d", i)}
		ev := started(fmt.Sprintf("e%d", i), "v2")
		ev.Rollout = refs[i]
		require.NoError(t, replicas[0].a.Handle(ctx, ev), "every start reaches r1")
	}
	owned := func(r *replica) int {
		n := 0
		for _, rf := range refs {
			if len(r.sink.of(rf)) > 0 {
				n++
			}
		}
		return n
	}
	placed := map[string]int{}
	for _, rf := range refs {
		placed[heir(rf, ids)]++
	}
	for i, r := range replicas {
		require.Eventually(t, func() bool { return owned(r) == placed[ids[i]] }, 5*time.Second, time.Millisecond,
			"%s analyses the rollouts placed on it (%v)", ids[i], placed)
		require.Positive(t, placed[ids[i]])
	}
	// Every replica sees every other's leases before r1 stops.
	for _, r := range replicas[1:] {
		require.Eventually(t, func() bool { return len(r.a.List()) == n+3 }, 5*time.Second, time.Millisecond)
	}
	replicas[0].stop()
	before := []int{owned(replicas[1]), owned(replicas[2])}
	// The clock moves on by less than a quarter of a lease at a time (the least a lease is
	// renewed with: renewedSoon), each step once the survivors have renewed their own leases,
	// as a real clock does: past r1's leases, and within their heirs' half a lease.
	renewed := func() bool {
		entries, err := h.store.Live(ctx)
		require.NoError(t, err)
		for _, e := range entries {
			if e.Record.Owner != "r1" && e.Record.LeaseUntil.Sub(h.clock.Now()) <= 15*time.Second/4 {
				return false
			}
		}
		return true
	}
	for range 6 {
		h.clock.Advance(3 * time.Second)
		require.Eventually(t, renewed, 5*time.Second, time.Millisecond)
	}
	require.Eventually(t, func() bool {
		return owned(replicas[1])+owned(replicas[2]) == n
	}, 10*time.Second, time.Millisecond, "every rollout of r1 is evaluated again")
	took := []int{owned(replicas[1]) - before[0], owned(replicas[2]) - before[1]}
	want := [2]int{}
	for _, rf := range refs {
		if heir(rf, ids) != "r1" {
			continue
		}
		if heir(rf, []string{"r2", "r3"}) == "r2" {
			want[0]++
		} else {
			want[1]++
		}
	}
	require.Equal(t, want[:], took, "each of r1's went to its heir")
	require.Positive(t, took[0], "r2 took some of r1's rollouts")
	require.Positive(t, took[1], "r3 took some of r1's rollouts")
}

// TestNewRevisionPlacedOnTheOwnerWhileItWrites: the replica analysing a rollout's revision
// is writing its record when another replica applies the next revision's start and places
// it on this one; the write conflicts, and this replica analyses the new revision at once
// (not as another replica's, for a lease).
func TestNewRevisionPlacedOnTheOwnerWhileItWrites(t *testing.T) {
	store := openStore(t)
	ctx := context.Background()
	a, err := New(Options{Store: store, ReplicaID: "r1", Templates: map[string]*compare.Template{"t": testTemplate(t)},
		Measurer: &fakeMeasurer{canary: map[string]rollout.Reading{}}, Sink: &fakeSink{}, Now: (&clock{now: t0}).Now,
		Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	rec := func(revision string) state.Record {
		return state.Record{Rollout: ref, Revision: revision, Template: "t", Started: t0, StepStarted: t0, Owner: "r1",
			LeaseUntil: t0.Add(time.Minute), Args: map[string]string{"service": "checkout"},
			Canary: map[string]string{"version": revision}, Stable: map[string]string{"version": "v1"}}
	}
	rev, err := store.Put(ctx, state.LiveKey(ref), rec("v1"), 0)
	require.NoError(t, err)
	a.adopt(rec("v1"), rev, true)
	old := a.live[ref]
	require.NotNil(t, old)
	// Another replica supersedes v1 with v2 and places it here, while this one writes v1.
	newRev, err := store.Put(ctx, state.LiveKey(ref), rec("v2"), rev)
	require.NoError(t, err)
	old.writing, a.writes = true, 1
	a.stored(ctx, write{an: old, rec: old.rec, base: rev, at: t0, err: fmt.Errorf("write: %w", state.ErrConflict)})

	an := a.live[ref]
	require.NotNil(t, an, "the rollout is analysed here")
	require.Equal(t, "v2", an.rec.Revision)
	require.Equal(t, newRev, an.rev)
	_, parked := a.others[ref]
	require.False(t, parked, "not taken for another replica's")
	require.True(t, an.scheduled, "evaluated at once")
}

// gateStore holds every write but those of keys in pass until open is closed, counting the
// writes in flight.
type gateStore struct {
	Store
	open          chan struct{}
	mu            sync.Mutex
	pass, entered map[string]bool
	inFlight, top int
}

func (g *gateStore) Put(ctx context.Context, key string, r state.Record, rev uint64) (uint64, error) {
	g.mu.Lock()
	pass := g.pass[key]
	g.entered[key] = true
	if !pass {
		g.inFlight++
		g.top = max(g.top, g.inFlight)
	}
	g.mu.Unlock()
	if !pass {
		defer func() { g.mu.Lock(); g.inFlight--; g.mu.Unlock() }()
		select {
		case <-g.open:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return g.Store.Put(ctx, key, r, rev)
}

// TestRecordWritesInFlightAreBounded: when many analyses write at once (every rollout's first
// verdict after a start), at most maxWrites writes are in flight; the others wait for a slot,
// their timeout not running, but for one the loop waits for (an event's), and every write is
// stored once the store answers.
func TestRecordWritesInFlightAreBounded(t *testing.T) {
	store := openStore(t)
	gate := &gateStore{Store: store, open: make(chan struct{}), pass: map[string]bool{}, entered: map[string]bool{}}
	ctx := context.Background()
	a, err := New(Options{Store: gate, ReplicaID: "r1", Templates: map[string]*compare.Template{"t": testTemplate(t)},
		Measurer: &fakeMeasurer{canary: map[string]rollout.Reading{}}, Sink: &fakeSink{}, Now: (&clock{now: t0}).Now,
		Registerer: prometheus.NewRegistry(), Lease: time.Hour})
	require.NoError(t, err)
	const n = maxWrites + 50
	for i := range n {
		r := rollout.Ref{Namespace: "prod", Name: fmt.Sprintf("svc-%d", i)}
		rec := state.Record{Rollout: r, Revision: "v2", Template: "t", Started: t0, StepStarted: t0, Owner: "r1",
			LeaseUntil: t0.Add(time.Minute), Args: map[string]string{"service": "checkout"},
			Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"}}
		rev, err := store.Put(ctx, state.LiveKey(r), rec, 0)
		require.NoError(t, err)
		a.adopt(rec, rev, true)
		a.store(ctx, a.live[r])
	}
	require.Eventually(t, func() bool { gate.mu.Lock(); defer gate.mu.Unlock(); return gate.inFlight == maxWrites }, 5*time.Second, time.Millisecond)
	// An event for a rollout whose write waits for a slot: that write goes at once, and the
	// event is applied once it is answered; the others still wait.
	var last rollout.Ref
	gate.mu.Lock()
	for ref := range a.live {
		if !gate.entered[state.LiveKey(ref)] {
			last = ref
		}
	}
	gate.pass[state.LiveKey(last)] = true
	gate.mu.Unlock()
	require.NotEmpty(t, last.Name, "a write waits for a slot")
	reply := make(chan error, 1)
	a.apply(ctx, eventRequest{ctx: ctx, reply: reply, received: time.Now(), ev: rollout.Event{ID: "step", Type: rollout.EventStep,
		Time: t0.Add(time.Second), Rollout: last, Revision: "v2", Step: 1, Weight: 25}})
	w := <-a.written
	require.Equal(t, last, w.rec.Rollout, "the write the event waits for goes first")
	a.stored(ctx, w)
	require.False(t, a.live[last].writing, "its write answered")
	require.Equal(t, n-1, a.writes, "the others still wait")
	a.finish(ctx, <-a.applied)
	require.NoError(t, <-reply, "the event is applied over the write")
	require.Equal(t, 1, a.live[last].rec.Step)
	close(gate.open)
	for range n - 1 {
		a.stored(ctx, <-a.written)
	}
	require.Equal(t, maxWrites, gate.top, "no more than maxWrites writes in flight")
	require.Zero(t, a.writes)
	for _, an := range a.live {
		require.Empty(t, an.storeErr, "every write stored")
		require.NotZero(t, an.rev)
	}
}
