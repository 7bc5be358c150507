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
// means for the hook. Flagger logs the body of a refusal, so message says why.
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
}

// flaggerGate answers Flagger's gate hooks (confirm-traffic-increase, confirm-promotion): 200
// when the rollout's latest verdict is proceed; 425 Too Early on pause (Flagger asks again);
// 403 on rollback (the gate never opens for that revision); 404 for a rollout not under
// analysis; 400 for a payload that is not Flagger's.
func (s *Server) flaggerGate(w http.ResponseWriter, r *http.Request) {
	p, ref, v, ok := s.flaggerVerdict(w, r, "gate")
	if !ok {
		return
	}
	a := answer(p, ref, v, "gate")
	status := http.StatusOK
	switch v.Verdict {
	case rollout.Proceed:
		a.Message = "open: the latest verdict is proceed"
	case rollout.Rollback:
		status = http.StatusForbidden
		a.Message = "closed for good: the latest verdict is rollback"
	default:
		status = http.StatusTooEarly
		a.Message = fmt.Sprintf("closed for now: the latest verdict is %s", v.Verdict)
	}
	writeJSON(w, status, a)
}

// flaggerRollback answers Flagger's rollback hook: 200 when the rollout's latest verdict is
// rollback, so that Flagger stops the analysis and rolls back; 409 Conflict otherwise; 404 for
// a rollout not under analysis; 400 for a payload that is not Flagger's.
func (s *Server) flaggerRollback(w http.ResponseWriter, r *http.Request) {
	p, ref, v, ok := s.flaggerVerdict(w, r, "rollback")
	if !ok {
		return
	}
	a := answer(p, ref, v, "rollback")
	status := http.StatusOK
	if v.Verdict == rollout.Rollback {
		a.Message = "roll back: the latest verdict is rollback"
	} else {
		status = http.StatusConflict
		a.Message = fmt.Sprintf("no rollback: the latest verdict is %s", v.Verdict)
	}
	writeJSON(w, status, a)
}

// flaggerVerdict decodes Flagger's payload and finds the latest verdict of the rollout it
// names. It answers the request itself, and returns false, when it cannot.
func (s *Server) flaggerVerdict(w http.ResponseWriter, r *http.Request, hook string) (flaggerPayload, rollout.Ref, rollout.Verdict, bool) {
	var p flaggerPayload
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxWebhookBytes))
	if err := dec.Decode(&p); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{
			"error": "the body is not a Flagger webhook payload ({\"name\", \"namespace\", \"phase\", \"metadata\"}): " + decodeError(err),
		})
		return p, rollout.Ref{}, rollout.Verdict{}, false
	}
	ref, err := flaggerRollout(p)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return p, ref, rollout.Verdict{}, false
	}
	v, ok := s.opts.Verdicts.Latest(ref)
	s.opts.Logger.Debug("flagger webhook", zap.String("hook", hook), zap.String("rollout", ref.String()),
		zap.String("phase", p.Phase), zap.Bool("known", ok), zap.String("verdict", string(v.Verdict)))
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no live analysis of rollout %s", ref)})
		return p, ref, v, false
	}
	return p, ref, v, true
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
