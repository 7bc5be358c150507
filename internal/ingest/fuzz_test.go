package ingest

import (
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// maxDecodeErrorLen bounds the message of a Decode error, whatever the size of the input: a
// reason quotes at most a value whose length was checked (a type, a time, a media type, an
// args key) or the first maxEchoLen characters of a header, never the payload. The
// dead-letter header is cut shorter still (maxErrorHeader).
const maxDecodeErrorLen = 4096

// errorField is how every Decode error begins: the field, attribute or header it is about.
var errorField = regexp.MustCompile(`^(?:(?:event|Content-Type header|specversion|id|source|type|time|datacontenttype|data_base64|data(?:\.[A-Za-z_][A-Za-z0-9_]*)*): |binary-mode CloudEvents \(ce-\* headers\) are not supported: )`)

// FuzzDecode feeds Decode arbitrary bodies, Content-Type headers, binary-mode headers and size
// limits. Decode must never panic, and either
//   - reject the event with an error wrapping rollout.ErrInvalid, carrying one of the bounded
//     dead-letter reasons, in one printable line that begins with the field it is about and
//     is at most maxDecodeErrorLen bytes long, however large the input; or
//   - return an event that keeps every rule of CONTRACT.md section 3 (requireValidEvent) and
//     that survives a round trip: encoded again as a CloudEvent, it decodes to itself.
//
// Its seeds are the table tests' events and testdata/fuzz/FuzzDecode, which holds one or more
// inputs for each hostile class (oversized events, unknown types, missing and mistyped
// fields, huge maps, odd Unicode, injection attempts in args). Under plain `go test` it runs
// the seeds only.
func FuzzDecode(f *testing.F) {
	for _, tc := range decodeRejectCases(f) {
		body, header, max := tc.input(f)
		ct, _ := headerValue(header, "Content-Type")
		f.Add(body, ct, hasBinaryModeHeaders(header), max)
	}
	for _, tc := range decodeAcceptCases(f) {
		ct, _ := headerValue(tc.header, "Content-Type")
		f.Add(tc.bytes(f), ct, false, DefaultMaxEventBytes)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string, binary bool, maxBytes int) {
		header := nats.Header{}
		if contentType != "" {
			header["Content-Type"] = []string{contentType}
		}
		if binary {
			header["ce-specversion"] = []string{"1.0"}
		}
		ev, err := Decode(body, header, storedAt, maxBytes)
		if err != nil {
			require.Zero(t, ev)
			requireDecodeError(t, err)
			return
		}
		requireValidEvent(t, ev)
		again, err := Decode(encodeEvent(t, ev), nil, storedAt.Add(time.Hour), 0)
		require.NoError(t, err, "the decoded event, encoded again: %+v", ev)
		require.Equal(t, ev, again, "the decoded event, encoded again")
	})
}

// requireDecodeError checks what a dead letter's reason will be made of.
func requireDecodeError(t *testing.T, err error) {
	t.Helper()
	require.ErrorIs(t, err, rollout.ErrInvalid)
	var de *decodeError
	require.True(t, errors.As(err, &de), "%T is not a *decodeError", err)
	require.Contains(t, []string{reasonTooLarge, reasonMalformed, reasonNotCloudEvent, reasonUnknownType, reasonInvalidData}, de.reason)
	require.True(t, de.typ == typeUnknown || rollout.EventType(de.typ).Known(), "type label %q", de.typ)

	msg := err.Error()
	require.LessOrEqual(t, len(msg), maxDecodeErrorLen, "an error echoes the input: %.200q...", msg)
	require.True(t, utf8.ValidString(msg), "error %q is not UTF-8", msg)
	for _, r := range msg {
		require.False(t, unicode.IsControl(r), "error %q holds control character %U: not one line", msg, r)
	}
	require.Regexp(t, errorField, msg, "the error names no field")
}

