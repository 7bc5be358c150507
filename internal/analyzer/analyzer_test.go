package analyzer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeMeasurer answers every check of a rollout with the readings set for its canary
// version, and counts baseline captures.
type fakeMeasurer struct {
	mu        sync.Mutex
	canary    map[string]rollout.Reading // by canary "version"
	stable    rollout.Reading
	baseline  rollout.Reading
	captures  int
	failFirst int // baseline captures that fail before one succeeds
	targets   []compare.Target
	// entered and release, when set, hold Measure until the test lets it go.
	entered chan struct{}
	release chan struct{}
}

func (f *fakeMeasurer) Measure(_ context.Context, t compare.Target) []rollout.Measurement {
	if f.release != nil {
		f.entered <- struct{}{}
		<-f.release
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.targets = append(f.targets, t)
	out := make([]rollout.Measurement, 0, len(t.Template.Checks))
	for _, c := range t.Template.Checks {
		out = append(out, rollout.Measurement{Check: c.Name, Canary: f.canary[t.Canary.Vars["version"]], Stable: f.stable})
	}
	return out
}

func (f *fakeMeasurer) CaptureBaseline(_ context.Context, t *compare.Template, _, _ map[string]string, _ time.Time) (map[string]rollout.Reading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.captures++
	if f.captures <= f.failFirst {
		return nil, errors.New("prometheus down")
	}
	out := map[string]rollout.Reading{}
	for _, c := range t.Checks {
		out[c.Name] = f.baseline
	}
	return out, nil
}

func (f *fakeMeasurer) set(version string, r rollout.Reading) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.canary[version] = r
}

type fakeSink struct {
	mu       sync.Mutex
	verdicts []rollout.Verdict
	parents  []string
	// ack, when set, is told of every verdict at once, as JetStream's acknowledgements
	// tell the analyzer (publish.Options.OnPublished); hold stops that.
	ack  func(rollout.Verdict)
	hold bool
}

func (s *fakeSink) Enqueue(v rollout.Verdict, traceParent, _ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verdicts = append(s.verdicts, v)
	s.parents = append(s.parents, traceParent)
	if s.ack != nil && !s.hold {
		s.ack(v)
	}
}

func (s *fakeSink) setHold(hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = hold
}

// Revoke records nothing: the fake publishes at once, so nothing is ever queued.
func (s *fakeSink) Revoke(rollout.Ref, string) int { return 0 }

func (s *fakeSink) of(ref rollout.Ref) []rollout.Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []rollout.Verdict
	for _, v := range s.verdicts {
		if v.Rollout == ref {
			out = append(out, v)
		}
	}
	return out
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var t0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

func ok(v float64, n int64) rollout.Reading {
	return rollout.Reading{Status: rollout.StatusOK, Value: v, Samples: n}
}

func testTemplate(t *testing.T, modify ...func(*rollout.Template)) *compare.Template {
	t.Helper()
	max := 0.01
	crit := 0.05
	rt := rollout.Template{
		Name: "t", Interval: 10 * time.Second, BaselineWindow: time.Minute, MinStepDuration: 30 * time.Second,
		Args: []string{"service"}, Variables: []string{"version"},
		Checks: []rollout.Check{{
			Name: "error-rate", Kind: rollout.KindRatio, MinSamples: 100,
			Errors: `x{service={{ arg "service" }}, version={{ var "version" }}}`,
			Total:  `y{service={{ arg "service" }}, version={{ var "version" }}}`,
			Guards: []rollout.Guard{
				{Against: rollout.AgainstStable, Measure: rollout.MeasureDelta, Max: &max},
				{Against: rollout.AgainstBaseline, Measure: rollout.MeasureDelta, Max: &crit, Critical: true},
			},
		}},
	}
	for _, m := range modify {
		m(&rt)
	}
	tmpl, err := compare.CompileTemplate(rt)
	require.NoError(t, err)
	return tmpl
}

// openStore opens a state bucket on a real NATS server of the test's own.
func openStore(t *testing.T) *state.Store {
	t.Helper()
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	return storeOn(t, js)
}

func storeOn(t *testing.T, js jetstream.JetStream) *state.Store {
	t.Helper()
	st, err := state.Open(context.Background(), js, state.Options{})
	require.NoError(t, err)
	return st
}

