package app

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestExternalNATSReconnects: with --nats-url the daemon uses that server, and when the
// server goes away and comes back, the daemon reconnects and analysis goes on.
func TestExternalNATSReconnects(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	ns := natstest.Start(t, natstest.WithPort(port), natstest.WithStoreDir(dir))
	url := "nats://127.0.0.1:" + strconv.Itoa(port)

	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	cfg.NATS.URL = url
	cfg.NATS.ReconnectWait = 50 * time.Millisecond
	cfg.Prometheus.URL = unreachable(t)
	cfg.Prometheus.Timeout = time.Second
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Templates[0].Interval = 200 * time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, stop := runDaemon(t, ctx, cfg)

	// The test's own client reconnects too, and watches the verdicts.
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var mu sync.Mutex
	seqs := map[uint64]int{}
	var last rollout.Verdict
	record := func(r rolloutclient.Received) {
		mu.Lock()
		defer mu.Unlock()
		seqs[r.Verdict.Sequence]++
		last = r.Verdict
	}
	latest := func() rollout.Verdict { mu.Lock(); defer mu.Unlock(); return last }

	pub := rolloutclient.Publisher{JS: js, Prefix: "rollouts"}
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	require.NoError(t, pub.Publish(ctx, ref, "evt-1", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Weight: 10,
	}))
	watch := func() (stop func()) {
		wctx, cancelWatch := context.WithCancel(ctx)
		wdone := make(chan struct{})
		go func() { defer close(wdone); _ = rolloutclient.WatchVerdicts(wctx, js, "rollouts", record) }()
		return func() { cancelWatch(); <-wdone }
	}
	stopWatch := watch()
	require.Eventually(t, func() bool { return latest().Sequence >= 2 }, 30*time.Second, 20*time.Millisecond)
	stopWatch()

	// The server goes away and comes back on the same port with the same storage.
	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.Start(t, natstest.WithPort(port), natstest.WithStoreDir(dir))
	require.Eventually(t, func() bool { return nc.IsConnected() }, 30*time.Second, 20*time.Millisecond)

	// Events published after the restart are consumed, and verdicts keep coming.
	// Like any controller, the test retries while the restarted server recovers its streams.
	stepAt := time.Now()
	require.Eventually(t, func() bool {
		pctx, cancelPublish := context.WithTimeout(ctx, time.Second)
		defer cancelPublish()
		return pub.Publish(pctx, ref, "evt-2", rollout.EventStep, stepAt, rolloutclient.Step{Rollout: ref, Revision: "v2", Step: 1, Weight: 25}) == nil
	}, 30*time.Second, 50*time.Millisecond, "publishing after the restart")
	mu.Lock()
	seqs = map[uint64]int{}
	mu.Unlock()
	stopWatch = watch()
	defer stopWatch()
	require.Eventually(t, func() bool {
		v := latest()
		return v.Step == 1 && v.Weight == 25 && v.Cause == "evt-2"
	}, 60*time.Second, 20*time.Millisecond, "no verdict for the step published after the server came back")
	mu.Lock()
	for seq, n := range seqs {
		require.Equal(t, 1, n, "sequence %d stored once", seq)
	}
	mu.Unlock()

	cancel()
	stop()
}
