// Package rolloutclient is the controller's side of the wire contract: it publishes rollout
// events as CloudEvents with Nats-Msg-Id, and reads verdicts. The demo and the tests drive
// analyzerd through it exactly as a rollout controller would.
package rolloutclient

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Started is the data of a rollout.started event.
type Started struct {
	Rollout        rollout.Ref       `json:"rollout"`
	Revision       string            `json:"revision"`
	Analysis       string            `json:"analysis"`
	Args           map[string]string `json:"args,omitempty"`
	Canary         map[string]string `json:"canary,omitempty"`
	Stable         map[string]string `json:"stable,omitempty"`
	Step           int               `json:"step"`
	Weight         int               `json:"weight"`
	StableRevision string            `json:"stableRevision,omitempty"`
}

// Step is the data of a rollout.step event.
type Step struct {
	Rollout  rollout.Ref `json:"rollout"`
	Revision string      `json:"revision"`
	Step     int         `json:"step"`
	Weight   int         `json:"weight"`
}

// Ended is the data of rollout.completed and rollout.aborted events.
type Ended struct {
	Rollout  rollout.Ref `json:"rollout"`
	Revision string      `json:"revision"`
	Reason   string      `json:"reason,omitempty"`
}

// Envelope is a CloudEvents 1.0 event in structured JSON mode.
type Envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            *time.Time      `json:"time,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// Event builds a structured CloudEvent of the given type around data.
func Event(id string, typ rollout.EventType, at time.Time, data any) ([]byte, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode event data: %w", err)
	}
	t := at.UTC()
	return json.Marshal(Envelope{
		SpecVersion: "1.0", ID: id, Source: "rolloutclient", Type: string(typ),
		Time: &t, DataContentType: "application/json", Data: raw,
	})
}

// Publisher publishes rollout events.
type Publisher struct {
	JS     jetstream.JetStream
	Prefix string
}

// Publish sends one event on the rollout's events subject, with Nats-Msg-Id set to the id
// so that JetStream drops a duplicate, and waits for the stream's acknowledgement.
func (p Publisher) Publish(ctx context.Context, ref rollout.Ref, id string, typ rollout.EventType, at time.Time, data any) error {
	body, err := Event(id, typ, at, data)
	if err != nil {
		return err
	}
	return p.PublishRaw(ctx, rollout.EventsSubject(p.Prefix, ref), id, body)
}

// PublishRaw sends body as it is (for malformed events in tests).
func (p Publisher) PublishRaw(ctx context.Context, subject, msgID string, body []byte) error {
	msg := nats.NewMsg(subject)
	msg.Data = body
	msg.Header.Set("Content-Type", "application/cloudevents+json")
	if msgID != "" {
		msg.Header.Set(nats.MsgIdHdr, msgID)
	}
	if _, err := p.JS.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// Received is a verdict as a controller receives it.
type Received struct {
	Verdict     rollout.Verdict
	Subject     string
	MsgID       string
	TraceParent string
	Envelope    Envelope
}

// DecodeVerdict reads a verdict message.
func DecodeVerdict(msg *nats.Msg) (Received, error) {
	var env Envelope
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		return Received{}, fmt.Errorf("verdict envelope: %w", err)
	}
	if env.Type != string(rollout.EventVerdict) {
		return Received{}, fmt.Errorf("verdict envelope: type %q", env.Type)
	}
	var v rollout.Verdict
	if err := json.Unmarshal(env.Data, &v); err != nil {
		return Received{}, fmt.Errorf("verdict data: %w", err)
	}
	return Received{
		Verdict: v, Subject: msg.Subject, Envelope: env,
		MsgID: msg.Header.Get(nats.MsgIdHdr), TraceParent: msg.Header.Get("traceparent"),
	}, nil
}

// WatchVerdicts delivers every verdict on the stream, from the first, to fn until ctx is
// done, through an ordered consumer (no state on the server).
func WatchVerdicts(ctx context.Context, js jetstream.JetStream, prefix string, fn func(Received)) error {
	cons, err := js.OrderedConsumer(ctx, "ROLLOUT_VERDICTS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + ".verdicts.>"},
	})
	if err != nil {
		return fmt.Errorf("verdict consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		r, err := DecodeVerdict(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		if err == nil {
			fn(r)
		}
	})
	if err != nil {
		return fmt.Errorf("verdict consumer: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
