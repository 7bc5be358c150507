package compare

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
)

// Instant queries go over client_golang's HTTP client (its address, round tripper and
// credentials), with the request and the error answers exactly as its v1 API makes and reads
// them, but their results are decoded here, straight into Series. At thousands of rollouts
// the grouped refreshes return hundreds of thousands of samples a minute: v1's decoding into
// model.Matrix, then copied into Series, was a seventh of the daemon's CPU and most of its
// garbage.

// apiClient sends the API's requests: client_golang's api.Client makes their URLs, and an
// http.Client over the same round tripper exchanges them, reading each answer into a buffer
// lent from a pool (v1's Do grows a new one for each): a grouped refresh's answer is tens of
// megabytes at 10,000 rollouts, and those buffers were an eighth of the daemon's allocations.
type apiClient struct {
	api  api.Client
	http *http.Client
}

var answerBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// do sends req and reads its answer's body in full, as v1's Do does: the read is given up when
// ctx ends. release hands the body's buffer back (nothing may hold the body after it).
func (c *apiClient) do(ctx context.Context, req *http.Request) (resp *http.Response, body []byte, release func(), err error) {
	resp, err = c.http.Do(req.WithContext(ctx))
	if err != nil {
		return nil, nil, func() {}, err
	}
	buf := answerBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	done := make(chan struct{})
	var readErr error
	go func() {
		defer close(done)
		_, readErr = buf.ReadFrom(resp.Body)
	}()
	select {
	case <-ctx.Done():
		_ = resp.Body.Close()
		// The read may still be writing into buf: it is not lent again.
		return resp, nil, func() {}, ctx.Err()
	case <-done:
		_ = resp.Body.Close()
		return resp, buf.Bytes(), func() { answerBuffers.Put(buf) }, readErr
	}
}

// instant runs one instant query at `at`. Errors are *v1.Error where v1.API would return one
// (classify reads them), or the client's own.
func instant(ctx context.Context, client *apiClient, expr string, at time.Time, timeout time.Duration) ([]Series, error) {
	u := client.api.URL("/api/v1/query", nil)
	q := u.Query()
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	q.Set("query", expr)
	q.Set("time", strconv.FormatFloat(float64(at.Unix())+float64(at.Nanosecond())/1e9, 'f', -1, 64))
	encoded := q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(encoded))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header["Idempotency-Key"] = nil // retried on a network error, as v1 does
	resp, body, release, err := client.do(ctx, req)
	if err == nil && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented) {
		// A proxy that refuses POST: the query goes in the URL, as v1's GET fallback does.
		release()
		u.RawQuery = encoded
		if req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil); err != nil {
			return nil, err
		}
		resp, body, release, err = client.do(ctx, req)
	}
	defer release() // what readAnswer returns holds copies of what it read
	if err != nil {
		return nil, err
	}
	return readAnswer(resp.StatusCode, body)
}

// envelope is the API's answer around its data.
type envelope struct {
	Status    string       `json:"status"`
	Data      *resultData  `json:"data"`
	ErrorType v1.ErrorType `json:"errorType"`
	Error     string       `json:"error"`
}

