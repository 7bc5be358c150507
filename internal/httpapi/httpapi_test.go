package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

type verdicts map[rollout.Ref]rollout.Verdict

func (v verdicts) Latest(ref rollout.Ref) (rollout.Verdict, bool) { x, ok := v[ref]; return x, ok }
func (v verdicts) List() []rollout.Verdict {
	var out []rollout.Verdict
	for _, x := range v {
		out = append(out, x)
	}
	return out
}

func rollback() rollout.Verdict {
	c, s := 0.052, 0.004
	return rollout.Verdict{
		Rollout: rollout.Ref{Namespace: "prod", Name: "checkout"}, Revision: "v2.3.0", Step: 1, Weight: 10,
		Verdict: rollout.Rollback, Reason: "error-rate: canary 5.2% vs stable 0.4%", Sequence: 7,
		Checks: []rollout.CheckResult{{Metric: "error-rate", Outcome: rollout.Fail, Canary: &c, Stable: &s,
			Threshold: "canary - stable < 0.01", Samples: rollout.Samples{Canary: 1830, Stable: 16470}}},
		DecidedAt: time.Date(2026, 11, 25, 14, 3, 10, 120_000_000, time.UTC),
		Cause:     "evt-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"), path)
	return rec.Code, rec.Body.String()
}

func TestReadAPIAnswersTheVerdictAsPublished(t *testing.T) {
	v := rollback()
	s := New(Options{Verdicts: verdicts{v.Rollout: v}, Gatherer: prometheus.NewRegistry()})

	code, body := get(t, s.Handler(), "/v1/rollouts/prod/checkout")
	require.Equal(t, http.StatusOK, code)
	published, err := publish.MarshalVerdict(v)
	require.NoError(t, err)
	require.JSONEq(t, string(published), body, "the read API and NATS carry the same verdict JSON")
	require.Contains(t, body, `"threshold":"canary - stable < 0.01"`, "no HTML escaping")

	code, body = get(t, s.Handler(), "/v1/rollouts/prod/other")
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, body, "prod/other")

	code, body = get(t, s.Handler(), "/v1/rollouts")
	require.Equal(t, http.StatusOK, code)
	var list struct{ Rollouts []rollout.Verdict }
	require.NoError(t, json.Unmarshal([]byte(body), &list))
	require.Len(t, list.Rollouts, 1)
	require.Equal(t, rollout.Rollback, list.Rollouts[0].Verdict)
}

func TestEmptyListIsAnArray(t *testing.T) {
	s := New(Options{Verdicts: verdicts{}, Gatherer: prometheus.NewRegistry()})
	code, body := get(t, s.Handler(), "/v1/rollouts")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"rollouts":[]}`, body)
}

func TestHealthAndReadiness(t *testing.T) {
	broken := errors.New("connection is RECONNECTING")
	state := map[string]error{"nats": nil, "prometheus": nil}
	s := New(Options{Verdicts: verdicts{}, Gatherer: prometheus.NewRegistry(), Ready: []Check{
		{Name: "nats", Check: func(context.Context) error { return state["nats"] }},
		{Name: "prometheus", Check: func(context.Context) error { return state["prometheus"] }},
	}})
	code, body := get(t, s.Handler(), "/healthz")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status":"ok"}`, body)
	code, body = get(t, s.Handler(), "/readyz")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status":"ready","checks":{"nats":"ok","prometheus":"ok"}}`, body, "every condition is named")

	state["nats"] = broken
	code, body = get(t, s.Handler(), "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.JSONEq(t, `{"status":"not ready",
		"checks":{"nats":"connection is RECONNECTING","prometheus":"ok"},
		"problems":{"nats":"connection is RECONNECTING"}}`, body)
	code, _ = get(t, s.Handler(), "/healthz")
	require.Equal(t, http.StatusOK, code, "alive even when not ready")
}

func TestMetricsServeTheGivenRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "analyzerd_test_total", Help: "x"})
	reg.MustRegister(c)
	c.Add(3)
	s := New(Options{Verdicts: verdicts{}, Gatherer: reg})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "analyzerd_test_total 3")
}

func TestServeStopsWhenTheContextEnds(t *testing.T) {
	s := New(Options{Verdicts: verdicts{}, Gatherer: prometheus.NewRegistry()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// TestReadinessChecksRunAtOnce: one slow condition does not hold the others up; here the first
// check can only pass when the second runs while it waits.
func TestReadinessChecksRunAtOnce(t *testing.T) {
	second := make(chan struct{})
	s := New(Options{Verdicts: verdicts{}, Gatherer: prometheus.NewRegistry(), Ready: []Check{
		{Name: "first", Check: func(ctx context.Context) error {
			select {
			case <-second:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{Name: "second", Check: func(context.Context) error { close(second); return nil }},
	}})
	code, body := get(t, s.Handler(), "/readyz")
	require.Equal(t, http.StatusOK, code, body)
}
