package app

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
	"github.com/analyzerd/analyzerd/internal/state"
	"github.com/analyzerd/analyzerd/internal/streams"
	"github.com/analyzerd/analyzerd/internal/workload"
)

// The tests of this file run the daemon against a 3-node JetStream cluster (R3 streams and
// key-value bucket) and a real Prometheus scraping a synthetic workload, as test/e2e does (the
// other tests of this package leave Prometheus unreachable; here the evaluations must keep
// their interval, which they would not: the analyzer backs off while the metrics source is
// unreachable).

const (
	clusterInterval = time.Second
	// clusterDaemonName is the name the daemon gives its NATS connection (see connect).
	clusterDaemonName = "analyzerd"
)

var clusterRef = rollout.Ref{Namespace: "prod", Name: "checkout"}

// clusterRig is the world around the daemon: the NATS cluster and Prometheus.
type clusterRig struct {
	nats    *natstest.Cluster
	promURL string
}

func startClusterRig(t *testing.T, opts ...natstest.Option) clusterRig {
	t.Helper()
	if testing.Short() {
		t.Skip("slow: starts a 3-node NATS cluster and Prometheus")
	}
	binary, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must install prometheus: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A healthy service, stable v1 and canary v2 alike: the verdicts go pause, then proceed,
	// never rollback (which would end the evaluations).
	healthy := workload.Profile{Rate: 100, ErrorRate: 0.005, LatencyMedian: 50 * time.Millisecond}
	var targets []promproc.Target
	for i, version := range []string{"v1", "v2"} {
		w, err := workload.New(workload.Config{Service: "checkout", Version: version, Profile: healthy, Seed: int64(i + 1)})
		require.NoError(t, err)
		srv := httptest.NewServer(w.Handler())
		wctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(wctx) }()
		t.Cleanup(func() { stop(); <-done; srv.Close() })
		targets = append(targets, promproc.Target{Job: "workload", Address: srv.Listener.Addr().String()})
	}
	prom, err := promproc.Start(ctx, promproc.Options{Binary: binary, Dir: t.TempDir(), Targets: targets, ScrapeInterval: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prom.Close() })
	require.NoError(t, prom.WaitTargetsUp(ctx))

	return clusterRig{nats: natstest.StartCluster(t, 3, opts...), promURL: prom.URL()}
}

// clusterConfig is a daemon on the cluster (R3) with a fast template: one ratio check without
// a sequential test, whose guard cannot fail, evaluated every second.
func clusterConfig(t *testing.T, natsURL, promURL string) config.Config {
	t.Helper()
	cfg, err := config.Decode(strings.NewReader(fmt.Sprintf(`
nats:
  url: %q
  replicas: 3
  reconnectWait: 250ms
prometheus:
  url: %q
  timeout: 2s
http:
  addr: 127.0.0.1:0
ingest:
  maxClockSkew: 2s
state:
  replicaID: cluster-test
templates:
  - name: fast
    interval: %s
    baselineWindow: 1m
    minStepDuration: 5s
    args: [service]
    variables: [version]
    checks:
      - name: error-rate
        kind: ratio
        errors: http_requests_total{service={{ arg "service" }}, version={{ var "version" }}, code=~"5.."}
        total: http_requests_total{service={{ arg "service" }}, version={{ var "version" }}}
        minSamples: 50
        failureLimit: 1000
        sequential:
          enabled: false
        guards:
          - against: stable
            measure: delta
            max: 0.5
`, natsURL, promURL, clusterInterval)))
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	return cfg
}

// clusterDaemon is a daemon running in-process, its logs recorded.
type clusterDaemon struct {
	logs   *observer.ObservedLogs
	spans  *tracetest.SpanRecorder
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
	// timeout bounds how long Run may take to return once cancelled.
	timeout time.Duration
}

// startClusterDaemon runs the daemon until stop is called or the test ends.
func startClusterDaemon(t *testing.T, cfg config.Config) *clusterDaemon {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	logger := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	// Every evaluation's span, to know every verdict decided, published or not.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, cancel := context.WithCancel(context.Background())
	d := &clusterDaemon{logs: logs, spans: spans, reg: prometheus.NewRegistry(), cancel: cancel, done: make(chan error, 1),
		timeout: cfg.ShutdownTimeout + 5*time.Second}
	ready := make(chan Info, 1)
	go func() {
		d.done <- Run(ctx, cfg, Options{Logger: logger, Registry: d.reg, TracerProvider: tp, Resolution: 50 * time.Millisecond,
			OnReady: func(i Info) { ready <- i }})
	}()
	// Whatever happens to the test, the daemon stops before the servers do.
	t.Cleanup(func() { _ = d.wait() })
	select {
	case <-ready:
	case err := <-d.done:
		d.done <- err
		t.Fatalf("daemon stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready within 30s")
	}
	return d
}

