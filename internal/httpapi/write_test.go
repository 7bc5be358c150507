package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/ingest"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

const testToken = "s3cret-token"

// state is a fake analyzer: the latest verdicts and positions a test sets.
type state struct {
	mu  sync.Mutex
	v   map[rollout.Ref]rollout.Verdict
	pos map[rollout.Ref]rollout.Position
}

func (s *state) Latest(ref rollout.Ref) (rollout.Verdict, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.v[ref]
	return v, ok
}
func (s *state) List() []rollout.Verdict { return nil }
func (s *state) Position(ref rollout.Ref) (rollout.Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pos[ref]
	return p, ok
}
func (s *state) set(v rollout.Verdict, p rollout.Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.v[v.Rollout], s.pos[v.Rollout] = v, p
}

type rig struct {
	url   string
	js    jetstream.JetStream
	state *state
}

// newRig serves the API over a real JetStream (in-process NATS with analyzerd's streams).
func newRig(t *testing.T, opts Options) rig {
	t.Helper()
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	require.NoError(t, streams.Ensure(context.Background(), js, streams.Options{}))
	st := &state{v: map[rollout.Ref]rollout.Verdict{}, pos: map[rollout.Ref]rollout.Position{}}
	opts.Verdicts, opts.Positions, opts.Gatherer = st, st, prometheus.NewRegistry()
	opts.Events = ingest.NewPublisher(js, "")
	if opts.Templates == nil {
		opts.Templates = map[string]rollout.Template{"http-golden-signals": {Name: "http-golden-signals", Args: []string{"service"}, Variables: []string{"version"}}}
	}
	if opts.WriteToken == "" && !opts.AllowUnauthenticatedWrites {
		opts.WriteToken = testToken
	}
	srv := httptest.NewServer(New(opts).Handler())
	t.Cleanup(srv.Close)
	return rig{url: srv.URL, js: js, state: st}
}

type stored struct {
	MsgID string
	Event rollout.Event
	Body  []byte
}

// storedEvents reads every message of ROLLOUT_EVENTS, decoded as the consumer decodes them.
func (r rig) storedEvents(t *testing.T) []stored {
	t.Helper()
	ctx := context.Background()
	s, err := r.js.Stream(ctx, streams.EventsStream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		ev, err := ingest.Decode(m.Data, nats.Header(m.Header), m.Time, 0)
		require.NoError(t, err, string(m.Data))
		require.Equal(t, rollout.EventsSubject("rollouts", ev.Rollout), m.Subject)
		out = append(out, stored{MsgID: nats.Header(m.Header).Get(nats.MsgIdHdr), Event: ev, Body: m.Data})
	}
	return out
}

func call(t *testing.T, method, url string, body []byte, header map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out), string(raw))
	return resp.StatusCode, out
}

var auth = map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json"}

const startedEvent = `{"specversion":"1.0","id":"evt-1","source":"ci","type":"rollout.started","time":"2026-11-25T14:00:00Z",
 "data":{"rollout":{"namespace":"prod","name":"checkout"},"revision":"v2","analysis":"http-golden-signals",
 "args":{"service":"checkout"},"canary":{"version":"v2"},"stable":{"version":"v1"},"step":1,"weight":10}}`

func TestEventsStructuredModeIsStoredOnceWithItsID(t *testing.T) {
	r := newRig(t, Options{})
	h := map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/cloudevents+json"}
	for range 2 { // a retry is dropped as a duplicate
		status, body := call(t, http.MethodPost, r.url+"/v1/events", []byte(startedEvent), h)
		require.Equal(t, http.StatusAccepted, status, body)
		require.Equal(t, "evt-1", body["id"])
	}
	got := r.storedEvents(t)
	require.Len(t, got, 1)
	require.Equal(t, "evt-1", got[0].MsgID)
	require.Equal(t, rollout.EventStarted, got[0].Event.Type)
	require.Equal(t, 10, got[0].Event.Weight)
	require.Equal(t, time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC), got[0].Event.Time, "the event's own time")
}

