package decide

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// --- the statistics, as pure functions ---

func TestPoissonBoundKnownValues(t *testing.T) {
	// With no events the Chernoff bound is n * l = ln(1/alpha) exactly.
	require.InDelta(t, math.Log(20)/1000, poissonBound(0, 1000, 0.05, true), 1e-12)
	require.Zero(t, poissonBound(0, 1000, 0.05, false))
	// With events it brackets the rate, and n * KL(mle, bound) = ln(1/alpha) at both ends.
	x, n, alpha := 50.0, 10000.0, 0.01
	up, lo := poissonBound(x, n, alpha, true), poissonBound(x, n, alpha, false)
	require.Less(t, lo, x/n)
	require.Greater(t, up, x/n)
	kl := func(l float64) float64 { return n * (l - x/n + x/n*math.Log((x/n)/l)) }
	require.InDelta(t, math.Log(1/alpha), kl(up), 1e-9)
	require.InDelta(t, math.Log(1/alpha), kl(lo), 1e-9)
	require.True(t, math.IsInf(poissonBound(3, 0, alpha, true), 1), "no requests bound nothing")
}

func TestRateCSBracketsTheEstimate(t *testing.T) {
	lo, up := rateCS(30, 6000, 0.01)
	require.Less(t, lo, 0.005)
	require.Greater(t, up, 0.005)
	lo0, up0 := rateCS(0, 6000, 0.01)
	require.Zero(t, lo0)
	require.Greater(t, up0, 0.0)
	// More data, narrower sequence.
	lo2, up2 := rateCS(300, 60000, 0.01)
	require.Greater(t, lo2, lo)
	require.Less(t, up2, up)
	_, inf := rateCS(0, 0, 0.01)
	require.True(t, math.IsInf(inf, 1))
}

// TestRateCSCoverageUnderContinuousMonitoring: the confidence sequence holds at every look at
// once. Over many Poisson streams checked after every interval, the share of streams whose
// sequence ever excluded the true rate stays at most alpha (plus Monte Carlo slack), where a
// fixed-sample interval checked as often would exceed it.
func TestRateCSCoverageUnderContinuousMonitoring(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const streams, looks, alpha, rate, perLook = 2000, 200, 0.05, 0.005, 500.0
	missed := 0
	for s := 0; s < streams; s++ {
		x, n := 0.0, 0.0
		for l := 0; l < looks; l++ {
			n += perLook
			x += poissonDraw(r, rate*perLook)
			lo, up := rateCS(x, n, alpha)
			if rate < lo || rate > up {
				missed++
				break
			}
		}
	}
	share := float64(missed) / streams
	require.LessOrEqual(t, share, alpha+3*math.Sqrt(alpha*(1-alpha)/streams), "missed in %d of %d streams", missed, streams)
}

func TestConditionalUpdateNeedsErrorsOnBothSidesTotals(t *testing.T) {
	l := make([]float64, gridSize)
	conditionalUpdate(l, 1.1, counts{0, 1000}, counts{0, 9000})
	conditionalUpdate(l, 1.1, counts{5, 0}, counts{3, 9000})
	conditionalUpdate(l, 1.1, counts{5, 1000}, counts{3, 0})
	require.Equal(t, make([]float64, gridSize), l, "no errors, or a side without requests, carries no evidence")
	conditionalUpdate(l, 1.1, counts{50, 1000}, counts{45, 9000})
	require.Greater(t, logMixture(l, logPrior(1)), math.Log(100), "10 times the rate is strong evidence")
}

func TestLogPriorSumsToOne(t *testing.T) {
	for _, scale := range []float64{0.05, 0.5, 1, 3, 10} {
		w := logPrior(scale)
		require.InDelta(t, 0, logSumExp(w[:]), 1e-12, "scale %g", scale)
	}
	require.InDelta(t, 0, logMixture(make([]float64, gridSize), logPrior(1)), 1e-12, "no evidence is an e-value of 1")
}