// wait cancels the daemon and waits until Run returns, within its shutdown timeout.
func (d *clusterDaemon) wait() error {
	d.once.Do(func() {
		d.cancel()
		select {
		case d.err = <-d.done:
		case <-time.After(d.timeout):
			d.err = fmt.Errorf("daemon did not stop within %s", d.timeout)
		}
	})
	return d.err
}

// stop stops the daemon and fails the test unless Run returned nil in time.
func (d *clusterDaemon) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, d.wait())
}

// running fails the test at once if Run has returned.
func (d *clusterDaemon) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		t.Fatalf("the daemon stopped: %v", err)
	default:
	}
}

// evaluations is analyzerd_evaluations_total: the verdicts decided, published or not.
func (d *clusterDaemon) evaluations(t *testing.T) uint64 {
	t.Helper()
	families, err := d.reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == "analyzerd_evaluations_total" {
			return uint64(f.GetMetric()[0].GetCounter().GetValue())
		}
	}
	t.Fatal("no analyzerd_evaluations_total")
	return 0
}

// decidedVerdict is a verdict the daemon decided, as the span of its evaluation tells.
type decidedVerdict struct {
	seq     uint64
	traceID string
	at      time.Time // the evaluation's time: the verdict's decidedAt
}

// decided lists the verdicts decided so far, by sequence then time (a sequence decided twice
// appears twice).
func (d *clusterDaemon) decided() []decidedVerdict {
	var out []decidedVerdict
	for _, s := range d.spans.Ended() {
		if s.Name() != "evaluate" || attr(s, "rollout.namespace") != clusterRef.Namespace || attr(s, "rollout.name") != clusterRef.Name {
			continue
		}
		for _, a := range s.Attributes() {
			if a.Key == "analyzerd.verdict.sequence" {
				out = append(out, decidedVerdict{seq: uint64(a.Value.AsInt64()), traceID: s.SpanContext().TraceID().String(), at: s.StartTime()})
			}
		}
	}
	slices.SortFunc(out, func(a, b decidedVerdict) int {
		if c := cmp.Compare(a.seq, b.seq); c != 0 {
			return c
		}
		return a.at.Compare(b.at)
	})
	return out
}

// checkDecidedPublished checks that every verdict the daemon decided is on the stream: the
// stream's verdict of its sequence is that one (the same trace), and the stream holds no other.
func checkDecidedPublished(t *testing.T, decided []decidedVerdict, vs []storedVerdict, at time.Time) {
	t.Helper()
	bySeq := map[uint64]storedVerdict{}
	for _, s := range vs {
		bySeq[s.v.Sequence] = s
	}
	var lost []string
	for _, dv := range decided {
		s, ok := bySeq[dv.seq]
		switch {
		case !ok:
			lost = append(lost, fmt.Sprintf("verdict %d decided at %+.3fs (trace %s): no verdict %d on the stream",
				dv.seq, dv.at.Sub(at).Seconds(), dv.traceID, dv.seq))
		case s.v.TraceID != dv.traceID:
			lost = append(lost, fmt.Sprintf("verdict %d decided at %+.3fs (trace %s): the stream's verdict %d is another one, decided at %+.3fs (trace %s)",
				dv.seq, dv.at.Sub(at).Seconds(), dv.traceID, dv.seq, s.v.DecidedAt.Sub(at).Seconds(), s.v.TraceID))
		}
	}
	assert.Empty(t, lost, "verdicts decided but never published")
	assert.Equal(t, len(decided), len(vs), "verdicts decided, and verdicts on the stream")
}

// logged is the first entry with the message, and whether there is one.
func (d *clusterDaemon) logged(msg string) (observer.LoggedEntry, bool) {
	entries := d.logs.FilterMessage(msg).All()
	if len(entries) == 0 {
		return observer.LoggedEntry{}, false
	}
	return entries[0], true
}

