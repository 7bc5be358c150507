// Package ui renders analyzerd's rollout pages, server-side, as HTML with inline SVG: no
// script, no external asset, readable in a terminal browser (every chart has a table of its
// numbers beside it), with landmarks, headings, table captions and SVG titles for screen
// readers.
//
// Two pages: RenderList, the rollouts and their latest verdicts; RenderRollout, one
// rollout's history: for each analysis (a revision), the timeline of its verdicts and, for
// each check, a chart over time of the canary's, the stable side's and the baseline's values
// with the guards' limits, and a chart of the sequential test's e-value against 1/alpha on a
// log scale, both marking where each step began and where the decisions fell. JSON gives
// the same content as the rollout page, for GET /v1/rollouts/{namespace}/{name}/history.
//
// The pages read only what verdicts carry, so any list of verdicts renders: the daemon reads
// them from the verdict stream (internal/history), and a backtest can render the verdicts it
// computed in memory:
//
//	h := ui.NewHistory(rollout.Ref{Namespace: "prod", Name: "checkout"}, verdicts)
//	h.Status = "Backtest of http-golden-signals from 14:00 to 15:00 UTC"
//	err := ui.RenderRollout(f, h, ui.Options{TraceURL: "https://jaeger.example/trace/{traceId}"})
//
// Everything a verdict holds (names, reasons, thresholds, messages) is escaped by
// html/template: a hostile value shows as text.
package ui

import (
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// History is what the rollout page shows: one rollout's verdicts, grouped by analysis.
type History struct {
	Rollout rollout.Ref
	// Analyses are the rollout's analyses, one per revision, in the order they began.
	Analyses []Analysis
	// Live says the rollout is under analysis now (false: it ended, or the page was rendered
	// from verdicts alone).
	Live bool
	// LeftOut counts the older verdicts that were left out of the history (it is bounded).
	LeftOut int
	// Status is the sentence under the page's heading that says where the verdicts come from
	// ("Backtest of http-golden-signals from 14:00 to 15:00 UTC"); empty: whether the rollout
	// is under analysis, from Live.
	Status string
}

// Analysis is the verdicts of one revision, oldest first.
type Analysis struct {
	Revision string
	Verdicts []rollout.Verdict
}

// NewHistory groups verdicts (of one rollout, in any order) by revision, each revision's in
// the order they were published (by sequence), and the revisions by their first verdict.
func NewHistory(ref rollout.Ref, verdicts []rollout.Verdict) History {
	h := History{Rollout: ref}
	index := map[string]int{}
	for _, v := range verdicts {
		i, ok := index[v.Revision]
		if !ok {
			i = len(h.Analyses)
			index[v.Revision] = i
			h.Analyses = append(h.Analyses, Analysis{Revision: v.Revision})
		}
		h.Analyses[i].Verdicts = append(h.Analyses[i].Verdicts, v)
	}
	for _, a := range h.Analyses {
		sort.SliceStable(a.Verdicts, func(i, j int) bool { return a.Verdicts[i].Sequence < a.Verdicts[j].Sequence })
	}
	sort.SliceStable(h.Analyses, func(i, j int) bool {
		return h.Analyses[i].Verdicts[0].DecidedAt.Before(h.Analyses[j].Verdicts[0].DecidedAt)
	})
	return h
}

// Latest is the newest verdict of the history, ok false when it has none.
func (h History) Latest() (rollout.Verdict, bool) {
	var latest rollout.Verdict
	found := false
	for _, a := range h.Analyses {
		if len(a.Verdicts) == 0 {
			continue
		}
		v := a.Verdicts[len(a.Verdicts)-1]
		if !found || v.DecidedAt.After(latest.DecidedAt) {
			latest, found = v, true
		}
	}
	return latest, found
}

// Options configure the rendering.
type Options struct {
	// TraceURL is a trace UI's address of a trace, {traceId} standing for the verdict's trace
	// id (https://jaeger.example/trace/{traceId}); empty: verdicts link to no trace.
	TraceURL string
}

// traceLink is the address of v's trace, "" without a TraceURL or a trace id.
func (o Options) traceLink(traceID string) string {
	if o.TraceURL == "" || traceID == "" {
		return ""
	}
	return strings.ReplaceAll(o.TraceURL, "{traceId}", url.PathEscape(traceID))
}

// Mark is a moment the page marks: the first verdict of a step (Verdict and Reason empty),
// or a decision.
type Mark struct {
	Step     int              `json:"step"`
	Weight   int              `json:"weight"`
	Sequence uint64           `json:"sequence"`
	At       time.Time        `json:"at"`
	Verdict  rollout.Decision `json:"verdict,omitempty"`
	Reason   string           `json:"reason,omitempty"`
	index    int              // of the verdict in its analysis
}

// steps are the first verdicts of each step (a new step, or a new weight) of a.
func (a Analysis) steps() []Mark {
	var out []Mark
	for i, v := range a.Verdicts {
		if i == 0 || v.Step != a.Verdicts[i-1].Step || v.Weight != a.Verdicts[i-1].Weight {
			out = append(out, Mark{Step: v.Step, Weight: v.Weight, Sequence: v.Sequence, At: v.DecidedAt, index: i})
		}
	}
	return out
}

// decisions are where the decisions fell: each step's first proceed, and the first
// rollback (final).
func (a Analysis) decisions() []Mark {
	var out []Mark
	proceeded := map[[2]int]bool{}
	for i, v := range a.Verdicts {
		key := [2]int{v.Step, v.Weight}
		switch {
		case v.Verdict == rollout.Proceed && !proceeded[key]:
			proceeded[key] = true
		case v.Verdict == rollout.Rollback:
		default:
			continue
		}
		out = append(out, Mark{Step: v.Step, Weight: v.Weight, Sequence: v.Sequence, At: v.DecidedAt, Verdict: v.Verdict,
			Reason: v.Reason, index: i})
		if v.Verdict == rollout.Rollback {
			break
		}
	}
	return out
}

// checks are the names of the checks a's verdicts carry, in the order they first appear.
func (a Analysis) checks() []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range a.Verdicts {
		for _, c := range v.Checks {
			if !seen[c.Metric] {
				seen[c.Metric] = true
				out = append(out, c.Metric)
			}
		}
	}
	return out
}