func TestChooseBuckets(t *testing.T) {
	inf := math.Inf(1)
	tally := Tally{Buckets: []rollout.Bucket{{UpperBound: 0.05, Count: 5000}, {UpperBound: 0.1, Count: 8000}, {UpperBound: 0.25, Count: 9600}, {UpperBound: 0.5, Count: 9900}, {UpperBound: 1, Count: 9970}, {UpperBound: inf, Count: 10000}}}
	// Slower shares: 0.05: 50%, 0.1: 20%, 0.25: 4%, 0.5: 1%, 1: 0.3%. Nearest 5% (by ratio):
	// 0.25 (4%), 0.5 (1%), 0.1 (20%); nearest 1%: 0.5, 1, 0.25.
	require.Equal(t, []float64{0.1, 0.25, 0.5}, chooseBuckets(tally, 0.95))
	require.Equal(t, []float64{0.25, 0.5, 1}, chooseBuckets(tally, 0.99))
	require.Nil(t, chooseBuckets(Tally{Buckets: []rollout.Bucket{{UpperBound: 0.1, Count: 90}, {UpperBound: inf, Count: 100}}}, 0.95), "too few slower requests to choose from")
}

// --- decisions with counts ---

func seqRatio(name string, margin float64, refs ...rollout.Reference) rollout.Check {
	on := true
	return rollout.Check{Name: name, Kind: rollout.KindRatio, Errors: "e", Total: "t", MinSamples: 1000, FailureLimit: 2,
		Sequential: &rollout.Sequential{Enabled: &on, Against: refs, Margin: &margin}}
}

// counted is a ratio reading of the step's counts, known exactly.
func counted(events, total float64) rollout.Reading {
	return countedWithin(rollout.Exact(events), rollout.Exact(total))
}

// countedWithin is a ratio reading of counts known within bounds.
func countedWithin(events, total rollout.Bounds) rollout.Reading {
	counts := &rollout.Counts{Events: events, Total: total}
	if total.Est <= 0 {
		return rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window", Counts: counts, Recent: counts}
	}
	return rollout.Reading{Status: rollout.StatusOK, Value: events.Est / total.Est, Samples: int64(total.Est),
		Events: events.Est, Total: total.Est, Counts: counts, Recent: counts}
}

// stream feeds a ratio check interval by interval: the step's counts so far, each interval
// with new samples.
type stream struct {
	in      Input
	c, s    counts
	results []Result
}

func newStream(t rollout.Template) *stream {
	return &stream{in: Input{Template: t, Step: 0, Weight: 10, StepStarted: t0, Now: t0}}
}

// next adds one interval's counts and decides.
func (st *stream) next(canary, stable counts, d time.Duration) Result {
	st.c.events += canary.events
	st.c.total += canary.total
	st.s.events += stable.events
	st.s.total += stable.total
	st.in.Now = st.in.Now.Add(d)
	var ms []rollout.Measurement
	for _, c := range st.in.Template.Checks {
		ms = append(ms, rollout.Measurement{Check: c.Name, Canary: counted(st.c.events, st.c.total), Stable: counted(st.s.events, st.s.total),
			Through: st.in.Now, ScrapeInterval: d})
	}
	st.in.Measurements = ms
	res := Decide(st.in)
	st.in.Evidence = res.Evidence
	st.results = append(st.results, res)
	return res
}

func TestSequentialRollsBackAtOnceWithItsEValue(t *testing.T) {
	st := newStream(tmpl(seqRatio("error-rate", 0.1)))
	// 10 s at 100 req/s canary, 900 stable: 50 canary errors against 45 stable ones.
	res := st.next(counts{50, 1000}, counts{45, 9000}, 10*time.Second)
	require.Equal(t, rollout.Rollback, res.Decision)
	require.Contains(t, res.Reason, "error-rate: canary 5% vs stable 0.5% (e-value ")
	require.Equal(t, rollout.Fail, res.Checks[0].Outcome)
	require.NotNil(t, res.Checks[0].EValue)
	require.GreaterOrEqual(t, *res.Checks[0].EValue, 100.0, "alpha 0.01 over one test")
	require.Equal(t, "canary rate <= 1.1 x stable (e-value < 100) or <= 0.1%", res.Checks[0].Threshold)
	require.NotNil(t, res.Checks[0].EValueThreshold, "the chart's 1/alpha")
	require.InDelta(t, 100, *res.Checks[0].EValueThreshold, 1e-9)
	require.True(t, res.Evidence.RolledBack)
	require.Equal(t, 1, res.Evidence.Checks["error-rate"].Failures)
}