// requireValidEvent checks every rule the decoder enforces on an event it accepts.
func requireValidEvent(t *testing.T, ev rollout.Event) {
	t.Helper()
	text := func(field, s string, min, max int, spaceControls bool) {
		t.Helper()
		require.True(t, utf8.ValidString(s), "%s %q is not UTF-8", field, s)
		n := utf8.RuneCountInString(s)
		require.True(t, n >= min && n <= max, "%s %q has %d characters, want %d-%d", field, s, n, min, max)
		for _, r := range s {
			if spaceControls && (r == '\n' || r == '\r' || r == '\t') {
				continue
			}
			require.False(t, unicode.IsControl(r), "%s %q holds control character %U", field, s, r)
		}
	}
	stringMap := func(field string, m map[string]string) {
		t.Helper()
		require.LessOrEqual(t, len(m), maxMapEntries, field)
		for k, v := range m {
			require.True(t, rollout.IsIdentifier(k), "%s key %q", field, k)
			require.LessOrEqual(t, len(k), maxMapKeyLen, "%s key %q", field, k)
			text(field+"."+k, v, 0, maxMapValueLen, false)
		}
	}

	require.True(t, ev.Type.Known(), "type %q", ev.Type)
	text("id", ev.ID, 1, maxIDLen, false)
	text("source", ev.Source, 1, maxSourceLen, false)
	require.False(t, ev.Time.IsZero(), "time")
	require.Equal(t, time.UTC, ev.Time.Location(), "time %s is not in UTC", ev.Time)
	text("data.rollout.namespace", ev.Rollout.Namespace, 1, maxNamespaceLen, false)
	text("data.rollout.name", ev.Rollout.Name, 1, maxNameLen, false)
	text("data.revision", ev.Revision, 1, maxRevisionLen, false)
	require.Empty(t, ev.TraceParent, "no traceparent header was sent")
	require.Empty(t, ev.TraceState, "no tracestate header was sent")

	switch ev.Type {
	case rollout.EventStarted:
		text("data.analysis", ev.Analysis, 1, maxAnalysisLen, false)
		stringMap("data.args", ev.Args)
		stringMap("data.canary", ev.Canary)
		stringMap("data.stable", ev.Stable)
		text("data.stableRevision", ev.StableRevision, 0, maxRevisionLen, false)
	case rollout.EventAborted:
		text("data.reason", ev.Reason, 0, maxReasonLen, true)
	}
	if ev.Type == rollout.EventStarted || ev.Type == rollout.EventStep {
		require.True(t, ev.Step >= 0 && ev.Step <= math.MaxInt32, "step %d", ev.Step)
		require.True(t, ev.Weight >= 0 && ev.Weight <= maxWeight, "weight %d", ev.Weight)
	} else {
		require.Zero(t, ev.Step, "step of a %s", ev.Type)
		require.Zero(t, ev.Weight, "weight of a %s", ev.Type)
	}
	if ev.Type != rollout.EventStarted {
		require.Empty(t, ev.Analysis, "analysis of a %s", ev.Type)
		require.Nil(t, ev.Args, "args of a %s", ev.Type)
		require.Nil(t, ev.Canary, "canary of a %s", ev.Type)
		require.Nil(t, ev.Stable, "stable of a %s", ev.Type)
		require.Empty(t, ev.StableRevision, "stableRevision of a %s", ev.Type)
	}
	if ev.Type != rollout.EventAborted {
		require.Empty(t, ev.Reason, "reason of a %s", ev.Type)
	}
}

// encodeEvent is ev as a controller following the contract would publish it.
func encodeEvent(t *testing.T, ev rollout.Event) []byte {
	t.Helper()
	data := map[string]any{
		"rollout":  map[string]any{"namespace": ev.Rollout.Namespace, "name": ev.Rollout.Name},
		"revision": ev.Revision,
	}
	switch ev.Type {
	case rollout.EventStarted:
		data["analysis"] = ev.Analysis
		for name, m := range map[string]map[string]string{"args": ev.Args, "canary": ev.Canary, "stable": ev.Stable} {
			if m != nil {
				data[name] = m
			}
		}
		data["step"], data["weight"] = ev.Step, ev.Weight
		if ev.StableRevision != "" {
			data["stableRevision"] = ev.StableRevision
		}
	case rollout.EventStep:
		data["step"], data["weight"] = ev.Step, ev.Weight
	case rollout.EventAborted:
		if ev.Reason != "" {
			data["reason"] = ev.Reason
		}
	}
	// RFC 3339 years are 0000-9999: a time given as 0000-01-01T00:00:00+01:00 is in the
	// year -1 in UTC, and only an offset can write it again.
	at := ev.Time
	switch {
	case at.Year() < 0:
		at = at.In(time.FixedZone("", 23*3600+59*60))
	case at.Year() > 9999:
		at = at.In(time.FixedZone("", -(23*3600 + 59*60)))
	}
	body, err := json.Marshal(map[string]any{
		"specversion": "1.0", "id": ev.ID, "source": ev.Source, "type": ev.Type,
		"time": at.Format(time.RFC3339Nano), "datacontenttype": "application/json", "data": data,
	})
	require.NoError(t, err)
	return body
}

// TestDecodeErrorsNameTheirField checks the fuzz test's own oracle against the table: every
// error the table expects matches errorField, so that a fuzz failure on it means a new kind
// of message, not a stale pattern.
func TestDecodeErrorsNameTheirField(t *testing.T) {
	for _, tc := range decodeRejectCases(t) {
		body, header, max := tc.input(t)
		_, err := Decode(body, header, storedAt, max)
		require.Error(t, err, tc.name)
		require.Regexp(t, errorField, err.Error(), tc.name)
	}
}
