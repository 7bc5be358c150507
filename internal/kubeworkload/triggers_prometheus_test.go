package kubeworkload_test

// The shipped kubernetes-golden-signals template's Kubernetes checks, exactly as
// configs/analyzerd.yaml writes them, against a real Prometheus scraping the synthetic
// cluster's kube-state-metrics, cAdvisor and prober series every second: measured by
// compare.Comparer through compare.Prometheus and judged by decide, as the daemon does.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/kubeworkload"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

const (
	namespace = "shop"
	canary    = "v2"
	stable    = "v1"
	// Each scenario's service runs 2 canary pods and 3 stable ones.
	canaryPods, stablePods = 2, 3
)

// kubernetesChecks are the template's checks beyond http-golden-signals' (whose HTTP series
// this cluster does not serve).
var kubernetesChecks = []string{"pod-restarts", "oom-kills", "probe-failures", "cpu-utilisation", "memory-working-set", "cpu-throttling"}

func podName(service, version string, i int) string {
	return fmt.Sprintf("%s-%s-%d", service, version, i)
}

// triggers is a real Prometheus scraping a synthetic cluster, and the shipped template.
type triggers struct {
	cluster   *kubeworkload.Cluster
	comparer  *compare.Comparer
	template  rollout.Template
	compiled  *compare.Template
	stepStart time.Time
}

func startTriggers(t *testing.T, ctx context.Context, services []string) *triggers {
	t.Helper()
	binary, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("prometheus is required in CI: %v", err)
		}
		t.Skipf("prometheus not installed: %v", err)
	}

	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	tm, ok := cfg.Template("kubernetes-golden-signals")
	require.True(t, ok)
	var checks []rollout.Check
	for _, c := range tm.Checks {
		if slices.Contains(kubernetesChecks, c.Name) {
			checks = append(checks, c)
		}
	}
	require.Len(t, checks, len(kubernetesChecks), "the template has every Kubernetes check")
	tm.Checks = checks
	// The checks are as shipped; only the step's minimum length is shortened, so that a
	// healthy canary proceeds within the test's time.
	tm.MinStepDuration = 5 * time.Second
	compiled, err := compare.CompileTemplate(tm)
	require.NoError(t, err)

	cluster, err := kubeworkload.New(kubeworkload.Options{ProbePeriod: time.Second})
	require.NoError(t, err)
	for _, service := range services {
		for _, side := range []struct {
			version string
			pods    int
		}{{canary, canaryPods}, {stable, stablePods}} {
			cpu := 0.3
			if service == "cpu" && side.version == canary {
				cpu = 0.9 // from the step's start: 90% of its limit
			}
			for i := range side.pods {
				require.NoError(t, cluster.Add(kubeworkload.Pod{Namespace: namespace, Name: podName(service, side.version, i),
					App: service, Version: side.version, CPULimit: 1, CPU: cpu, MemoryLimit: 512 << 20, Memory: 200 << 20, Throttled: 0.02}))
			}
		}
	}
	// The step starts as the pods do: an analysis step begins once its pods are up.
	stepStart := time.Now()

	var targets []promproc.Target
	for _, e := range []struct {
		job     string
		handler http.Handler
	}{{"kube-state-metrics", cluster.KubeStateMetrics()}, {"cadvisor", cluster.CAdvisor()}, {"kubelet-probes", cluster.Probes()}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := &http.Server{Handler: e.handler, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		targets = append(targets, promproc.Target{Job: e.job, Address: ln.Addr().String()})
	}
	prom, err := promproc.Start(ctx, promproc.Options{Binary: binary, Dir: t.TempDir(), Targets: targets, ScrapeInterval: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := prom.Close(); err != nil {
			t.Errorf("stopping prometheus: %v", err)
		}
	})
	require.NoError(t, prom.WaitTargetsUp(ctx))
	source, err := compare.NewPrometheus(compare.PrometheusOptions{URL: prom.URL(), Timeout: 10 * time.Second})
	require.NoError(t, err)
	return &triggers{cluster: cluster, comparer: compare.New(source), template: tm, compiled: compiled, stepStart: stepStart}
}

// analysis is one service's rollout at step 1, 10%: its evidence carries from one
// evaluation to the next, as the daemon's does.
type analysis struct {
	tr       *triggers
	service  string
	evidence decide.Evidence
	history  []decide.Result
}

func (tr *triggers) analysis(service string) *analysis { return &analysis{tr: tr, service: service} }

