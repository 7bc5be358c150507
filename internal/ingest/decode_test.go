package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

var storedAt = time.Date(2026, 11, 25, 14, 5, 0, 0, time.UTC)

// event is a JSON object under construction; set and del take dotted paths.
type event map[string]any

func startedEvent() event {
	return event{
		"specversion":     "1.0",
		"id":              "ev-1",
		"source":          "argo-rollouts/prod",
		"type":            "rollout.started",
		"time":            "2026-11-25T14:03:10.120Z",
		"datacontenttype": "application/json",
		"data": map[string]any{
			"rollout":        map[string]any{"namespace": "prod", "name": "checkout"},
			"revision":       "v2.3.0",
			"analysis":       "http-golden-signals",
			"args":           map[string]any{"service": "checkout"},
			"canary":         map[string]any{"version": "v2.3.0"},
			"stable":         map[string]any{"version": "v2.2.0"},
			"step":           1,
			"weight":         10,
			"stableRevision": "v2.2.0",
		},
	}
}

func stepEvent() event {
	return event{
		"specversion": "1.0", "id": "ev-2", "source": "ctl", "type": "rollout.step",
		"data": map[string]any{
			"rollout":  map[string]any{"namespace": "prod", "name": "checkout"},
			"revision": "v2.3.0", "step": 2, "weight": 50,
		},
	}
}

func endEvent(typ string) event {
	return event{
		"specversion": "1.0", "id": "ev-3", "source": "ctl", "type": typ,
		"data": map[string]any{
			"rollout":  map[string]any{"namespace": "prod", "name": "checkout"},
			"revision": "v2.3.0",
		},
	}
}

func (e event) set(path string, v any) event {
	keys := strings.Split(path, ".")
	m := map[string]any(e)
	for _, k := range keys[:len(keys)-1] {
		m = m[k].(map[string]any)
	}
	m[keys[len(keys)-1]] = v
	return e
}

func (e event) del(path string) event {
	keys := strings.Split(path, ".")
	m := map[string]any(e)
	for _, k := range keys[:len(keys)-1] {
		m = m[k].(map[string]any)
	}
	delete(m, keys[len(keys)-1])
	return e
}

