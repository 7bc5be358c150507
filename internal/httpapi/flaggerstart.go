package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/analyzerd/analyzerd/internal/ingest"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// The metadata keys of a Flagger webhook that starts and drives an analysis itself.
const (
	// metadataAnalysis names the analysis template; its presence selects the self-starting
	// mode.
	metadataAnalysis = "analysis"
	// metadataToken carries the write token: Flagger's webhooks cannot set headers.
	metadataToken = "token"
	// Prefixes of the template's arguments and of each side's variables:
	// "args.service", "canary.version", "stable.version".
	prefixArgs   = "args."
	prefixCanary = "canary."
	prefixStable = "stable."
	// The Canary's analysis.stepWeight and analysis.maxWeight, or analysis.stepWeights
	// ("10,25,50"), from which analyzerd knows the weight each grant leads to.
	metadataStepWeight  = "stepWeight"
	metadataMaxWeight   = "maxWeight"
	metadataStepWeights = "stepWeights"
)

// flaggerSource is the CloudEvents source of the events Flagger's calls stand for.
const flaggerSource = "analyzerd/flagger"

// weights is the canary weight after each grant: weights[k-1] after the k-th.
type weights []int

// weight is the canary weight at step k (0 before the first grant).
func (ws weights) weight(k int) int {
	if k <= 0 {
		return 0
	}
	return ws[min(k, len(ws))-1]
}

// max is the weight at which Flagger stops increasing traffic and asks to promote.
func (ws weights) max() int { return ws[len(ws)-1] }

// weightPlan reads the canary weights from the metadata, as Flagger computes them from its
// analysis.stepWeight and analysis.maxWeight (default 100), or analysis.stepWeights.
func weightPlan(md map[string]string) (weights, error) {
	parse := func(key, raw string) (int, error) {
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil || n < 1 || n > 100 {
			return 0, fmt.Errorf("metadata.%s: must be an integer within 1-100, got %q", key, raw)
		}
		return n, nil
	}
	if list, ok := md[metadataStepWeights]; ok {
		var ws weights
		for _, f := range strings.Split(list, ",") {
			n, err := parse(metadataStepWeights, f)
			if err != nil {
				return nil, err
			}
			if len(ws) > 0 && n <= ws[len(ws)-1] {
				return nil, fmt.Errorf("metadata.%s: must increase, got %q", metadataStepWeights, list)
			}
			ws = append(ws, n)
		}
		return ws, nil
	}
	raw, ok := md[metadataStepWeight]
	if !ok {
		return nil, fmt.Errorf("metadata.%s (with metadata.%s) or metadata.%s: required with metadata.%s, as the Canary's analysis says, so that analyzerd knows the weight each grant leads to",
			metadataStepWeight, metadataMaxWeight, metadataStepWeights, metadataAnalysis)
	}
	step, err := parse(metadataStepWeight, raw)
	if err != nil {
		return nil, err
	}
	top := 100
	if raw, ok := md[metadataMaxWeight]; ok {
		if top, err = parse(metadataMaxWeight, raw); err != nil {
			return nil, err
		}
	}
	var ws weights
	for w := step; ; w += step {
		ws = append(ws, min(w, top))
		if w >= top {
			return ws, nil
		}
	}
}