// readAnswer reads an answer of /api/v1/query as v1's apiClientImpl.Do reads it (the errors are
// its), and its data as toSeries turned model values into Series.
func readAnswer(code int, body []byte) ([]Series, error) {
	if code/100 != 2 {
		if code != http.StatusBadRequest && code != http.StatusUnprocessableEntity {
			return nil, statusError(code, body)
		}
		var e envelope // its data not read
		if err := json.Unmarshal(body, &struct {
			Status    *string       `json:"status"`
			ErrorType *v1.ErrorType `json:"errorType"`
			Error     *string       `json:"error"`
		}{&e.Status, &e.ErrorType, &e.Error}); err != nil {
			return nil, statusError(code, body)
		}
		if e.Status == "success" {
			return nil, &v1.Error{Type: v1.ErrBadResponse, Msg: "inconsistent body for response code"}
		}
		if e.ErrorType == "" {
			e.ErrorType = v1.ErrClient
		}
		if e.Error == "" {
			e.Error = fmt.Sprintf("client error: %d", code)
		}
		return nil, &v1.Error{Type: e.ErrorType, Msg: e.Error}
	}
	e, err := readEnvelope(body)
	if err != nil {
		return nil, &v1.Error{Type: v1.ErrBadResponse, Msg: err.Error()}
	}
	if e.Status == "error" {
		return nil, &v1.Error{Type: e.ErrorType, Msg: e.Error}
	}
	if e.Data == nil {
		return nil, &v1.Error{Type: v1.ErrBadResponse, Msg: "the answer holds no data"}
	}
	if e.Data.err != nil {
		return nil, e.Data.err
	}
	return e.Data.series, nil
}

// readEnvelope reads a successful answer as encoding/json would unmarshal it into an envelope
// (members matched case-insensitively, the last of a duplicate winning, null leaving a string
// as it was and making data nil, nothing after the object), in one pass: a grouped refresh's
// answer is tens of megabytes at 10,000 rollouts, and encoding/json's validation of it before
// the data was read, then its scan for the data's end, were a fifth of its decoding.
func readEnvelope(body []byte) (envelope, error) {
	r := jsonReader{b: body}
	e := envelope{Data: &resultData{}}
	str := func(into *string) bool {
		if r.null() {
			return true
		}
		v, ok := r.str()
		if ok {
			*into = v
		}
		return ok
	}
	ok := r.object(func(key string) bool {
		switch member(key, "status", "data", "errorType", "error") {
		case "status":
			return str(&e.Status)
		case "errorType":
			t := string(e.ErrorType)
			ok := str(&t)
			e.ErrorType = v1.ErrorType(t)
			return ok
		case "error":
			return str(&e.Error)
		case "data":
			if r.null() {
				e.Data = nil
				return true
			}
			e.Data = &resultData{}
			return e.Data.read(&r)
		}
		return r.skip()
	})
	if ok && r.skipSpace() != len(body) {
		ok = r.fail("data after the answer")
	}
	if !ok {
		return envelope{}, r.error()
	}
	return e, nil
}

// statusError is v1's error for an HTTP error without an API error in it.
func statusError(code int, body []byte) error {
	switch code / 100 {
	case 4:
		return &v1.Error{Type: v1.ErrClient, Msg: fmt.Sprintf("client error: %d", code), Detail: string(body)}
	case 5:
		return &v1.Error{Type: v1.ErrServer, Msg: fmt.Sprintf("server error: %d", code), Detail: string(body)}
	}
	return &v1.Error{Type: v1.ErrBadResponse, Msg: fmt.Sprintf("bad response code %d", code), Detail: string(body)}
}

// resultData decodes the answer's data: {"resultType": ..., "result": ...}, in either order.
// A result it cannot use (a string, an unknown type) is err, not a decoding error, as
// toSeries said.
type resultData struct {
	series []Series
	err    error
}

func (d *resultData) UnmarshalJSON(b []byte) error {
	r := jsonReader{b: b}
	if !d.read(&r) {
		return r.error()
	}
	return nil
}

