package promproc_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/workload"
)

// requireBinary returns the prometheus binary, or skips the test when there is none, unless
// $CI is set: CI must install it, so there a missing binary fails the test.
func requireBinary(t *testing.T) string {
	t.Helper()
	bin, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("skipping the test with a real Prometheus: %v (with $CI set this fails)", err)
		}
		t.Fatalf("$CI is set but: %v", err)
	}
	return bin
}

// startWorkload runs a workload behind a loopback HTTP server for the duration of the test.
func startWorkload(t *testing.T, version string, p workload.Profile) (*workload.Workload, string) {
	t.Helper()
	w, err := workload.New(workload.Config{Service: "x", Version: version, Profile: p, Seed: 7})
	require.NoError(t, err)
	srv := httptest.NewServer(w.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return w, srv.Listener.Addr().String()
}

// syncBuffer collects Prometheus's output, printed when the test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startPrometheus(t *testing.T, targets ...promproc.Target) (*promproc.Process, v1.API) {
	t.Helper()
	bin := requireBinary(t)
	var log syncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := promproc.Start(ctx, promproc.Options{
		Binary:         bin,
		Dir:            t.TempDir(),
		Targets:        targets,
		ScrapeInterval: time.Second,
		Log:            &log,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, p.Stop())
		if t.Failed() {
			t.Logf("prometheus output:\n%s", log.String())
		}
	})
	client, err := api.NewClient(api.Config{Address: p.URL()})
	require.NoError(t, err)
	return p, v1.NewAPI(client)
}

// queryByVersion evaluates q, a vector grouped by version.
func queryByVersion(ctx context.Context, prom v1.API, q string) (map[string]float64, error) {
	return queryByVersionAt(ctx, prom, q, time.Now())
}

func queryByVersionAt(ctx context.Context, prom v1.API, q string, ts time.Time) (map[string]float64, error) {
	value, _, _, err := prom.Query(ctx, q, ts)
	if err != nil {
		return nil, err
	}
	vec, ok := value.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("%s: got a %s, not a vector", q, value.Type())
	}
	out := map[string]float64{}
	for _, s := range vec {
		out[string(s.Metric["version"])] = float64(s.Value)
	}
	return out, nil
}

// eventually evaluates cond every 200ms until it holds or the deadline passes, and returns the
// last error cond reported.
func eventually(ctx context.Context, deadline time.Duration, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %v", ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

const requestsByVersion = `sum by (version) (http_requests_total{service="x"})`

func bothVersionsCounted(prom v1.API) func(context.Context) error {
	return func(ctx context.Context) error {
		got, err := queryByVersion(ctx, prom, requestsByVersion)
		if err != nil {
			return err
		}
		if got["v1"] <= 0 || got["v2"] <= 0 {
			return fmt.Errorf("requests by version: %v", got)
		}
		return nil
	}
}

func TestPrometheusScrapesStableAndCanary(t *testing.T) {
	t.Parallel()
	_, stable := startWorkload(t, "v1", workload.Profile{Rate: 50})
	_, canary := startWorkload(t, "v2", workload.Profile{Rate: 50, ErrorRate: 0.2})
	started := time.Now()
	p, prom := startPrometheus(t,
		promproc.Target{Job: "stable", Address: stable},
		promproc.Target{Job: "canary", Address: canary, Labels: map[string]string{"track": "canary"}},
	)
	t.Logf("prometheus ready at %s after %s", p.URL(), time.Since(started).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.WaitTargetsUp(ctx))
	t.Logf("targets up after %s", time.Since(started).Round(time.Millisecond))

	require.NoError(t, eventually(t.Context(), 30*time.Second, bothVersionsCounted(prom)))
	t.Logf("both versions counted after %s", time.Since(started).Round(time.Millisecond))

	// Target labels are attached, and the error series exist on both sides.
	got, err := queryByVersion(t.Context(), prom, `count by (version) (http_requests_total{service="x", code="500"})`)
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"v1": 1, "v2": 1}, got)
	got, err = queryByVersion(t.Context(), prom, `count by (version) (http_requests_total{track="canary"})`)
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"v2": 2}, got)
}

func TestRestartKeepsPortAndData(t *testing.T) {
	t.Parallel()
	_, stable := startWorkload(t, "v1", workload.Profile{Rate: 50})
	_, canary := startWorkload(t, "v2", workload.Profile{Rate: 50})
	p, prom := startPrometheus(t,
		promproc.Target{Job: "stable", Address: stable},
		promproc.Target{Job: "canary", Address: canary},
	)
	url := p.URL()
	require.NoError(t, eventually(t.Context(), 30*time.Second, bothVersionsCounted(prom)))

	// A crash: the server is gone until it is restarted.
	require.NoError(t, p.Kill())
	require.NoError(t, p.Kill(), "Kill is idempotent")
	_, err := http.Get(url + "/-/ready")
	require.Error(t, err)
	killedAt := time.Now()

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	require.NoError(t, p.Restart(ctx))
	require.Equal(t, url, p.URL())
	// Samples scraped before the crash were replayed from the WAL.
	got, err := queryByVersionAt(ctx, prom, `count by (version) (http_requests_total{code="200"})`, killedAt)
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"v1": 1, "v2": 1}, got, "series from before the crash")

	// A graceful restart of a running server.
	require.NoError(t, p.Restart(ctx))
	require.NoError(t, p.WaitTargetsUp(ctx))
	require.NoError(t, p.Stop())
	require.NoError(t, p.Stop(), "Stop is idempotent")
}

func TestStartFailsClearly(t *testing.T) {
	t.Parallel()
	bin := requireBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	_, err := promproc.Start(ctx, promproc.Options{Binary: "/nonexistent/prometheus"})
	require.ErrorContains(t, err, "starting /nonexistent/prometheus")

	// Prometheus refuses the flag and exits: the error carries its output.
	_, err = promproc.Start(ctx, promproc.Options{Binary: bin, Dir: t.TempDir(), Args: []string{"--no-such-flag"}})
	require.ErrorContains(t, err, "prometheus exited before it was ready")
	require.ErrorContains(t, err, "no-such-flag")
}

func TestCloseRemovesTemporaryDir(t *testing.T) {
	t.Parallel()
	bin := requireBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := promproc.Start(ctx, promproc.Options{Binary: bin})
	require.NoError(t, err)
	require.DirExists(t, p.DataDir())
	require.NoError(t, p.Close())
	require.NoDirExists(t, p.Dir())
	_, err = net.Dial("tcp", p.URL()[len("http://"):])
	require.Error(t, err, "stopped")
}

// An outage test restarts Prometheus on its old port: Restart waits while something else
// holds it.
func TestRestartWaitsForThePort(t *testing.T) {
	t.Parallel()
	p, _ := startPrometheus(t)
	require.NoError(t, p.Kill())
	ln, err := net.Listen("tcp", p.URL()[len("http://"):])
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	err = p.Restart(ctx)
	require.ErrorContains(t, err, "still taken")

	require.NoError(t, ln.Close())
	ctx, cancel = context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	require.NoError(t, p.Restart(ctx))
}
