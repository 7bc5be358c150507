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
	// group is groupKey of the series' labels when it comes from a feed, which computes it
	// once for all its reads, and holds only the labels reads need (see readLabels).
	group    uint64
	hasGroup bool
}

// groupKey is the series' group (see groupKey).
func (s Series) groupKey() uint64 {
	if s.hasGroup {
		return s.group
	}
	return groupKey(s.Labels)
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