// evaluate measures and decides once, now.
func (a *analysis) evaluate(ctx context.Context) decide.Result {
	now := time.Now()
	ms := a.tr.comparer.Measure(ctx, compare.Target{
		Template: a.tr.compiled,
		Args:     map[string]string{"service": a.service},
		Canary:   compare.Side{Vars: map[string]string{"version": canary}},
		Stable:   compare.Side{Vars: map[string]string{"version": stable}},
		From:     a.tr.stepStart,
		At:       now,
	})
	res := decide.Decide(decide.Input{Template: a.tr.template, Step: 1, Weight: 10, StepStarted: a.tr.stepStart,
		Now: now, Measurements: ms, Evidence: a.evidence})
	a.evidence = res.Evidence
	a.history = append(a.history, res)
	return res
}

// until evaluates every second until done says the result is the one awaited, and fails the
// test at the deadline; never says why a result must not come on the way ("" when it may).
func (a *analysis) until(t *testing.T, ctx context.Context, what string, done func(decide.Result) bool, never func(decide.Result) string) decide.Result {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		res := a.evaluate(ctx)
		if never != nil {
			if why := never(res); why != "" {
				t.Fatalf("%s: while waiting for %s: %s\n%s", a.service, what, why, describe(res))
			}
		}
		if done(res) {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within 45 s; last:\n%s", a.service, what, describe(res))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", a.service, ctx.Err())
		case <-tick.C:
		}
	}
}

func describe(r decide.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s: %s\n", r.Decision, r.Reason)
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "    %s: %s canary=%s stable=%s %s\n", c.Metric, c.Outcome, num(c.Canary), num(c.Stable), c.Message)
	}
	return b.String()
}

func num(f *float64) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf("%.4g", *f)
}

func check(r decide.Result, name string) rollout.CheckResult {
	for _, c := range r.Checks {
		if c.Metric == name {
			return c
		}
	}
	return rollout.CheckResult{}
}

func canaryIs(r decide.Result, name string, v float64) bool {
	c := check(r, name)
	return c.Canary != nil && *c.Canary == v
}

func noRollback(r decide.Result) string {
	if r.Decision == rollout.Rollback {
		return "rolled back"
	}
	return ""
}

// measured: every check has data on both sides (the first evaluations of a step may lack
// two samples of the counters in the window).
func measured(r decide.Result) bool {
	for _, c := range r.Checks {
		if c.Canary == nil || c.Stable == nil {
			return false
		}
	}
	return len(r.Checks) == len(kubernetesChecks)
}

func rolledBack(r decide.Result) bool { return r.Decision == rollout.Rollback }

func requireRollbackBy(t *testing.T, r decide.Result, name string) {
	t.Helper()
	require.Equal(t, rollout.Rollback, r.Decision, describe(r))
	require.True(t, strings.HasPrefix(r.Reason, name+": "), "the reason names %s: %s", name, r.Reason)
	require.Equal(t, rollout.Fail, check(r, name).Outcome, describe(r))
}