// clusterClient is the test's own connection to the cluster, as a controller's: it fails over
// and reconnects for ever.
func clusterClient(t *testing.T, urls string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls, nats.Name("cluster-test"), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		// Its asynchronous errors (a watcher's consumer lost with a node) are expected; without
		// a handler nats.go prints them to stderr, where they would pass for the daemon's.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// lazy formats as what it returns when the message is formatted: a failure message that tells
// the state at the failure, not at the call.
type lazy func() string

func (l lazy) String() string { return l() }

// publishEvent publishes an event as a controller does while the cluster recovers: it retries
// until the stream acknowledges it.
func publishEvent(t *testing.T, js jetstream.JetStream, id string, typ rollout.EventType, at time.Time, data any) {
	t.Helper()
	pub := rolloutclient.Publisher{JS: js, Prefix: "rollouts"}
	var last error
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		last = pub.Publish(ctx, clusterRef, id, typ, at, data)
		return last == nil
	}, 30*time.Second, 100*time.Millisecond, "publishing %s: %v", id, lazy(func() string { return fmt.Sprint(last) }))
}

func startRollout(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	publishEvent(t, js, "evt-1", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: clusterRef, Revision: "v2", Analysis: "fast",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Step: 0, Weight: 10,
	})
}

// lastVerdict is the last verdict the stream holds for the rollout (zero while there is none
// or the stream does not answer).
func lastVerdict(js jetstream.JetStream) rollout.Verdict {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streams.VerdictsStream)
	if err != nil {
		return rollout.Verdict{}
	}
	msg, err := s.GetLastMsgForSubject(ctx, rollout.VerdictsSubject("rollouts", clusterRef))
	if err != nil {
		return rollout.Verdict{}
	}
	r, err := rolloutclient.DecodeVerdict(&nats.Msg{Subject: msg.Subject, Header: msg.Header, Data: msg.Data})
	if err != nil {
		return rollout.Verdict{}
	}
	return r.Verdict
}

// waitSequence waits until the stream holds the rollout's verdict seq (or a later one), and
// returns when the wait ended.
func waitSequence(t *testing.T, d *clusterDaemon, js jetstream.JetStream, seq uint64, within time.Duration, why string) time.Time {
	t.Helper()
	require.Eventually(t, func() bool {
		d.running(t)
		return lastVerdict(js).Sequence >= seq
	}, within, 20*time.Millisecond, "no verdict %d on the stream within %s: %s (last: %v)", seq, within, why,
		lazy(func() string { return fmt.Sprint(lastVerdict(js).Sequence) }))
	return time.Now()
}

// storedVerdict is a verdict as the stream holds it.
type storedVerdict struct {
	v      rollout.Verdict
	msgID  string
	stored time.Time // when JetStream stored it
}

// storedVerdicts reads every message of the verdict stream, in stream order.
func storedVerdicts(t *testing.T, js jetstream.JetStream) []storedVerdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var s jetstream.Stream
	require.Eventually(t, func() bool {
		var err error
		s, err = js.Stream(ctx, streams.VerdictsStream)
		return err == nil
	}, 20*time.Second, 50*time.Millisecond)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []storedVerdict
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err, "stream message %d", seq)
		r, err := rolloutclient.DecodeVerdict(&nats.Msg{Subject: msg.Subject, Header: msg.Header, Data: msg.Data})
		require.NoError(t, err, "stream message %d", seq)
		out = append(out, storedVerdict{v: r.Verdict, msgID: r.MsgID, stored: msg.Time})
	}
	return out
}

