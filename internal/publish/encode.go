// Package publish encodes verdicts as CloudEvents (CONTRACT.md section 4) and publishes them
// to JetStream in order, with Nats-Msg-Id so that a retry never stores a verdict twice.
package publish

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// ContentType is the Content-Type of every verdict message: structured-mode CloudEvents.
const ContentType = "application/cloudevents+json"

// timeLayout is RFC 3339 with milliseconds, as verdicts carry their times.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// MsgID is the Nats-Msg-Id, and the CloudEvents id, of a verdict:
// verdict/<namespace>/<name>/<revision>/<sequence>.
func MsgID(v rollout.Verdict) string {
	return fmt.Sprintf("verdict/%s/%s/%s/%d", v.Rollout.Namespace, v.Rollout.Name, v.Revision, v.Sequence)
}

// envelope is a structured-mode CloudEvents 1.0 event.
type envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

// verdictJSON is rollout.Verdict as CONTRACT.md section 4 shows it: decidedAt in UTC with
// milliseconds, checks an array even when empty.
type verdictJSON struct {
	Rollout   rollout.Ref           `json:"rollout"`
	Revision  string                `json:"revision"`
	Step      int                   `json:"step"`
	Weight    int                   `json:"weight"`
	Verdict   rollout.Decision      `json:"verdict"`
	Reason    string                `json:"reason"`
	Sequence  uint64                `json:"sequence"`
	Checks    []rollout.CheckResult `json:"checks"`
	DecidedAt string                `json:"decidedAt"`
	Cause     string                `json:"cause"`
	TraceID   string                `json:"traceId"`
}

// Encode returns the rollout.verdict CloudEvent that controllers receive for v, from source.
// Its data is MarshalVerdict(v). Errors wrap rollout.ErrInvalid: such a verdict can never be
// published.
func Encode(v rollout.Verdict, source string) ([]byte, error) {
	if source == "" {
		return nil, rollout.Invalidf("verdict source: must not be empty")
	}
	data, err := MarshalVerdict(v)
	if err != nil {
		return nil, err
	}
	return marshal(envelope{
		SpecVersion:     "1.0",
		ID:              MsgID(v),
		Source:          source,
		Type:            string(rollout.EventVerdict),
		Subject:         v.Rollout.String(),
		Time:            v.DecidedAt.UTC().Format(timeLayout),
		DataContentType: "application/json",
		Data:            data,
	})
}

// MarshalVerdict returns the JSON of v exactly as CONTRACT.md section 4 shows it, the data of a
// verdict event: decidedAt in UTC with milliseconds, checks an array, and numbers that are not
// finite (a ratio over zero) as null, like every number that could not be computed. Errors
// wrap rollout.ErrInvalid.
func MarshalVerdict(v rollout.Verdict) ([]byte, error) {
	if err := validate(v); err != nil {
		return nil, err
	}
	checks := make([]rollout.CheckResult, len(v.Checks))
	for i, c := range v.Checks {
		c.Canary = finite(c.Canary)
		c.Stable = finite(c.Stable)
		c.Baseline = finite(c.Baseline)
		c.Delta = finite(c.Delta)
		c.RelativeDelta = finite(c.RelativeDelta)
		c.BaselineDelta = finite(c.BaselineDelta)
		c.BaselineRelativeDelta = finite(c.BaselineRelativeDelta)
		c.EValueThreshold = finite(c.EValueThreshold)
		if c.Limits != nil {
			limits := make([]rollout.Limit, len(c.Limits))
			for k, l := range c.Limits {
				limits[k] = rollout.Limit{Guard: l.Guard, Min: finite(l.Min), Max: finite(l.Max)}
			}
			c.Limits = limits
		}
		checks[i] = c
	}
	return marshal(verdictJSON{
		Rollout:   v.Rollout,
		Revision:  v.Revision,
		Step:      v.Step,
		Weight:    v.Weight,
		Verdict:   v.Verdict,
		Reason:    v.Reason,
		Sequence:  v.Sequence,
		Checks:    checks,
		DecidedAt: v.DecidedAt.UTC().Format(timeLayout),
		Cause:     v.Cause,
		TraceID:   v.TraceID,
	})
}

func validate(v rollout.Verdict) error {
	switch {
	case v.Rollout.Namespace == "":
		return rollout.Invalidf("verdict rollout.namespace: must not be empty")
	case v.Rollout.Name == "":
		return rollout.Invalidf("verdict rollout.name: must not be empty")
	case v.Revision == "":
		return rollout.Invalidf("verdict revision: must not be empty")
	case v.Sequence == 0:
		return rollout.Invalidf("verdict sequence: must start at 1, got 0")
	}
	switch v.Verdict {
	case rollout.Proceed, rollout.Pause, rollout.Rollback:
	default:
		return rollout.Invalidf("verdict verdict: must be proceed, pause or rollback, got %q", v.Verdict)
	}
	return nil
}

func finite(f *float64) *float64 {
	if f == nil || math.IsNaN(*f) || math.IsInf(*f, 0) {
		return nil
	}
	return f
}

// marshal encodes v without escaping <, > and &, which reasons and thresholds are full of.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encoding verdict: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