// peerStore opens the harness's bucket again, as another replica's process does: a Store
// of its own, whose watch sees what every other Store writes.
func (h *harness) peerStore(t *testing.T) *state.Store {
	t.Helper()
	return storeOn(t, h.js)
}

// harness runs one analyzer (its replica) over a fake measurer and a settable clock, with a
// state store on a real NATS server; more replicas may share them (startReplica).
type harness struct {
	*replica
	store *state.Store
	js    jetstream.JetStream // the store's
	logs  *observer.ObservedLogs
	m     *fakeMeasurer
	clock *clock
}

// replica is one analyzer with its sink, run until stopped or the test ends.
type replica struct {
	a      *Analyzer
	sink   *fakeSink
	cancel context.CancelFunc
	done   chan error
}

func (r *replica) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

func start(t *testing.T, modify ...func(*rollout.Template)) *harness {
	t.Helper()
	h := &harness{
		m:     &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000)},
		clock: &clock{now: t0},
	}
	core, logs := observer.New(zap.InfoLevel)
	h.logs = logs
	ns := natstest.Start(t)
	_, h.js = natstest.Connect(t, ns)
	h.store = storeOn(t, h.js)
	h.replica = h.run(t, Options{Logger: zap.New(core), Store: h.store, ReplicaID: "test-replica"}, modify...)
	return h
}

// run starts an analyzer with opts over the harness's measurer and clock and the test
// template (modified), its sink acknowledging every verdict as JetStream would.
func (h *harness) run(t *testing.T, opts Options, modify ...func(*rollout.Template)) *replica {
	t.Helper()
	r := &replica{sink: &fakeSink{}, done: make(chan error, 1)}
	opts.Templates = map[string]*compare.Template{"t": testTemplate(t, modify...)}
	opts.Measurer, opts.Sink = h.m, r.sink
	if opts.Resolution == 0 {
		opts.Resolution = 5 * time.Millisecond
	}
	opts.Now, opts.Registerer = h.clock.Now, prometheus.NewRegistry()
	a, err := New(opts)
	require.NoError(t, err)
	r.a = a
	r.sink.ack = a.Acknowledged
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

var ref = rollout.Ref{Namespace: "prod", Name: "checkout"}

func started(id, revision string) rollout.Event {
	return rollout.Event{
		ID: id, Source: "test", Type: rollout.EventStarted, Time: t0,
		Rollout: ref, Revision: revision, Analysis: "t",
		Args:   map[string]string{"service": "checkout"},
		Canary: map[string]string{"version": revision}, Stable: map[string]string{"version": "v1"},
		Step: 0, Weight: 10,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}

func (h *harness) waitVerdicts(t *testing.T, n int) []rollout.Verdict {
	t.Helper()
	require.Eventually(t, func() bool { return len(h.sink.of(ref)) >= n }, 5*time.Second, time.Millisecond)
	return h.sink.of(ref)
}

func TestHealthyCanaryPausesUntilStepIsOldEnoughThenProceeds(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))

	vs := h.waitVerdicts(t, 1)
	require.Equal(t, rollout.Pause, vs[0].Verdict, "the step is younger than minStepDuration")
	require.Equal(t, uint64(1), vs[0].Sequence)
	require.Equal(t, "e1", vs[0].Cause)
	require.Len(t, vs[0].TraceID, 32)

	h.clock.Advance(30 * time.Second)
	require.Eventually(t, func() bool {
		vs := h.sink.of(ref)
		return vs[len(vs)-1].Verdict == rollout.Proceed
	}, 5*time.Second, time.Millisecond)
	latest, found := h.a.Latest(ref)
	require.True(t, found)
	require.Equal(t, rollout.Proceed, latest.Verdict)
	require.Equal(t, 1, h.m.captures, "the baseline is captured once")
}

func TestSequenceGrowsByOneAndVerdictsComeEveryInterval(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)
	for i := 2; i <= 4; i++ {
		h.clock.Advance(10 * time.Second)
		h.waitVerdicts(t, i)
	}
	vs := h.sink.of(ref)
	for i, v := range vs {
		require.Equal(t, uint64(i+1), v.Sequence)
	}
	// No evaluation is due until the interval has passed again.
	require.Never(t, func() bool { return len(h.sink.of(ref)) > len(vs) }, 50*time.Millisecond, 5*time.Millisecond)
}