func TestSequentialNeedsNonInferiorityToPass(t *testing.T) {
	st := newStream(tmpl(seqRatio("error-rate", 0.5)))
	// Equal rates: never rejected; passes once the step's counts show the canary below 1.5 x
	// stable, with its samples and its minimum duration.
	var res Result
	for i := 0; i < 60 && res.Decision != rollout.Proceed; i++ {
		res = st.next(counts{5, 1000}, counts{45, 9000}, 10*time.Second)
		require.NotEqual(t, rollout.Rollback, res.Decision, "interval %d", i)
	}
	require.Equal(t, rollout.Proceed, res.Decision, res.Reason)
	require.Equal(t, rollout.Pass, res.Checks[0].Outcome)
	require.Contains(t, res.Reason, "error-rate shown below 1.5 x stable", "a proceed states the margin it proved")

	// Too few errors to show the canary within the margin: inconclusive, and the message
	// says how far the evidence is.
	st = newStream(tmpl(seqRatio("error-rate", 0.1)))
	res = st.next(counts{6, 1200}, counts{45, 9000}, 2*time.Minute)
	require.Equal(t, rollout.Pause, res.Decision)
	require.Equal(t, rollout.Inconclusive, res.Checks[0].Outcome)
	require.Contains(t, res.Checks[0].Message, "not yet shown below 1.1 x stable (e-value ")
	require.Contains(t, res.Checks[0].Message, "nor below 0.1%")
}

func TestSequentialAgainstBaselineOnly(t *testing.T) {
	c := seqRatio("error-rate", 0.1, rollout.AgainstBaseline)
	base := counted(60, 60000) // 0.1% before the canary
	in := Input{Template: tmpl(c), Weight: 100, StepStarted: t0, Now: t0.Add(time.Minute), Measurements: []rollout.Measurement{{
		Check: "error-rate", Canary: counted(40, 2000), Stable: rollout.Reading{Status: rollout.StatusNoData, Message: "no requests"},
		Baseline: &base,
	}}}
	res := Decide(in)
	require.Equal(t, rollout.Rollback, res.Decision, "2%% against a 0.1%% baseline, with no stable traffic at all")
	require.Contains(t, res.Reason, "vs baseline 0.1%")
	// The baseline test spends its alpha on both sides of the baseline's bound: 2/alpha.
	require.NotNil(t, res.Checks[0].EValueThreshold)
	require.InDelta(t, 200, *res.Checks[0].EValueThreshold, 1e-9)
	require.GreaterOrEqual(t, *res.Checks[0].EValue, *res.Checks[0].EValueThreshold)

	// A thin baseline cannot be tested against: nothing to compare with, so no pass.
	thinBase := counted(0, 10)
	in.Measurements[0].Baseline = &thinBase
	in.Measurements[0].Canary = counted(0, 5000)
	res = Decide(in)
	require.Equal(t, rollout.Pause, res.Decision)
	require.Equal(t, rollout.Inconclusive, res.Checks[0].Outcome)
}

