package ingest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

// hostileCase is an event a controller (or an attacker who may publish on the events
// subjects) could send, and what the consumer must do with it.
type hostileCase struct {
	name   string
	body   []byte
	header nats.Header // besides Content-Type: application/cloudevents+json
	want   string      // the Analyzerd-Error header, with '*' standing for any text
	reason string      // the reason label of analyzerd_dead_letters_total
}

// hostileCases are one or more events of each hostile class of issue #4, point 6: oversized
// events, unknown types, missing or mistyped fields, huge maps, odd Unicode, injection
// attempts in args, and an event that decodes but that the handler rejects.
func hostileCases(t *testing.T) []hostileCase {
	started := func(id string) event { return eventWithID(startedEvent(), id, "checkout") }
	// replace swaps old for new in the JSON of ev: for bytes json.Marshal would never write.
	replace := func(ev event, old, new string) []byte {
		b := string(ev.bytes(t))
		require.Contains(t, b, old)
		return []byte(strings.Replace(b, old, new, 1))
	}
	oversized := started("oversized")
	oversized.set("data.padding", strings.Repeat("x", DefaultMaxEventBytes-len(oversized.bytes(t))-12))
	require.Len(t, oversized.bytes(t), DefaultMaxEventBytes+1)

	return []hostileCase{
		// Oversized.
		{name: "oversized: 64 KiB and one byte", body: oversized.bytes(t),
			want: "event: 65537 bytes is over the limit of 65536", reason: reasonTooLarge},
		{name: "oversized: 10,000 args", body: started("args-10k").set("data.args", manyEntries(10000)).bytes(t),
			want: "event: * bytes is over the limit of 65536", reason: reasonTooLarge},
		{name: "oversized: an 8 KiB Content-Type header", body: started("long-header").bytes(t),
			header: nats.Header{"Content-Type": {"text/plain; x=" + strings.Repeat("A", 8<<10)}},
			want:   `Content-Type header: must be application/cloudevents+json, got "text/plain; x=` + strings.Repeat("A", 50) + `"...`, reason: reasonNotCloudEvent},

		// Unknown types.
		{name: "unknown type", body: started("paused").set("type", "rollout.paused").bytes(t),
			want: `type: unknown event type "rollout.paused", want one of rollout.started, rollout.step, rollout.completed, rollout.aborted`, reason: reasonUnknownType},
		{name: "a verdict fed back", body: started("verdict").set("type", "rollout.verdict").bytes(t),
			want: `type: unknown event type "rollout.verdict", want one of *`, reason: reasonUnknownType},
		{name: "type with a zero-width space", body: started("zwsp").set("type", "rollout.started\u200b").bytes(t),
			want: `type: unknown event type "rollout.started\u200b", want one of *`, reason: reasonUnknownType},

		// Missing or mistyped fields.
		{name: "not JSON", body: []byte(`{"specversion": "1.0", "id": `), want: "event: not valid JSON: unexpected end of JSON input at byte 28", reason: reasonMalformed},
		{name: "empty body", body: []byte{}, want: "event: empty body, want a JSON object", reason: reasonMalformed},
		{name: "JSON array", body: []byte(`[{"specversion":"1.0"}]`), want: "event: must be a JSON object, got array", reason: reasonMalformed},
		{name: "deep nesting", body: []byte(`{"data":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`),
			want: "event: not valid JSON: invalid character '[' exceeded max depth at byte 10008", reason: reasonMalformed},
		{name: "binary-mode CloudEvent", body: []byte(`{"rollout":{"namespace":"prod","name":"checkout"},"revision":"v2"}`),
			header: nats.Header{"Content-Type": {"application/json"}, "ce-specversion": {"1.0"}, "ce-type": {"rollout.started"}},
			want:   "binary-mode CloudEvents (ce-* headers) are not supported: *", reason: reasonNotCloudEvent},
		{name: "no specversion", body: started("no-spec").del("specversion").bytes(t), want: "specversion: required", reason: reasonNotCloudEvent},
		{name: "id is an object", body: started("x").set("id", map[string]any{"a": 1}).bytes(t), want: "id: must be a string, got object", reason: reasonNotCloudEvent},
		{name: "no data", body: started("no-data").del("data").bytes(t), want: "data: required", reason: reasonInvalidData},
		{name: "no namespace", body: started("no-ns").del("data.rollout.namespace").bytes(t), want: "data.rollout.namespace: required", reason: reasonInvalidData},
		{name: "rollout is null", body: started("null-rollout").set("data.rollout", nil).bytes(t), want: "data.rollout: required, got null", reason: reasonInvalidData},
		{name: "weight is a string", body: started("weight-string").set("data.weight", "10").bytes(t), want: "data.weight: must be an integer, got string", reason: reasonInvalidData},
		{name: "weight over 100", body: started("weight-101").set("data.weight", 101).bytes(t), want: "data.weight: must be within 0-100, got 101", reason: reasonInvalidData},
		{name: "step is a float", body: started("step-float").set("data.step", raw(`1.5`)).bytes(t), want: "data.step: must be an integer, got 1.5", reason: reasonInvalidData},

		// Huge maps (under the size limit).
		{name: "65 args", body: started("args-65").set("data.args", manyEntries(65)).bytes(t),
			want: "data.args: must have at most 64 entries, got 65", reason: reasonInvalidData},
		{name: "1,000 canary variables", body: started("canary-1k").set("data.canary", manyEntries(1000)).bytes(t),
			want: "data.canary: must have at most 64 entries, got 1000", reason: reasonInvalidData},

		// Odd Unicode.
		{name: "NUL in the name", body: started("nul").set("data.rollout.name", "check\x00out").bytes(t),
			want: "data.rollout.name: must not contain control characters, found U+0000 at byte 5", reason: reasonInvalidData},
		{name: "invalid UTF-8 in the revision", body: replace(started("bad-utf8"), `"revision":"v2.3.0"`, "\"revision\":\"v2\xff\xfe\""),
			want: "data.revision: must be valid UTF-8", reason: reasonInvalidData},
		{name: "lone surrogate escape", body: replace(started("surrogate"), `"revision":"v2.3.0"`, `"revision":"v2\ud800"`),
			want: `data.revision: must be valid UTF-8 (it has an invalid \u escape)`, reason: reasonInvalidData},
		{name: "reversed surrogate pair", body: replace(started("reversed"), `"revision":"v2.3.0"`, `"revision":"\ude80\ud83d"`),
			want: `data.revision: must be valid UTF-8 (it has an invalid \u escape)`, reason: reasonInvalidData},
		{name: "invalid UTF-8 in the type", body: replace(started("bad-type"), `"type":"rollout.started"`, "\"type\":\"rollout.st\xffarted\""),
			want: "type: must be valid UTF-8", reason: reasonNotCloudEvent},
		{name: "byte order mark", body: append([]byte("\xef\xbb\xbf"), started("bom").bytes(t)...),
			want: "event: not valid JSON: invalid character 'ï' looking for beginning of value at byte 1", reason: reasonMalformed},
		{name: "C1 control in the namespace", body: started("c1").set("data.rollout.namespace", "pr\u0085od").bytes(t),
			want: "data.rollout.namespace: must not contain control characters, found U+0085 at byte 2", reason: reasonInvalidData},

		// Injection attempts in args.
		{name: "PromQL in an arg name", body: started("inject-key").set("data.args", map[string]any{`service"} or vector(1) #`: "x"}).bytes(t),
			want: `data.args: key "service\"} or vector(1) #": must be a name of ASCII letters, digits and underscores, not starting with a digit`, reason: reasonInvalidData},
		{name: "newline in an arg value", body: started("inject-newline").set("data.args.service", "checkout\"}\nor vector(1)").bytes(t),
			want: "data.args.service: must not contain control characters, found U+000A at byte 10", reason: reasonInvalidData},
		{name: "CRLF in a canary variable", body: started("inject-crlf").set("data.canary.version", "v2\r\n} or vector(1) #").bytes(t),
			want: "data.canary.version: must not contain control characters, found U+000D at byte 2", reason: reasonInvalidData},
		{name: "arg value over 1024 characters", body: started("inject-long").set("data.args.service", strings.Repeat(`"}) or vector(1) #`, 60)).bytes(t),
			want: "data.args.service: must be at most 1024 characters, got 1080", reason: reasonInvalidData},

		// Decoded, but the handler rejects it.
		{name: "unknown analysis template", body: started("unknown-template").set("data.analysis", "nope").bytes(t),
			want: `starting analysis: invalid: no analysis template named "nope"`, reason: reasonRejected},
	}
}

