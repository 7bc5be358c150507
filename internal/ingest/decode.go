package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"mime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/telemetry"
)

// Limits of the event fields Decode accepts (CONTRACT.md section 3).
const (
	maxIDLen         = 256
	maxSourceLen     = 1024
	maxNamespaceLen  = 63
	maxNameLen       = 253
	maxRevisionLen   = 128
	maxAnalysisLen   = 253
	maxMapEntries    = 64
	maxMapKeyLen     = 128
	maxMapValueLen   = 1024
	maxReasonLen     = 1024
	maxWeight        = 100
	maxStep          = math.MaxInt32
	structuredCEType = "application/cloudevents+json"
	jsonContentType  = "application/json"
)

// The reasons an event is dead-lettered for: the bounded values of the reason label of
// analyzerd_dead_letters_total.
const (
	reasonTooLarge      = "too_large"
	reasonMalformed     = "malformed"
	reasonNotCloudEvent = "not_cloudevent"
	reasonUnknownType   = "unknown_type"
	reasonInvalidData   = "invalid_data"
	reasonRejected      = "rejected"
	reasonGaveUp        = "gave_up"
)

// typeUnknown is the type label of events whose type is missing or not one of ours.
const typeUnknown = "unknown"

// decodeError is why Decode rejected an event. It wraps rollout.ErrInvalid, and carries the
// bounded reason and the event type for metrics.
type decodeError struct {
	reason string
	typ    string
	msg    string
}

func (e *decodeError) Error() string { return e.msg }
func (e *decodeError) Unwrap() error { return rollout.ErrInvalid }