// TestStepCountsRestartEvidenceCarriesOver: a new step's guards judge only its own counts,
// while the sequential test keeps what it has gathered.
func TestStepCountsRestartEvidenceCarriesOver(t *testing.T) {
	c := seqRatio("error-rate", 0.1)
	c.Guards = []rollout.Guard{vsStable(rollout.MeasureDelta, 0.01)}
	st := newStream(tmpl(c))
	st.next(counts{20, 2000}, counts{90, 18000}, 20*time.Second)
	before := st.in.Evidence.Checks["error-rate"].StepLogLR
	require.Len(t, before, 1)
	require.Empty(t, st.in.Evidence.Checks["error-rate"].LogLR, "nothing settled during the first step")

	st.in.Step, st.in.Weight, st.in.StepStarted = 1, 25, st.in.Now
	st.c, st.s = counts{}, counts{} // a step's counts start at its beginning
	res := st.next(counts{2, 250}, counts{4, 750}, time.Second)
	require.Equal(t, int64(250), res.Checks[0].Samples.Canary, "the step's own requests")
	require.Equal(t, int64(750), res.Checks[0].Samples.Stable)
	require.Equal(t, rollout.Inconclusive, res.Checks[0].Outcome)
	ev := res.Evidence.Checks["error-rate"]
	require.Equal(t, before[0], ev.LogLR[0], "the first step's evidence carries over whole")
	require.NotEqual(t, before[0], ev.StepLogLR[0], "the new step gathers its own")
	require.Equal(t, 2, ev.Steps)
	require.Zero(t, ev.Inconclusive, "not counted while the step is younger than minStepDuration")
	res = st.next(counts{1, 10}, counts{2, 30}, 2*time.Minute)
	require.Equal(t, rollout.Inconclusive, res.Checks[0].Outcome)
	require.Equal(t, 1, res.Evidence.Checks["error-rate"].Inconclusive, "inconclusive evaluations count per step, past minStepDuration")
}

// withCounts gives a histogram reading its buckets as exact counts, as compare measures them.
func withCounts(r rollout.Reading) rollout.Reading {
	bs := rollout.SortBuckets(r.Buckets)
	c := &rollout.Counts{}
	all := bs[len(bs)-1].Count
	c.Total = rollout.Exact(all)
	for _, b := range bs {
		c.Buckets = append(c.Buckets, rollout.BucketCounts{UpperBound: b.UpperBound, Count: rollout.Exact(b.Count), Slower: rollout.Exact(all - b.Count)})
	}
	r.Counts, r.Recent = c, c
	return r
}