func TestKubernetesTriggersPrometheus(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	tr := startTriggers(t, ctx, []string{"healthy", "restarts", "oom", "probes", "stable-oom", "cpu"})

	t.Run("scenarios", func(t *testing.T) {
		t.Run("healthy pods proceed", func(t *testing.T) {
			t.Parallel()
			a := tr.analysis("healthy")
			res := a.until(t, ctx, "proceed", func(r decide.Result) bool { return r.Decision == rollout.Proceed }, noRollback)
			for _, c := range res.Checks {
				require.Equal(t, rollout.Pass, c.Outcome, describe(res))
			}
			for name, want := range map[string]float64{"pod-restarts": 0, "oom-kills": 0, "probe-failures": 0} {
				require.True(t, canaryIs(res, name, want), "%s: %s", name, describe(res))
			}
			require.InDelta(t, 0.3, *check(res, "cpu-utilisation").Canary, 0.01, describe(res))
			require.Equal(t, float64(200<<20), *check(res, "memory-working-set").Canary, "per pod, without the pause container: %s", describe(res))
			require.InDelta(t, 0.02, *check(res, "cpu-throttling").Canary, 0.002, describe(res))
		})

		t.Run("6 restarts of a canary pod roll back", func(t *testing.T) {
			t.Parallel()
			a := tr.analysis("restarts")
			a.until(t, ctx, "data on every check", measured, noRollback)
			pod := podName("restarts", canary, 0)
			for range 5 {
				require.NoError(t, tr.cluster.Restart(namespace, pod, kubeworkload.ReasonError))
			}
			// 5 restarts are not more than 5.
			a.until(t, ctx, "5 restarts seen", func(r decide.Result) bool { return canaryIs(r, "pod-restarts", 5) }, noRollback)
			require.NoError(t, tr.cluster.Restart(namespace, pod, kubeworkload.ReasonError))
			res := a.until(t, ctx, "rollback", rolledBack, nil)
			requireRollbackBy(t, res, "pod-restarts")
			require.True(t, canaryIs(res, "pod-restarts", 6), describe(res))
			require.True(t, canaryIs(res, "oom-kills", 0), "no OOM kill among them: %s", describe(res))
		})

		t.Run("an OOM kill of a canary pod rolls back", func(t *testing.T) {
			t.Parallel()
			a := tr.analysis("oom")
			a.until(t, ctx, "data on every check", measured, noRollback)
			// A crash that is not an OOM kill is not one.
			require.NoError(t, tr.cluster.Restart(namespace, podName("oom", canary, 1), kubeworkload.ReasonError))
			a.until(t, ctx, "the crash seen", func(r decide.Result) bool { return canaryIs(r, "pod-restarts", 1) }, noRollback)
			require.True(t, canaryIs(a.history[len(a.history)-1], "oom-kills", 0))
			require.NoError(t, tr.cluster.OOMKill(namespace, podName("oom", canary, 0)))
			res := a.until(t, ctx, "rollback", rolledBack, nil)
			requireRollbackBy(t, res, "oom-kills")
			require.True(t, canaryIs(res, "oom-kills", 1), describe(res))
		})

		t.Run("3 failed probes in a row roll back", func(t *testing.T) {
			t.Parallel()
			a := tr.analysis("probes")
			a.until(t, ctx, "data on every check", measured, noRollback)
			// Two failures of one pod's probe are not three; nor are they added to another's.
			require.NoError(t, tr.cluster.FailProbes(namespace, podName("probes", canary, 1), kubeworkload.Readiness, 2))
			a.until(t, ctx, "2 failures seen", func(r decide.Result) bool { return canaryIs(r, "probe-failures", 2) }, noRollback)
			require.NoError(t, tr.cluster.FailProbes(namespace, podName("probes", canary, 0), kubeworkload.Liveness, 3))
			res := a.until(t, ctx, "rollback", rolledBack, nil)
			requireRollbackBy(t, res, "probe-failures")
			require.True(t, canaryIs(res, "probe-failures", 3), describe(res))
		})

		t.Run("an OOM kill of a stable pod does not roll the canary back", func(t *testing.T) {
			t.Parallel()
			a := tr.analysis("stable-oom")
			a.until(t, ctx, "data on every check", measured, noRollback)
			require.NoError(t, tr.cluster.OOMKill(namespace, podName("stable-oom", stable, 2)))
			res := a.until(t, ctx, "the stable side's OOM kill seen", func(r decide.Result) bool {
				c := check(r, "oom-kills")
				return c.Stable != nil && *c.Stable == 1
			}, noRollback)
			require.Equal(t, rollout.Pass, check(res, "oom-kills").Outcome, describe(res))
			require.True(t, canaryIs(res, "oom-kills", 0), describe(res))
			a.until(t, ctx, "proceed", func(r decide.Result) bool { return r.Decision == rollout.Proceed }, noRollback)
		})

		t.Run("CPU over 70% of its limit does not proceed", func(t *testing.T) {
			t.Parallel()
			a := tr.analysis("cpu") // its canary pods use 0.9 of their 1-core limit
			res := a.until(t, ctx, "the CPU check failing", func(r decide.Result) bool {
				return check(r, "cpu-utilisation").Outcome == rollout.Fail
			}, func(r decide.Result) string {
				if r.Decision == rollout.Proceed {
					return "proceeded"
				}
				return ""
			})
			require.Equal(t, rollout.Pause, res.Decision, describe(res))
			require.True(t, strings.HasPrefix(res.Reason, "cpu-utilisation: "), res.Reason)
			require.Greater(t, *check(res, "cpu-utilisation").Canary, 0.7, describe(res))
			// It goes on failing, never proceeding, while the step lasts past its minimum.
			deadline := time.Now().Add(2 * tr.template.MinStepDuration)
			a.until(t, ctx, "the step to last", func(r decide.Result) bool { return time.Now().After(deadline) }, func(r decide.Result) string {
				if r.Decision == rollout.Proceed {
					return "proceeded"
				}
				return ""
			})
		})
	})
}