// read reads the data object at r. Its result is decoded where it stands when its type came
// first (as Prometheus writes it), and otherwise (or when a later type overrides the first)
// read again once the object's end is reached.
func (d *resultData) read(r *jsonReader) bool {
	var kind, decodedAs string
	var raw []byte
	rawAt := 0 // raw's offset in r.b
	if !r.object(func(key string) bool {
		switch member(key, "resultType", "result") {
		case "resultType":
			var ok bool
			kind, ok = r.str()
			return ok
		case "result":
			start := r.skipSpace()
			decodedAs, rawAt = "", start
			if r.i < len(r.b) && r.b[r.i] != 'n' {
				if series, ok, known := decodeResult(kind, r); known {
					if !ok {
						return false
					}
					d.series, decodedAs = series, kind
					raw = r.b[start:r.i]
					return true
				}
			}
			if !r.skip() {
				return false
			}
			raw = r.b[start:r.i]
			return true
		}
		return r.skip()
	}) {
		return false
	}
	if decodedAs != "" && decodedAs == kind {
		return true
	}
	d.series = nil
	rr := jsonReader{b: raw}
	if rr.skipSpace(); raw == nil || string(raw[rr.i:]) == "null" {
		// No result (null, or none at all): v1 read it as an empty vector or matrix.
		switch kind {
		case "matrix", "vector":
			d.series = []Series{}
			return true
		case "scalar":
			return true // no value (v1 made it 0 at time 0)
		}
		raw = []byte("null")
		rr = jsonReader{b: raw}
	}
	series, ok, known := decodeResult(kind, &rr)
	if !known {
		d.err = fmt.Errorf("%w: result is a %s, want an instant vector, a range vector or a scalar", ErrBadQuery, kind)
		return true
	}
	if !ok {
		r.i, r.bad = rawAt+rr.i, rr.bad
		return false
	}
	d.series = series
	return true
}

// decodeResult decodes a result of the given type at r; known is false for a type it does not
// decode (nothing is read then).
func decodeResult(kind string, r *jsonReader) (series []Series, ok, known bool) {
	switch kind {
	case "matrix":
		series, ok = r.matrix()
	case "vector":
		series, ok = r.vector()
	case "scalar":
		var v float64
		if _, v, ok = r.pair(); ok && !math.IsNaN(v) {
			series = []Series{{Labels: map[string]string{}, Value: v}}
		}
	default:
		return nil, false, false
	}
	return series, ok, true
}

// member is the one of names that key names, matched as encoding/json matches a struct's
// fields (case-insensitively), or "".
func member(key string, names ...string) string {
	for _, n := range names {
		if key == n || strings.EqualFold(key, n) {
			return n
		}
	}
	return ""
}

// jsonReader reads the few shapes of Prometheus's answers from JSON: it checks what it reads,
// and fails rather than guess (what it skips it checks for its structure, not for each
// number's form).
type jsonReader struct {
	b        []byte
	i        int
	bad      string
	interned map[string]string // by their bytes as written (see str)
}

func (r *jsonReader) error() error {
	if r.bad == "" {
		r.bad = "unexpected input"
	}
	return fmt.Errorf("decode query result at offset %d: %s", r.i, r.bad)
}

func (r *jsonReader) fail(why string) bool {
	if r.bad == "" {
		r.bad = why
	}
	return false
}

func (r *jsonReader) skipSpace() int {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return r.i
		}
	}
	return r.i
}

// null consumes a null, if it is next.
func (r *jsonReader) null() bool {
	r.skipSpace()
	if strings.HasPrefix(string(r.b[r.i:min(len(r.b), r.i+4)]), "null") {
		r.i += 4
		return true
	}
	return false
}