func TestLimits(t *testing.T) {
	one := 1
	errR := rollout.Reading{Status: rollout.StatusError, Message: "metrics source unavailable: down"}
	ok := okR(0.001, 5000)
	for _, tc := range []struct {
		name       string
		check      rollout.Check
		canary     []rollout.Reading // one evaluation each
		wantLast   rollout.Decision
		wantReason string
	}{
		{
			name:       "errors within consecutiveErrorLimit pause",
			check:      withLimit(ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01)), &one, rollout.EscalateRollback),
			canary:     []rollout.Reading{errR},
			wantLast:   rollout.Pause,
			wantReason: "c: canary: metrics source unavailable: down",
		},
		{
			name:       "errors past the limit roll back when the escalation says so",
			check:      withLimit(ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01)), &one, rollout.EscalateRollback),
			canary:     []rollout.Reading{errR, errR},
			wantLast:   rollout.Rollback,
			wantReason: "c: 2 errors in a row, limit 1: canary: metrics source unavailable: down",
		},
		{
			name:       "errors past the limit keep pausing by default, saying so",
			check:      withLimit(ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01)), &one, ""),
			canary:     []rollout.Reading{errR, errR, errR},
			wantLast:   rollout.Pause,
			wantReason: "c: 3 errors in a row, over the limit of 1: paused until a person decides (onErrorLimit: pause): canary: metrics source unavailable: down",
		},
		{
			name:       "a measured evaluation resets the errors in a row",
			check:      withLimit(ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01)), &one, rollout.EscalateRollback),
			canary:     []rollout.Reading{errR, ok, errR},
			wantLast:   rollout.Pause,
			wantReason: "c: canary: metrics source unavailable: down",
		},
		{
			name:       "the default limit is 4",
			check:      withLimit(ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01)), nil, rollout.EscalateRollback),
			canary:     []rollout.Reading{errR, errR, errR, errR, errR},
			wantLast:   rollout.Rollback,
			wantReason: "c: 5 errors in a row, limit 4: ",
		},
		{
			name: "inconclusive past inconclusiveLimit rolls back when the escalation says so",
			check: func() rollout.Check {
				c := ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01))
				c.InconclusiveLimit, c.OnInconclusiveLimit = 2, rollout.EscalateRollback
				return c
			}(),
			canary:     []rollout.Reading{okR(0.001, 10), okR(0.001, 20), okR(0.001, 30)},
			wantLast:   rollout.Rollback,
			wantReason: "c: inconclusive 3 times in step, limit 2: 30 of the 100 canary samples it needs",
		},
		{
			name: "inconclusive within the limit pauses",
			check: func() rollout.Check {
				c := ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01))
				c.InconclusiveLimit, c.OnInconclusiveLimit = 2, rollout.EscalateRollback
				return c
			}(),
			canary:     []rollout.Reading{okR(0.001, 10), okR(0.001, 20)},
			wantLast:   rollout.Pause,
			wantReason: "c: 20 of the 100 canary samples it needs",
		},
		{
			name: "inconclusiveLimit 0 sets no limit",
			check: func() rollout.Check {
				c := ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01))
				c.OnInconclusiveLimit = rollout.EscalateRollback
				return c
			}(),
			canary:     []rollout.Reading{okR(0.001, 10), okR(0.001, 20), okR(0.001, 30), okR(0.001, 40)},
			wantLast:   rollout.Pause,
			wantReason: "c: 40 of the 100 canary samples it needs",
		},
		{
			name: "noData fail counts against failureLimit",
			check: func() rollout.Check {
				c := ratioCheck("c", 1, vsStable(rollout.MeasureDelta, 0.01))
				c.NoData = rollout.NoDataFail
				return c
			}(),
			canary:     []rollout.Reading{noDataR("no requests in the window"), noDataR("no requests in the window")},
			wantLast:   rollout.Rollback,
			wantReason: "c: no canary data: no requests in the window (counted as a failure: noData is fail) (failed 2 times, limit 1)",
		},
		{
			name:       "noData pause (the default) never fails",
			check:      ratioCheck("c", 0, vsStable(rollout.MeasureDelta, 0.01)),
			canary:     []rollout.Reading{noDataR("none"), noDataR("none"), noDataR("none")},
			wantLast:   rollout.Pause,
			wantReason: "c: no canary data: none",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := in(tmpl(tc.check))
			var res Result
			for _, canary := range tc.canary {
				input.Measurements = []rollout.Measurement{meas("c", canary, okR(0.001, 50000), nil)}
				res = Decide(input)
				input.Evidence = res.Evidence
			}
			require.Equal(t, tc.wantLast, res.Decision, res.Reason)
			require.Contains(t, res.Reason, tc.wantReason)
		})
	}
}

func withLimit(c rollout.Check, limit *int, on rollout.Escalation) rollout.Check {
	c.ConsecutiveErrorLimit, c.OnErrorLimit = limit, on
	return c
}

// TestEvidenceRoundTripsThroughJSON: evidence is plain data; decisions from the stored copy
// are the decisions from the original.
func TestEvidenceRoundTripsThroughJSON(t *testing.T) {
	c := seqRatio("error-rate", 0.1)
	h := rollout.Check{Name: "p95", Kind: rollout.KindHistogram, Buckets: "b", Quantile: 0.95, MinSamples: 100,
		Sequential: &rollout.Sequential{}, Guards: []rollout.Guard{vsStable(rollout.MeasureRatio, 1.1)}}
	template := tmpl(c, h)
	inf := math.Inf(1)
	hist := func(n float64) rollout.Reading {
		return withCounts(rollout.Reading{Status: rollout.StatusOK, Value: 0.09, Samples: int64(n), Buckets: []rollout.Bucket{
			{UpperBound: 0.05, Count: n * 0.5}, {UpperBound: 0.1, Count: n * 0.96}, {UpperBound: 0.25, Count: n * 0.995}, {UpperBound: inf, Count: n}}})
	}
	input := Input{Template: template, Weight: 10, StepStarted: t0, Now: t0.Add(10 * time.Second), Measurements: []rollout.Measurement{
		{Check: "error-rate", Canary: counted(6, 1000), Stable: counted(45, 9000), Through: t0.Add(10 * time.Second)},
		{Check: "p95", Canary: hist(1000), Stable: hist(9000), Through: t0.Add(10 * time.Second)},
	}}
	res := Decide(input)
	require.NotEmpty(t, res.Evidence.Checks["p95"].Tested)
	data, err := json.Marshal(res.Evidence)
	require.NoError(t, err)
	var stored Evidence
	require.NoError(t, json.Unmarshal(data, &stored))

	next := input
	next.Now = next.Now.Add(10 * time.Second)
	next.Measurements = []rollout.Measurement{
		{Check: "error-rate", Canary: counted(30, 2000), Stable: counted(90, 18000), Through: next.Now},
		{Check: "p95", Canary: hist(2000), Stable: hist(18000), Through: next.Now},
	}
	next.Evidence = res.Evidence
	fromOriginal := Decide(next)
	next.Evidence = stored
	fromStored := Decide(next)
	require.Equal(t, fromOriginal.Decision, fromStored.Decision)
	require.Equal(t, fromOriginal.Reason, fromStored.Reason)
	require.Equal(t, fromOriginal.Checks, fromStored.Checks)
}