func TestCriticalFailureRollsBackOnceAndForAll(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.10, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	vs := h.waitVerdicts(t, 1)
	require.Equal(t, rollout.Rollback, vs[0].Verdict)
	require.Contains(t, vs[0].Reason, "error-rate")
	require.Equal(t, rollout.Fail, vs[0].Checks[0].Outcome)

	// Rollback is final: no more evaluations of this revision, even when the canary heals.
	h.m.set("v2", ok(0.001, 5000))
	h.clock.Advance(time.Hour)
	require.Never(t, func() bool { return len(h.sink.of(ref)) > 1 }, 50*time.Millisecond, 5*time.Millisecond)
	latest, _ := h.a.Latest(ref)
	require.Equal(t, rollout.Rollback, latest.Verdict)
}

func TestDuplicateEventsAreAppliedOnce(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")), "same id")
	require.NoError(t, h.a.Handle(context.Background(), started("e1-again", "v2")), "same rollout and revision")
	vs := h.waitVerdicts(t, 1)
	require.Equal(t, "e1", vs[0].Cause)
	require.Never(t, func() bool { return len(h.sink.of(ref)) > 1 }, 50*time.Millisecond, 5*time.Millisecond)
}

func TestInvalidEventsAreRejected(t *testing.T) {
	h := start(t)
	unknown := started("e1", "v2")
	unknown.Analysis = "nope"
	err := h.a.Handle(context.Background(), unknown)
	require.ErrorIs(t, err, rollout.ErrInvalid)
	require.ErrorContains(t, err, `no analysis template named "nope"`)

	noArg := started("e2", "v2")
	noArg.Args = map[string]string{}
	require.ErrorContains(t, h.a.Handle(context.Background(), noArg), "data.args.service")

	noVar := started("e3", "v2")
	noVar.Stable = map[string]string{"other": "x"}
	require.ErrorContains(t, h.a.Handle(context.Background(), noVar), "data.stable.version")

	step := rollout.Event{ID: "e4", Type: rollout.EventStep, Time: t0, Rollout: ref, Revision: "v2", Step: 1, Weight: 25}
	err = h.a.Handle(context.Background(), step)
	require.ErrorContains(t, err, "no live analysis", "a step before its start")
	require.NotErrorIs(t, err, rollout.ErrInvalid, "retried: its start may come later (events can be handled out of order)")

	// A rejected id is not remembered: a corrected republish with the same id applies.
	fixed := started("e1", "v2")
	require.NoError(t, h.a.Handle(context.Background(), fixed))
	h.waitVerdicts(t, 1)
}

func TestStepChangeGoesBackToPauseAndKeepsFailures(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.clock.Advance(30 * time.Second)
	require.Eventually(t, func() bool {
		vs := h.sink.of(ref)
		return len(vs) > 0 && vs[len(vs)-1].Verdict == rollout.Proceed
	}, 5*time.Second, time.Millisecond)

	step := rollout.Event{ID: "e2", Type: rollout.EventStep, Time: t0.Add(30 * time.Second), Rollout: ref, Revision: "v2", Step: 1, Weight: 25}
	require.NoError(t, h.a.Handle(context.Background(), step))
	require.Eventually(t, func() bool {
		vs := h.sink.of(ref)
		last := vs[len(vs)-1]
		return last.Step == 1 && last.Weight == 25 && last.Verdict == rollout.Pause && last.Cause == "e2"
	}, 5*time.Second, time.Millisecond)

	// An older step event, delivered late, changes nothing.
	stale := rollout.Event{ID: "e0", Type: rollout.EventStep, Time: t0.Add(time.Second), Rollout: ref, Revision: "v2", Step: 7, Weight: 90}
	require.NoError(t, h.a.Handle(context.Background(), stale))
	h.clock.Advance(10 * time.Second)
	n := len(h.sink.of(ref))
	vs := h.waitVerdicts(t, n+1)
	require.Equal(t, 1, vs[len(vs)-1].Step)
}

