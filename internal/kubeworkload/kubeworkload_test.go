package kubeworkload

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// scrape returns the families a handler serves, by name.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(rec.Body.Bytes()))
	require.NoError(t, err)
	return families
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func names(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	sort.Strings(out)
	return out
}

// value is the value of the family's one series whose labels include match.
func value(t *testing.T, f *dto.MetricFamily, match map[string]string) float64 {
	t.Helper()
	var found []float64
	for _, m := range f.GetMetric() {
		ls := labelsOf(m)
		ok := true
		for k, v := range match {
			if ls[k] != v {
				ok = false
			}
		}
		if !ok {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			found = append(found, m.GetCounter().GetValue())
		default:
			found = append(found, m.GetGauge().GetValue())
		}
	}
	require.Len(t, found, 1, "%s %v", f.GetName(), match)
	return found[0]
}

func newTestCluster(t *testing.T) (*Cluster, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c, err := New(Options{ProbePeriod: time.Second, Now: clock.now})
	require.NoError(t, err)
	require.NoError(t, c.Add(Pod{Namespace: "shop", Name: "checkout-v2-a", App: "checkout", Version: "v2",
		CPULimit: 1, CPU: 0.25, MemoryLimit: 512 << 20, Memory: 100 << 20}))
	return c, clock
}

func TestSeriesHaveTheExportersNamesLabelsAndTypes(t *testing.T) {
	c, clock := newTestCluster(t)
	clock.add(10 * time.Second)
	require.NoError(t, c.FailProbes("shop", "checkout-v2-a", Readiness, 1))
	clock.add(time.Second)
	require.NoError(t, c.OOMKill("shop", "checkout-v2-a"))

	want := map[string]struct {
		typ    dto.MetricType
		labels []string
	}{
		"kube_pod_labels":                                  {dto.MetricType_GAUGE, []string{"label_app", "label_version", "namespace", "pod", "uid"}},
		"kube_pod_container_status_restarts_total":         {dto.MetricType_COUNTER, []string{"container", "namespace", "pod", "uid"}},
		"kube_pod_container_status_last_terminated_reason": {dto.MetricType_GAUGE, []string{"container", "namespace", "pod", "reason", "uid"}},
		"kube_pod_container_resource_limits":               {dto.MetricType_GAUGE, []string{"container", "namespace", "node", "pod", "resource", "uid", "unit"}},
		"container_cpu_usage_seconds_total":                {dto.MetricType_COUNTER, []string{"container", "cpu", "namespace", "pod"}},
		"container_cpu_cfs_periods_total":                  {dto.MetricType_COUNTER, []string{"container", "namespace", "pod"}},
		"container_cpu_cfs_throttled_periods_total":        {dto.MetricType_COUNTER, []string{"container", "namespace", "pod"}},
		"container_memory_working_set_bytes":               {dto.MetricType_GAUGE, []string{"container", "namespace", "pod"}},
		"prober_probe_total":                               {dto.MetricType_COUNTER, []string{"container", "namespace", "pod", "pod_uid", "probe_type", "result"}},
	}
	got := map[string]*dto.MetricFamily{}
	for _, h := range []http.Handler{c.KubeStateMetrics(), c.CAdvisor(), c.Probes()} {
		for name, f := range scrape(t, h) {
			require.NotContains(t, got, name, "one exporter per family")
			got[name] = f
		}
	}
	require.Len(t, got, len(want))
	for name, w := range want {
		f, ok := got[name]
		require.True(t, ok, name)
		require.Equal(t, w.typ, f.GetType(), name)
		for _, m := range f.GetMetric() {
			// The pod's own cgroup is cAdvisor's container="", which Prometheus stores
			// without the label.
			require.Equal(t, w.labels, names(m), name)
		}
	}
	ksm := scrape(t, c.KubeStateMetrics())
	require.Equal(t, 1.0, value(t, ksm["kube_pod_labels"], map[string]string{"label_app": "checkout", "label_version": "v2"}))
	require.Equal(t, 1.0, value(t, ksm["kube_pod_container_resource_limits"], map[string]string{"resource": "cpu", "unit": "core"}))
	require.Equal(t, float64(512<<20), value(t, ksm["kube_pod_container_resource_limits"], map[string]string{"resource": "memory", "unit": "byte"}))
}