func (e event) bytes(tb testing.TB) []byte {
	tb.Helper()
	b, err := json.Marshal(e)
	require.NoError(tb, err)
	return b
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func manyEntries(n int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

var ceHeader = nats.Header{"Content-Type": []string{"application/cloudevents+json"}}

// decodeRejectCase is an event Decode must reject, and the error it must give.
type decodeRejectCase struct {
	name   string
	body   []byte // when nil, ev is marshalled
	ev     event
	header nats.Header // ceHeader when nil
	max    int         // DefaultMaxEventBytes when zero
	want   string      // the whole message, or a prefix of it ending in '*'
	reason string
}

// input is what Decode is called with.
func (tc decodeRejectCase) input(tb testing.TB) (body []byte, header nats.Header, max int) {
	tb.Helper()
	body, header, max = tc.body, tc.header, tc.max
	if body == nil {
		body = tc.ev.bytes(tb)
	}
	if header == nil {
		header = ceHeader
	}
	if max == 0 {
		max = DefaultMaxEventBytes
	}
	return body, header, max
}

// requireMessage checks msg against want: the whole message, or with '*' standing for any text.
func requireMessage(tb testing.TB, want, msg string) {
	tb.Helper()
	if prefix, ok := strings.CutSuffix(want, "*"); ok {
		before, after, found := strings.Cut(prefix, "*")
		require.True(tb, strings.HasPrefix(msg, before), "got %q, want %q", msg, want)
		if found {
			require.Contains(tb, msg[len(before):], after, "got %q, want %q", msg, want)
		}
	} else if before, after, found := strings.Cut(want, "*"); found {
		require.True(tb, strings.HasPrefix(msg, before) && strings.HasSuffix(msg, after), "got %q, want %q", msg, want)
	} else {
		require.Equal(tb, want, msg)
	}
}

// decodeRejectCases are the events TestDecodeRejects checks; they seed FuzzDecode too.
func decodeRejectCases(tb testing.TB) []decodeRejectCase {
	long := func(n int) string { return strings.Repeat("a", n) }
	return []decodeRejectCase{
		// Size and syntax.
		{name: "too large", ev: startedEvent(), max: 100, want: "event: * bytes is over the limit of 100", reason: reasonTooLarge},
		{name: "not JSON", body: []byte(`{"specversion": "1.0",`), want: "event: not valid JSON: *", reason: reasonMalformed},
		{name: "garbage", body: []byte(`hello`), want: "event: not valid JSON: *", reason: reasonMalformed},
		{name: "trailing garbage", body: []byte(`{"a":1} x`), want: "event: not valid JSON: *", reason: reasonMalformed},
		{name: "array", body: []byte(`[1, 2]`), want: "event: must be a JSON object, got array", reason: reasonMalformed},
		{name: "string", body: []byte(`"hi"`), want: "event: must be a JSON object, got string", reason: reasonMalformed},
		{name: "null", body: []byte(`null`), want: "event: must be a JSON object, got null", reason: reasonMalformed},
		{name: "empty", body: []byte(` `), want: "event: empty body, want a JSON object", reason: reasonMalformed},

		// Envelope.
		{name: "wrong content type header", ev: startedEvent(), header: nats.Header{"Content-Type": {"text/plain"}},
			want: `Content-Type header: must be application/cloudevents+json, got "text/plain"`, reason: reasonNotCloudEvent},
		{name: "long content type header", ev: startedEvent(), header: nats.Header{"Content-Type": {"text/plain; x=" + long(10000)}},
			want: `Content-Type header: must be application/cloudevents+json, got "text/plain; x=` + long(50) + `"...`, reason: reasonNotCloudEvent},
		{name: "binary mode", body: []byte(`{"rollout":{"namespace":"prod","name":"checkout"},"revision":"v1"}`),
			header: nats.Header{"Content-Type": {"application/json"}, "ce-specversion": {"1.0"}, "ce-type": {"rollout.started"}, "ce-id": {"x"}},
			want:   "binary-mode CloudEvents (ce-* headers) are not supported: *", reason: reasonNotCloudEvent},
		{name: "binary mode without content type", body: []byte(`{"rollout":{"namespace":"prod","name":"checkout"}}`),
			header: nats.Header{"Ce-Specversion": {"1.0"}},
			want:   "binary-mode CloudEvents (ce-* headers) are not supported: *", reason: reasonNotCloudEvent},
		{name: "no specversion", ev: startedEvent().del("specversion"), want: "specversion: required", reason: reasonNotCloudEvent},
		{name: "old specversion", ev: startedEvent().set("specversion", "0.3"), want: `specversion: must be "1.0" (CloudEvents 1.0), got "0.3"`, reason: reasonNotCloudEvent},
		{name: "numeric specversion", ev: startedEvent().set("specversion", raw(`1.0`)), want: "specversion: must be a string, got number", reason: reasonNotCloudEvent},
		{name: "no id", ev: startedEvent().del("id"), want: "id: required", reason: reasonNotCloudEvent},
		{name: "empty id", ev: startedEvent().set("id", ""), want: "id: must be 1-256 characters, got 0", reason: reasonNotCloudEvent},
		{name: "long id", ev: startedEvent().set("id", long(257)), want: "id: must be 1-256 characters, got 257", reason: reasonNotCloudEvent},
		{name: "numeric id", ev: startedEvent().set("id", 7), want: "id: must be a string, got number", reason: reasonNotCloudEvent},
		{name: "null id", ev: startedEvent().set("id", nil), want: "id: required, got null", reason: reasonNotCloudEvent},
		{name: "no source", ev: startedEvent().del("source"), want: "source: required", reason: reasonNotCloudEvent},
		{name: "long source", ev: startedEvent().set("source", long(1025)), want: "source: must be 1-1024 characters, got 1025", reason: reasonNotCloudEvent},
		{name: "no type", ev: startedEvent().del("type"), want: "type: required", reason: reasonNotCloudEvent},
		{name: "unknown type", ev: startedEvent().set("type", "rollout.paused"),
			want: `type: unknown event type "rollout.paused", want one of rollout.started, rollout.step, rollout.completed, rollout.aborted`, reason: reasonUnknownType},
		{name: "verdict type is not consumed", ev: startedEvent().set("type", "rollout.verdict"), want: `type: unknown event type "rollout.verdict"*`, reason: reasonUnknownType},
		{name: "bad time", ev: startedEvent().set("time", "yesterday"), want: `time: must be an RFC 3339 timestamp, got "yesterday"`, reason: reasonNotCloudEvent},
		{name: "time without zone", ev: startedEvent().set("time", "2026-11-25T14:03:10"), want: `time: must be an RFC 3339 timestamp, got "2026-11-25T14:03:10"`, reason: reasonNotCloudEvent},
		{name: "numeric time", ev: startedEvent().set("time", 1764079390), want: "time: must be a string, got number", reason: reasonNotCloudEvent},
		{name: "xml data", ev: startedEvent().set("datacontenttype", "application/xml"), want: `datacontenttype: must be application/json or absent, got "application/xml"`, reason: reasonNotCloudEvent},

		// Data.
		{name: "no data", ev: startedEvent().del("data"), want: "data: required", reason: reasonInvalidData},
		{name: "null data", ev: startedEvent().set("data", nil), want: "data: required, got null", reason: reasonInvalidData},
		{name: "string data", ev: startedEvent().set("data", "x"), want: "data: must be a JSON object, got string", reason: reasonInvalidData},
		{name: "array data", ev: startedEvent().set("data", []any{}), want: "data: must be a JSON object, got array", reason: reasonInvalidData},
		{name: "base64 data", ev: startedEvent().del("data").set("data_base64", "e30="), want: "data_base64: binary data is not supported: data must be a JSON object", reason: reasonInvalidData},
		{name: "no rollout", ev: startedEvent().del("data.rollout"), want: "data.rollout: required", reason: reasonInvalidData},
		{name: "string rollout", ev: startedEvent().set("data.rollout", "prod/checkout"), want: "data.rollout: must be a JSON object, got string", reason: reasonInvalidData},
		{name: "empty namespace", ev: startedEvent().set("data.rollout.namespace", ""), want: "data.rollout.namespace: must be 1-63 characters, got 0", reason: reasonInvalidData},
		{name: "no namespace", ev: startedEvent().del("data.rollout.namespace"), want: "data.rollout.namespace: required", reason: reasonInvalidData},
		{name: "long namespace", ev: startedEvent().set("data.rollout.namespace", long(64)), want: "data.rollout.namespace: must be 1-63 characters, got 64", reason: reasonInvalidData},
		{name: "numeric name", ev: startedEvent().set("data.rollout.name", 12), want: "data.rollout.name: must be a string, got number", reason: reasonInvalidData},
		{name: "long name", ev: startedEvent().set("data.rollout.name", long(254)), want: "data.rollout.name: must be 1-253 characters, got 254", reason: reasonInvalidData},
		{name: "newline in name", ev: startedEvent().set("data.rollout.name", "check\nout"), want: "data.rollout.name: must not contain control characters, found U+000A at byte 5", reason: reasonInvalidData},
		{name: "invalid UTF-8", body: []byte(strings.Replace(string(startedEvent().bytes(tb)), `"namespace":"prod"`, "\"namespace\":\"pr\xffod\"", 1)),
			want: "data.rollout.namespace: must be valid UTF-8", reason: reasonInvalidData},
		{name: "lone surrogate", body: []byte(strings.Replace(string(startedEvent().bytes(tb)), `"namespace":"prod"`, `"namespace":"pr\ud800od"`, 1)),
			want: "data.rollout.namespace: must be valid UTF-8 (it has an invalid \\u escape)", reason: reasonInvalidData},
		{name: "no revision", ev: startedEvent().del("data.revision"), want: "data.revision: required", reason: reasonInvalidData},
		{name: "null revision", ev: startedEvent().set("data.revision", nil), want: "data.revision: required, got null", reason: reasonInvalidData},
		{name: "long revision", ev: startedEvent().set("data.revision", long(129)), want: "data.revision: must be 1-128 characters, got 129", reason: reasonInvalidData},
		{name: "boolean revision", ev: startedEvent().set("data.revision", true), want: "data.revision: must be a string, got boolean", reason: reasonInvalidData},

		// rollout.started.
		{name: "no analysis", ev: startedEvent().del("data.analysis"), want: "data.analysis: required", reason: reasonInvalidData},
		{name: "empty analysis", ev: startedEvent().set("data.analysis", ""), want: "data.analysis: must be 1-253 characters, got 0", reason: reasonInvalidData},
		{name: "args array", ev: startedEvent().set("data.args", []any{"a"}), want: "data.args: must be an object of strings, got array", reason: reasonInvalidData},
		{name: "args number value", ev: startedEvent().set("data.args.service", 5), want: "data.args.service: must be a string, got number", reason: reasonInvalidData},
		{name: "args null value", ev: startedEvent().set("data.args.service", nil), want: "data.args.service: must be a string, got null", reason: reasonInvalidData},
		{name: "args object value", ev: startedEvent().set("data.args.service", map[string]any{}), want: "data.args.service: must be a string, got object", reason: reasonInvalidData},
		{name: "args key with dash", ev: startedEvent().set("data.args.bad-key", "x"),
			want: `data.args: key "bad-key": must be a name of ASCII letters, digits and underscores, not starting with a digit`, reason: reasonInvalidData},
		{name: "args key with digit first", ev: startedEvent().set("data.args.1x", "x"), want: `data.args: key "1x": must be a name*`, reason: reasonInvalidData},
		{name: "args long key", ev: startedEvent().set("data.args."+long(129), "x"), want: "data.args: key *: must be at most 128 characters, got 129", reason: reasonInvalidData},
		{name: "args long value", ev: startedEvent().set("data.args.service", long(1025)), want: "data.args.service: must be at most 1024 characters, got 1025", reason: reasonInvalidData},
		{name: "args too many", ev: startedEvent().set("data.args", manyEntries(65)), want: "data.args: must have at most 64 entries, got 65", reason: reasonInvalidData},
		{name: "canary control char", ev: startedEvent().set("data.canary.version", "v1\x00"), want: "data.canary.version: must not contain control characters, found U+0000 at byte 2", reason: reasonInvalidData},
		{name: "stable string", ev: startedEvent().set("data.stable", "v2.2.0"), want: "data.stable: must be an object of strings, got string", reason: reasonInvalidData},
		{name: "float step", ev: startedEvent().set("data.step", raw(`1.5`)), want: "data.step: must be an integer, got 1.5", reason: reasonInvalidData},
		{name: "float-looking step", ev: startedEvent().set("data.step", raw(`1.0`)), want: "data.step: must be an integer, got 1.0", reason: reasonInvalidData},
		{name: "exponent step", ev: startedEvent().set("data.step", raw(`1e2`)), want: "data.step: must be an integer, got 1e2", reason: reasonInvalidData},
		{name: "string step", ev: startedEvent().set("data.step", "1"), want: "data.step: must be an integer, got string", reason: reasonInvalidData},
		{name: "negative step", ev: startedEvent().set("data.step", -1), want: "data.step: must be an integer >= 0, got -1", reason: reasonInvalidData},
		{name: "huge step", ev: startedEvent().set("data.step", raw(`99999999999999999999999`)), want: "data.step: must be an integer >= 0, got 99999999999999999999999", reason: reasonInvalidData},
		{name: "weight over 100", ev: startedEvent().set("data.weight", 101), want: "data.weight: must be within 0-100, got 101", reason: reasonInvalidData},
		{name: "negative weight", ev: startedEvent().set("data.weight", -5), want: "data.weight: must be within 0-100, got -5", reason: reasonInvalidData},
		{name: "long stableRevision", ev: startedEvent().set("data.stableRevision", long(129)), want: "data.stableRevision: must be at most 128 characters, got 129", reason: reasonInvalidData},
		{name: "numeric stableRevision", ev: startedEvent().set("data.stableRevision", 3), want: "data.stableRevision: must be a string, got number", reason: reasonInvalidData},

		// rollout.step.
		{name: "step without step", ev: stepEvent().del("data.step"), want: "data.step: required", reason: reasonInvalidData},
		{name: "step with null step", ev: stepEvent().set("data.step", nil), want: "data.step: required, got null", reason: reasonInvalidData},
		{name: "step without weight", ev: stepEvent().del("data.weight"), want: "data.weight: required", reason: reasonInvalidData},
		{name: "step with float weight", ev: stepEvent().set("data.weight", raw(`12.5`)), want: "data.weight: must be an integer, got 12.5", reason: reasonInvalidData},

		// rollout.aborted.
		{name: "long reason", ev: endEvent("rollout.aborted").set("data.reason", long(1025)), want: "data.reason: must be at most 1024 characters, got 1025", reason: reasonInvalidData},
		{name: "numeric reason", ev: endEvent("rollout.aborted").set("data.reason", 1), want: "data.reason: must be a string, got number", reason: reasonInvalidData},
		{name: "completed without revision", ev: endEvent("rollout.completed").del("data.revision"), want: "data.revision: required", reason: reasonInvalidData},
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range decodeRejectCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			body, header, max := tc.input(t)
			ev, err := Decode(body, header, storedAt, max)
			require.Error(t, err)
			require.Zero(t, ev)
			require.ErrorIs(t, err, rollout.ErrInvalid)
			msg := err.Error()
			require.NotContains(t, msg, "\n", "one line")
			requireMessage(t, tc.want, msg)
			var de *decodeError
			require.True(t, errors.As(err, &de))
			require.Equal(t, tc.reason, de.reason)
		})
	}
}

