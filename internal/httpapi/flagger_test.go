package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// flaggerCanaryPayload is the body Flagger POSTs to every webhook (its CanaryWebhookPayload,
// marshalled by encoding/json), field for field.
type flaggerCanaryPayload struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Phase     string            `json:"phase"`
	Checksum  string            `json:"checksum"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// callAsFlagger calls url as Flagger's callWebhook does: a POST of the JSON payload with
// Content-Type application/json, any status above 202 counting as a refusal.
func callAsFlagger(t *testing.T, url string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out), string(raw))
	return resp.StatusCode, out
}

func payload(t *testing.T, p flaggerCanaryPayload) []byte {
	t.Helper()
	b, err := json.Marshal(p)
	require.NoError(t, err)
	return b
}

func verdictOf(ns, name string, d rollout.Decision) rollout.Verdict {
	return rollout.Verdict{
		Rollout: rollout.Ref{Namespace: ns, Name: name}, Revision: "v2", Step: 1, Weight: 20,
		Verdict: d, Reason: "because " + string(d), Sequence: 4,
		DecidedAt: time.Date(2026, 11, 25, 14, 3, 10, 120_000_000, time.UTC), TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

func flaggerServer(t *testing.T) string {
	t.Helper()
	vs := verdicts{}
	for name, d := range map[string]rollout.Decision{"podinfo": rollout.Proceed, "waiting": rollout.Pause, "broken": rollout.Rollback} {
		v := verdictOf("test", name, d)
		vs[v.Rollout] = v
	}
	other := verdictOf("prod", "checkout", rollout.Proceed)
	vs[other.Rollout] = other
	srv := httptest.NewServer(New(Options{Verdicts: vs, Gatherer: prometheus.NewRegistry()}).Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestFlaggerGateOpensOnlyOnProceed(t *testing.T) {
	url := flaggerServer(t) + "/v1/flagger/gate"
	for _, tc := range []struct {
		name     string
		payload  flaggerCanaryPayload
		status   int
		verdict  string
		rollout  string
		inReason string
	}{
		{"proceed opens the gate", flaggerCanaryPayload{Name: "podinfo", Namespace: "test", Phase: "Progressing", Checksum: "85d557f47b"},
			http.StatusOK, "proceed", "test/podinfo", "open"},
		{"pause keeps it closed for now", flaggerCanaryPayload{Name: "waiting", Namespace: "test", Phase: "Progressing", Checksum: "6b6c9b7c4"},
			http.StatusTooEarly, "pause", "test/waiting", "closed for now"},
		{"rollback keeps it closed for good", flaggerCanaryPayload{Name: "broken", Namespace: "test", Phase: "WaitingPromotion", Checksum: "1d4e5f"},
			http.StatusForbidden, "rollback", "test/broken", "closed for good"},
		{"metadata names the rollout in another namespace",
			flaggerCanaryPayload{Name: "checkout-canary", Namespace: "flagger", Phase: "Progressing", Metadata: map[string]string{"rollout": "prod/checkout"}},
			http.StatusOK, "proceed", "prod/checkout", "open"},
		{"metadata names the rollout in the canary's namespace",
			flaggerCanaryPayload{Name: "podinfo-v2", Namespace: "test", Phase: "Progressing", Metadata: map[string]string{"rollout": "podinfo"}},
			http.StatusOK, "proceed", "test/podinfo", "open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := callAsFlagger(t, url, payload(t, tc.payload))
			require.Equal(t, tc.status, status, body)
			require.Equal(t, tc.verdict, body["verdict"])
			require.Equal(t, "gate", body["hook"])
			require.Equal(t, tc.payload.Phase, body["phase"])
			ref := body["rollout"].(map[string]any)
			require.Equal(t, tc.rollout, ref["namespace"].(string)+"/"+ref["name"].(string))
			require.Contains(t, body["message"], tc.inReason)
			require.Equal(t, "because "+tc.verdict, body["reason"])
			require.Equal(t, "v2", body["revision"])
			require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", body["traceId"])
		})
	}
}

func TestFlaggerRollbackHookAnswers200OnlyOnRollback(t *testing.T) {
	url := flaggerServer(t) + "/v1/flagger/rollback"
	for name, want := range map[string]int{"broken": http.StatusOK, "podinfo": http.StatusConflict, "waiting": http.StatusConflict} {
		status, body := callAsFlagger(t, url, payload(t, flaggerCanaryPayload{Name: name, Namespace: "test", Phase: "Progressing", Checksum: "85d557f47b"}))
		require.Equal(t, want, status, "%s: %v", name, body)
		require.Equal(t, "rollback", body["hook"])
	}
	// Flagger also calls rollback hooks while waiting for a gate.
	status, body := callAsFlagger(t, url, payload(t, flaggerCanaryPayload{Name: "broken", Namespace: "test", Phase: "Waiting"}))
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body["message"], "roll back")
}

func TestFlaggerHooksRefuseWhatIsNotAnAnalysedCanary(t *testing.T) {
	base := flaggerServer(t)
	for _, hook := range []string{"/v1/flagger/gate", "/v1/flagger/rollback"} {
		for _, tc := range []struct {
			name   string
			body   string
			status int
			inErr  string
		}{
			{"unknown rollout", `{"name":"podinfo","namespace":"staging","phase":"Progressing","checksum":"x"}`, http.StatusNotFound, "staging/podinfo"},
			{"not JSON", `name=podinfo`, http.StatusBadRequest, "not a Flagger webhook payload"},
			{"metadata not strings", `{"name":"podinfo","namespace":"test","metadata":{"rollout":1}}`, http.StatusBadRequest, "not a Flagger webhook payload"},
			{"no name", `{"namespace":"test","phase":"Progressing"}`, http.StatusBadRequest, `"name" and "namespace"`},
			{"no namespace", `{"name":"podinfo","phase":"Progressing"}`, http.StatusBadRequest, `"name" and "namespace"`},
			{"empty body", ``, http.StatusBadRequest, "not a Flagger webhook payload"},
			{"bad metadata.rollout", `{"name":"podinfo","namespace":"test","metadata":{"rollout":"a/b/c"}}`, http.StatusBadRequest, "metadata.rollout"},
			{"too large", `{"name":"podinfo","namespace":"test","metadata":{"x":"` + strings.Repeat("x", maxWebhookBytes) + `"}}`,
				http.StatusBadRequest, "larger than"},
		} {
			status, body := callAsFlagger(t, base+hook, []byte(tc.body))
			require.Equal(t, tc.status, status, "%s %s: %v", hook, tc.name, body)
			require.Contains(t, body["error"], tc.inErr, "%s %s", hook, tc.name)
		}
		resp, err := http.Get(base + hook)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "POST only")
	}
}

// TestArgoRolloutsWebMetric sends the request Argo Rollouts' web metric provider sends (a GET
// of the template's URL with its headers, no body) and reads the answer as the documented
// AnalysisTemplate does: jsonPath {$.verdict}, success on "proceed", failure on "rollback".
func TestArgoRolloutsWebMetric(t *testing.T) {
	base := flaggerServer(t)
	measure := func(path string) (int, string) {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, base+path, nil)
		require.NoError(t, err)
		req.Header.Set("Accept", "application/json") // headers: from the template's provider.web.headers
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var doc map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
		result, _ := doc["verdict"].(string) // {$.verdict}
		return resp.StatusCode, result
	}
	phase := func(result string) string {
		switch {
		case result == "proceed": // successCondition: result == "proceed"
			return "Successful"
		case result == "rollback": // failureCondition: result == "rollback"
			return "Failed"
		}
		return "Inconclusive"
	}
	for path, want := range map[string]string{
		"/v1/rollouts/test/podinfo": "Successful",
		"/v1/rollouts/test/waiting": "Inconclusive",
		"/v1/rollouts/test/broken":  "Failed",
	} {
		status, result := measure(path)
		require.Equal(t, http.StatusOK, status, path)
		require.Equal(t, want, phase(result), path)
	}
	// A rollout analyzerd does not know yet is a measurement error for Argo (non-2xx).
	status, _ := measure("/v1/rollouts/test/unknown")
	require.Equal(t, http.StatusNotFound, status)
}
