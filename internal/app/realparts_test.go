package app

import (
	"context"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/workload"
)

// startPrometheus starts a real Prometheus scraping, every second, a stable side v1 at 0.5%
// errors and a canary v2 at canaryErrors, both instrumented workloads of service checkout at
// 200 req/s. It skips the test when prometheus is not installed (fails under CI).
func startPrometheus(t *testing.T, ctx context.Context, canaryErrors float64) *promproc.Process {
	t.Helper()
	binary, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("prometheus is required in CI: %v", err)
		}
		t.Skipf("prometheus not installed: %v", err)
	}
	wctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	var targets []promproc.Target
	for i, side := range []struct {
		version string
		errors  float64
	}{{"v1", 0.005}, {"v2", canaryErrors}} {
		w, err := workload.New(workload.Config{Service: "checkout", Version: side.version, Seed: int64(i + 1),
			Profile: workload.Profile{Rate: 200, ErrorRate: side.errors}})
		require.NoError(t, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(wctx) }()
		t.Cleanup(func() { stop(); <-done })
		targets = append(targets, promproc.Target{Job: "checkout", Address: ln.Addr().String()})
	}
	prom, err := promproc.Start(ctx, promproc.Options{Binary: binary, Dir: t.TempDir(), Targets: targets, ScrapeInterval: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prom.Close() })
	require.NoError(t, prom.WaitTargetsUp(ctx))
	return prom
}

// fastConfig is the daemon's configuration for tests on real parts: embedded NATS on a
// random port, the fast template, HTTP on a random port.
func fastConfig(t *testing.T, promURL string) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.NATS.Embedded.Port, cfg.NATS.Embedded.StoreDir = -1, t.TempDir()
	cfg.Prometheus.URL, cfg.HTTP.Addr = promURL, "127.0.0.1:0"
	cfg.Prometheus.Timeout = 2 * time.Second
	cfg.State.ReplicaID = "test"
	cfg.Ingest.MaxClockSkew = 2 * time.Second
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.Templates = []rollout.Template{fastTemplate()}
	for i := range cfg.Templates {
		config.TemplateDefaults(&cfg.Templates[i])
	}
	require.NoError(t, cfg.Validate())
	return cfg
}

// startConnected runs the daemon with cfg and opts until the test ends (failing it unless it
// stops cleanly), and connects to its NATS server.
func startConnected(t *testing.T, ctx context.Context, cfg config.Config, opts Options) (Info, jetstream.JetStream) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	info, stop := runDaemonWith(t, runCtx, cfg, opts)
	t.Cleanup(func() { cancel(); stop() })
	nc, err := nats.Connect(info.NATSURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return info, js
}