// checkWholeSequence checks that the stream holds the rollout's verdicts 1..N once each, in
// order, each under its Nats-Msg-Id: no duplicate, no gap, nothing out of order. It does not
// stop the test, so that checkDecidedPublished says more.
func checkWholeSequence(t *testing.T, vs []storedVerdict) {
	t.Helper()
	require.NotEmpty(t, vs)
	var dups, gaps, disorder []string
	seen := map[uint64]int{}
	for i, s := range vs {
		require.Equal(t, clusterRef, s.v.Rollout)
		require.Equal(t, "v2", s.v.Revision)
		require.Equal(t, publish.MsgID(s.v), s.msgID, "Nats-Msg-Id of verdict %d", s.v.Sequence)
		seen[s.v.Sequence]++
		if seen[s.v.Sequence] == 2 {
			dups = append(dups, fmt.Sprint(s.v.Sequence))
		}
		if i > 0 {
			prev := vs[i-1].v.Sequence
			switch {
			case s.v.Sequence <= prev:
				disorder = append(disorder, fmt.Sprintf("%d after %d", s.v.Sequence, prev))
			case s.v.Sequence > prev+1:
				gaps = append(gaps, fmt.Sprintf("%d..%d", prev+1, s.v.Sequence-1))
			}
		} else if s.v.Sequence != 1 {
			gaps = append(gaps, fmt.Sprintf("1..%d", s.v.Sequence-1))
		}
	}
	assert.Empty(t, dups, "sequences stored twice")
	assert.Empty(t, disorder, "sequences out of order")
	assert.Empty(t, gaps, "sequences missing from the stream")
}

// cadence describes the verdicts decided in [from, to): how many, and the longest time between
// two decisions there (counting from the last one decided before from).
func cadence(vs []storedVerdict, from, to time.Time) (n int, longest time.Duration) {
	var prev time.Time
	for _, s := range vs {
		at := s.v.DecidedAt
		if at.Before(from) {
			prev = at
			continue
		}
		if !at.Before(to) {
			if !prev.IsZero() {
				longest = max(longest, at.Sub(prev))
			}
			break
		}
		n++
		if !prev.IsZero() {
			longest = max(longest, at.Sub(prev))
		}
		prev = at
	}
	return n, longest
}

