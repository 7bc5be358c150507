// Package e2e runs analyzerd end to end: the real daemon binary, a real NATS server, a real
// Prometheus scraping a real instrumented workload. The tests are slow (a minute or two) and
// are skipped by `go test -short`; run them alone with `go test ./test/e2e/`.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
	"github.com/analyzerd/analyzerd/internal/workload"
)

const prefix = "rollouts"

// binary is the analyzerd binary built once for the package.
var binary string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "analyzerd-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "analyzerd")
		build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", binary, "../../cmd/analyzerd")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build analyzerd:", err)
			return 1
		}
		return m.Run()
	}())
}

// requirePrometheus returns the prometheus binary, skipping the test where there is none
// (CI installs it, so there it fails instead).
func requirePrometheus(t *testing.T) string {
	t.Helper()
	path, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must install prometheus: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	return path
}

// side is one version of a synthetic service, served for Prometheus to scrape.
type side struct {
	w    *workload.Workload
	addr string
}

func serveWorkload(t *testing.T, ctx context.Context, service, version string, p workload.Profile, seed int64) side {
	t.Helper()
	w, err := workload.New(workload.Config{Service: service, Version: version, Profile: p, Seed: seed})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return side{w: w, addr: ln.Addr().String()}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// daemon is a running analyzerd process.
type daemon struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	http string
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{logs: &syncBuffer{}, http: freeAddr(t), done: make(chan error, 1)}
	d.cmd = exec.Command(binary, append([]string{"--config", "../../configs/analyzerd.yaml", "--http-addr", d.http}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, d.cmd.Start())
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("analyzerd logs:\n%s", d.logs.String())
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + d.http + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond, "analyzerd never became ready")
	return d
}

// requireRate asserts that an error rate measured over n requests is the expected one, within
// 5 standard deviations of a binomial share (and at least one request's worth).
func requireRate(t *testing.T, want, got float64, n int64) {
	t.Helper()
	require.Positive(t, n)
	tolerance := math.Max(5*math.Sqrt(want*(1-want)/float64(n)), 1/float64(n))
	require.InDelta(t, want, got, tolerance, "error rate over %d requests", n)
}

// waitFor polls cond until it holds, failing at once if the daemon exits meanwhile.
func (d *daemon) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	for !cond() {
		select {
		case err := <-d.done:
			d.done <- err // for the cleanup
			t.Fatalf("analyzerd exited (%v) while waiting for %s", err, what)
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-poll.C:
		}
	}
}

// verdictLog collects every verdict by rollout.
type verdictLog struct {
	mu  sync.Mutex
	all map[string][]rolloutclient.Received
}

func (l *verdictLog) add(r rolloutclient.Received) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := r.Verdict.Rollout.String()
	l.all[k] = append(l.all[k], r)
}

func (l *verdictLog) of(name string) []rolloutclient.Received {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]rolloutclient.Received(nil), l.all["e2e/"+name]...)
}

func has(rs []rolloutclient.Received, d rollout.Decision) bool {
	for _, r := range rs {
		if r.Verdict.Verdict == d {
			return true
		}
	}
	return false
}

func check(v rollout.Verdict, metric string) rollout.CheckResult {
	for _, c := range v.Checks {
		if c.Metric == metric {
			return c
		}
	}
	return rollout.CheckResult{}
}

