package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// argoSource is the CloudEvents source of the events Argo Rollouts' calls stand for.
const argoSource = "analyzerd/argo"

// argoAnalysis answers an Argo Rollouts web metric (provider.web, method POST, jsonBody):
//
//	{"namespace", "name", "revision", "stableRevision", "analysis", "args": {}, "canary": {},
//	 "stable": {}, "step": N, "weight": W}
//
// step and weight may be JSON numbers or strings of digits (Argo substitutes arguments as
// strings). The first call for a (rollout, revision) stores rollout.started at that step and
// weight; a later call at a higher step or weight than the analysis's stores rollout.step.
// Every call answers 200 with the verdict JSON for the asked step: pause with "stale": true
// until the daemon has applied and judged it. 400 for a body that is not a valid start (the
// reasons of dead letters), 401/403 without the token, 503 when the event cannot be stored.
func (s *Server) argoAnalysis(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r, "") {
		return
	}
	body, ok := readObject(w, r, int64(s.opts.MaxEventBytes), `an analysis request ({"namespace", "name", "revision", "analysis", "step", "weight", ...})`)
	if !ok {
		return
	}
	data := map[string]json.RawMessage{}
	ref := map[string]json.RawMessage{}
	for k, v := range body {
		switch k {
		case "namespace", "name":
			ref[k] = v
		case "step", "weight":
			data[k] = numeric(v)
		default:
			data[k] = v
		}
	}
	data["rollout"], _ = json.Marshal(ref)
	ev, err := s.decodeStart(argoSource, data)
	if err != nil {
		writeInvalid(w, err)
		return
	}
	a := asked{revision: ev.Revision, step: &ev.Step, weight: &ev.Weight}
	pos, known := s.opts.Positions.Position(ev.Rollout)
	switch {
	case !known || pos.Revision != ev.Revision:
		ev.ID = derivedID("argo", ev.Rollout, ev.Revision, rollout.EventStarted, ev.Step, ev.Weight)
		if !s.publish(w, r, ev) {
			return
		}
	case ev.Step > pos.Step || ev.Weight > pos.Weight:
		step := rollout.Event{
			ID:     derivedID("argo", ev.Rollout, ev.Revision, rollout.EventStep, ev.Step, ev.Weight),
			Source: argoSource, Type: rollout.EventStep, Time: ev.Time,
			Rollout: ev.Rollout, Revision: ev.Revision, Step: ev.Step, Weight: ev.Weight,
		}
		if !s.publish(w, r, step) {
			return
		}
	}
	sv := notYet(ev.Rollout, a, s)
	if v, ok := s.opts.Verdicts.Latest(ev.Rollout); ok {
		sv = about(v, a)
	}
	out, err := sv.marshal(a)
	if err != nil {
		s.internalError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, json.RawMessage(out))
}

// numeric turns a JSON string of decimal digits into the number it spells; any other value is
// left for validation to judge.
func numeric(raw json.RawMessage) json.RawMessage {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return raw
	}
	s = strings.TrimSpace(s)
	if _, err := strconv.ParseUint(s, 10, 31); err != nil {
		return raw
	}
	return json.RawMessage(s)
}