func TestEventsBinaryModeIsStoredAsTheStructuredEvent(t *testing.T) {
	r := newRig(t, Options{})
	h := map[string]string{
		"Authorization": "Bearer " + testToken, "Content-Type": "application/json",
		"ce-specversion": "1.0", "ce-id": "evt-2", "ce-source": "argo-notifications", "ce-type": "rollout.step",
		"ce-time": "2026-11-25T14:05:00Z", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	data := `{"rollout":{"namespace":"prod","name":"checkout"},"revision":"v2","step":2,"weight":50}`
	status, body := call(t, http.MethodPost, r.url+"/v1/events", []byte(data), h)
	require.Equal(t, http.StatusAccepted, status, body)
	got := r.storedEvents(t)
	require.Len(t, got, 1)
	require.Equal(t, "evt-2", got[0].MsgID)
	ev := got[0].Event
	require.Equal(t, rollout.EventStep, ev.Type)
	require.Equal(t, "argo-notifications", ev.Source)
	require.Equal(t, 2, ev.Step)
	require.Equal(t, 50, ev.Weight)
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ev.TraceParent)
}

func TestEventsRefuseBadEventsWithTheDeadLetterReason(t *testing.T) {
	r := newRig(t, Options{MaxEventBytes: 2048})
	structured := map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/cloudevents+json"}
	for _, tc := range []struct {
		name, body, reason, inErr string
		status                    int
	}{
		{"not JSON", `{"specversion":`, "malformed", "not valid JSON", 400},
		{"not CloudEvents 1.0", `{"specversion":"0.3","id":"x","source":"s","type":"rollout.step","data":{}}`, "not_cloudevent", "specversion", 400},
		{"unknown type", `{"specversion":"1.0","id":"x","source":"s","type":"rollout.paused","data":{}}`, "unknown_type", "unknown event type", 400},
		{"weight out of range", `{"specversion":"1.0","id":"x","source":"s","type":"rollout.step","data":{"rollout":{"namespace":"a","name":"b"},"revision":"r","step":1,"weight":101}}`,
			"invalid_data", "data.weight: must be within 0-100, got 101", 400},
		{"unknown template", `{"specversion":"1.0","id":"x","source":"s","type":"rollout.started","data":{"rollout":{"namespace":"a","name":"b"},"revision":"r","analysis":"nope"}}`,
			"invalid_data", `data.analysis: no analysis template named "nope"`, 400},
		{"missing argument", `{"specversion":"1.0","id":"x","source":"s","type":"rollout.started","data":{"rollout":{"namespace":"a","name":"b"},"revision":"r","analysis":"http-golden-signals"}}`,
			"invalid_data", `data.args.service: required by analysis template`, 400},
		{"too large", `{"specversion":"1.0","id":"x","source":"` + string(bytes.Repeat([]byte("x"), 3000)) + `"}`, "too_large", "over the limit", 413},
	} {
		status, body := call(t, http.MethodPost, r.url+"/v1/events", []byte(tc.body), structured)
		require.Equal(t, tc.status, status, "%s: %v", tc.name, body)
		require.Equal(t, tc.reason, body["reason"], tc.name)
		require.Contains(t, body["error"], tc.inErr, tc.name)
	}
	status, body := call(t, http.MethodPost, r.url+"/v1/events", []byte(startedEvent), map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "text/plain"})
	require.Equal(t, http.StatusUnsupportedMediaType, status, body)
	require.Empty(t, r.storedEvents(t), "nothing invalid is stored")
}