// Decode decodes and validates one rollout event: a CloudEvents 1.0 event in structured JSON
// mode (CONTRACT.md sections 2 and 3). storedAt, the time JetStream stored the message, is the
// event's time when it carries none. An event larger than maxBytes (when positive) is rejected
// before it is parsed. Every error wraps rollout.ErrInvalid and says in one line what is wrong,
// naming the field. Unknown fields are ignored, for forward compatibility.
func Decode(data []byte, header nats.Header, storedAt time.Time, maxBytes int) (rollout.Event, error) {
	if maxBytes > 0 && len(data) > maxBytes {
		return rollout.Event{}, &decodeError{reason: reasonTooLarge, typ: typeUnknown,
			msg: fmt.Sprintf("event: %d bytes is over the limit of %d", len(data), maxBytes)}
	}
	notCE := func(format string, args ...any) error {
		return &decodeError{reason: reasonNotCloudEvent, typ: typeUnknown, msg: fmt.Sprintf(format, args...)}
	}
	binaryMode := hasBinaryModeHeaders(header)
	binaryErr := func() error {
		return notCE("binary-mode CloudEvents (ce-* headers) are not supported: publish the whole event as a structured-mode JSON body with Content-Type %s", structuredCEType)
	}

	if ct, ok := headerValue(header, "Content-Type"); ok {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != structuredCEType {
			if binaryMode {
				return rollout.Event{}, binaryErr()
			}
			return rollout.Event{}, notCE("Content-Type header: must be %s, got %s", structuredCEType, quoteAtMost(ct, maxEchoLen))
		}
	}

	body := bytes.TrimSpace(data)
	if len(body) == 0 || body[0] != '{' {
		switch {
		case len(body) > 0 && !json.Valid(body):
			return rollout.Event{}, &decodeError{reason: reasonMalformed, typ: typeUnknown, msg: "event: not valid JSON: " + syntaxError(body)}
		case binaryMode:
			return rollout.Event{}, binaryErr()
		case len(body) == 0:
			return rollout.Event{}, &decodeError{reason: reasonMalformed, typ: typeUnknown, msg: "event: empty body, want a JSON object"}
		default:
			return rollout.Event{}, &decodeError{reason: reasonMalformed, typ: typeUnknown, msg: "event: must be a JSON object, got " + jsonKind(body)}
		}
	}
	var attrs map[string]json.RawMessage
	if err := json.Unmarshal(body, &attrs); err != nil {
		return rollout.Event{}, &decodeError{reason: reasonMalformed, typ: typeUnknown, msg: "event: not valid JSON: " + syntaxError(body)}
	}
	env := object{m: attrs, reason: reasonNotCloudEvent, typ: typeUnknown}

	if _, ok := attrs["specversion"]; !ok && binaryMode {
		return rollout.Event{}, binaryErr()
	}
	spec, _, err := env.str("specversion", true, strOpts{min: 1, max: 16})
	if err != nil {
		return rollout.Event{}, err
	}
	if spec != "1.0" {
		return rollout.Event{}, env.fail("specversion", "must be %q (CloudEvents 1.0), got %q", "1.0", spec)
	}

	var ev rollout.Event
	if ev.ID, _, err = env.str("id", true, strOpts{min: 1, max: maxIDLen}); err != nil {
		return rollout.Event{}, err
	}
	if ev.Source, _, err = env.str("source", true, strOpts{min: 1, max: maxSourceLen}); err != nil {
		return rollout.Event{}, err
	}
	typ, _, err := env.str("type", true, strOpts{min: 1, max: 256})
	if err != nil {
		return rollout.Event{}, err
	}
	ev.Type = rollout.EventType(typ)
	if !ev.Type.Known() {
		return rollout.Event{}, &decodeError{reason: reasonUnknownType, typ: typeUnknown,
			msg: fmt.Sprintf("type: unknown event type %q, want one of %s, %s, %s, %s",
				typ, rollout.EventStarted, rollout.EventStep, rollout.EventCompleted, rollout.EventAborted)}
	}
	env.typ = typ

	ts, hasTime, err := env.str("time", false, strOpts{min: 1, max: 64})
	if err != nil {
		return rollout.Event{}, err
	}
	if hasTime {
		t, perr := time.Parse(time.RFC3339Nano, ts)
		if perr != nil {
			return rollout.Event{}, env.fail("time", "must be an RFC 3339 timestamp, got %q", ts)
		}
		ev.Time = t.UTC()
	} else {
		ev.Time = storedAt.UTC()
	}

	dct, hasDCT, err := env.str("datacontenttype", false, strOpts{min: 1, max: 256})
	if err != nil {
		return rollout.Event{}, err
	}
	if hasDCT {
		if mt, _, perr := mime.ParseMediaType(dct); perr != nil || mt != jsonContentType {
			return rollout.Event{}, env.fail("datacontenttype", "must be %s or absent, got %q", jsonContentType, dct)
		}
	}

	env.reason = reasonInvalidData
	if _, ok := attrs["data_base64"]; ok {
		return rollout.Event{}, env.fail("data_base64", "binary data is not supported: data must be a JSON object")
	}
	payload, _, err := env.obj("data", true)
	if err != nil {
		return rollout.Event{}, err
	}
	if err := decodeData(payload, &ev); err != nil {
		return rollout.Event{}, err
	}

	// A TextMapCarrier finds the W3C keys whether the producer wrote them in lower case (as
	// the contract says) or canonicalised them, as Go's HTTP helpers do.
	carrier := telemetry.HeaderCarrier(header)
	ev.TraceParent = carrier.Get("traceparent")
	ev.TraceState = carrier.Get("tracestate")
	return ev, nil
}

// decodeData reads the data of an event whose type is known into ev.
func decodeData(d object, ev *rollout.Event) error {
	ref, _, err := d.obj("rollout", true)
	if err != nil {
		return err
	}
	if ev.Rollout.Namespace, _, err = ref.str("namespace", true, strOpts{min: 1, max: maxNamespaceLen}); err != nil {
		return err
	}
	if ev.Rollout.Name, _, err = ref.str("name", true, strOpts{min: 1, max: maxNameLen}); err != nil {
		return err
	}
	if ev.Revision, _, err = d.str("revision", true, strOpts{min: 1, max: maxRevisionLen}); err != nil {
		return err
	}

	switch ev.Type {
	case rollout.EventStarted:
		if ev.Analysis, _, err = d.str("analysis", true, strOpts{min: 1, max: maxAnalysisLen}); err != nil {
			return err
		}
		if ev.Args, err = d.stringMap("args"); err != nil {
			return err
		}
		if ev.Canary, err = d.stringMap("canary"); err != nil {
			return err
		}
		if ev.Stable, err = d.stringMap("stable"); err != nil {
			return err
		}
		if ev.Step, err = d.integer("step", false, 0, maxStep); err != nil {
			return err
		}
		if ev.Weight, err = d.integer("weight", false, 0, maxWeight); err != nil {
			return err
		}
		if ev.StableRevision, _, err = d.str("stableRevision", false, strOpts{max: maxRevisionLen}); err != nil {
			return err
		}
	case rollout.EventStep:
		if ev.Step, err = d.integer("step", true, 0, maxStep); err != nil {
			return err
		}
		if ev.Weight, err = d.integer("weight", true, 0, maxWeight); err != nil {
			return err
		}
	case rollout.EventAborted:
		// A free-text reason from a controller may span lines; it is still bounded.
		if ev.Reason, _, err = d.str("reason", false, strOpts{max: maxReasonLen, allowSpaceControls: true}); err != nil {
			return err
		}
	case rollout.EventCompleted:
	}
	return nil
}