// TestRollouts runs four rollouts at once through one daemon with the shipped configuration:
// a healthy canary, one with 10% errors against a stable 0.5%, one with no traffic, and one
// whose event values are injection attempts.
func TestRollouts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	promBinary := requirePrometheus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// NATS: a real server in-process, reached by the daemon over TCP (--nats-url).
	ns := natstest.Start(t)

	// The workloads: every service has a stable v1 and a canary v2.
	// 2,000 req/s a side: the shipped template proceeds once the canary's error rate is shown
	// below 1.25 x stable's, which at 0.5% takes a few hundred errors on each side.
	healthy := workload.Profile{Rate: 2000, ErrorRate: 0.005, LatencyMedian: 50 * time.Millisecond}
	faulty := healthy
	faulty.ErrorRate = 0.10
	idle := healthy
	idle.Rate = 0
	var targets []promproc.Target
	for i, s := range []struct {
		service        string
		stable, canary workload.Profile
	}{
		{"healthy", healthy, healthy},
		{"faulty", healthy, faulty},
		{"idle", healthy, idle},
	} {
		st := serveWorkload(t, ctx, s.service, "v1", s.stable, int64(2*i+1))
		ca := serveWorkload(t, ctx, s.service, "v2", s.canary, int64(2*i+2))
		targets = append(targets, promproc.Target{Job: "workload", Address: st.addr}, promproc.Target{Job: "workload", Address: ca.addr})
	}
	prom, err := promproc.Start(ctx, promproc.Options{Binary: promBinary, Dir: t.TempDir(), Targets: targets, ScrapeInterval: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prom.Close() })
	require.NoError(t, prom.WaitTargetsUp(ctx))
	// The baseline is the stable side before the canary: give it enough history that it
	// holds the template's minSamples (1,000 requests): 20 s at 100 req/s.
	source, err := compare.NewPrometheus(compare.PrometheusOptions{URL: prom.URL()})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		r := source.Query(ctx, []compare.Request{{Expr: `min(count_over_time(http_requests_total{version="v1", code="200"}[1m]))`, Time: time.Now()}})[0]
		return r.Err == nil && len(r.Series) == 1 && r.Series[0].Value >= 20
	}, 2*time.Minute, 200*time.Millisecond)

	d := startDaemon(t, "--nats-url", ns.ClientURL(), "--prometheus-url", prom.URL())

	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	log := &verdictLog{all: map[string][]rolloutclient.Received{}}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = rolloutclient.WatchVerdicts(watchCtx, js, prefix, log.add)
	}()
	t.Cleanup(func() { stopWatch(); <-watchDone })

	pub := rolloutclient.Publisher{JS: js, Prefix: prefix}
	start := func(name, service string, canary, stable map[string]string) {
		ref := rollout.Ref{Namespace: "e2e", Name: name}
		require.NoError(t, pub.Publish(ctx, ref, "start-"+name, rollout.EventStarted, time.Now(), rolloutclient.Started{
			Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
			Args: map[string]string{"service": service}, Canary: canary, Stable: stable, Step: 0, Weight: 10,
		}))
	}
	v1, v2 := map[string]string{"version": "v1"}, map[string]string{"version": "v2"}
	start("healthy", "healthy", v2, v1)
	start("faulty", "faulty", v2, v1)
	start("idle", "idle", v2, v1)
	// Quotes, braces and backslashes are legal in label values, so the event is valid; control
	// characters are not, and the decoder dead-letters them (see internal/ingest).
	hostile := `healthy"} or vector(1) or {a="\`
	start("hostile", hostile, map[string]string{"version": `v2"} or vector(1) #`}, map[string]string{"version": `.*`})

	// The same event again under the same CloudEvents id but without Nats-Msg-Id, so that
	// JetStream cannot drop it: analyzerd itself must apply it only once.
	body, err := rolloutclient.Event("start-faulty", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: rollout.Ref{Namespace: "e2e", Name: "faulty"}, Revision: "v3", Analysis: "http-golden-signals",
		Args: map[string]string{"service": "faulty"}, Canary: v2, Stable: v1,
	})
	require.NoError(t, err)
	require.NoError(t, pub.PublishRaw(ctx, rollout.EventsSubject(prefix, rollout.Ref{Namespace: "e2e", Name: "faulty"}), "", body))

	// An invalid event is dead-lettered and changes nothing else.
	require.NoError(t, pub.PublishRaw(ctx, prefix+".events.e2e.broken", "broken-1", []byte(`{"specversion":"1.0","id":"broken-1"`)))

	// Wait until the healthy canary may proceed (the shipped template needs a one-minute step)
	// and the faulty one was rolled back.
	d.waitFor(t, 4*time.Minute, "healthy to proceed and faulty to roll back", func() bool {
		return has(log.of("healthy"), rollout.Proceed) && has(log.of("faulty"), rollout.Rollback)
	})

	t.Run("healthy canary proceeds and never rolls back", func(t *testing.T) {
		rs := log.of("healthy")
		require.False(t, has(rs, rollout.Rollback))
		var last rollout.Verdict
		for _, r := range rs {
			if r.Verdict.Verdict == rollout.Proceed {
				last = r.Verdict
				break
			}
		}
		for _, c := range last.Checks {
			require.Equal(t, rollout.Pass, c.Outcome, "check %s", c.Metric)
			require.NotNil(t, c.Canary)
			require.NotNil(t, c.Stable)
			require.NotNil(t, c.Baseline, "the baseline was captured before the canary")
		}
		require.GreaterOrEqual(t, check(last, "error-rate").Samples.Canary, int64(1000))
	})

	t.Run("faulty canary is rolled back with the failing error-rate check and its numbers", func(t *testing.T) {
		rs := log.of("faulty")
		final := rs[len(rs)-1].Verdict
		require.Equal(t, rollout.Rollback, final.Verdict)
		require.Contains(t, final.Reason, "error-rate")
		// Rolled back by the sequential test: its e-value reached 1/alpha, the shipped
		// template's alpha (0.01) split over its 3 tests.
		require.Regexp(t, `^error-rate: canary \S+% vs stable \S+% \(e-value \S+ >= 300\)$`, final.Reason)
		c := check(final, "error-rate")
		require.Equal(t, rollout.Fail, c.Outcome)
		require.NotNil(t, c.EValue)
		require.GreaterOrEqual(t, *c.EValue, 300.0)
		// The measured rates are the workloads' configured ones within 5 standard deviations
		// of a binomial share over the samples behind them.
		require.NotNil(t, c.Canary)
		requireRate(t, 0.10, *c.Canary, c.Samples.Canary)
		require.NotNil(t, c.Stable)
		requireRate(t, 0.005, *c.Stable, c.Samples.Stable)
		require.NotNil(t, c.Baseline, "the baseline was captured before the canary")
		require.NotNil(t, c.Delta)
		require.InDelta(t, *c.Canary-*c.Stable, *c.Delta, 1e-12)
		require.Contains(t, c.Threshold, "canary rate <= 1.25 x stable (e-value < 300) or <= 0.1%")
		require.Positive(t, c.Samples.Canary)
		require.Equal(t, "start-faulty", final.Cause)
		require.Equal(t, "v2", final.Revision, "the duplicate id (naming v3) was not applied")
		// Rollback is final: no verdict follows it.
		require.Never(t, func() bool { return len(log.of("faulty")) > len(rs) }, 3*time.Second, 250*time.Millisecond)
	})

	t.Run("canary with no traffic only ever pauses", func(t *testing.T) {
		rs := log.of("idle")
		require.GreaterOrEqual(t, len(rs), 5)
		for _, r := range rs {
			require.Equal(t, rollout.Pause, r.Verdict.Verdict, "sequence %d: %s", r.Verdict.Sequence, r.Verdict.Reason)
		}
		require.Equal(t, rollout.NoData, check(rs[len(rs)-1].Verdict, "error-rate").Outcome)
	})

	t.Run("injection attempts in event values select nothing", func(t *testing.T) {
		rs := log.of("hostile")
		require.NotEmpty(t, rs)
		for _, r := range rs {
			require.Equal(t, rollout.Pause, r.Verdict.Verdict)
			for _, c := range r.Verdict.Checks {
				// nodata, not error: Prometheus parsed every query, and the values only
				// named label values that no series has.
				require.Equal(t, rollout.NoData, c.Outcome, "%s: %s", c.Metric, c.Message)
			}
		}
	})

	t.Run("every verdict follows the contract", func(t *testing.T) {
		for _, name := range []string{"healthy", "faulty", "idle", "hostile"} {
			rs := log.of(name)
			for i, r := range rs {
				v := r.Verdict
				require.Equal(t, uint64(i+1), v.Sequence, "%s: sequences start at 1 and grow by one", name)
				require.Equal(t, fmt.Sprintf("verdict/e2e/%s/v2/%d", name, v.Sequence), r.MsgID)
				require.Equal(t, "rollouts.verdicts.e2e."+name, r.Subject)
				require.Equal(t, "1.0", r.Envelope.SpecVersion)
				require.Equal(t, "rollout.verdict", r.Envelope.Type)
				require.Len(t, v.TraceID, 32)
				require.True(t, strings.HasPrefix(r.TraceParent, "00-"+v.TraceID+"-"), "traceparent %q names the verdict's trace", r.TraceParent)
				require.Equal(t, "start-"+name, v.Cause)
				require.Len(t, v.Checks, 3)
				require.False(t, v.DecidedAt.IsZero())
			}
		}
	})

	t.Run("the read API answers the latest verdict", func(t *testing.T) {
		resp, err := http.Get("http://" + d.http + "/v1/rollouts/e2e/faulty")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var v rollout.Verdict
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
		require.Equal(t, rollout.Rollback, v.Verdict)

		resp2, err := http.Get("http://" + d.http + "/v1/rollouts/e2e/nope")
		require.NoError(t, err)
		resp2.Body.Close()
		require.Equal(t, http.StatusNotFound, resp2.StatusCode)

		metrics, err := http.Get("http://" + d.http + "/metrics")
		require.NoError(t, err)
		text, err := io.ReadAll(metrics.Body)
		metrics.Body.Close()
		require.NoError(t, err)
		require.Contains(t, string(text), `analyzerd_verdicts_total{verdict="rollback"} 1`)
	})

	t.Run("an invalid event is dead-lettered with its reason", func(t *testing.T) {
		stream, err := js.Stream(ctx, "ROLLOUT_DEADLETTER")
		require.NoError(t, err)
		msg, err := stream.GetLastMsgForSubject(ctx, prefix+".deadletter.events")
		require.NoError(t, err)
		require.Equal(t, `{"specversion":"1.0","id":"broken-1"`, string(msg.Data), "republished unchanged")
		require.NotEmpty(t, msg.Header.Get("Analyzerd-Error"))
		require.Equal(t, prefix+".events.e2e.broken", msg.Header.Get("Analyzerd-Subject"))
	})

	t.Run("SIGTERM stops the daemon gracefully", func(t *testing.T) {
		require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
		select {
		case err := <-d.done:
			require.NoError(t, err, "exit status")
			d.done <- err // for the cleanup
		case <-time.After(30 * time.Second):
			t.Fatal("analyzerd did not stop within 30s of SIGTERM")
		}
		require.Contains(t, d.logs.String(), "analyzerd stopped")
	})

	t.Run("the healthy canary never rolled back, to the end", func(t *testing.T) {
		require.False(t, has(log.of("healthy"), rollout.Rollback))
	})
}