// --- properties ---

// TestPropertyEValuesNeverNegative: whatever the counts (dips, zeros, huge), every e-value
// is a finite number >= 0... or +Inf-free: the verdict must encode.
func TestPropertyEValuesNeverNegative(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for run := 0; run < 2000; run++ {
		margin := r.Float64()
		st := newStream(tmpl(seqRatio("e", margin, []rollout.Reference{rollout.AgainstStable}...)))
		for i := 0; i < 20; i++ {
			c := counts{float64(r.IntN(50)), float64(r.IntN(2000))}
			s := counts{float64(r.IntN(50)), float64(r.IntN(2000))}
			if r.IntN(10) == 0 {
				c.events = -c.events // a dip: increase() extrapolates
			}
			res := st.next(c, s, 10*time.Second)
			if ev := res.Checks[0].EValue; ev != nil {
				require.GreaterOrEqual(t, *ev, 0.0)
				require.False(t, math.IsNaN(*ev))
			}
			for _, l := range res.Evidence.Checks["e"].LogLR {
				for _, v := range l {
					require.False(t, math.IsNaN(v), "run %d interval %d", run, i)
				}
			}
		}
	}
}

// TestPropertyEvidenceGrowsUnderPersistentRegression: fed exactly the expected counts of a
// canary k times worse than stable (no noise), the evidence for every alternative up to the
// true ratio grows at every interval, and the e-value, once it rises, never falls.
func TestPropertyEvidenceGrowsUnderPersistentRegression(t *testing.T) {
	for _, k := range []float64{1.5, 2, 3, 10, 50} {
		for _, split := range []float64{0.05, 0.1, 0.5, 0.9} {
			const rps, rate, margin = 1000.0, 0.005, 0.1
			c := counts{rps * split * rate * k, rps * split}
			s := counts{rps * (1 - split) * rate, rps * (1 - split)}
			l := make([]float64, gridSize)
			prior := logPrior(1)
			prevE, rising := 0.0, false
			for i := 0; i < 200; i++ {
				before := append([]float64(nil), l...)
				conditionalUpdate(l, 1+margin, c, s)
				for j := range l {
					if (1+margin)*math.Exp(gridLogRatio(j)) <= k {
						require.Greater(t, l[j], before[j], "k=%g split=%g alternative %d interval %d", k, split, j, i)
					}
				}
				e := logMixture(l, prior)
				if i > 0 && e > prevE {
					rising = true
				}
				if rising {
					require.GreaterOrEqual(t, e, prevE, "k=%g split=%g interval %d", k, split, i)
				}
				prevE = e
			}
			require.True(t, rising, "k=%g split=%g", k, split)
		}
	}
}

