package workload

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHandlerProfile(t *testing.T) {
	w, err := New(validConfig())
	require.NoError(t, err)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()

	status, body := do(t, srv, http.MethodGet, "/profile", "")
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"rate":100,"errorRate":0.01,"latencyMedian":"80ms","latencySpread":0.2}`, body)

	// Fields left out keep their value.
	status, body = do(t, srv, http.MethodPut, "/profile", `{"errorRate":0.25,"latencyMedian":"1.5s"}`)
	require.Equal(t, http.StatusOK, status, body)
	require.JSONEq(t, `{"rate":100,"errorRate":0.25,"latencyMedian":"1.5s","latencySpread":0.2}`, body)
	require.Equal(t, Profile{Rate: 100, ErrorRate: 0.25, LatencyMedian: 1500 * time.Millisecond, LatencySpread: 0.2}, w.Profile())

	for _, tt := range []struct{ body, want string }{
		{`{"errorRate":1.5}`, "error rate must be a share within [0, 1], got 1.5"},
		{`{"rate":-3}`, "rate must be a finite number of requests per second >= 0, got -3"},
		{`{"latencyMedian":"fast"}`, `latencyMedian must be a duration string such as "50ms"`},
		{`{"latencyMedian":0.05}`, `latencyMedian must be a duration string such as "50ms"`},
		{`{"error_rate":0.1}`, `unknown field "error_rate"`},
		{`{"rate":`, "invalid profile JSON"},
		{`[]`, "invalid profile JSON"},
		{``, "invalid profile JSON"},
	} {
		status, body := do(t, srv, http.MethodPut, "/profile", tt.body)
		require.Equal(t, http.StatusBadRequest, status, "PUT %s", tt.body)
		require.Contains(t, body, tt.want, "PUT %s", tt.body)
	}
	require.Equal(t, 0.25, w.Profile().ErrorRate, "rejected updates change nothing")

	status, body = do(t, srv, http.MethodPut, "/profile", `{"rate":1}`+strings.Repeat(" ", maxProfileBody))
	require.Equal(t, http.StatusRequestEntityTooLarge, status, body)

	status, _ = do(t, srv, http.MethodPost, "/profile", `{}`)
	require.Equal(t, http.StatusMethodNotAllowed, status)
}

func TestHandlerMetrics(t *testing.T) {
	w, err := New(validConfig())
	require.NoError(t, err)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	w.Step(time.Minute)

	status, body := do(t, srv, http.MethodGet, "/metrics", "")
	require.Equal(t, http.StatusOK, status)
	s := snapshotOf(t, body)
	got := w.Totals()
	require.Greater(t, got.Errors, uint64(0))
	require.Equal(t, float64(got.Requests-got.Errors), s.requests["200"])
	require.Equal(t, float64(got.Errors), s.requests["500"])
	require.Equal(t, float64(got.Requests), s.count)
	require.Equal(t, float64(got.Requests), s.buckets["+Inf"])
	require.Contains(t, body, "# TYPE http_request_duration_seconds histogram")
	require.NotContains(t, body, "go_goroutines", "the workload's own registry, not the global one")
}

func do(t *testing.T, srv *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// scrape returns the text exposition of w's metrics.
func scrape(t *testing.T, w *Workload) string {
	t.Helper()
	rec := httptest.NewRecorder()
	w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

type snapshot struct {
	requests   map[string]float64 // by code
	buckets    map[string]float64 // cumulative, by le
	sum, count float64
}

// snapshotOf parses the samples of one workload's text exposition.
func snapshotOf(t *testing.T, exposition string) snapshot {
	t.Helper()
	s := snapshot{requests: map[string]float64{}, buckets: map[string]float64{}}
	sc := bufio.NewScanner(strings.NewReader(exposition))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		require.True(t, ok, line)
		v, err := strconv.ParseFloat(value, 64)
		require.NoError(t, err, line)
		name, labels, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
		switch name {
		case "http_requests_total":
			s.requests[label(labels, "code")] = v
		case "http_request_duration_seconds_bucket":
			s.buckets[label(labels, "le")] = v
		case "http_request_duration_seconds_sum":
			s.sum = v
		case "http_request_duration_seconds_count":
			s.count = v
		}
	}
	require.NoError(t, sc.Err())
	return s
}

func label(labels, name string) string {
	for pair := range strings.SplitSeq(labels, ",") {
		if k, v, _ := strings.Cut(pair, "="); k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}
