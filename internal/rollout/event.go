package rollout

import "time"

// EventType is the CloudEvents type of an event analyzerd consumes.
type EventType string

// The event types of CONTRACT.md section 3, and the type of the verdicts analyzerd publishes.
const (
	EventStarted   EventType = "rollout.started"
	EventStep      EventType = "rollout.step"
	EventCompleted EventType = "rollout.completed"
	EventAborted   EventType = "rollout.aborted"
	EventVerdict   EventType = "rollout.verdict"
)

// Known reports whether t is a type analyzerd consumes.
func (t EventType) Known() bool {
	switch t {
	case EventStarted, EventStep, EventCompleted, EventAborted:
		return true
	}
	return false
}

// Event is a decoded and validated rollout event. Fields that a type does not carry are zero.
type Event struct {
	// ID is the CloudEvents id; analyzerd is idempotent on it.
	ID     string
	Source string
	Type   EventType
	// Time is the event's time, or the time the stream stored it when the event has none.
	Time time.Time

	Rollout  Ref
	Revision string

	// rollout.started
	Analysis       string
	Args           map[string]string
	Canary         map[string]string
	Stable         map[string]string
	StableRevision string

	// rollout.started and rollout.step
	Step   int
	Weight int

	// rollout.aborted
	Reason string

	// TraceParent and TraceState are the producer's W3C trace context, when it sent one.
	TraceParent string
	TraceState  string
}

// Key is the analysis the event is about.
func (e Event) Key() Key { return Key{Ref: e.Rollout, Revision: e.Revision} }
