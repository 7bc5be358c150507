package ui

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// historyJSON is the rollout page's content, as GET /v1/rollouts/{namespace}/{name}/history
// answers it.
type historyJSON struct {
	Rollout  rollout.Ref    `json:"rollout"`
	Live     bool           `json:"live"`
	LeftOut  int            `json:"leftOut"`
	Analyses []analysisJSON `json:"analyses"`
}

type analysisJSON struct {
	Revision  string      `json:"revision"`
	Steps     []Mark      `json:"steps"`
	Decisions []Mark      `json:"decisions"`
	Timeline  []entryJSON `json:"timeline"`
}

type entryJSON struct {
	Verdict   json.RawMessage `json:"verdict"`
	TraceURL  string          `json:"traceUrl,omitempty"`
	StepStart bool            `json:"stepStart"`
}

// JSON is the rollout page's content: the rollout, whether it is live, how many older
// verdicts were left out, and its analyses oldest first, each with the first verdict of
// each step, the decisions (each step's first proceed, the rollback), and the timeline:
// every verdict exactly as controllers receive it (CONTRACT.md section 4), with the address
// of its trace when Options.TraceURL is set.
func JSON(h History, o Options) ([]byte, error) {
	out := historyJSON{Rollout: h.Rollout, Live: h.Live, LeftOut: h.LeftOut, Analyses: []analysisJSON{}}
	for _, a := range h.Analyses {
		if len(a.Verdicts) == 0 {
			continue
		}
		aj := analysisJSON{Revision: a.Revision, Steps: a.steps(), Decisions: a.decisions()}
		if aj.Decisions == nil {
			aj.Decisions = []Mark{}
		}
		starts := map[int]bool{}
		for _, m := range aj.Steps {
			starts[m.index] = true
		}
		for i, v := range a.Verdicts {
			body, err := publish.MarshalVerdict(v)
			if err != nil {
				return nil, fmt.Errorf("verdict %d of %s: %w", v.Sequence, h.Rollout, err)
			}
			aj.Timeline = append(aj.Timeline, entryJSON{Verdict: body, TraceURL: o.traceLink(v.TraceID), StepStart: starts[i]})
		}
		out.Analyses = append(out.Analyses, aj)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encoding the history of %s: %w", h.Rollout, err)
	}
	return b.Bytes(), nil
}
