package workload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Defaults applied to the zero values of Profile and Config fields.
const (
	DefaultLatencyMedian = 50 * time.Millisecond
	DefaultLatencySpread = 0.2
	DefaultTick          = 100 * time.Millisecond

	// MaxRate bounds Profile.Rate so that a typo cannot make the generator eat the machine.
	MaxRate = 100_000.0
)

// Profile is the traffic a workload simulates. The zero value of LatencyMedian and of
// LatencySpread means the default (DefaultLatencyMedian, DefaultLatencySpread).
type Profile struct {
	// Rate is the mean number of requests per second (a Poisson process).
	Rate float64
	// ErrorRate is the share of requests answered 500, in [0, 1].
	ErrorRate float64
	// LatencyMedian is the median of the log-normal latency distribution.
	LatencyMedian time.Duration
	// LatencySpread is the sigma of the log-normal latency distribution.
	LatencySpread float64
}

// withDefaults returns p with zero fields replaced by their defaults.
func (p Profile) withDefaults() Profile {
	if p.LatencyMedian == 0 {
		p.LatencyMedian = DefaultLatencyMedian
	}
	if p.LatencySpread == 0 {
		p.LatencySpread = DefaultLatencySpread
	}
	return p
}

// Validate reports the first field of p that is out of range.
func (p Profile) Validate() error {
	switch {
	case math.IsNaN(p.Rate) || math.IsInf(p.Rate, 0) || p.Rate < 0:
		return fmt.Errorf("rate must be a finite number of requests per second >= 0, got %g", p.Rate)
	case p.Rate > MaxRate:
		return fmt.Errorf("rate %g exceeds the maximum of %g requests per second", p.Rate, MaxRate)
	case math.IsNaN(p.ErrorRate) || p.ErrorRate < 0 || p.ErrorRate > 1:
		return fmt.Errorf("error rate must be a share within [0, 1], got %g", p.ErrorRate)
	case p.LatencyMedian < 0:
		return fmt.Errorf("latency median must be >= 0, got %s", p.LatencyMedian)
	case math.IsNaN(p.LatencySpread) || math.IsInf(p.LatencySpread, 0) || p.LatencySpread < 0:
		return fmt.Errorf("latency spread must be a finite number >= 0, got %g", p.LatencySpread)
	}
	return nil
}

// profileJSON is the wire form of a Profile: latencyMedian is a Go duration string ("50ms").
type profileJSON struct {
	Rate          float64 `json:"rate"`
	ErrorRate     float64 `json:"errorRate"`
	LatencyMedian string  `json:"latencyMedian"`
	LatencySpread float64 `json:"latencySpread"`
}

// MarshalJSON encodes p as {"rate":..,"errorRate":..,"latencyMedian":"50ms","latencySpread":..}.
func (p Profile) MarshalJSON() ([]byte, error) {
	return json.Marshal(profileJSON{
		Rate:          p.Rate,
		ErrorRate:     p.ErrorRate,
		LatencyMedian: p.LatencyMedian.String(),
		LatencySpread: p.LatencySpread,
	})
}

// UnmarshalJSON decodes the form MarshalJSON writes. Like encoding/json does for structs, it
// sets only the fields present in data, so decoding onto the current profile updates it
// partially. Unknown fields are errors, and latencyMedian must be a duration string.
func (p *Profile) UnmarshalJSON(data []byte) error {
	var in struct {
		Rate          *float64        `json:"rate"`
		ErrorRate     *float64        `json:"errorRate"`
		LatencyMedian json.RawMessage `json:"latencyMedian"`
		LatencySpread *float64        `json:"latencySpread"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return err
	}
	out := *p
	if in.Rate != nil {
		out.Rate = *in.Rate
	}
	if in.ErrorRate != nil {
		out.ErrorRate = *in.ErrorRate
	}
	if len(in.LatencyMedian) > 0 && string(in.LatencyMedian) != "null" {
		var s string
		if err := json.Unmarshal(in.LatencyMedian, &s); err != nil {
			return errors.New(`latencyMedian must be a duration string such as "50ms"`)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf(`latencyMedian must be a duration string such as "50ms": %w`, err)
		}
		out.LatencyMedian = d
	}
	if in.LatencySpread != nil {
		out.LatencySpread = *in.LatencySpread
	}
	*p = out
	return nil
}