// validHostileLooking are events that look hostile but keep the contract: values are data,
// which the query renderer only ever writes as escaped string literals (FuzzRender), and
// Unicode that is not a control character is a name like any other. They are handled.
func validHostileLooking(t *testing.T) map[string][]byte {
	started := func(id string) event { return eventWithID(startedEvent(), id, "checkout-"+id) }
	return map[string][]byte{
		"promql-in-arg-value": started("promql-in-arg-value").set("data.args.service", `"}) or vector(1) #`).bytes(t),
		"regex-in-arg-value":  started("regex-in-arg-value").set("data.args.service", `.*`).bytes(t),
		"placeholder-in-var":  started("placeholder-in-var").set("data.canary.version", `{{ arg "service" }}`).bytes(t),
		"rtl-override-name":   started("rtl-override-name").set("data.rollout.name", "check\u202eout").bytes(t),
		"replacement-char":    []byte(strings.Replace(string(started("replacement-char").bytes(t)), `"revision":"v2.3.0"`, `"revision":"v\ufffd"`, 1)),
		"surrogate-pair":      []byte(strings.Replace(string(started("surrogate-pair").bytes(t)), `"revision":"v2.3.0"`, `"revision":"v\ud83d\ude80"`, 1)),
	}
}

// TestHostileEventsAreDeadLettered publishes, against a real JetStream server, one event of
// each hostile class between valid ones, and checks end to end that
//   - each hostile event lands on rollouts.deadletter.events unchanged, with Analyzerd-Error
//     (one line, at most maxErrorHeader bytes, naming the problem) and Analyzerd-Subject;
//   - its original is terminated: the server announces the termination of exactly that
//     stream sequence after its first delivery, with the same reason, and never delivers it
//     again (no redelivery, no max-deliveries advisory, and the consumer's delivery count is
//     the number of messages in the stream);
//   - the valid events around them, hostile-looking ones included, are all handled, in order.
func TestHostileEventsAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{fail: func(ev rollout.Event, _ int) error {
		if ev.Analysis == "nope" {
			return fmt.Errorf("starting analysis: %w", rollout.Invalidf("no analysis template named %q", ev.Analysis))
		}
		return nil
	}}
	c, reg := newConsumer(t, e, h, Options{MaxDeliver: 3})

	// The server's advisories tell which stream sequences the consumer terminated, and
	// whether any reached MaxDeliver.
	var mu sync.Mutex
	terminated := map[uint64]server.JSConsumerDeliveryTerminatedAdvisory{}
	maxDeliveries := 0
	termSub, err := e.nc.Subscribe(fmt.Sprintf("%s.%s.%s", server.JSAdvisoryConsumerMsgTerminatedPre, streams.EventsStream, DefaultDurable), func(m *nats.Msg) {
		var a server.JSConsumerDeliveryTerminatedAdvisory
		if json.Unmarshal(m.Data, &a) == nil {
			mu.Lock()
			terminated[a.StreamSeq] = a
			mu.Unlock()
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = termSub.Unsubscribe() })
	maxSub, err := e.nc.Subscribe(server.JSAdvisoryConsumerMaxDeliveryExceedPre+".>", func(*nats.Msg) {
		mu.Lock()
		maxDeliveries++
		mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = maxSub.Unsubscribe() })
	require.NoError(t, e.nc.Flush())

	cases := hostileCases(t)
	valid := validHostileLooking(t)
	bySeq := map[uint64]hostileCase{}
	wantHandled := []string{"first"}
	e.publish(t, "checkout", eventWithID(startedEvent(), "first", "checkout").bytes(t), nil)
	for i, tc := range cases {
		bySeq[e.publish(t, "checkout", tc.body, tc.header)] = tc
		if i%5 == 4 { // a valid event now and then: analysis goes on between hostile ones
			id := fmt.Sprintf("step-%d", i)
			e.publish(t, "checkout", eventWithID(stepEvent(), id, "checkout").bytes(t), nil)
			wantHandled = append(wantHandled, id)
		}
	}
	for _, id := range []string{"promql-in-arg-value", "regex-in-arg-value", "placeholder-in-var", "rtl-override-name", "replacement-char", "surrogate-pair"} {
		e.publish(t, "checkout", valid[id], nil)
		wantHandled = append(wantHandled, id)
	}
	last := e.publish(t, "checkout", eventWithID(endEvent("rollout.completed"), "last", "checkout").bytes(t), nil)
	wantHandled = append(wantHandled, "last")
	run(t, c)

	require.Eventually(t, func() bool { return len(h.ids()) == len(wantHandled) }, waitFor, 5*time.Millisecond)
	require.Equal(t, wantHandled, h.ids(), "every valid event is handled, in order")

	dl, err := e.js.Stream(e.ctx, streams.DeadLetterStream)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dl.Info(e.ctx)
		return err == nil && info.State.Msgs == uint64(len(cases))
	}, waitFor, 5*time.Millisecond)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(terminated) == len(cases) }, waitFor, 5*time.Millisecond)

	perReason := map[string]float64{}
	for dseq := uint64(1); dseq <= uint64(len(cases)); dseq++ {
		msg, err := dl.GetMsg(e.ctx, dseq)
		require.NoError(t, err)
		var seq uint64
		_, err = fmt.Sscanf(msg.Header.Get(nats.MsgIdHdr), "deadletter/%d", &seq)
		require.NoError(t, err, "Nats-Msg-Id %q", msg.Header.Get(nats.MsgIdHdr))
		tc, ok := bySeq[seq]
		require.True(t, ok, "dead letter %d is of stream sequence %d, which is not a hostile event", dseq, seq)
		delete(bySeq, seq)
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, "rollouts.deadletter.events", msg.Subject)
			require.Equal(t, string(tc.body), string(msg.Data), "republished unchanged")
			require.Equal(t, "rollouts.events.prod.checkout", msg.Header.Get(HeaderSubject))
			reason := msg.Header.Get(HeaderError)
			require.Len(t, msg.Header.Values(HeaderError), 1)
			require.NotContains(t, reason, "\n")
			require.NotContains(t, reason, "\r")
			require.LessOrEqual(t, len(reason), maxErrorHeader)
			requireMessage(t, tc.want, reason)

			mu.Lock()
			a, ok := terminated[seq]
			mu.Unlock()
			require.True(t, ok, "stream sequence %d was not terminated", seq)
			require.Equal(t, uint64(1), a.Deliveries, "terminated at its first delivery")
			require.Equal(t, reason, a.Reason, "terminated with the reason it was dead-lettered for")
		})
		perReason[tc.reason]++
	}
	require.Empty(t, bySeq, "hostile events without a dead letter")
	for reason, n := range perReason {
		require.Equal(t, n, deadLetters(t, reg, reason), reason)
	}

	// Nothing is delivered again: every message of the stream was delivered exactly once,
	// acknowledged or terminated, and none reached MaxDeliver.
	require.Eventually(t, func() bool {
		info, err := c.cons.Info(e.ctx)
		return err == nil && info.AckFloor.Stream == last && info.NumAckPending == 0 && info.NumPending == 0
	}, waitFor, 5*time.Millisecond)
	info, err := c.cons.Info(e.ctx)
	require.NoError(t, err)
	require.Zero(t, info.NumRedelivered)
	require.Equal(t, last, info.Delivered.Consumer, "deliveries: one per message in the stream")
	mu.Lock()
	require.Zero(t, maxDeliveries)
	mu.Unlock()
	require.Equal(t, 1, h.callsOf("unknown-template"), "a rejected event is handled once")
}
