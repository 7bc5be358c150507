package decide

import (
	"fmt"
	"math"
	"strings"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// judge decides one check's outcome at one evaluation and updates its evidence. Counter
// checks (ratio, histogram) are judged by their counts (see counters.go); readings without
// counts (value checks, and a counter check's readings from a source that gives only values)
// by their guards on the values as measured.
func judge(c rollout.Check, m rollout.Measurement, in Input, ce *CheckEvidence, alpha float64) judgement {
	m.Canary, m.Stable = usable(m.Canary), usable(m.Stable)
	if m.Baseline != nil {
		b := usable(*m.Baseline)
		m.Baseline = &b
	}
	if c.Kind != rollout.KindValue && (m.Canary.Counts != nil || m.Canary.Status == rollout.StatusError) {
		return judgeCounters(c, m, in, ce, alpha)
	}
	seqOn := c.Kind != rollout.KindValue && c.Sequential.On()
	j := judgeGuards(c, m, in.Step, in.Weight, seqOn && contains(against(c.Sequential), rollout.AgainstStable))
	if seqOn {
		j.result.EValue = ptr(1)
	}
	if j.result.Outcome == rollout.Pass && seqOn && c.Kind == rollout.KindRatio {
		// The sequential tests need counts: without them, nothing shows the canary within
		// its margin.
		j.result.Outcome, j.result.Message = rollout.Inconclusive, "no canary counts to show it within its margin"
	}
	if c.MannWhitney != nil {
		ce.Points.Canary = appendPoint(ce.Points.Canary, m.Canary.Value, m.Canary.OK())
		ce.Points.Stable = appendPoint(ce.Points.Stable, m.Stable.Value, m.Stable.OK())
		if o := j.result.Outcome; o != rollout.Error && o != rollout.NoData {
			j = judgeMannWhitney(j, *c.MannWhitney, ce.Points)
		}
	}
	if j.result.Outcome == rollout.NoData && c.NoData == rollout.NoDataFail {
		j.result.Outcome = rollout.Fail
		j.result.Message += " (counted as a failure: noData is fail)"
	}
	return j
}

func appendPoint(points []float64, v float64, ok bool) []float64 {
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		return points
	}
	points = append(points, v)
	if len(points) > maxPoints {
		points = append(points[:0:0], points[len(points)-maxPoints:]...)
	}
	return points
}

func against(s *rollout.Sequential) []rollout.Reference {
	if len(s.Against) == 0 {
		return []rollout.Reference{rollout.AgainstStable}
	}
	return s.Against
}

func margin(s *rollout.Sequential) float64 {
	if s.Margin == nil {
		return rollout.DefaultMargin
	}
	return *s.Margin
}

func tolerance(s *rollout.Sequential) float64 {
	if s.Tolerance == nil {
		return rollout.DefaultTolerance
	}
	return *s.Tolerance
}

func priorScale(s *rollout.Sequential) float64 {
	if s.PriorScale <= 0 {
		return rollout.DefaultPriorScale
	}
	return s.PriorScale
}

func rate(c Pair) float64 {
	if c.Total <= 0 {
		return math.NaN()
	}
	return c.Events / c.Total
}

func bucketNote(c rollout.Check, tested []float64, i int) string {
	if c.Kind != rollout.KindHistogram || i >= len(tested) {
		return ""
	}
	return " at " + trimFloat(tested[i], 6) + "s"
}

func bounds(les []float64) string {
	parts := make([]string, len(les))
	for i, le := range les {
		parts[i] = trimFloat(le, 6) + "s"
	}
	return strings.Join(parts, ", ")
}

// formatE writes an e-value for people: 3 significant digits, large ones in exponent form.
func formatE(e float64) string {
	switch {
	case math.IsInf(e, 1) || e > 1e15:
		return ">1e15"
	case e >= 1e6:
		return fmt.Sprintf("%.3g", e)
	case e >= 100:
		return fmt.Sprintf("%.0f", e)
	}
	return fmt.Sprintf("%.3g", e)
}