// next skips space and consumes c, if it is next.
func (r *jsonReader) next(c byte) bool {
	r.skipSpace()
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

func (r *jsonReader) literal(s string) bool {
	r.skipSpace()
	if !strings.HasPrefix(string(r.b[r.i:min(len(r.b), r.i+len(s))]), s) {
		return r.fail("want " + s)
	}
	r.i += len(s)
	return true
}

// object calls member for each key, with the reader at its value, which member consumes.
func (r *jsonReader) object(member func(key string) bool) bool {
	if !r.next('{') {
		return r.fail("want an object")
	}
	if r.next('}') {
		return true
	}
	for {
		key, ok := r.str()
		if !ok || !r.next(':') || !member(key) {
			return r.fail("bad object member")
		}
		if r.next(',') {
			continue
		}
		if r.next('}') {
			return true
		}
		return r.fail("want , or }")
	}
}

// array calls elem for each element, with the reader at it.
func (r *jsonReader) array(elem func() bool) bool {
	if !r.next('[') {
		return r.fail("want an array")
	}
	if r.next(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if r.next(',') {
			continue
		}
		if r.next(']') {
			return true
		}
		return r.fail("want , or ]")
	}
}

// str reads a string. The strings an answer repeats (label names, and the values many series
// share: a job, a version) are made once per answer (maxInterned at most).
func (r *jsonReader) str() (string, bool) {
	b, ok := r.raw()
	if !ok {
		return "", false
	}
	if s, ok := r.interned[string(b)]; ok {
		return s, true
	}
	s := validUTF8(b)
	if len(r.interned) < maxInterned && len(s) == len(b) { // valid UTF-8: s is b
		if r.interned == nil {
			r.interned = make(map[string]string, 64)
		}
		r.interned[s] = s
	}
	return s, true
}

// maxInterned bounds the strings a reader keeps for reuse.
const maxInterned = 1 << 16

// raw reads a string's bytes, as written between its quotes (a slice of the input) when it
// holds no escape, or else unescaped; not checked for UTF-8.
func (r *jsonReader) raw() ([]byte, bool) {
	if !r.next('"') {
		return nil, r.fail("want a string")
	}
	start := r.i
	for r.i < len(r.b) {
		switch c := r.b[r.i]; {
		case c == '"':
			b := r.b[start:r.i]
			r.i++
			return b, true
		case c == '\\':
			return r.escaped(start)
		case c < 0x20:
			return nil, r.fail("control character in a string")
		default:
			r.i++
		}
	}
	return nil, r.fail("unterminated string")
}

// escaped reads the rest of a string that holds escapes, from start (after its quote).
func (r *jsonReader) escaped(start int) ([]byte, bool) {
	out := append([]byte(nil), r.b[start:r.i]...)
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			r.i++
			return out, true
		case c != '\\':
			out = append(out, c)
			r.i++
			continue
		}
		if r.i+1 >= len(r.b) {
			break
		}
		r.i += 2
		switch e := r.b[r.i-1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			ru, ok := r.hex4()
			if !ok {
				return nil, false
			}
			if utf16.IsSurrogate(ru) {
				lo := rune(utf8.RuneError)
				if r.i+1 < len(r.b) && r.b[r.i] == '\\' && r.b[r.i+1] == 'u' {
					save := r.i
					r.i += 2
					if l, ok := r.hex4(); ok && utf16.DecodeRune(ru, l) != utf8.RuneError {
						lo = l
					} else {
						r.i = save
					}
				}
				ru = utf16.DecodeRune(ru, lo)
			}
			out = utf8.AppendRune(out, ru)
		default:
			return nil, r.fail("bad escape in a string")
		}
	}
	return nil, r.fail("unterminated string")
}

// validUTF8 is b as a string, each byte that is not valid UTF-8 replaced by U+FFFD, as
// encoding/json does.
func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		ru, n := utf8.DecodeRune(b)
		if ru == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return string(out)
}

func (r *jsonReader) hex4() (rune, bool) {
	if r.i+4 > len(r.b) {
		return 0, r.fail("short \\u escape")
	}
	v, err := strconv.ParseUint(string(r.b[r.i:r.i+4]), 16, 16)
	if err != nil {
		return 0, r.fail("bad \\u escape")
	}
	r.i += 4
	return rune(v), true
}

// number reads a number's text.
func (r *jsonReader) number() ([]byte, bool) {
	start := r.skipSpace()
	for r.i < len(r.b) {
		switch c := r.b[r.i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			r.i++
			continue
		}
		break
	}
	if r.i == start {
		return nil, r.fail("want a number")
	}
	return r.b[start:r.i], true
}

