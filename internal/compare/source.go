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
	// group is groupKey(Labels) when the series comes from a feed, which computes it once
	// for all its reads ("" otherwise).
	group string
}

// groupKey is the series' group (see groupKey).
func (s Series) groupKey() string {
	if s.group != "" {
		return s.group
	}
	return groupKey(s.Labels)
}

// Sample is one raw sample: the value a target exposed at the time it was scraped.
type Sample struct {
	T time.Time
	V float64
}

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
