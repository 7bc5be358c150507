package rollout

import (
	"encoding/json"
	"math"
	"reflect"
	"strconv"
)

// Buckets are the larger part of every stored record and of many verdicts, so that their
// encoders append bytes directly: encoding/json's reflection, called once per bucket from
// MarshalJSON, was a tenth of the daemon's work at thousands of rollouts. What they write is
// byte for byte what json.Marshal wrote of bucketJSON and bucketCountsJSON (tested).

// appendNumber appends f as encoding/json writes a float64, or fails as it does on NaN and
// infinities, which JSON numbers cannot hold.
func appendNumber(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, &json.UnsupportedValueError{Value: reflect.ValueOf(f), Str: strconv.FormatFloat(f, 'g', -1, 64)}
	}
	// As encoding/json (ES6's number to string): exponents only for very small and very
	// large magnitudes, written e-7 rather than e-07.
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// appendLE appends a bucket's upper bound as the JSON string Prometheus writes it as ("+Inf"
// for the last): the characters strconv.FormatFloat writes need no escaping.
func appendLE(b []byte, upper float64) []byte {
	b = append(b, '"')
	b = strconv.AppendFloat(b, upper, 'g', -1, 64)
	return append(b, '"')
}

// appendBounds appends bounds as {"low":…,"est":…,"high":…}.
func appendBounds(b []byte, bs Bounds) ([]byte, error) {
	var err error
	b = append(b, `{"low":`...)
	if b, err = appendNumber(b, bs.Low); err != nil {
		return nil, err
	}
	b = append(b, `,"est":`...)
	if b, err = appendNumber(b, bs.Est); err != nil {
		return nil, err
	}
	b = append(b, `,"high":`...)
	if b, err = appendNumber(b, bs.High); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}