// TestPropertyIdenticalCanaryRejectedAtMostAlpha: a canary identical to stable, at the edge
// of the null (margin 0), checked after every interval for 100 intervals, is rejected in at
// most alpha of the runs (plus Monte Carlo slack): the test is valid under continuous
// monitoring. A fixed-sample test looked at as often would reject far more.
func TestPropertyIdenticalCanaryRejectedAtMostAlpha(t *testing.T) {
	const runs, intervals, alpha = 2000, 100, 0.05
	check := seqRatio("e", 0)
	template := tmpl(check)
	template.Alpha = alpha
	r := rand.New(rand.NewPCG(31, 32))
	rejected := 0
	for run := 0; run < runs; run++ {
		st := newStream(template)
		for i := 0; i < intervals; i++ {
			nc, ns := poissonDraw(r, 500), poissonDraw(r, 4500)
			res := st.next(counts{poissonDraw(r, nc*0.01), nc}, counts{poissonDraw(r, ns*0.01), ns}, 10*time.Second)
			if res.Decision == rollout.Rollback {
				rejected++
				break
			}
		}
	}
	share := float64(rejected) / runs
	t.Logf("identical canaries rolled back: %d of %d (%.2f%%, alpha %g)", rejected, runs, 100*share, alpha)
	require.LessOrEqual(t, share, alpha+3*math.Sqrt(alpha*(1-alpha)/runs))
}

// poissonDraw is a test-side Poisson sampler (normal approximation above 50), independent of
// the simulation package's.
func poissonDraw(r *rand.Rand, mean float64) float64 {
	if mean > 50 {
		return math.Max(0, math.Round(mean+math.Sqrt(mean)*r.NormFloat64()))
	}
	l, k, p := math.Exp(-mean), 0.0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// TestMannWhitneyInDecide: the judge's points accumulate per evaluation; too few hold a pass
// back; a critical effect rolls back at once; a non-critical one counts as a failure.
func TestMannWhitneyInDecide(t *testing.T) {
	for _, tc := range []struct {
		name     string
		critical float64
		want     rollout.Decision
		reason   string
	}{
		{"critical effect rolls back", 1.5, rollout.Rollback, "latency: canary 2.02 vs stable 1.02 (critical: Mann-Whitney effect size 1.98)"},
		{"non-critical effect fails within the limit", 0, rollout.Pause, "latency: Mann-Whitney: canary higher than stable (effect size 1.98, shift 1 in [0.96, 1.04], 5 and 5 points) (failed once, limit 3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valueCheck("latency", 3, valueGuard(nil, num(1000)))
			c.MannWhitney = &rollout.MannWhitney{Direction: "increase", CriticalIncrease: tc.critical, MinPoints: 5}
			input := in(tmpl(c))
			var res Result
			for i := 0; i < 5; i++ {
				jitter := float64(i) / 100
				input.Measurements = []rollout.Measurement{meas("latency", okR(2+jitter, 0), okR(1+jitter, 0), nil)}
				res = Decide(input)
				input.Evidence = res.Evidence
				if i < 4 {
					require.Equal(t, rollout.Inconclusive, res.Checks[0].Outcome, "evaluation %d", i)
					require.Contains(t, res.Checks[0].Message, "points of the 5 each side needs")
				}
			}
			require.Equal(t, tc.want, res.Decision, res.Reason)
			require.Contains(t, res.Reason, tc.reason)
			require.Equal(t, rollout.Fail, res.Checks[0].Outcome)
			require.Len(t, res.Evidence.Checks["latency"].Points.Canary, 5)
		})
	}
}

// TestSharedBurstNeedsConfirmation: the sides are scraped at different moments, so an
// interval can hold the canary's share of an outage both sides share and not yet the
// stable's. Evidence from an interval whose pooled errors burst must hold at the next
// evaluation: a misaligned shared burst is not a rollback, a canary that stays worse is.
func TestMissingBucketIsNoEvidence(t *testing.T) {
	h := rollout.Check{Name: "p95", Kind: rollout.KindHistogram, Buckets: "b", Quantile: 0.95, MinSamples: 100,
		Sequential: &rollout.Sequential{}, Guards: []rollout.Guard{vsStable(rollout.MeasureRatio, 10)}}
	inf := math.Inf(1)
	hist := func(n float64, with01 bool) rollout.Reading {
		bs := []rollout.Bucket{{UpperBound: 0.05, Count: n * 0.6}, {UpperBound: 0.25, Count: n * 0.99}, {UpperBound: inf, Count: n}}
		if with01 {
			bs = append(bs, rollout.Bucket{UpperBound: 0.1, Count: n * 0.95})
		}
		return withCounts(rollout.Reading{Status: rollout.StatusOK, Value: 0.09, Samples: int64(n), Buckets: bs})
	}
	in := Input{Template: tmpl(h), Weight: 10, StepStarted: t0, Now: t0.Add(10 * time.Second), Measurements: []rollout.Measurement{
		{Check: "p95", Canary: hist(1000, true), Stable: hist(9000, true)}}}
	res := Decide(in)
	require.Contains(t, res.Evidence.Checks["p95"].Tested, 0.1)
	in.Evidence, in.Now = res.Evidence, in.Now.Add(10*time.Second)
	in.Measurements = []rollout.Measurement{{Check: "p95", Canary: hist(2000, false), Stable: hist(18000, true)}}
	res = Decide(in)
	require.NotEqual(t, rollout.Rollback, res.Decision, res.Reason)
}

