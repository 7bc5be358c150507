package compare

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors of a metrics source. A reading that failed for one of these reasons is an
// error, never "no data" and never a failed check.
var (
	// ErrUnavailable: the source could not be reached or answered a server error or timeout.
	ErrUnavailable = errors.New("metrics source unavailable")
	// ErrBadQuery: the source rejected the query (a template error, not a canary problem).
	ErrBadQuery = errors.New("query rejected by the metrics source")
)

// Request is one instant query.
type Request struct {
	Expr string
	Time time.Time
}

// Series is one series of an answer: of an instant vector, its Value; of a range vector (a
// selector with a range, as counter checks ask), its raw Samples, oldest first.
type Series struct {
	Labels  map[string]string
	Value   float64
	Samples []Sample
	// fed is, when the series comes from a feed, what measuring reads of its labels, in
	// place of Labels (nil then): a feed holds hundreds of thousands of series at 10,000
	// rollouts, and computes these once for all its reads.
	fed *fedLabels
}

// fedLabels are what measuring reads of a series' labels: its group (groupKey), its le label
// if it has one, and its target (targetOf).
type fedLabels struct {
	group  uint64
	le     string
	hasLE  bool
	target string
}

func newFedLabels(labels map[string]string) fedLabels {
	le, hasLE := labels["le"]
	return fedLabels{group: groupKey(labels), le: le, hasLE: hasLE, target: targetOf(labels)}
}

// groupKey is the series' group (see groupKey).
func (s Series) groupKey() uint64 {
	if s.fed != nil {
		return s.fed.group
	}
	return groupKey(s.Labels)
}

// le is the series' le label, if it has one.
func (s Series) le() (string, bool) {
	if s.fed != nil {
		return s.fed.le, s.fed.hasLE
	}
	le, ok := s.Labels["le"]
	return le, ok
}

// target is the scrape target the series is of (targetOf).
func (s Series) target() string {
	if s.fed != nil {
		return s.fed.target
	}
	return targetOf(s.Labels)
}

// Sample is one raw sample: the value a target exposed at the time it was scraped, that
// time in Unix milliseconds (Prometheus's precision). 16 bytes: feeds hold tens of millions.
type Sample struct {
	T int64
	V float64
}

// SampleAt is the sample of v at t (to the millisecond).
func SampleAt(t time.Time, v float64) Sample { return Sample{T: t.UnixMilli(), V: v} }

// Time is when the sample was scraped.
func (s Sample) Time() time.Time { return time.UnixMilli(s.T).UTC() }

// Response answers one Request: the series it returned, or why it failed.
type Response struct {
	Series []Series
	Err    error
}

// Source runs a batch of instant queries. It answers every request, in order; a failed
// request carries its error (wrapping ErrUnavailable or ErrBadQuery) in its Response. A batch
// lets one implementation group queries that share a template.
type Source interface {
	Query(ctx context.Context, reqs []Request) []Response
}
