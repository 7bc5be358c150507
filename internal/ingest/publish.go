package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

// Publisher writes rollout events to the ROLLOUT_EVENTS stream, as a controller publishing on
// NATS would: structured-mode CloudEvents with Nats-Msg-Id set to the event's id, so that
// JetStream drops a retried event within its duplicate window (and the analyzer, idempotent
// on the id, drops it after). It is how events that arrive over HTTP become durable.
type Publisher struct {
	js     jetstream.JetStream
	prefix string
}

// NewPublisher publishes with js under the subject prefix (streams.DefaultPrefix when empty).
func NewPublisher(js jetstream.JetStream, prefix string) *Publisher {
	if prefix == "" {
		prefix = streams.DefaultPrefix
	}
	return &Publisher{js: js, prefix: prefix}
}

// Publish stores ev on the rollout's events subject and returns once JetStream acknowledged
// it (a duplicate JetStream dropped is acknowledged too).
func (p *Publisher) Publish(ctx context.Context, ev rollout.Event) error {
	body, err := Encode(ev)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(rollout.EventsSubject(p.prefix, ev.Rollout))
	msg.Data = body
	msg.Header.Set("Content-Type", structuredCEType)
	msg.Header.Set(nats.MsgIdHdr, ev.ID)
	if ev.TraceParent != "" {
		msg.Header.Set("traceparent", ev.TraceParent)
		if ev.TraceState != "" {
			msg.Header.Set("tracestate", ev.TraceState)
		}
	}
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish %s %s: %w", ev.Type, ev.ID, err)
	}
	return nil
}

// eventEnvelope and eventData are the wire form of an event (CONTRACT.md sections 2 and 3).
type eventEnvelope struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Time            string    `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            eventData `json:"data"`
}

type eventData struct {
	Rollout        rollout.Ref       `json:"rollout"`
	Revision       string            `json:"revision"`
	Analysis       string            `json:"analysis,omitempty"`
	Args           map[string]string `json:"args,omitempty"`
	Canary         map[string]string `json:"canary,omitempty"`
	Stable         map[string]string `json:"stable,omitempty"`
	StableRevision string            `json:"stableRevision,omitempty"`
	Step           *int              `json:"step,omitempty"`
	Weight         *int              `json:"weight,omitempty"`
	Reason         string            `json:"reason,omitempty"`
}

// Encode returns the structured-mode CloudEvent of ev, which Decode reads back as ev. It
// refuses an event Decode would reject, with the same reason.
func Encode(ev rollout.Event) ([]byte, error) {
	if ev.Time.IsZero() {
		return nil, errors.New("encode event: time is zero")
	}
	d := eventData{Rollout: ev.Rollout, Revision: ev.Revision}
	switch ev.Type {
	case rollout.EventStarted:
		d.Analysis, d.Args, d.Canary, d.Stable, d.StableRevision = ev.Analysis, ev.Args, ev.Canary, ev.Stable, ev.StableRevision
		d.Step, d.Weight = &ev.Step, &ev.Weight
	case rollout.EventStep:
		d.Step, d.Weight = &ev.Step, &ev.Weight
	case rollout.EventAborted:
		d.Reason = ev.Reason
	}
	body, err := json.Marshal(eventEnvelope{
		SpecVersion: "1.0", ID: ev.ID, Source: ev.Source, Type: string(ev.Type),
		Time: ev.Time.UTC().Format(time.RFC3339Nano), DataContentType: jsonContentType, Data: d,
	})
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	if _, err := Decode(body, nil, ev.Time, 0); err != nil {
		return nil, err
	}
	return body, nil
}

// RejectReason is the bounded reason (the reason label of analyzerd_dead_letters_total:
// too_large, malformed, not_cloudevent, unknown_type, invalid_data) for which Decode rejected
// an event; ok is false for an error Decode did not return.
func RejectReason(err error) (reason string, ok bool) {
	var de *decodeError
	if errors.As(err, &de) {
		return de.reason, true
	}
	return "", false
}