// TestOneIndifferenceZone: a canary worse than the margin (1.5x at margin 0.1) never passes
// before the same check rolls it back; one well within it (0.8x) passes and is never
// rolled back. The pass and the rollback regions of one check do not overlap.
func TestOneIndifferenceZone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		canary float64 // errors per 1000 canary requests; stable: 5 per 1000
		want   rollout.Outcome
		never  rollout.Outcome
	}{
		{"worse than the margin", 7.5, rollout.Fail, rollout.Pass},
		{"within it", 4, rollout.Pass, rollout.Fail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStream(tmpl(seqRatio("error-rate", 0.1)))
			seen := false
			for i := 0; i < 400 && !seen; i++ {
				res := st.next(counts{tc.canary, 1000}, counts{45, 9000}, 10*time.Second)
				o := res.Checks[0].Outcome
				require.NotEqual(t, tc.never, o, "interval %d: %s", i, res.Checks[0].Message)
				seen = o == tc.want
			}
			require.True(t, seen, "the check reached %s", tc.want)
		})
	}
}

// TestCurveEndsAreBisectionsOnTheirSafeSide: the ends Newton's method finds are those of a
// bisection to float precision (the search they replaced), to 12 digits, over ends of every
// scale (and 0); each is on its safe side (the curve at or above target there: an upper end
// never below the true one, a lower never above).
func TestCurveEndsAreBisectionsOnTheirSafeSide(t *testing.T) {
	bisect := func(k curve, a, b, target float64) float64 {
		up := k.at(b) >= target
		for range 200 {
			m := (a + b) / 2
			if m == a || m == b {
				break
			}
			if (k.at(m) >= target) == up {
				b = m
			} else {
				a = m
			}
		}
		return (a + b) / 2
	}
	for _, x := range []float64{0, 1, 3, 17, 250, 1e4, 3e6} {
		for _, n := range []float64{1, 10, 1e3, 1e5, 1e8} {
			for _, k := range []curve{{least: 0.5, x: x, n: n}, {least: 5, x: x, n: n}, rateMixture(x, n), {x: x, n: n}} {
				mle := x / n
				target := math.Log(1 / 0.05)
				if k.at(mle) >= target { // no rate inside (least 5): the widest ends
					require.Equal(t, mle, k.above(target), "x=%g n=%g", x, n)
					require.Zero(t, k.below(target), "x=%g n=%g", x, n)
					continue
				}
				hi := math.Max(2*mle, 1/n)
				for k.at(hi) < target {
					hi *= 2
				}
				up := k.above(target)
				require.InEpsilon(t, bisect(k, mle, hi, target), up, 1e-12, "above, x=%g n=%g", x, n)
				require.GreaterOrEqual(t, k.at(up), target, "above, x=%g n=%g: on its safe side", x, n)
				lo := k.below(target)
				if ref := bisect(k, 0, mle, target); x == 0 || k.at(0) < target {
					require.Zero(t, lo, "below, x=%g n=%g", x, n)
				} else {
					require.InEpsilon(t, ref, lo, 1e-12, "below, x=%g n=%g", x, n)
					require.GreaterOrEqual(t, k.at(lo), target, "below, x=%g n=%g: on its safe side", x, n)
				}
			}
		}
	}
}