// object is a JSON object being decoded, with the path of its fields for errors.
type object struct {
	path   string
	m      map[string]json.RawMessage
	reason string
	typ    string
}

func (o object) field(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

func (o object) fail(key, format string, args ...any) error {
	return &decodeError{reason: o.reason, typ: o.typ, msg: o.field(key) + ": " + fmt.Sprintf(format, args...)}
}

// get returns the raw value of key; present is false when it is absent or null.
func (o object) get(key string, required bool) (raw json.RawMessage, present bool, err error) {
	raw, ok := o.m[key]
	if !ok {
		if required {
			return nil, false, o.fail(key, "required")
		}
		return nil, false, nil
	}
	if jsonKind(raw) == "null" {
		if required {
			return nil, false, o.fail(key, "required, got null")
		}
		return nil, false, nil
	}
	return raw, true, nil
}

// strOpts are the rules for a string field. Lengths count characters (runes).
type strOpts struct {
	min, max           int
	allowSpaceControls bool
}

func (o object) str(key string, required bool, so strOpts) (string, bool, error) {
	raw, ok, err := o.get(key, required)
	if err != nil || !ok {
		return "", false, err
	}
	s, problem := parseString(raw, so)
	if problem != "" {
		return "", false, o.fail(key, "%s", problem)
	}
	return s, true, nil
}

func (o object) obj(key string, required bool) (object, bool, error) {
	raw, ok, err := o.get(key, required)
	if err != nil || !ok {
		return object{}, false, err
	}
	if k := jsonKind(raw); k != "object" {
		return object{}, false, o.fail(key, "must be a JSON object, got %s", k)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return object{}, false, o.fail(key, "must be a JSON object: %v", err)
	}
	return object{path: o.field(key), m: m, reason: o.reason, typ: o.typ}, true, nil
}

func (o object) integer(key string, required bool, min, max int) (int, error) {
	raw, ok, err := o.get(key, required)
	if err != nil || !ok {
		return 0, err
	}
	if k := jsonKind(raw); k != "number" {
		return 0, o.fail(key, "must be an integer, got %s", k)
	}
	n, perr := strconv.ParseInt(string(raw), 10, 64)
	if perr != nil {
		if strings.ContainsAny(string(raw), ".eE") {
			return 0, o.fail(key, "must be an integer, got %s", raw)
		}
		n = math.MaxInt64 // out of int64's range: reported as out of bounds below
		if strings.HasPrefix(string(raw), "-") {
			n = math.MinInt64
		}
	}
	if n < int64(min) || n > int64(max) {
		if max == maxStep {
			return 0, o.fail(key, "must be an integer >= %d, got %s", min, raw)
		}
		return 0, o.fail(key, "must be within %d-%d, got %s", min, max, raw)
	}
	return int(n), nil
}

// stringMap reads an optional object of string values, such as args: keys are identifiers.
func (o object) stringMap(key string) (map[string]string, error) {
	raw, ok, err := o.get(key, false)
	if err != nil || !ok {
		return nil, err
	}
	if k := jsonKind(raw); k != "object" {
		return nil, o.fail(key, "must be an object of strings, got %s", k)
	}
	m := object{path: o.field(key), reason: o.reason, typ: o.typ}
	if err := json.Unmarshal(raw, &m.m); err != nil {
		return nil, o.fail(key, "must be an object of strings: %v", err)
	}
	if len(m.m) > maxMapEntries {
		return nil, o.fail(key, "must have at most %d entries, got %d", maxMapEntries, len(m.m))
	}
	keys := make([]string, 0, len(m.m))
	for k := range m.m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first problem reported does not depend on map order
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if utf8.RuneCountInString(k) > maxMapKeyLen {
			return nil, o.fail(key, "key %.40q...: must be at most %d characters, got %d", k, maxMapKeyLen, utf8.RuneCountInString(k))
		}
		if !rollout.IsIdentifier(k) {
			return nil, o.fail(key, "key %q: must be a name of ASCII letters, digits and underscores, not starting with a digit", k)
		}
		raw := m.m[k]
		if jsonKind(raw) == "null" {
			return nil, m.fail(k, "must be a string, got null")
		}
		v, problem := parseString(raw, strOpts{max: maxMapValueLen})
		if problem != "" {
			return nil, m.fail(k, "%s", problem)
		}
		out[k] = v
	}
	return out, nil
}