func TestWritesNeedTheToken(t *testing.T) {
	r := newRig(t, Options{})
	for _, path := range []string{"/v1/events", "/v1/argo/analysis", "/v1/flagger/post-rollout"} {
		for name, h := range map[string]map[string]string{
			"no token":    {"Content-Type": "application/cloudevents+json"},
			"wrong token": {"Content-Type": "application/cloudevents+json", "Authorization": "Bearer " + testToken + "x"},
			"not bearer":  {"Content-Type": "application/cloudevents+json", "Authorization": "Basic " + testToken},
		} {
			status, body := call(t, http.MethodPost, r.url+path, []byte(startedEvent), h)
			require.Equal(t, http.StatusUnauthorized, status, "%s %s: %v", path, name, body)
			require.NotContains(t, body["error"], testToken)
		}
	}
	// Flagger's webhooks cannot set headers: the token may come in metadata.
	flagger := `{"name":"checkout","namespace":"prod","phase":"Succeeded","checksum":"abc","metadata":{"token":"` + testToken + `"}}`
	status, body := call(t, http.MethodPost, r.url+"/v1/flagger/post-rollout", []byte(flagger), nil)
	require.Equal(t, http.StatusOK, status, body)
	require.Len(t, r.storedEvents(t), 1)

	// No token configured: writes are refused unless explicitly allowed.
	closed := httptest.NewServer(New(Options{Verdicts: verdicts{}, Gatherer: prometheus.NewRegistry()}).Handler())
	t.Cleanup(closed.Close)
	status, body = call(t, http.MethodPost, closed.URL+"/v1/events", []byte(startedEvent), map[string]string{"Content-Type": "application/cloudevents+json"})
	require.Equal(t, http.StatusForbidden, status, body)
	require.Contains(t, body["error"], "http.allowUnauthenticatedWrites")

	open := newRig(t, Options{AllowUnauthenticatedWrites: true})
	status, body = call(t, http.MethodPost, open.url+"/v1/events", []byte(startedEvent), map[string]string{"Content-Type": "application/cloudevents+json"})
	require.Equal(t, http.StatusAccepted, status, body)
}

func argoBody(step, weight string) []byte {
	return []byte(`{"namespace":"prod","name":"checkout","revision":"6d4f8c9b7","stableRevision":"5c8d7f6a1",
	 "analysis":"http-golden-signals","args":{"service":"checkout"},
	 "canary":{"version":"6d4f8c9b7"},"stable":{"version":"5c8d7f6a1"},"step":` + step + `,"weight":` + weight + `}`)
}

func TestArgoAnalysisStartsStepsAndAnswersForTheAskedStep(t *testing.T) {
	r := newRig(t, Options{})
	url := r.url + "/v1/argo/analysis"
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}

	// The first call starts the analysis (weights as Argo substitutes them: strings); a
	// retry publishes the same id, dropped as a duplicate.
	for range 2 {
		status, body := call(t, http.MethodPost, url, argoBody(`"1"`, `"10"`), auth)
		require.Equal(t, http.StatusOK, status, body)
		require.Equal(t, "pause", body["verdict"])
		require.Equal(t, true, body["stale"])
		require.EqualValues(t, 10, body["askedWeight"])
	}
	got := r.storedEvents(t)
	require.Len(t, got, 1)
	start := got[0].Event
	require.Equal(t, rollout.EventStarted, start.Type)
	require.Equal(t, derivedID("argo", ref, "6d4f8c9b7", rollout.EventStarted, 1, 10), got[0].MsgID)
	require.Equal(t, got[0].MsgID, start.ID)
	require.Equal(t, "5c8d7f6a1", start.StableRevision)
	require.Equal(t, map[string]string{"version": "6d4f8c9b7"}, start.Canary)
	require.Equal(t, 1, start.Step)

	// Step 1 judged proceed: a call for step 1 is answered proceed.
	v := rollout.Verdict{Rollout: ref, Revision: "6d4f8c9b7", Step: 1, Weight: 10, Verdict: rollout.Proceed, Reason: "all pass", Sequence: 5}
	r.state.set(v, rollout.Position{Revision: "6d4f8c9b7", Step: 1, Weight: 10})
	status, body := call(t, http.MethodPost, url, argoBody("1", "10"), auth)
	require.Equal(t, http.StatusOK, status, body)
	require.Equal(t, "proceed", body["verdict"])
	require.Nil(t, body["stale"])

	// The next analysis step, at 50%: step 1's proceed is never its answer; the step is stored.
	for range 2 {
		status, body = call(t, http.MethodPost, url, argoBody("2", "50"), auth)
		require.Equal(t, http.StatusOK, status, body)
		require.Equal(t, "pause", body["verdict"], "a lower step's proceed is not this step's")
		require.Equal(t, true, body["stale"])
		require.Contains(t, body["reason"], "step 2 (weight 50%) has no evidence yet")
		require.EqualValues(t, 1, body["step"], "the verdict says which step its evidence is about")
	}
	got = r.storedEvents(t)
	require.Len(t, got, 2, "the retry is a duplicate")
	require.Equal(t, rollout.EventStep, got[1].Event.Type)
	require.Equal(t, 50, got[1].Event.Weight)
	require.Equal(t, derivedID("argo", ref, "6d4f8c9b7", rollout.EventStep, 2, 50), got[1].MsgID)

	// Once step 2 is applied and judged, its own verdict is answered; a late call for step 1
	// stores nothing (no step back).
	r.state.set(rollout.Verdict{Rollout: ref, Revision: "6d4f8c9b7", Step: 2, Weight: 50, Verdict: rollout.Proceed, Sequence: 9},
		rollout.Position{Revision: "6d4f8c9b7", Step: 2, Weight: 50})
	status, body = call(t, http.MethodPost, url, argoBody("2", "50"), auth)
	require.Equal(t, "proceed", body["verdict"], body)
	status, body = call(t, http.MethodPost, url, argoBody("1", "10"), auth)
	require.Equal(t, http.StatusOK, status, body)
	require.Len(t, r.storedEvents(t), 2)

	// A rollback is final: answered as it is for any step.
	r.state.set(rollout.Verdict{Rollout: ref, Revision: "6d4f8c9b7", Step: 2, Weight: 50, Verdict: rollout.Rollback, Sequence: 10},
		rollout.Position{Revision: "6d4f8c9b7", Step: 2, Weight: 50})
	_, body = call(t, http.MethodPost, url, argoBody("3", "75"), auth)
	require.Equal(t, "rollback", body["verdict"])
}