// TestClusterNodeLossDoesNotStopAnalysis: on a 3-node cluster, the node that the daemon is
// connected to, which also leads the JetStream meta group, the state bucket, the verdict and
// event streams and the event consumer, goes away mid-analysis. The daemon fails over to
// another node, the raft groups elect new leaders, and analysis goes on: verdicts keep
// coming, an event published after the loss applies, and the verdict stream holds every
// sequence once, in order.
func TestClusterNodeLossDoesNotStopAnalysis(t *testing.T) {
	noLeaks(t)
	rig := startClusterRig(t)
	cluster := rig.nats
	d := startClusterDaemon(t, clusterConfig(t, cluster.URLs(), rig.promURL))
	js := clusterClient(t, cluster.URLs())
	startRollout(t, js)
	waitSequence(t, d, js, 3, 30*time.Second, "analysis does not run")

	// The hardest node to lose: every leader the daemon depends on, and its connection.
	victim := cluster.ClientServer(clusterDaemonName)
	require.NotEmpty(t, victim, "the daemon's connection is on no node")
	kv := "KV_" + cfgBucket
	leaders := func() map[string]string {
		return map[string]string{
			"meta":                      cluster.MetaLeader(),
			kv:                          cluster.StreamLeader(kv),
			streams.VerdictsStream:      cluster.StreamLeader(streams.VerdictsStream),
			streams.EventsStream:        cluster.StreamLeader(streams.EventsStream),
			"consumer " + ingestDurable: cluster.ConsumerLeader(streams.EventsStream, ingestDurable),
		}
	}
	require.Eventually(t, func() bool {
		all := true
		for what, leader := range leaders() {
			if leader == victim {
				continue
			}
			all = false
			switch {
			case what == "meta":
				_ = cluster.MoveMetaLeader(victim)
			case strings.HasPrefix(what, "consumer "):
				_ = cluster.MoveConsumerLeader(streams.EventsStream, ingestDurable, victim)
			default:
				_ = cluster.MoveStreamLeader(what, victim)
			}
		}
		return all
	}, 30*time.Second, 500*time.Millisecond, "could not gather the leaders on %s: %v", victim,
		lazy(func() string { return fmt.Sprint(leaders()) }))
	require.Equal(t, victim, cluster.ClientServer(clusterDaemonName), "the daemon moved while the leaders did")
	// Analysis goes on after the moves, before the loss.
	before := lastVerdict(js).Sequence
	waitSequence(t, d, js, before+2, 20*time.Second, "analysis stalled after the leaders moved")

	lastBefore := lastVerdict(js).Sequence
	atLoss := leaders()
	atLoss["daemon's connection"] = cluster.ClientServer(clusterDaemonName)
	lostAt := time.Now()
	cluster.Stop(cluster.Index(victim))
	t.Logf("stopped %s after verdict %d; it was: %v", victim, lastBefore, atLoss)

	// Verdicts keep coming: three more within 15 intervals.
	resumedAt := waitSequence(t, d, js, lastBefore+3, 15*clusterInterval, "analysis stopped with the node")

	// An event published after the loss applies: the step changes the verdicts' weight.
	stepAt := time.Now()
	publishEvent(t, js, "evt-2", rollout.EventStep, stepAt, rolloutclient.Step{Rollout: clusterRef, Revision: "v2", Step: 1, Weight: 25})
	var stepVerdict rollout.Verdict
	require.Eventually(t, func() bool {
		d.running(t)
		stepVerdict = lastVerdict(js)
		return stepVerdict.Step == 1 && stepVerdict.Weight == 25 && stepVerdict.Cause == "evt-2"
	}, 20*time.Second, 20*time.Millisecond, "the step published after the loss never showed in a verdict")
	stepSeenAt := time.Now()

	// The node comes back in its place and catches up; analysis goes on.
	restartAt := time.Now()
	cluster.Start(cluster.Index(victim))
	cluster.WaitReady(30 * time.Second)
	t.Logf("%s back in the cluster %s after its restart began", victim, time.Since(restartAt).Round(time.Millisecond))
	back := lastVerdict(js).Sequence
	waitSequence(t, d, js, back+2, 15*clusterInterval, "analysis stalled when the node came back")

	d.stop(t)
	decided := d.decided()

	vs := storedVerdicts(t, js)
	checkWholeSequence(t, vs)
	checkDecidedPublished(t, decided, vs, lostAt)
	// Before the step every verdict is at weight 10, from it on at 25.
	stepped := false
	for _, s := range vs {
		if s.v.Cause == "evt-2" {
			stepped = true
		}
		if stepped {
			require.Equal(t, 25, s.v.Weight, "verdict %d", s.v.Sequence)
			require.Equal(t, 1, s.v.Step, "verdict %d", s.v.Sequence)
		} else {
			require.Equal(t, 10, s.v.Weight, "verdict %d", s.v.Sequence)
		}
	}
	require.True(t, stepped)

	// Figures.
	_, longest := cadence(vs, lostAt, resumedAt)
	var firstAfter storedVerdict
	for _, s := range vs {
		if s.v.Sequence == lastBefore+1 {
			firstAfter = s
		}
	}
	t.Logf("node loss: longest time between two decisions across it %s (interval %s, so %d evaluations missed); "+
		"verdict %d decided %s and stored %s after the loss; three more verdicts after %s",
		longest.Round(time.Millisecond), clusterInterval, max(0, int(longest/clusterInterval)-1),
		firstAfter.v.Sequence, firstAfter.v.DecidedAt.Sub(lostAt).Round(time.Millisecond),
		firstAfter.stored.Sub(lostAt).Round(time.Millisecond), resumedAt.Sub(lostAt).Round(time.Millisecond))
	t.Logf("step published %s after the loss, first verdict of the step seen %s later; %d verdicts in all, %d decided",
		stepAt.Sub(lostAt).Round(time.Millisecond), stepSeenAt.Sub(stepAt).Round(time.Millisecond), len(vs), len(decided))
	for _, e := range d.logs.FilterLevelExact(zapcore.WarnLevel).All() {
		t.Logf("warning: %s %v", e.Message, e.ContextMap())
	}
}

// The state bucket and the durable consumer, as the daemon names them by default.
const (
	cfgBucket     = "ANALYZERD_STATE"
	ingestDurable = "analyzerd"
)

// TestClusterOutageVerdictsPublishedAfterReconnect: the daemon's connection drops for a while,
// either because every node of the cluster goes away, or because the one node the daemon
// knows goes away (the others do not advertise themselves to clients, as behind a load
// balancer, so the daemon cannot fail over; the cluster goes on without it). The daemon keeps
// evaluating (the verdicts are decided, but cannot be stored nor published), retries the
// connection, and once it is back publishes the verdicts decided meanwhile, in order, with no
// duplicate and no gap.
func TestClusterOutageVerdictsPublishedAfterReconnect(t *testing.T) {
	t.Run("every node down", func(t *testing.T) { clusterOutage(t, false) })
	t.Run("the node the daemon knows down", func(t *testing.T) { clusterOutage(t, true) })
}