// parseString decodes a JSON string value and checks it against so; problem says what is
// wrong, or is empty.
func parseString(raw json.RawMessage, so strOpts) (s, problem string) {
	if k := jsonKind(raw); k != "string" {
		return "", "must be a string, got " + k
	}
	if !utf8.Valid(raw) {
		return "", "must be valid UTF-8"
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", "must be a string: " + err.Error()
	}
	// encoding/json turns invalid \u escapes (lone surrogates) into U+FFFD silently.
	if strings.ContainsRune(s, utf8.RuneError) && !bytes.ContainsRune(raw, utf8.RuneError) &&
		!bytes.Contains(bytes.ToLower(raw), []byte(`\ufffd`)) {
		return "", "must be valid UTF-8 (it has an invalid \\u escape)"
	}
	for i, r := range s {
		if unicode.IsControl(r) && !(so.allowSpaceControls && (r == '\n' || r == '\r' || r == '\t')) {
			return "", fmt.Sprintf("must not contain control characters, found %U at byte %d", r, i)
		}
	}
	n := utf8.RuneCountInString(s)
	if n < so.min || n > so.max {
		if so.min == 0 {
			return "", fmt.Sprintf("must be at most %d characters, got %d", so.max, n)
		}
		return "", fmt.Sprintf("must be %d-%d characters, got %d", so.min, so.max, n)
	}
	return s, ""
}

// maxEchoLen is how many characters of a value that is not length-checked before it is
// rejected (a header) an error quotes: a reason never echoes a large input.
const maxEchoLen = 64

// quoteAtMost quotes s as %q does, cut to its first max characters followed by "..." when it
// is longer.
func quoteAtMost(s string, max int) string {
	i := 0
	for n := 0; n < max && i < len(s); n++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	if i == len(s) {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:i]) + "..."
}

// jsonKind names the kind of a valid JSON value from its first byte.
func jsonKind(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// syntaxError describes why body is not valid JSON, with the offset.
func syntaxError(body []byte) string {
	var v any
	err := json.Unmarshal(body, &v)
	if se, ok := err.(*json.SyntaxError); ok {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	if err != nil {
		return err.Error()
	}
	return "unexpected content"
}

// headerValue finds a header regardless of the case of its name.
func headerValue(h nats.Header, name string) (string, bool) {
	if v, ok := h[name]; ok && len(v) > 0 {
		return v[0], true
	}
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0], true
		}
	}
	return "", false
}

// hasBinaryModeHeaders reports whether h carries CloudEvents binary-mode attributes.
func hasBinaryModeHeaders(h nats.Header) bool {
	for k := range h {
		if len(k) > 3 && strings.EqualFold(k[:3], "ce-") {
			return true
		}
	}
	return false
}

// ClampTime bounds an event's time to within maxSkew of storedAt, the time the stream stored
// it. analyzerd places baselines and step windows by the event's time; a controller's clock
// that is wrong by hours would otherwise make a step look hours old (meeting its minimum
// duration at once, over a window mostly before the step) or not yet begun. A time beyond
// the skew is moved to the nearest edge (storedAt - maxSkew or storedAt + maxSkew), not to
// storedAt itself, so that events from one clock keep their order: a clamped start must not
// land after a step that was not clamped. It reports whether it moved the time.
func ClampTime(ev rollout.Event, storedAt time.Time, maxSkew time.Duration) (rollout.Event, bool) {
	switch lo, hi := storedAt.Add(-maxSkew), storedAt.Add(maxSkew); {
	case ev.Time.Before(lo):
		ev.Time = lo.UTC()
	case ev.Time.After(hi):
		ev.Time = hi.UTC()
	default:
		return ev, false
	}
	return ev, true
}
