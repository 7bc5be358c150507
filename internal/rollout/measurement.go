package rollout

import "time"

// Status says whether a reading holds a number.
type Status string

// The statuses of a reading.
const (
	// StatusOK: Value and Samples hold what was measured.
	StatusOK Status = "ok"
	// StatusNoData: the source answered, but with nothing to measure (no series, no requests).
	StatusNoData Status = "nodata"
	// StatusError: the source could not be asked or answered an error.
	StatusError Status = "error"
)

// Reading is one check's number for one side, as compare measured it.
type Reading struct {
	Status Status  `json:"status"`
	Value  float64 `json:"value"`
	// Samples is how many observations the value rests on (requests for ratio and histogram
	// checks; 0 for value checks).
	Samples int64 `json:"samples"`
	// Message says what went wrong when Status is not ok. It never holds a secret.
	Message string `json:"message,omitempty"`
	// Events and Total are the counts a ratio reading rests on (errors and requests, as
	// increases of counters), so that Value is Events / Total; Buckets are the cumulative
	// bucket counts a histogram reading rests on. A reading without counts is judged by its
	// Value alone: the sequential tests need the counts.
	Events  float64  `json:"events,omitempty"`
	Total   float64  `json:"total,omitempty"`
	Buckets []Bucket `json:"buckets,omitempty"`
	// Counts are a counter check's counts over the span the reading is about (the step so
	// far, or the baseline's window), with their bounds; Recent over the last
	// recentWindow of it (the baseline guards' span). Value, Samples, Events, Total and
	// Buckets are then Counts' estimates. Nil for value checks.
	Counts *Counts `json:"counts,omitempty"`
	Recent *Counts `json:"recent,omitempty"`
}

// OK reports whether the reading holds a number.
func (r Reading) OK() bool { return r.Status == StatusOK }

// Measurement is everything compare measured for one check at one evaluation.
type Measurement struct {
	Check  string  `json:"check"`
	Canary Reading `json:"canary"`
	Stable Reading `json:"stable"`
	// Baseline is the stable side before the canary took traffic. It is nil until the
	// baseline has been captured.
	Baseline *Reading `json:"baseline,omitempty"`
	// Through is the instant up to which a counter check's counts reach on both sides: the
	// newest instant every live series of both sides has been scraped at. Zero for value
	// checks, and when nothing was counted.
	Through time.Time `json:"through,omitempty"`
	// ScrapeInterval is the shortest scrape interval seen among the check's series, and
	// NextSample when the series that holds Through back is due to be scraped again: new
	// evidence cannot come before. Zero when unknown (value checks).
	ScrapeInterval time.Duration `json:"scrapeInterval,omitempty"`
	NextSample     time.Time     `json:"nextSample,omitempty"`
}