func TestArgoAnalysisRefusesBadBodies(t *testing.T) {
	r := newRig(t, Options{})
	url := r.url + "/v1/argo/analysis"
	for _, tc := range []struct{ name, body, inErr string }{
		{"not JSON", `{"namespace":`, "not an analysis request"},
		{"no revision", `{"namespace":"prod","name":"checkout","analysis":"http-golden-signals"}`, "data.revision: required"},
		{"weight not a number", string(argoBody("1", `"ten"`)), "data.weight: must be an integer, got string"},
		{"weight out of range", string(argoBody("1", "150")), "data.weight: must be within 0-100, got 150"},
		{"unknown template", `{"namespace":"prod","name":"checkout","revision":"r","analysis":"nope"}`, `no analysis template named "nope"`},
		{"no namespace", `{"name":"checkout","revision":"r","analysis":"http-golden-signals"}`, "data.rollout.namespace: required"},
	} {
		status, body := call(t, http.MethodPost, url, []byte(tc.body), auth)
		require.Equal(t, http.StatusBadRequest, status, "%s: %v", tc.name, body)
		require.Contains(t, body["error"], tc.inErr, tc.name)
	}
	require.Empty(t, r.storedEvents(t))
}

func TestReadAPIAnswersForTheAskedStep(t *testing.T) {
	v := rollout.Verdict{Rollout: rollout.Ref{Namespace: "prod", Name: "checkout"}, Revision: "v2", Step: 1, Weight: 10, Verdict: rollout.Proceed, Sequence: 3}
	h := New(Options{Verdicts: verdicts{v.Rollout: v}, Gatherer: prometheus.NewRegistry()}).Handler()
	for query, want := range map[string]string{
		"":                       "proceed",
		"?step=1":                "proceed",
		"?weight=10":             "proceed",
		"?step=0&weight=5":       "proceed", // evidence of a later step answers for an earlier one
		"?step=2":                "pause",
		"?weight=50":             "pause",
		"?step=1&weight=50":      "pause",
		"?revision=v3&weight=10": "pause",
	} {
		code, body := get(t, h, "/v1/rollouts/prod/checkout"+query)
		require.Equal(t, http.StatusOK, code, query)
		var doc map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &doc))
		require.Equal(t, want, doc["verdict"], query)
		require.Equal(t, want == "pause", doc["stale"] == true, query)
		require.EqualValues(t, 3, doc["sequence"], "%s: the verdict JSON keeps its shape", query)
	}
	code, body := get(t, h, "/v1/rollouts/prod/checkout?weight=abc")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, "weight")

	v.Verdict = rollout.Rollback
	h = New(Options{Verdicts: verdicts{v.Rollout: v}, Gatherer: prometheus.NewRegistry()}).Handler()
	_, body = get(t, h, "/v1/rollouts/prod/checkout?step=4&weight=100")
	require.Contains(t, body, `"verdict":"rollback"`, "rollback is final")
}

