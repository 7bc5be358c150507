package app

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

// unreachable is an address nothing listens on.
func unreachable(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "http://" + addr
}

// TestEmbeddedDaemonPausesWhilePrometheusIsUnreachable runs the whole daemon in-process in its
// default mode (embedded NATS) with the shipped configuration.
func TestEmbeddedDaemonPausesWhilePrometheusIsUnreachable(t *testing.T) {
	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	cfg.NATS.Embedded.Port = -1
	cfg.NATS.Embedded.StoreDir = t.TempDir()
	cfg.Prometheus.URL = unreachable(t)
	cfg.Prometheus.Timeout = 2 * time.Second
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Templates[0].Interval = 200 * time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	info, stop := runDaemon(t, ctx, cfg)

	nc, err := nats.Connect(info.NATSURL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	var mu sync.Mutex
	var got []rolloutclient.Received
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = rolloutclient.WatchVerdicts(watchCtx, js, "rollouts", func(r rolloutclient.Received) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r)
		})
	}()
	defer func() { stopWatch(); <-watchDone }()

	pub := rolloutclient.Publisher{JS: js, Prefix: "rollouts"}
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	started := rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Weight: 10,
	}
	require.NoError(t, pub.Publish(ctx, ref, "evt-1", rollout.EventStarted, time.Now(), started))
	unknown := started
	unknown.Rollout = rollout.Ref{Namespace: "prod", Name: "other"}
	unknown.Analysis = "no-such-template"
	require.NoError(t, pub.Publish(ctx, unknown.Rollout, "evt-2", rollout.EventStarted, time.Now(), unknown))

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 3
	}, 30*time.Second, 20*time.Millisecond)
	mu.Lock()
	for i, r := range got[:3] {
		require.Equal(t, uint64(i+1), r.Verdict.Sequence)
		require.Equal(t, rollout.Pause, r.Verdict.Verdict, "an unreachable Prometheus never gives proceed")
		for _, c := range r.Verdict.Checks {
			require.Equal(t, rollout.Error, c.Outcome)
			require.Contains(t, c.Message, "metrics source unavailable")
		}
	}
	mu.Unlock()

	// The event naming an unknown template was dead-lettered with its reason.
	stream, err := js.Stream(ctx, "ROLLOUT_DEADLETTER")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		msg, err := stream.GetLastMsgForSubject(ctx, "rollouts.deadletter.events")
		return err == nil && msg.Header.Get("Analyzerd-Error") != ""
	}, 10*time.Second, 20*time.Millisecond)
	msg, err := stream.GetLastMsgForSubject(ctx, "rollouts.deadletter.events")
	require.NoError(t, err)
	require.Contains(t, msg.Header.Get("Analyzerd-Error"), `no analysis template named "no-such-template"`)

	// /readyz says what is wrong.
	resp, err := http.Get("http://" + info.HTTPAddr + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

	cancel()
	stop()
}

// runDaemon runs the daemon in-process until ctx ends, and waits until it is ready. The
// returned function waits for it to stop, and fails the test unless it stopped cleanly within
// its shutdown timeout.
func runDaemon(t *testing.T, ctx context.Context, cfg config.Config) (Info, func()) {
	t.Helper()
	return runDaemonWith(t, ctx, cfg, Options{})
}

// runDaemonWith is runDaemon with opts (a test logger and a 50 ms resolution unless set).
func runDaemonWith(t *testing.T, ctx context.Context, cfg config.Config, opts Options) (Info, func()) {
	t.Helper()
	ready := make(chan Info, 1)
	done := make(chan error, 1)
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	if opts.Resolution == 0 {
		opts.Resolution = 50 * time.Millisecond
	}
	opts.OnReady = func(i Info) { ready <- i }
	go func() { done <- Run(ctx, cfg, opts) }()
	select {
	case info := <-ready:
		return info, func() {
			t.Helper()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
				t.Fatal("daemon did not stop within its shutdown timeout")
			}
		}
	case err := <-done:
		t.Fatalf("daemon stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready within 30s")
	}
	return Info{}, nil
}
