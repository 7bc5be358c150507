package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Flagger calls its webhooks with a POST of this JSON (CanaryWebhookPayload), and treats any
// status above 202 as "no": a gate (confirm-rollout, confirm-traffic-increase,
// confirm-promotion) stays closed and is asked again at the next interval; a rollback hook does
// not roll back.
type flaggerPayload struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Phase is the canary's: Initializing, Initialized, Waiting, Progressing,
	// WaitingPromotion, Promoting, Finalising, Succeeded, Failed, Terminating, Terminated.
	Phase    string `json:"phase"`
	Checksum string `json:"checksum"`
	// Metadata is the webhook's metadata from the Canary. metadataRollout, when set, names
	// the rollout to answer for, as "name" (in the canary's namespace) or "namespace/name".
	Metadata map[string]string `json:"metadata"`
}

// metadataRollout is the metadata key naming the rollout when it is not the canary's own
// namespace and name.
const metadataRollout = "rollout"

// maxWebhookBytes bounds a webhook's body; Flagger's are a few hundred bytes.
const maxWebhookBytes = 64 << 10

// hookAnswer is the body of a webhook's answer: the verdict it was decided from, and what it
// means for the hook; message says why. (Flagger records the body of a refusal in its events
// only for pre- and post-rollout hooks, not for gates and rollback hooks: analyzerd's log and
// the read API say why a gate stays closed.)
type hookAnswer struct {
	Rollout   rollout.Ref      `json:"rollout"`
	Hook      string           `json:"hook"`
	Phase     string           `json:"phase,omitempty"`
	Verdict   rollout.Decision `json:"verdict"`
	Revision  string           `json:"revision"`
	Sequence  uint64           `json:"sequence"`
	Reason    string           `json:"reason"`
	DecidedAt string           `json:"decidedAt"`
	TraceID   string           `json:"traceId"`
	Message   string           `json:"message"`
	// Stale marks a verdict about an earlier step than the one Flagger is at (optional).
	Stale bool `json:"stale,omitempty"`
}

// flaggerGate answers Flagger's gate hooks (confirm-traffic-increase, confirm-promotion).
//
// Without metadata.analysis it judges an analysis started by events on NATS: 200 when the
// rollout's latest verdict is proceed; 425 Too Early on pause (Flagger asks again); 403 on
// rollback (the gate never opens for that revision); 404 for a rollout not under analysis.
//
// With metadata.analysis it runs the analysis itself (see selfStart): the first call for a
// new checksum stores rollout.started at 0% and opens the gate (nothing to judge before
// traffic), granting the first step; each later call is judged on the evidence of the step
// analyzerd last granted, and a 200 grants the next one (stores rollout.step at its weight).
// 400 for a payload that is not Flagger's.
func (s *Server) flaggerGate(w http.ResponseWriter, r *http.Request) {
	p, ok := s.flaggerPayload(w, r)
	if !ok {
		return
	}
	if p.Metadata[metadataAnalysis] != "" {
		s.selfStartGate(w, r, p)
		return
	}
	ref, v, ok := s.flaggerVerdict(w, p, "gate")
	if !ok {
		return
	}
	s.gateAnswer(w, p, ref, stepVerdict{Verdict: v}, "the latest verdict")
}

// gateAnswer answers a gate from sv: 200 on proceed, 403 on rollback, 425 otherwise.
func (s *Server) gateAnswer(w http.ResponseWriter, p flaggerPayload, ref rollout.Ref, sv stepVerdict, what string) {
	a := answer(p, ref, sv.Verdict, "gate")
	status := http.StatusOK
	switch sv.Verdict.Verdict {
	case rollout.Proceed:
		a.Message = "open: " + what + " is proceed"
	case rollout.Rollback:
		status = http.StatusForbidden
		a.Message = "closed for good: " + what + " is rollback"
	default:
		status = http.StatusTooEarly
		a.Message = fmt.Sprintf("closed for now: %s is %s", what, sv.Verdict.Verdict)
	}
	a.Stale = sv.Stale
	writeJSON(w, status, a)
}

// flaggerRollback answers Flagger's rollback hook: 200 when the rollout's latest verdict is
// rollback (of the canary's checksum, with metadata.analysis), so that Flagger stops the
// analysis and rolls back; 409 Conflict otherwise; 404 for a rollout not under analysis; 400
// for a payload that is not Flagger's.
func (s *Server) flaggerRollback(w http.ResponseWriter, r *http.Request) {
	p, ok := s.flaggerPayload(w, r)
	if !ok {
		return
	}
	ref, v, ok := s.flaggerVerdict(w, p, "rollback")
	if !ok {
		return
	}
	a := answer(p, ref, v, "rollback")
	status := http.StatusOK
	switch {
	case p.Metadata[metadataAnalysis] != "" && v.Revision != p.Checksum:
		status = http.StatusConflict
		a.Message = fmt.Sprintf("no rollback: the latest verdict is about revision %q, not the canary's checksum %q", v.Revision, p.Checksum)
	case v.Verdict == rollout.Rollback:
		a.Message = "roll back: the latest verdict is rollback"
	default:
		status = http.StatusConflict
		a.Message = fmt.Sprintf("no rollback: the latest verdict is %s", v.Verdict)
	}
	writeJSON(w, status, a)
}