func clusterOutage(t *testing.T, oneNode bool) {
	noLeaks(t)
	var opts []natstest.Option
	if oneNode {
		opts = append(opts, natstest.NoAdvertise())
	}
	rig := startClusterRig(t, opts...)
	cluster := rig.nats
	down, daemonURL := []int{0, 1, 2}, cluster.URLs()
	if oneNode {
		down, daemonURL = []int{0}, cluster.URL(0) // the daemon knows n1 only
	}
	d := startClusterDaemon(t, clusterConfig(t, daemonURL, rig.promURL))
	js := clusterClient(t, cluster.URLs())
	startRollout(t, js)
	waitSequence(t, d, js, 3, 30*time.Second, "analysis does not run")
	writes := watchState(t, js)

	stopAt := time.Now()
	for _, i := range down {
		cluster.Stop(i)
	}
	// From now on the daemon can store and publish nothing.
	downAt := time.Now()
	decidedBefore := d.evaluations(t)
	require.Eventually(t, func() bool { _, ok := d.logged("nats disconnected"); return ok }, 10*time.Second, 20*time.Millisecond,
		"the daemon did not notice the connection drop")

	// While disconnected, the daemon keeps deciding verdicts. (The deadline is generous so that
	// what follows runs even when the daemon is slow at it; the cadence is checked below.)
	const during = 3
	require.Eventually(t, func() bool {
		d.running(t)
		return d.evaluations(t) >= decidedBefore+during
	}, 40*time.Second, 20*time.Millisecond, "the daemon stopped evaluating while disconnected: %v verdicts decided in 40s, %d wanted",
		lazy(func() string { return fmt.Sprint(d.evaluations(t) - decidedBefore) }), during)
	decidedDown := d.evaluations(t)
	d.running(t)

	upAt := time.Now()
	for _, i := range down {
		cluster.Start(i)
	}
	cluster.WaitReady(30 * time.Second)
	readyAt := time.Now()
	var reconnected observer.LoggedEntry
	require.Eventually(t, func() bool {
		for _, e := range d.logs.FilterMessage("nats reconnected").All() {
			if e.Time.After(upAt) {
				reconnected = e
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "the daemon did not reconnect")

	// Verdicts are published again after the reconnection, up to the last decided meanwhile.
	publishedAt := waitSequence(t, d, js, decidedDown, 30*time.Second, "no verdict published after the reconnection")

	d.stop(t)
	decided := d.decided()
	vs := storedVerdicts(t, js)
	logOutage(t, d, decided, vs, downAt)
	for _, w := range writes() {
		t.Logf("state written at %+.3fs: revision %d, sequence %d, pending %v", w.at.Sub(downAt).Seconds(), w.revision, w.sequence, w.pending)
	}
	t.Logf("outage: nodes stopped in %s, then %s down; cluster ready %s after the restart began; daemon reconnected %s after it "+
		"(%s after the cluster was ready); verdict %d on the stream %s after the restart began",
		downAt.Sub(stopAt).Round(time.Millisecond), upAt.Sub(downAt).Round(time.Millisecond),
		readyAt.Sub(upAt).Round(time.Millisecond), reconnected.Time.Sub(upAt).Round(time.Millisecond),
		reconnected.Time.Sub(readyAt).Round(time.Millisecond), decidedDown, publishedAt.Sub(upAt).Round(time.Millisecond))

	// The verdicts decided while disconnected.
	var meanwhile []decidedVerdict
	for _, dv := range decided {
		if dv.at.After(downAt) && dv.at.Before(upAt) {
			meanwhile = append(meanwhile, dv)
		}
	}
	require.GreaterOrEqual(t, len(meanwhile), during, "verdicts decided while the connection was down")
	// They were decided at the template's interval, as if connected (non-fatal: the rest
	// is checked too).
	longest := meanwhile[0].at.Sub(downAt)
	for i := 1; i < len(meanwhile); i++ {
		longest = max(longest, meanwhile[i].at.Sub(meanwhile[i-1].at))
	}
	assert.LessOrEqual(t, longest, 3*clusterInterval,
		"while disconnected, evaluations came at most %s apart (interval %s)", longest.Round(time.Millisecond), clusterInterval)

	// Published after the reconnection, in order, once each, no gap: the stream holds every
	// verdict decided, each under its own sequence.
	checkWholeSequence(t, vs)
	checkDecidedPublished(t, decided, vs, downAt)
	bySeq := map[uint64]storedVerdict{}
	for _, s := range vs {
		bySeq[s.v.Sequence] = s
	}
	for _, dv := range meanwhile {
		require.False(t, bySeq[dv.seq].stored.Before(upAt), "verdict %d, decided while disconnected, stored at %s before the nodes came back at %s",
			dv.seq, bySeq[dv.seq].stored, upAt)
	}

	// The log tells the story: the connection dropped and was retried, the verdicts waited for
	// the store, the connection came back; the daemon never failed.
	for _, msg := range []string{"nats disconnected", "nats connection attempt failed; retrying", "nats reconnected",
		"state not stored; its verdicts wait until it is", "state stored again"} {
		_, ok := d.logged(msg)
		require.True(t, ok, "no log line %q", msg)
	}
	require.Empty(t, d.logs.FilterLevelExact(zapcore.ErrorLevel).All(), "errors logged")
	// Failed connection attempts are logged when their error changes, not at each attempt
	// (app.connect): a few lines per outage, not one per attempt.
	attempts := d.logs.FilterMessage("nats connection attempt failed; retrying").Len()
	assert.LessOrEqual(t, attempts, 2*len(strings.Split(daemonURL, ",")),
		"%d lines %q in an outage of %s", attempts, "nats connection attempt failed; retrying", upAt.Sub(downAt).Round(time.Millisecond))
}

// stateWrite is a write of the rollout's live record, as a watcher of the bucket saw it.
type stateWrite struct {
	at       time.Time
	revision uint64
	sequence uint64
	pending  []uint64
}

// watchState records the writes of the live records from now until the test ends (for
// diagnosis: it is not asserted on); the returned function lists them so far.
func watchState(t *testing.T, js jetstream.JetStream) func() []stateWrite {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	kv, err := js.KeyValue(ctx, cfgBucket)
	require.NoError(t, err)
	w, err := kv.Watch(ctx, "live.>", jetstream.UpdatesOnly())
	require.NoError(t, err)
	var mu sync.Mutex
	var writes []stateWrite
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				var r state.Record
				if json.Unmarshal(e.Value(), &r) != nil {
					continue
				}
				sw := stateWrite{at: e.Created(), revision: e.Revision(), sequence: r.Sequence}
				for _, p := range r.Pending {
					sw.pending = append(sw.pending, p.Verdict.Sequence)
				}
				mu.Lock()
				writes = append(writes, sw)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); _ = w.Stop(); <-done })
	return func() []stateWrite { mu.Lock(); defer mu.Unlock(); return slices.Clone(writes) }
}