// decodeAcceptCase is an event Decode must accept, and the event it must return.
type decodeAcceptCase struct {
	name   string
	ev     event
	body   []byte // when set, sent instead of ev
	header nats.Header
	want   rollout.Event
}

func (tc decodeAcceptCase) bytes(tb testing.TB) []byte {
	tb.Helper()
	if tc.body != nil {
		return tc.body
	}
	return tc.ev.bytes(tb)
}

// decodeAcceptCases are the events TestDecodeAccepts checks; they seed FuzzDecode too.
func decodeAcceptCases(tb testing.TB) []decodeAcceptCase {
	return []decodeAcceptCase{
		{
			name: "started, everything",
			ev:   startedEvent(),
			header: nats.Header{
				"Content-Type": {"application/cloudevents+json; charset=utf-8"},
				"traceparent":  {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
				"tracestate":   {"vendor=x"},
			},
			want: rollout.Event{
				ID: "ev-1", Source: "argo-rollouts/prod", Type: rollout.EventStarted,
				Time:     time.Date(2026, 11, 25, 14, 3, 10, 120e6, time.UTC),
				Rollout:  rollout.Ref{Namespace: "prod", Name: "checkout"},
				Revision: "v2.3.0", Analysis: "http-golden-signals",
				Args:   map[string]string{"service": "checkout"},
				Canary: map[string]string{"version": "v2.3.0"},
				Stable: map[string]string{"version": "v2.2.0"},
				Step:   1, Weight: 10, StableRevision: "v2.2.0",
				TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				TraceState:  "vendor=x",
			},
		},
		{
			name: "started, minimal: defaults and the stored time",
			ev: startedEvent().del("time").del("datacontenttype").del("data.args").del("data.canary").
				del("data.stable").del("data.step").del("data.weight").set("data.stableRevision", nil),
			header: nats.Header{
				// nats.Header is case-sensitive; the carrier also finds the canonical
				// spelling Go's HTTP-style helpers write.
				"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			},
			want: rollout.Event{
				ID: "ev-1", Source: "argo-rollouts/prod", Type: rollout.EventStarted, Time: storedAt,
				Rollout: rollout.Ref{Namespace: "prod", Name: "checkout"}, Revision: "v2.3.0",
				Analysis:    "http-golden-signals",
				TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			},
		},
		{
			name: "started, unicode, bounds and unknown fields",
			ev: startedEvent().set("data.rollout.name", strings.Repeat("é", 253)).
				set("data.args", manyEntries(64)).set("data.weight", 100).set("data.step", 0).
				set("data.args.k0", strings.Repeat("ü", 1024)).
				set("data.future", map[string]any{"x": []any{1, 2}}).set("myextension", 5).
				set("datacontenttype", "application/json; charset=utf-8").
				set("time", "2026-11-25T15:03:10+01:00"),
			want: func() rollout.Event {
				args := map[string]string{}
				for k := range manyEntries(64) {
					args[k] = "v"
				}
				args["k0"] = strings.Repeat("ü", 1024)
				return rollout.Event{
					ID: "ev-1", Source: "argo-rollouts/prod", Type: rollout.EventStarted,
					Time:     time.Date(2026, 11, 25, 14, 3, 10, 0, time.UTC),
					Rollout:  rollout.Ref{Namespace: "prod", Name: strings.Repeat("é", 253)},
					Revision: "v2.3.0", Analysis: "http-golden-signals",
					Args:   args,
					Canary: map[string]string{"version": "v2.3.0"},
					Stable: map[string]string{"version": "v2.2.0"},
					Step:   0, Weight: 100, StableRevision: "v2.2.0",
				}
			}(),
		},
		{
			name: "step",
			ev:   stepEvent(),
			want: rollout.Event{
				ID: "ev-2", Source: "ctl", Type: rollout.EventStep, Time: storedAt,
				Rollout: rollout.Ref{Namespace: "prod", Name: "checkout"}, Revision: "v2.3.0",
				Step: 2, Weight: 50,
			},
		},
		{
			name: "completed ignores other types' fields",
			ev:   endEvent("rollout.completed").set("data.step", "not checked").set("data.analysis", 5),
			want: rollout.Event{
				ID: "ev-3", Source: "ctl", Type: rollout.EventCompleted, Time: storedAt,
				Rollout: rollout.Ref{Namespace: "prod", Name: "checkout"}, Revision: "v2.3.0",
			},
		},
		{
			name: "aborted with a multi-line reason",
			ev:   endEvent("rollout.aborted").set("data.reason", "analysis failed:\n\terror rate"),
			want: rollout.Event{
				ID: "ev-3", Source: "ctl", Type: rollout.EventAborted, Time: storedAt,
				Rollout: rollout.Ref{Namespace: "prod", Name: "checkout"}, Revision: "v2.3.0",
				Reason: "analysis failed:\n\terror rate",
			},
		},
		{
			name: "escaped replacement character is fine",
			body: []byte(strings.Replace(string(stepEvent().bytes(tb)), `"revision":"v2.3.0"`, `"revision":"v\uFFFD"`, 1)),
			want: rollout.Event{
				ID: "ev-2", Source: "ctl", Type: rollout.EventStep, Time: storedAt,
				Rollout: rollout.Ref{Namespace: "prod", Name: "checkout"}, Revision: "v\uFFFD",
				Step: 2, Weight: 50,
			},
		},
	}
}

func TestDecodeAccepts(t *testing.T) {
	for _, tc := range decodeAcceptCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.bytes(t), tc.header, storedAt, DefaultMaxEventBytes)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDecodeNoLimit(t *testing.T) {
	_, err := Decode(startedEvent().bytes(t), nil, storedAt, 0)
	require.NoError(t, err)
}

func TestOneLine(t *testing.T) {
	require.Equal(t, "a b  c", oneLine(" a\nb\r\tc\n", 100))
	require.Equal(t, "abcdefg...", oneLine("abcdefghijklmnop", 10))
	// Never cuts a character in half.
	got := oneLine(strings.Repeat("é", 10), 8)
	require.Equal(t, "éé...", got)
}

func TestQuoteAtMost(t *testing.T) {
	require.Equal(t, `"abc"`, quoteAtMost("abc", 3))
	require.Equal(t, `"ab"...`, quoteAtMost("abc", 2))
	require.Equal(t, `""`, quoteAtMost("", 2))
	// Cuts whole characters, and quotes what is not printable as %q does.
	require.Equal(t, `"éé"...`, quoteAtMost("ééé", 2))
	require.Equal(t, `"\xffa"...`, quoteAtMost("\xffab", 2))
	require.Equal(t, `"a\nb"`, quoteAtMost("a\nb", 3))
}

func TestClampTime(t *testing.T) {
	stored := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		time    time.Time
		want    time.Time
		clamped bool
	}{
		{"on time", stored.Add(-2 * time.Second), stored.Add(-2 * time.Second), false},
		{"within the skew, before", stored.Add(-5 * time.Minute), stored.Add(-5 * time.Minute), false},
		{"within the skew, after", stored.Add(5 * time.Minute), stored.Add(5 * time.Minute), false},
		{"hours old: to the earliest time allowed", stored.Add(-14 * time.Hour), stored.Add(-5 * time.Minute), true},
		{"in the future: to the latest time allowed", stored.Add(6 * time.Minute), stored.Add(5 * time.Minute), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, clamped := ClampTime(rollout.Event{ID: "e", Time: tc.time}, stored, 5*time.Minute)
			require.Equal(t, tc.clamped, clamped)
			require.True(t, tc.want.Equal(ev.Time), "got %s", ev.Time)
			require.Equal(t, "e", ev.ID)
		})
	}
}

// TestClampTimeKeepsOrder: a start clamped for an old time stays before a step that was
// within the skew (a controller whose clock drifted across the edge, or two controllers).
func TestClampTimeKeepsOrder(t *testing.T) {
	stored := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	start, _ := ClampTime(rollout.Event{Time: stored.Add(-6 * time.Minute)}, stored, 5*time.Minute)
	step, clamped := ClampTime(rollout.Event{Time: stored.Add(30*time.Second - 5*time.Minute + time.Second)}, stored.Add(30*time.Second), 5*time.Minute)
	require.False(t, clamped)
	require.True(t, start.Time.Before(step.Time), "start %s, step %s", start.Time, step.Time)
}