func TestStateChangesShowInTheSeries(t *testing.T) {
	c, clock := newTestCluster(t)
	const ns, name = "shop", "checkout-v2-a"
	container := map[string]string{"container": Container}

	// Healthy: no termination reason, no failed probe series, counters integrate the CPU use.
	clock.add(10 * time.Second)
	ksm := scrape(t, c.KubeStateMetrics())
	require.NotContains(t, ksm, "kube_pod_container_status_last_terminated_reason")
	require.Equal(t, 0.0, value(t, ksm["kube_pod_container_status_restarts_total"], nil))
	probes := scrape(t, c.Probes())
	require.Equal(t, 10.0, value(t, probes["prober_probe_total"], map[string]string{"probe_type": Liveness, "result": "successful"}))
	for _, m := range probes["prober_probe_total"].GetMetric() {
		require.NotEqual(t, "failed", labelsOf(m)["result"])
	}
	cad := scrape(t, c.CAdvisor())
	require.InDelta(t, 2.5, value(t, cad["container_cpu_usage_seconds_total"], container), 1e-9)
	require.Equal(t, 100.0, value(t, cad["container_cpu_cfs_periods_total"], container))
	require.Equal(t, 0.0, value(t, cad["container_cpu_cfs_throttled_periods_total"], container))
	require.Equal(t, float64(100<<20), value(t, cad["container_memory_working_set_bytes"], container))

	// More CPU, throttling and memory from now on.
	require.NoError(t, c.SetCPU(ns, name, 0.9))
	require.NoError(t, c.SetThrottled(ns, name, 0.5))
	require.NoError(t, c.SetMemory(ns, name, 300<<20))
	clock.add(10 * time.Second)
	cad = scrape(t, c.CAdvisor())
	require.InDelta(t, 2.5+9, value(t, cad["container_cpu_usage_seconds_total"], container), 1e-9)
	require.Equal(t, 200.0, value(t, cad["container_cpu_cfs_periods_total"], container))
	require.Equal(t, 50.0, value(t, cad["container_cpu_cfs_throttled_periods_total"], container))
	require.Equal(t, float64(300<<20), value(t, cad["container_memory_working_set_bytes"], container))

	// Three failed readiness probes in a row, then successes again.
	require.NoError(t, c.FailProbes(ns, name, Readiness, 3))
	clock.add(5 * time.Second)
	probes = scrape(t, c.Probes())
	require.Equal(t, 3.0, value(t, probes["prober_probe_total"], map[string]string{"probe_type": Readiness, "result": "failed"}))
	require.Equal(t, 22.0, value(t, probes["prober_probe_total"], map[string]string{"probe_type": Readiness, "result": "successful"}))
	require.Equal(t, 25.0, value(t, probes["prober_probe_total"], map[string]string{"probe_type": Liveness, "result": "successful"}))

	// A crash, then an OOM kill: the reason is the last one's.
	require.NoError(t, c.Restart(ns, name, ReasonError))
	ksm = scrape(t, c.KubeStateMetrics())
	require.Equal(t, 1.0, value(t, ksm["kube_pod_container_status_restarts_total"], nil))
	require.Equal(t, 1.0, value(t, ksm["kube_pod_container_status_last_terminated_reason"], map[string]string{"reason": ReasonError}))
	require.NoError(t, c.OOMKill(ns, name))
	ksm = scrape(t, c.KubeStateMetrics())
	require.Equal(t, 2.0, value(t, ksm["kube_pod_container_status_restarts_total"], nil))
	require.Len(t, ksm["kube_pod_container_status_last_terminated_reason"].GetMetric(), 1, "only the last reason")
	require.Equal(t, 1.0, value(t, ksm["kube_pod_container_status_last_terminated_reason"], map[string]string{"reason": ReasonOOMKilled}))

	s, err := c.Snapshot(ns, name)
	require.NoError(t, err)
	require.Equal(t, 2, s.Restarts)
	require.Equal(t, ReasonOOMKilled, s.LastReason)
	require.Equal(t, 3.0, s.ProbesFailed[Readiness])

	// A deleted pod's series vanish.
	require.NoError(t, c.Delete(ns, name))
	require.NotContains(t, scrape(t, c.KubeStateMetrics()), "kube_pod_labels")
}

func TestInvalidInputsAreRefused(t *testing.T) {
	_, err := New(Options{ProbePeriod: -time.Second})
	require.Error(t, err)
	c, _ := newTestCluster(t)
	require.ErrorContains(t, c.Add(Pod{Namespace: "shop", Name: "checkout-v2-a", App: "checkout", Version: "v2",
		CPULimit: 1, MemoryLimit: 1}), "exists")
	require.Error(t, c.Add(Pod{Namespace: "shop", Name: "x", App: "checkout", Version: "v2", MemoryLimit: 1}), "no CPU limit")
	require.Error(t, c.Add(Pod{Namespace: "shop", Name: "x", App: "checkout", CPULimit: 1, MemoryLimit: 1}), "no version")
	require.ErrorContains(t, c.OOMKill("shop", "nope"), "no pod")
	require.Error(t, c.Restart("shop", "checkout-v2-a", ""))
	require.Error(t, c.FailProbes("shop", "checkout-v2-a", "Startup", 1))
	require.Error(t, c.FailProbes("shop", "checkout-v2-a", Readiness, -1))
	require.Error(t, c.SetCPU("shop", "checkout-v2-a", -1))
	require.Error(t, c.SetThrottled("shop", "checkout-v2-a", 1.5))
	require.Error(t, c.SetMemory("shop", "checkout-v2-a", -1))
}