func flaggerHook(t *testing.T, r rig, hook string, p flaggerCanaryPayload) (int, map[string]any) {
	t.Helper()
	return callAsFlagger(t, r.url+"/v1/flagger/"+hook, payload(t, p))
}

func TestFlaggerSelfStartingGate(t *testing.T) {
	r := newRig(t, Options{})
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	md := map[string]string{"analysis": "http-golden-signals", "token": testToken, "stepWeight": "10", "maxWeight": "30",
		"args.service": "checkout", "canary.version": "checkout", "stable.version": "checkout-primary"}
	p := flaggerCanaryPayload{Name: "checkout", Namespace: "prod", Phase: "Progressing", Checksum: "85d557f47b", Metadata: md}

	// The first call, at 0%: the gate opens, the analysis starts and step 1 (10%) is granted.
	status, body := flaggerHook(t, r, "gate", p)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body["message"], "granted step 1 (weight 10%)")
	got := r.storedEvents(t)
	require.Len(t, got, 2)
	require.Equal(t, rollout.EventStarted, got[0].Event.Type)
	require.Equal(t, derivedID("flagger", ref, "85d557f47b", rollout.EventStarted, 0, 0), got[0].MsgID)
	require.Equal(t, map[string]string{"service": "checkout"}, got[0].Event.Args)
	require.Equal(t, map[string]string{"version": "checkout-primary"}, got[0].Event.Stable)
	require.Equal(t, 0, got[0].Event.Weight)
	require.Equal(t, rollout.EventStep, got[1].Event.Type)
	require.Equal(t, 1, got[1].Event.Step)
	require.Equal(t, 10, got[1].Event.Weight)

	// Step 1 applied, its verdicts still about step 0: closed for now (425), nothing stored.
	r.state.set(rollout.Verdict{Rollout: ref, Revision: "85d557f47b", Step: 0, Weight: 0, Verdict: rollout.Proceed, Sequence: 1},
		rollout.Position{Revision: "85d557f47b", Step: 1, Weight: 10})
	status, body = flaggerHook(t, r, "gate", p)
	require.Equal(t, http.StatusTooEarly, status, body)
	require.Equal(t, true, body["stale"])
	require.Len(t, r.storedEvents(t), 2)

	// Step 1 judged proceed: open, and step 2 (20%) is granted.
	r.state.set(rollout.Verdict{Rollout: ref, Revision: "85d557f47b", Step: 1, Weight: 10, Verdict: rollout.Proceed, Sequence: 2},
		rollout.Position{Revision: "85d557f47b", Step: 1, Weight: 10})
	status, body = flaggerHook(t, r, "gate", p)
	require.Equal(t, http.StatusOK, status, body)
	got = r.storedEvents(t)
	require.Len(t, got, 3)
	require.Equal(t, 20, got[2].Event.Weight)

	// At the top weight a proceed opens the gate (confirm-promotion too) and grants nothing more.
	r.state.set(rollout.Verdict{Rollout: ref, Revision: "85d557f47b", Step: 3, Weight: 30, Verdict: rollout.Proceed, Sequence: 7},
		rollout.Position{Revision: "85d557f47b", Step: 3, Weight: 30})
	status, _ = flaggerHook(t, r, "gate", p)
	require.Equal(t, http.StatusOK, status)
	require.Len(t, r.storedEvents(t), 3)

	// Rollback: the gate closes for good and the rollback hook says roll back.
	r.state.set(rollout.Verdict{Rollout: ref, Revision: "85d557f47b", Step: 3, Weight: 30, Verdict: rollout.Rollback, Sequence: 8},
		rollout.Position{Revision: "85d557f47b", Step: 3, Weight: 30})
	status, _ = flaggerHook(t, r, "gate", p)
	require.Equal(t, http.StatusForbidden, status)
	status, _ = flaggerHook(t, r, "rollback", p)
	require.Equal(t, http.StatusOK, status)
	// ... but never for another checksum's rollback.
	other := p
	other.Checksum = "new"
	status, _ = flaggerHook(t, r, "rollback", other)
	require.Equal(t, http.StatusConflict, status)

	// post-rollout: Failed aborts, Succeeded completes.
	p.Phase = "Failed"
	status, body = flaggerHook(t, r, "post-rollout", p)
	require.Equal(t, http.StatusOK, status, body)
	got = r.storedEvents(t)
	require.Equal(t, rollout.EventAborted, got[len(got)-1].Event.Type)
	other.Phase = "Succeeded"
	status, _ = flaggerHook(t, r, "post-rollout", other)
	require.Equal(t, http.StatusOK, status)
	got = r.storedEvents(t)
	require.Equal(t, rollout.EventCompleted, got[len(got)-1].Event.Type)
	require.Equal(t, "new", got[len(got)-1].Event.Revision)
	other.Phase = "Progressing"
	status, _ = flaggerHook(t, r, "post-rollout", other)
	require.Equal(t, http.StatusBadRequest, status)
}