// selfStartGate is the gate of a Canary whose webhooks carry metadata.analysis: analyzerd
// learns the canary's weight from the grants it gave. Each 200 lets Flagger add one step
// weight, so each 200 below the top weight is recorded as a rollout.step at the weight it
// leads to, stored before the answer; the next call is judged on that step's own evidence.
func (s *Server) selfStartGate(w http.ResponseWriter, r *http.Request, p flaggerPayload) {
	if !s.authorize(w, r, p.Metadata[metadataToken]) {
		return
	}
	ref, err := flaggerRollout(p)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	plan, err := weightPlan(p.Metadata)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	pos, known := s.opts.Positions.Position(ref)
	if !known || pos.Revision != p.Checksum || pos.Step == 0 {
		// A new checksum, at 0%: nothing to judge before traffic. The gate opens and the
		// canary gets its first step. (Step 0 of a known revision: the start was stored but
		// not the grant.)
		var evs []rollout.Event
		if !known || pos.Revision != p.Checksum {
			start, err := s.flaggerStart(ref, p)
			if err != nil {
				writeInvalid(w, err)
				return
			}
			evs = append(evs, start)
		}
		grant := s.grant(ref, p.Checksum, 1, plan)
		if !s.publish(w, r, append(evs, grant)...) {
			return
		}
		a := hookAnswer{Rollout: ref, Hook: "gate", Phase: p.Phase, Verdict: rollout.Proceed, Revision: p.Checksum,
			Reason: "no traffic yet: nothing to judge", DecidedAt: s.opts.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
			Message: fmt.Sprintf("open: the analysis of revision %q starts at 0%%; granted step 1 (weight %d%%)", p.Checksum, grant.Weight)}
		writeJSON(w, http.StatusOK, a)
		return
	}
	a := asked{revision: p.Checksum, step: &pos.Step, weight: &pos.Weight}
	sv := notYet(ref, a, s)
	if v, ok := s.opts.Verdicts.Latest(ref); ok {
		sv = about(v, a)
	}
	what := fmt.Sprintf("the verdict for step %d (weight %d%%)", pos.Step, pos.Weight)
	if sv.Verdict.Verdict == rollout.Proceed && pos.Weight < plan.max() {
		next := s.grant(ref, p.Checksum, pos.Step+1, plan)
		if !s.publish(w, r, next) {
			return
		}
		what = fmt.Sprintf("granted step %d (weight %d%%): %s", next.Step, next.Weight, what)
	}
	s.gateAnswer(w, p, ref, sv, what)
}

// flaggerStart is the rollout.started event of a new checksum, at 0%, with the template,
// arguments and variables of the webhook's metadata, validated as an event from NATS is.
func (s *Server) flaggerStart(ref rollout.Ref, p flaggerPayload) (rollout.Event, error) {
	args, canary, stable := map[string]string{}, map[string]string{}, map[string]string{}
	for k, v := range p.Metadata {
		switch {
		case strings.HasPrefix(k, prefixArgs):
			args[strings.TrimPrefix(k, prefixArgs)] = v
		case strings.HasPrefix(k, prefixCanary):
			canary[strings.TrimPrefix(k, prefixCanary)] = v
		case strings.HasPrefix(k, prefixStable):
			stable[strings.TrimPrefix(k, prefixStable)] = v
		}
	}
	data := map[string]json.RawMessage{}
	for k, v := range map[string]any{
		"rollout": ref, "revision": p.Checksum, "analysis": p.Metadata[metadataAnalysis],
		"args": args, "canary": canary, "stable": stable, "step": 0, "weight": 0,
	} {
		raw, err := json.Marshal(v)
		if err != nil {
			return rollout.Event{}, fmt.Errorf("encode %s: %w", k, err)
		}
		data[k] = raw
	}
	ev, err := s.decodeStart(flaggerSource, data)
	if err != nil {
		return rollout.Event{}, err
	}
	ev.ID = derivedID("flagger", ref, ev.Revision, rollout.EventStarted, 0, 0)
	return ev, nil
}

// grant is the rollout.step event of the k-th grant.
func (s *Server) grant(ref rollout.Ref, revision string, k int, plan weights) rollout.Event {
	w := plan.weight(k)
	return rollout.Event{
		ID:     derivedID("flagger", ref, revision, rollout.EventStep, k, w),
		Source: flaggerSource, Type: rollout.EventStep, Time: s.opts.Now(),
		Rollout: ref, Revision: revision, Step: k, Weight: w,
	}
}

// validEvent checks an event built here as an event from NATS is checked.
func (s *Server) validEvent(ev rollout.Event) error {
	_, err := ingest.Encode(ev)
	return err
}