// flaggerPostRollout answers Flagger's post-rollout hook, which Flagger calls once the canary
// is promoted (phase Succeeded) or rolled back (phase Failed): it stores rollout.completed or
// rollout.aborted for the canary's checksum, so that the analysis ends at once. 200 once
// stored; 400 for another phase or a payload without checksum; 401/403 without the token.
func (s *Server) flaggerPostRollout(w http.ResponseWriter, r *http.Request) {
	p, ok := s.flaggerPayload(w, r)
	if !ok {
		return
	}
	if !s.authorize(w, r, p.Metadata[metadataToken]) {
		return
	}
	ref, err := flaggerRollout(p)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	ev := rollout.Event{Source: flaggerSource, Time: s.opts.Now(), Rollout: ref, Revision: p.Checksum}
	switch p.Phase {
	case "Succeeded":
		ev.Type = rollout.EventCompleted
	case "Failed":
		ev.Type, ev.Reason = rollout.EventAborted, "flagger: the canary failed and was rolled back"
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("phase: the post-rollout hook ends an analysis on Succeeded or Failed, got %q", p.Phase)})
		return
	}
	ev.ID = derivedID("flagger", ref, ev.Revision, ev.Type, 0, 0)
	if err := s.validEvent(ev); err != nil {
		writeInvalid(w, err)
		return
	}
	if !s.publish(w, r, ev) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rollout": ref, "hook": "post-rollout", "phase": p.Phase,
		"revision": ev.Revision, "published": ev.Type, "message": fmt.Sprintf("stored %s for revision %q", ev.Type, ev.Revision)})
}

// flaggerPayload decodes Flagger's payload, answering the request itself when it cannot.
func (s *Server) flaggerPayload(w http.ResponseWriter, r *http.Request) (flaggerPayload, bool) {
	var p flaggerPayload
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxWebhookBytes))
	if err := dec.Decode(&p); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{
			"error": "the body is not a Flagger webhook payload ({\"name\", \"namespace\", \"phase\", \"metadata\"}): " + decodeError(err),
		})
		return p, false
	}
	return p, true
}

// flaggerVerdict finds the latest verdict of the rollout a payload names. It answers the
// request itself, and returns false, when it cannot.
func (s *Server) flaggerVerdict(w http.ResponseWriter, p flaggerPayload, hook string) (rollout.Ref, rollout.Verdict, bool) {
	ref, err := flaggerRollout(p)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return ref, rollout.Verdict{}, false
	}
	v, ok := s.opts.Verdicts.Latest(ref)
	s.opts.Logger.Debug("flagger webhook", zap.String("hook", hook), zap.String("rollout", ref.String()),
		zap.String("phase", p.Phase), zap.Bool("known", ok), zap.String("verdict", string(v.Verdict)))
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no live analysis of rollout %s", ref)})
		return ref, v, false
	}
	return ref, v, true
}

// flaggerRollout is the rollout a payload is about: metadata.rollout when set, else the
// canary's namespace and name.
func flaggerRollout(p flaggerPayload) (rollout.Ref, error) {
	ref := rollout.Ref{Namespace: p.Namespace, Name: p.Name}
	if m, ok := p.Metadata[metadataRollout]; ok {
		ns, name, found := strings.Cut(m, "/")
		if !found {
			ns, name = p.Namespace, m
		}
		if ns == "" || name == "" || strings.Contains(name, "/") {
			return ref, fmt.Errorf("metadata.%s must be \"name\" or \"namespace/name\", got %q", metadataRollout, m)
		}
		ref = rollout.Ref{Namespace: ns, Name: name}
	}
	switch {
	case ref.Namespace == "" || ref.Name == "":
		return ref, errors.New("the payload needs the canary's \"name\" and \"namespace\"")
	case len(ref.Namespace) > 63:
		return ref, fmt.Errorf("namespace %q is longer than 63 characters", ref.Namespace)
	case len(ref.Name) > 253:
		return ref, errors.New("name is longer than 253 characters")
	}
	return ref, nil
}

func answer(p flaggerPayload, ref rollout.Ref, v rollout.Verdict, hook string) hookAnswer {
	return hookAnswer{
		Rollout: ref, Hook: hook, Phase: p.Phase,
		Verdict: v.Verdict, Revision: v.Revision, Sequence: v.Sequence, Reason: v.Reason,
		DecidedAt: v.DecidedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), TraceID: v.TraceID,
	}
}

// decodeError says what is wrong with a body in one line.
func decodeError(err error) string {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return fmt.Sprintf("larger than %d bytes", tooLarge.Limit)
	}
	return err.Error()
}