func TestFlaggerSelfStartingGateRefusesIncompleteMetadata(t *testing.T) {
	r := newRig(t, Options{})
	for _, tc := range []struct {
		name   string
		md     map[string]string
		status int
		inErr  string
	}{
		{"no token", map[string]string{"analysis": "http-golden-signals", "stepWeight": "10"}, 401, "bearer token"},
		{"no weights", map[string]string{"analysis": "http-golden-signals", "token": testToken}, 400, "metadata.stepWeight"},
		{"unknown template", map[string]string{"analysis": "nope", "token": testToken, "stepWeight": "10"}, 400, `no analysis template named "nope"`},
		{"missing variable", map[string]string{"analysis": "http-golden-signals", "token": testToken, "stepWeights": "5,20,50", "args.service": "x", "canary.version": "a"}, 400, "data.stable.version"},
	} {
		status, body := flaggerHook(t, r, "gate", flaggerCanaryPayload{Name: "checkout", Namespace: "prod", Checksum: "abc", Metadata: tc.md})
		require.Equal(t, tc.status, status, "%s: %v", tc.name, body)
		require.Contains(t, body["error"], tc.inErr, tc.name)
	}
	require.Empty(t, r.storedEvents(t))
}

func TestWeightPlan(t *testing.T) {
	for _, tc := range []struct {
		md   map[string]string
		want weights
	}{
		{map[string]string{"stepWeight": "10", "maxWeight": "50"}, weights{10, 20, 30, 40, 50}},
		{map[string]string{"stepWeight": "30", "maxWeight": "50"}, weights{30, 50}},
		{map[string]string{"stepWeight": "25"}, weights{25, 50, 75, 100}},
		{map[string]string{"stepWeights": "1, 10,50"}, weights{1, 10, 50}},
	} {
		got, err := weightPlan(tc.md)
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
	require.Equal(t, 0, weights{10, 20}.weight(0))
	require.Equal(t, 20, weights{10, 20}.weight(5))
	for _, md := range []map[string]string{{}, {"stepWeight": "0"}, {"stepWeights": "10,5"}, {"stepWeight": "10", "maxWeight": "x"}} {
		_, err := weightPlan(md)
		require.Error(t, err, md)
	}
}