// logOutage logs every verdict decided and every verdict of the stream, and the daemon's
// warnings, times relative to at (connection attempts counted, not listed).
func logOutage(t *testing.T, d *clusterDaemon, decided []decidedVerdict, vs []storedVerdict, at time.Time) {
	t.Helper()
	for _, dv := range decided {
		t.Logf("decided verdict %d at %+.3fs, trace %s", dv.seq, dv.at.Sub(at).Seconds(), dv.traceID)
	}
	for _, s := range vs {
		t.Logf("stream verdict %d (%s, weight %d) decided at %+.3fs, stored at %+.3fs, trace %s", s.v.Sequence, s.v.Verdict, s.v.Weight,
			s.v.DecidedAt.Sub(at).Seconds(), s.stored.Sub(at).Seconds(), s.v.TraceID)
	}
	attempts := 0
	for _, e := range d.logs.FilterLevelExact(zapcore.WarnLevel).All() {
		if e.Message == "nats connection attempt failed; retrying" {
			attempts++
			continue
		}
		t.Logf("warning at %+.3fs: %s %v", e.Time.Sub(at).Seconds(), e.Message, e.ContextMap())
	}
	for _, e := range d.logs.FilterLevelExact(zapcore.InfoLevel).All() {
		if e.Time.After(at) && (strings.HasPrefix(e.Message, "nats") || strings.HasPrefix(e.Message, "state") || strings.Contains(e.Message, "after retrying")) {
			t.Logf("info at %+.3fs: %s %v", e.Time.Sub(at).Seconds(), e.Message, e.ContextMap())
		}
	}
	t.Logf("%d warnings %q", attempts, "nats connection attempt failed; retrying")
}