// skip skips one value.
func (r *jsonReader) skip() bool {
	r.skipSpace()
	if r.i >= len(r.b) {
		return r.fail("want a value")
	}
	switch r.b[r.i] {
	case '{':
		return r.object(func(string) bool { return r.skip() })
	case '[':
		return r.array(r.skip)
	case '"':
		_, ok := r.str()
		return ok
	case 't':
		return r.literal("true")
	case 'f':
		return r.literal("false")
	case 'n':
		return r.literal("null")
	}
	_, ok := r.number()
	return ok
}

// pair reads a sample [time, "value"]: the time in Unix seconds with up to millisecond
// decimals (model.Time's precision), the value as Prometheus writes it ("NaN", "+Inf"...).
func (r *jsonReader) pair() (ms int64, v float64, ok bool) {
	if !r.next('[') {
		return 0, 0, r.fail("want a sample")
	}
	num, ok := r.number()
	if !ok {
		return 0, 0, false
	}
	if ms, ok = millis(num); !ok {
		return 0, 0, r.fail("bad sample time")
	}
	if !r.next(',') {
		return 0, 0, r.fail("want a sample value")
	}
	s, ok := r.raw()
	if !ok {
		return 0, 0, false
	}
	v, err := strconv.ParseFloat(string(s), 64) // not kept: no copy of s is made
	if err != nil {
		return 0, 0, r.fail("bad sample value")
	}
	for r.next(',') { // more than a pair: the rest is ignored, as v1 did
		if !r.skip() {
			return 0, 0, false
		}
	}
	if !r.next(']') {
		return 0, 0, r.fail("want ] after a sample")
	}
	return ms, v, true
}

// millis is a time in seconds, written with up to three decimals, in milliseconds exactly
// (as model.Time reads it); more decimals are cut.
func millis(num []byte) (int64, bool) {
	s := string(num)
	whole, frac, _ := strings.Cut(s, ".")
	if strings.ContainsAny(s, "eE") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, false
		}
		return int64(math.Round(f * 1000)), true
	}
	sec, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, false
	}
	frac = (frac + "000")[:3]
	ms, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return 0, false
	}
	if strings.HasPrefix(whole, "-") {
		ms = -ms
	}
	return sec*1000 + ms, true
}

// metric reads a series' labels.
func (r *jsonReader) metric() (map[string]string, bool) {
	labels := make(map[string]string, 8)
	ok := r.object(func(name string) bool {
		v, ok := r.str()
		labels[name] = v
		return ok
	})
	return labels, ok
}

// results reads an array of series: each one's labels, and under key what read takes into it
// (native histograms' samples, under other keys, are not read).
func (r *jsonReader) results(key string, read func(*Series) bool) ([]Series, bool) {
	out := []Series{}
	ok := r.array(func() bool {
		s := Series{}
		ok := r.object(func(k string) bool {
			switch member(k, "metric", key) {
			case "metric":
				var ok bool
				s.Labels, ok = r.metric()
				return ok
			case key:
				return read(&s)
			}
			return r.skip()
		})
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		out = append(out, s)
		return ok
	})
	return out, ok
}

func (r *jsonReader) matrix() ([]Series, bool) {
	var scratch []Sample // each series' samples, copied out at their length
	out, ok := r.results("values", func(s *Series) bool {
		scratch = scratch[:0]
		ok := r.array(func() bool {
			ms, v, ok := r.pair()
			scratch = append(scratch, Sample{T: ms, V: v})
			return ok
		})
		s.Samples = append(s.Samples, scratch...)
		return ok
	})
	for i := range out {
		if out[i].Samples == nil {
			out[i].Samples = []Sample{}
		}
	}
	return out, ok
}

func (r *jsonReader) vector() ([]Series, bool) {
	return r.results("value", func(s *Series) bool {
		_, v, ok := r.pair()
		s.Value = v
		return ok
	})
}