func TestNewRevisionSupersedesAndCompletionRetires(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	h.m.set("v3", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)

	next := started("e2", "v3")
	next.Time = t0.Add(time.Minute)
	require.NoError(t, h.a.Handle(context.Background(), next))
	require.Eventually(t, func() bool {
		latest, ok := h.a.Latest(ref)
		return ok && latest.Revision == "v3"
	}, 5*time.Second, time.Millisecond)
	latest, _ := h.a.Latest(ref)
	require.Equal(t, uint64(1), latest.Sequence, "sequence starts at 1 for each revision")

	// Completion of the superseded revision is ignored; of the live one, it retires it.
	require.NoError(t, h.a.Handle(context.Background(), rollout.Event{ID: "e3", Type: rollout.EventCompleted, Time: next.Time, Rollout: ref, Revision: "v2"}))
	_, found := h.a.Latest(ref)
	require.True(t, found)
	require.NoError(t, h.a.Handle(context.Background(), rollout.Event{ID: "e4", Type: rollout.EventAborted, Time: next.Time, Rollout: ref, Revision: "v3"}))
	_, found = h.a.Latest(ref)
	require.False(t, found)
	require.Empty(t, h.a.List())
}

func TestBaselineIsRetriedUntilCapturedThenKept(t *testing.T) {
	h := start(t)
	h.m.failFirst = 2
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)
	require.Nil(t, h.sink.of(ref)[0].Checks[0].Baseline)
	for i := 2; i <= 5; i++ {
		h.clock.Advance(10 * time.Second)
		h.waitVerdicts(t, i)
	}
	vs := h.sink.of(ref)
	require.NotNil(t, vs[len(vs)-1].Checks[0].Baseline)
	require.InDelta(t, 0.003, *vs[len(vs)-1].Checks[0].Baseline, 1e-12)
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	require.Equal(t, 3, h.m.captures, "two failures, then one capture, then never again")
	require.Equal(t, 1, h.logs.FilterMessageSnippet("baseline not captured").Len(), "the same error is logged once, not at every evaluation")
	require.Equal(t, 1, h.logs.FilterMessage("baseline captured after all").Len())
}

func TestStopIsPromptAndHandleThenFails(t *testing.T) {
	h := start(t)
	h.stop()
	err := h.a.Handle(context.Background(), started("e1", "v2"))
	require.ErrorIs(t, err, ErrStopped)
}

