package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// fakeHistory is a verdict stream in memory; err makes every read fail.
type fakeHistory struct {
	verdicts []rollout.Verdict
	err      error
}

func (f fakeHistory) Rollout(_ context.Context, ref rollout.Ref) ([]rollout.Verdict, int, error) {
	if f.err != nil {
		return nil, 0, f.err
	}
	var out []rollout.Verdict
	for _, v := range f.verdicts {
		if v.Rollout == ref {
			out = append(out, v)
		}
	}
	return out, 0, nil
}

func (f fakeHistory) Latest(context.Context) ([]rollout.Verdict, bool, error) {
	if f.err != nil {
		return nil, false, f.err
	}
	last := map[rollout.Ref]rollout.Verdict{}
	var order []rollout.Ref
	for _, v := range f.verdicts {
		if _, ok := last[v.Rollout]; !ok {
			order = append(order, v.Rollout)
		}
		last[v.Rollout] = v
	}
	var out []rollout.Verdict
	for _, ref := range order {
		out = append(out, last[ref])
	}
	return out, false, nil
}

func page(t *testing.T, h http.Handler, path string) (*httptest.ResponseRecorder, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec, rec.Body.String()
}

func pagesServer(h History, live verdicts) *Server {
	return New(Options{Verdicts: live, Gatherer: prometheus.NewRegistry(), History: h,
		TraceURL: "https://jaeger.example/trace/{traceId}",
		Now:      func() time.Time { return time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC) }})
}

func TestRolloutPageAndHistory(t *testing.T) {
	v := rollback()
	older := v
	older.Sequence, older.Verdict, older.DecidedAt = 6, rollout.Pause, v.DecidedAt.Add(-10*time.Second)
	s := pagesServer(fakeHistory{verdicts: []rollout.Verdict{older, v}}, verdicts{v.Rollout: v})

	rec, body := page(t, s.Handler(), "/ui/rollouts/prod/checkout")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
	require.Contains(t, rec.Header().Get("Content-Security-Policy"), "default-src 'none'")
	require.Contains(t, body, "<h1>Rollout prod/checkout</h1>")
	require.Contains(t, body, "Under analysis now.")
	require.Contains(t, body, `href="https://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736"`)

	rec, body = page(t, s.Handler(), "/v1/rollouts/prod/checkout/history")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var got struct {
		Live     bool `json:"live"`
		Analyses []struct {
			Timeline []struct {
				Verdict  rollout.Verdict `json:"verdict"`
				TraceURL string          `json:"traceUrl"`
			} `json:"timeline"`
		} `json:"analyses"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.True(t, got.Live)
	require.Len(t, got.Analyses, 1)
	require.Len(t, got.Analyses[0].Timeline, 2)
	require.Equal(t, uint64(7), got.Analyses[0].Timeline[1].Verdict.Sequence)

	// The latest-verdict endpoint is unchanged.
	code, _ := get(t, s.Handler(), "/v1/rollouts/prod/checkout")
	require.Equal(t, http.StatusOK, code)
}

func TestUnknownRolloutIs404(t *testing.T) {
	s := pagesServer(fakeHistory{}, verdicts{})
	rec, body := page(t, s.Handler(), "/ui/rollouts/prod/nope")
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
	require.Contains(t, body, "Rollout prod/nope not found")
	rec, body = page(t, s.Handler(), "/v1/rollouts/prod/nope/history")
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.JSONEq(t, `{"error": "no verdict of rollout prod/nope on the verdict stream"}`, body)
}

func TestStreamUnavailableIs503(t *testing.T) {
	s := pagesServer(fakeHistory{err: errors.New("verdict stream unavailable: nats: timeout")}, verdicts{})
	for _, path := range []string{"/ui/", "/ui/rollouts/prod/checkout"} {
		rec, body := page(t, s.Handler(), path)
		require.Equal(t, http.StatusServiceUnavailable, rec.Code, path)
		require.Contains(t, body, "Verdict history unavailable", path)
		require.Contains(t, body, "nats: timeout", path)
	}
	rec, body := page(t, s.Handler(), "/v1/rollouts/prod/checkout/history")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.JSONEq(t, `{"error": "the verdict history cannot be read now: verdict stream unavailable: nats: timeout"}`, body)

	// Without a history reader at all, too.
	s = New(Options{Verdicts: verdicts{}, Gatherer: prometheus.NewRegistry()})
	rec, _ = page(t, s.Handler(), "/ui/")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
}

func TestListPageShowsLiveAndRecentRollouts(t *testing.T) {
	live := rollback()
	recent := rollback()
	recent.Rollout, recent.Verdict, recent.DecidedAt = rollout.Ref{Namespace: "prod", Name: "cart"}, rollout.Proceed, time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	old := rollback()
	old.Rollout, old.DecidedAt = rollout.Ref{Namespace: "prod", Name: "old"}, time.Date(2026, 11, 20, 14, 0, 0, 0, time.UTC)
	unpublished := rollback()
	unpublished.Rollout = rollout.Ref{Namespace: "prod", Name: "fresh"}
	s := pagesServer(fakeHistory{verdicts: []rollout.Verdict{old, recent, live}}, verdicts{live.Rollout: live, unpublished.Rollout: unpublished})
	rec, body := page(t, s.Handler(), "/ui/")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, body, `<a href="/ui/rollouts/prod/checkout">prod/checkout</a></td><td>live</td>`)
	require.Contains(t, body, `<a href="/ui/rollouts/prod/fresh">prod/fresh</a></td><td>live</td>`)
	require.Contains(t, body, `<a href="/ui/rollouts/prod/cart">prod/cart</a></td><td>ended</td>`)
	require.NotContains(t, body, "prod/old", "ended longer ago than the recent window")

	rec, _ = page(t, s.Handler(), "/ui")
	require.Equal(t, http.StatusMovedPermanently, rec.Code)
	require.Equal(t, "/ui/", rec.Header().Get("Location"))
}

func TestPagesOnlyRead(t *testing.T) {
	s := pagesServer(fakeHistory{verdicts: []rollout.Verdict{rollback()}}, verdicts{})
	for _, path := range []string{"/ui/", "/ui/rollouts/prod/checkout", "/v1/rollouts/prod/checkout/history"} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader("{}")))
		require.Equal(t, http.StatusMethodNotAllowed, rec.Code, path)
	}
	_, body := page(t, s.Handler(), "/ui/rollouts/prod/checkout")
	require.NotContains(t, body, "<form")
	require.NotContains(t, body, "<button")
}
