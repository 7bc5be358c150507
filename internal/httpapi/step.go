package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// asked is what a controller asks a verdict to be about: a revision, step and weight, each
// optional (nil or "": any).
type asked struct {
	revision string
	step     *int
	weight   *int
}

// stepVerdict is a verdict answered for the step a controller asked about. When the latest
// verdict is about an earlier step (or another revision), it is not that step's: the answer is
// then pause, Stale, with the asked step and weight, whatever the latest verdict said (a
// rollback of the same revision excepted: it is final).
type stepVerdict struct {
	rollout.Verdict
	Stale bool
}

// about answers v for a: v itself when it is about what a asks (or later), else a pause that
// says the asked step has no evidence yet. A rollback of the asked revision is final and
// always answered as it is.
func about(v rollout.Verdict, a asked) stepVerdict {
	sameRevision := a.revision == "" || a.revision == v.Revision
	if v.Verdict == rollout.Rollback && sameRevision {
		return stepVerdict{Verdict: v}
	}
	var why string
	switch {
	case !sameRevision:
		why = fmt.Sprintf("revision %q has no verdict yet (the latest is about revision %q)", a.revision, v.Revision)
	case a.step != nil && v.Step < *a.step, a.weight != nil && v.Weight < *a.weight:
		why = fmt.Sprintf("%s has no evidence yet: the latest verdict (%s) is about step %d (weight %d%%)",
			describe(a), v.Verdict, v.Step, v.Weight)
	default:
		return stepVerdict{Verdict: v}
	}
	v.Verdict, v.Reason = rollout.Pause, why
	return stepVerdict{Verdict: v, Stale: true}
}

// notYet is the answer for an analysis that has no verdict yet.
func notYet(ref rollout.Ref, a asked, s *Server) stepVerdict {
	v := rollout.Verdict{Rollout: ref, Revision: a.revision, Verdict: rollout.Pause, DecidedAt: s.opts.Now()}
	if a.step != nil {
		v.Step = *a.step
	}
	if a.weight != nil {
		v.Weight = *a.weight
	}
	v.Reason = fmt.Sprintf("%s has no evidence yet: the analysis has no verdict yet", describe(a))
	return stepVerdict{Verdict: v, Stale: true}
}

func describe(a asked) string {
	switch {
	case a.step != nil && a.weight != nil:
		return fmt.Sprintf("step %d (weight %d%%)", *a.step, *a.weight)
	case a.step != nil:
		return fmt.Sprintf("step %d", *a.step)
	case a.weight != nil:
		return fmt.Sprintf("weight %d%%", *a.weight)
	case a.revision != "":
		return fmt.Sprintf("revision %q", a.revision)
	}
	return "the rollout"
}

// marshal is the verdict JSON of CONTRACT.md section 4, with, when stale, the optional fields
// "stale": true, "askedStep" and "askedWeight".
func (sv stepVerdict) marshal(a asked) ([]byte, error) {
	var body []byte
	var err error
	if sv.Verdict.Sequence == 0 {
		// No verdict yet (notYet): the same shape, sequence 0, which no published verdict has.
		v := sv.Verdict
		body, err = json.Marshal(map[string]any{
			"rollout": v.Rollout, "revision": v.Revision, "step": v.Step, "weight": v.Weight,
			"verdict": v.Verdict, "reason": v.Reason, "sequence": 0, "checks": []rollout.CheckResult{},
			"decidedAt": v.DecidedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), "cause": "", "traceId": "",
		})
	} else {
		body, err = publish.MarshalVerdict(sv.Verdict)
	}
	if err != nil {
		return nil, err
	}
	if !sv.Stale {
		return body, nil
	}
	extra := map[string]any{"stale": true}
	if a.step != nil {
		extra["askedStep"] = *a.step
	}
	if a.weight != nil {
		extra["askedWeight"] = *a.weight
	}
	more, err := json.Marshal(extra)
	if err != nil {
		return nil, err
	}
	body = bytes.TrimRight(bytes.TrimSpace(body), "}")
	return append(append(body, ','), more[1:]...), nil
}

// askedOf reads the optional query parameters step, weight and revision.
func askedOf(r *http.Request) (asked, error) {
	q := r.URL.Query()
	a := asked{revision: q.Get("revision")}
	for _, p := range []struct {
		name string
		max  int
		dst  **int
	}{{"step", 1<<31 - 1, &a.step}, {"weight", 100, &a.weight}} {
		raw := q.Get(p.name)
		if raw == "" {
			continue
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 || n > p.max {
			return a, fmt.Errorf("query parameter %s: must be an integer within 0-%d, got %q", p.name, p.max, raw)
		}
		*p.dst = &n
	}
	return a, nil
}
