package rollout

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid marks input that can never succeed however often it is retried: a malformed
// event, one that names an unknown template, a value out of range. Ingest dead-letters
// events whose handling fails with an error wrapping ErrInvalid.
var ErrInvalid = errors.New("invalid")

// Invalidf returns an error wrapping ErrInvalid.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Ref names a rollout.
type Ref struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// Key identifies one analysis: a rollout and the canary revision being analysed.
type Key struct {
	Ref
	Revision string
}

func (k Key) String() string { return k.Namespace + "/" + k.Name + "/" + k.Revision }

// SubjectToken makes s safe to use as one NATS subject token: every character outside
// [A-Za-z0-9_-] becomes '_'. The token is a routing hint only; payloads name rollouts.
func SubjectToken(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// EventsSubject is the subject controllers publish a rollout's events on.
func EventsSubject(prefix string, r Ref) string {
	return prefix + ".events." + SubjectToken(r.Namespace) + "." + SubjectToken(r.Name)
}

// VerdictsSubject is the subject analyzerd publishes a rollout's verdicts on.
func VerdictsSubject(prefix string, r Ref) string {
	return prefix + ".verdicts." + SubjectToken(r.Namespace) + "." + SubjectToken(r.Name)
}

// DeadLetterSubject is the subject rejected events are republished on.
func DeadLetterSubject(prefix string) string { return prefix + ".deadletter.events" }

// Position is where a live analysis stands, judged or not: the revision analysed and the step
// and weight of the latest rollout.started or rollout.step event applied to it.
type Position struct {
	Revision string
	Step     int
	Weight   int
}