func TestFailuresCarryOverToTheNextStep(t *testing.T) {
	h := start(t, func(rt *rollout.Template) { rt.Checks[0].FailureLimit = 1 })
	// 2% against a stable 0.4%: fails the stable guard, not the critical baseline one.
	h.m.set("v2", ok(0.02, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	vs := h.waitVerdicts(t, 1)
	require.Equal(t, rollout.Pause, vs[0].Verdict, "one failure is within the limit of 1")
	require.Equal(t, rollout.Fail, vs[0].Checks[0].Outcome)

	step := rollout.Event{ID: "e2", Type: rollout.EventStep, Time: t0.Add(time.Second), Rollout: ref, Revision: "v2", Step: 1, Weight: 25}
	require.NoError(t, h.a.Handle(context.Background(), step))
	vs = h.waitVerdicts(t, 2)
	require.Equal(t, 1, vs[1].Step)
	require.Equal(t, rollout.Rollback, vs[1].Verdict, "the failure of step 0 counts at step 1: two exceed the limit")
	require.Contains(t, vs[1].Reason, "failed 2 times, limit 1")
}

func TestRevisionStartedAgainAfterItsEndResumesItsSequence(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)
	require.NoError(t, h.a.Handle(context.Background(), rollout.Event{ID: "e2", Type: rollout.EventCompleted, Time: t0.Add(time.Minute), Rollout: ref, Revision: "v2"}))
	_, found := h.a.Latest(ref)
	require.False(t, found)

	// A copy of the start from before the end (a new id, the old time) is a duplicate, and a
	// step of the ended revision is ignored rather than dead-lettered.
	require.NoError(t, h.a.Handle(context.Background(), started("e1-copy", "v2")))
	step := rollout.Event{ID: "e3", Type: rollout.EventStep, Time: t0.Add(90 * time.Second), Rollout: ref, Revision: "v2", Step: 1, Weight: 50}
	require.NoError(t, h.a.Handle(context.Background(), step))
	h.clock.Advance(time.Minute)
	require.Never(t, func() bool { return len(h.sink.of(ref)) > 1 }, 50*time.Millisecond, 5*time.Millisecond)

	// Started again after the end (a retry): analysed again, its sequence going on.
	again := started("e4", "v2")
	again.Time = t0.Add(2 * time.Minute)
	require.NoError(t, h.a.Handle(context.Background(), again))
	vs := h.waitVerdicts(t, 2)
	require.Equal(t, uint64(2), vs[1].Sequence, "no sequence number is published twice for a revision")
	require.Equal(t, "e4", vs[1].Cause)
}

// TestRevisionStartedAgainAfterManyVerdictsIsEvaluated: a revision started again after an
// analysis that gave out more than maxUnacknowledged numbers goes on from them, all counted
// as published, rather than waiting for acknowledgements of the ended analysis's verdicts.
func TestRevisionStartedAgainAfterManyVerdictsIsEvaluated(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	ended := t0.Add(-time.Minute)
	require.NoError(t, h.store.PutEnded(context.Background(), state.Record{Rollout: ref, Revision: "v2", Template: "t",
		Started: t0.Add(-time.Hour), Sequence: 3 * maxUnacknowledged, Ended: &ended}))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	vs := h.waitVerdicts(t, 1)
	require.Equal(t, uint64(3*maxUnacknowledged+1), vs[0].Sequence, "the sequence goes on, evaluated at once")
}

func TestRevertToASupersededRevision(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.004, 5000))
	h.m.set("v3", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)
	v3 := started("e2", "v3")
	v3.Time = t0.Add(time.Minute)
	require.NoError(t, h.a.Handle(context.Background(), v3))
	require.Eventually(t, func() bool { l, ok := h.a.Latest(ref); return ok && l.Revision == "v3" }, 5*time.Second, time.Millisecond)

	// Back to v2 (an undo), later than v3's start: v2 supersedes v3 and goes on at 2.
	back := started("e3", "v2")
	back.Time = t0.Add(2 * time.Minute)
	require.NoError(t, h.a.Handle(context.Background(), back))
	require.Eventually(t, func() bool { l, ok := h.a.Latest(ref); return ok && l.Revision == "v2" }, 5*time.Second, time.Millisecond)
	latest, _ := h.a.Latest(ref)
	require.Equal(t, uint64(2), latest.Sequence)

	// A late copy of v2's first start changes nothing.
	require.NoError(t, h.a.Handle(context.Background(), started("e1-copy", "v2")))
	latest, _ = h.a.Latest(ref)
	require.Equal(t, "v2", latest.Revision)
}

func TestRolledBackRevisionStartedAgainIsRolledBackAtOnce(t *testing.T) {
	h := start(t)
	h.m.set("v2", ok(0.10, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	vs := h.waitVerdicts(t, 1)
	require.Equal(t, rollout.Rollback, vs[0].Verdict)
	require.NoError(t, h.a.Handle(context.Background(), rollout.Event{ID: "e2", Type: rollout.EventAborted, Time: t0.Add(time.Minute), Rollout: ref, Revision: "v2"}))

	h.m.set("v2", ok(0.004, 5000)) // even if it looks healthy now: rollback is final for a revision
	again := started("e3", "v2")
	again.Time = t0.Add(2 * time.Minute)
	require.NoError(t, h.a.Handle(context.Background(), again))
	vs = h.waitVerdicts(t, 2)
	require.Equal(t, rollout.Rollback, vs[1].Verdict)
	require.Equal(t, uint64(2), vs[1].Sequence)
	require.Equal(t, vs[0].Reason, vs[1].Reason, "the original reason")
}

// TestStopFinishesEvaluationsInFlight: a stop waits for the evaluation that is querying,
// decides it and hands its verdict to the sink before Run returns.
func TestStopFinishesEvaluationsInFlight(t *testing.T) {
	h := start(t)
	h.m.entered, h.m.release = make(chan struct{}), make(chan struct{})
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	<-h.m.entered // the evaluation is querying

	h.cancel()
	select {
	case <-h.done:
		t.Fatal("Run returned with an evaluation in flight")
	default:
	}
	close(h.m.release)
	require.NoError(t, <-h.done)
	h.cancel = nil
	vs := h.sink.of(ref)
	require.Len(t, vs, 1, "the evaluation in flight was decided and handed to the sink")
	require.Equal(t, uint64(1), vs[0].Sequence)
}
