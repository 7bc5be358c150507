package decide

import (
	"fmt"
	"strings"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// judgeMannWhitney folds the Mann-Whitney judgement of the step's points into a check's
// outcome: high or low in a direction that is worse fails the check (at once when critical);
// too few points hold a pass back as inconclusive; a pass changes nothing.
func judgeMannWhitney(j judgement, cfg rollout.MannWhitney, p Points) judgement {
	res := JudgeMannWhitney(cfg, p.Canary, p.Stable)
	j.result.Threshold = strings.TrimPrefix(j.result.Threshold+"; "+mannWhitneyThreshold(cfg), "; ")
	switch res.Class {
	case MWHigh, MWLow:
		way := "higher"
		if res.Class == MWLow {
			way = "lower"
		}
		msg := fmt.Sprintf("Mann-Whitney: canary %s than stable (effect size %s, shift %s in [%s, %s], %d and %d points)",
			way, trimFloat(res.EffectSize, 3), trimFloat(res.Estimate, 6), trimFloat(res.Lower, 6), trimFloat(res.Upper, 6),
			res.CanaryPoints, res.StablePoints)
		if j.result.Outcome != rollout.Fail {
			j.failedGuard = nil
		}
		j.result.Outcome = rollout.Fail
		j.result.Message = strings.TrimPrefix(j.result.Message+"; "+msg, "; ")
		if res.Critical && !j.critical {
			j.critical, j.criticalWhy = true, "critical: Mann-Whitney effect size "+trimFloat(res.EffectSize, 3)
			j.failedGuard, j.failedAgainst = nil, rollout.AgainstStable
			j.canary, j.reference = mean(p.Canary), mean(p.Stable)
		}
	case MWNoData:
		if j.result.Outcome == rollout.Pass {
			need := cfg.MinPoints
			if need == 0 {
				need = mwDefaultMinPoints
			}
			j.result.Outcome = rollout.Inconclusive
			j.result.Message = fmt.Sprintf("Mann-Whitney: %d canary and %d stable points of the %d each side needs",
				res.CanaryPoints, res.StablePoints, need)
		}
	}
	return j
}

func mannWhitneyThreshold(cfg rollout.MannWhitney) string {
	dir := cfg.Direction
	if dir == "" {
		dir = "either"
	}
	return "Mann-Whitney (" + dir + ")"
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
