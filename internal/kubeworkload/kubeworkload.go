// Package kubeworkload is a synthetic Kubernetes cluster for tests: pods of several versions
// of a service, exposed through three handlers whose series have the names, label names and
// types of the real exporters the kubernetes-golden-signals template reads:
//
//	KubeStateMetrics (kube-state-metrics, with --metric-labels-allowlist=pods=[app,version]):
//	  kube_pod_labels{namespace, pod, uid, label_app, label_version}                  gauge 1
//	  kube_pod_container_status_restarts_total{namespace, pod, uid, container}        counter
//	  kube_pod_container_status_last_terminated_reason{namespace, pod, uid, container, reason}
//	                                                  gauge 1, only once a container has terminated
//	  kube_pod_container_resource_limits{namespace, pod, uid, container, node, resource, unit}
//	                                                  gauge, resource "cpu" (unit "core") and "memory" (unit "byte")
//	CAdvisor (the kubelet's /metrics/cadvisor), per container, plus the pod's own cgroup
//	(container "") and the pause container ("POD") as cAdvisor reports them:
//	  container_cpu_usage_seconds_total{namespace, pod, container, cpu}               counter
//	  container_cpu_cfs_periods_total{namespace, pod, container}                      counter
//	  container_cpu_cfs_throttled_periods_total{namespace, pod, container}            counter
//	  container_memory_working_set_bytes{namespace, pod, container}                   gauge
//	Probes (the kubelet's /metrics/probes):
//	  prober_probe_total{probe_type, result, container, pod, namespace, pod_uid}      counter
//
// The series are computed from the cluster's state at each scrape (as kube-state-metrics does,
// through a client_golang Collector), the counters by integrating each pod's CPU use, CFS
// periods and probes over time. The state can be changed while it runs: restart a pod,
// OOM-kill one, fail its probes, raise its CPU or memory, throttle it.
package kubeworkload

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Container is the name of each pod's (only) application container.
const Container = "app"

// cfsPeriod is the kernel's default CFS period: a container with a CPU limit runs 10 of
// them a second.
const cfsPeriod = 100 * time.Millisecond

// DefaultProbePeriod is the kubelet's default periodSeconds.
const DefaultProbePeriod = 10 * time.Second

// Probe types, as the kubelet labels them.
const (
	Liveness  = "Liveness"
	Readiness = "Readiness"
)

// Termination reasons, as Kubernetes reports them.
const (
	ReasonOOMKilled = "OOMKilled"
	ReasonError     = "Error"
)

// Pod is a pod to add: where it runs, what it is, and how it behaves at first.
type Pod struct {
	Namespace, Name string
	// App and Version are its app and version labels (label_app, label_version).
	App, Version string
	// CPULimit is the container's CPU limit in cores; CPU its use, in cores.
	CPULimit, CPU float64
	// MemoryLimit and Memory are the container's memory limit and working set, in bytes.
	MemoryLimit, Memory float64
	// Throttled is the share of its CFS periods that are throttled, within [0, 1].
	Throttled float64
}

func (p Pod) validate() error {
	switch {
	case p.Namespace == "" || p.Name == "":
		return errors.New("a pod needs a namespace and a name")
	case p.App == "" || p.Version == "":
		return fmt.Errorf("pod %s/%s: app and version must not be empty", p.Namespace, p.Name)
	case !(p.CPULimit > 0) || p.CPU < 0 || math.IsInf(p.CPU, 0) || math.IsNaN(p.CPU):
		return fmt.Errorf("pod %s/%s: want a positive CPU limit and a CPU use >= 0", p.Namespace, p.Name)
	case !(p.MemoryLimit > 0) || p.Memory < 0 || math.IsInf(p.Memory, 0) || math.IsNaN(p.Memory):
		return fmt.Errorf("pod %s/%s: want a positive memory limit and a working set >= 0", p.Namespace, p.Name)
	case !(p.Throttled >= 0 && p.Throttled <= 1):
		return fmt.Errorf("pod %s/%s: the throttled share must be within [0, 1]", p.Namespace, p.Name)
	}
	return nil
}

// pod is a pod's state.
type pod struct {
	Pod
	uid string
	// The counters, integrated up to the cluster's last advance.
	cpuSeconds, periods, throttled float64
	restarts                       int
	lastReason                     string // "" until a container terminates
	// probes counts results by probe type and result; probed is the number of probe periods
	// run since the pod was added; failNext the probes of each type still to fail.
	probes   map[[2]string]float64
	probed   int64
	failNext map[string]int
	added    time.Time
}

// Cluster is a synthetic cluster. Its methods are safe for concurrent use.
type Cluster struct {
	now         func() time.Time
	probePeriod time.Duration

	mu   sync.Mutex
	last time.Time // the state is integrated up to here
	pods map[string]*pod

	ksm, cadvisor, probes http.Handler
}

// Options configure a Cluster.
type Options struct {
	// ProbePeriod is how often each pod's liveness and readiness probes run;
	// DefaultProbePeriod when zero.
	ProbePeriod time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// New returns an empty cluster.
func New(opts Options) (*Cluster, error) {
	if opts.ProbePeriod < 0 || (opts.ProbePeriod > 0 && opts.ProbePeriod < time.Millisecond) {
		return nil, fmt.Errorf("probe period must be 0 (%s) or at least 1ms, got %s", DefaultProbePeriod, opts.ProbePeriod)
	}
	if opts.ProbePeriod == 0 {
		opts.ProbePeriod = DefaultProbePeriod
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Cluster{now: opts.Now, probePeriod: opts.ProbePeriod, pods: map[string]*pod{}, last: opts.Now()}
	handler := func(col prometheus.Collector) http.Handler {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(col)
		return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
	}
	c.ksm = handler(collector{c, c.collectKSM, ksmDescs})
	c.cadvisor = handler(collector{c, c.collectCAdvisor, cadvisorDescs})
	c.probes = handler(collector{c, c.collectProbes, probeDescs})
	return c, nil
}

// KubeStateMetrics serves kube-state-metrics' pod series.
func (c *Cluster) KubeStateMetrics() http.Handler { return c.ksm }

// CAdvisor serves the kubelet's cAdvisor series.
func (c *Cluster) CAdvisor() http.Handler { return c.cadvisor }

// Probes serves the kubelet's prober series.
func (c *Cluster) Probes() http.Handler { return c.probes }

func key(namespace, name string) string { return namespace + "/" + name }

// Add adds a pod, running from now.
func (c *Cluster) Add(p Pod) error {
	if err := p.validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance()
	k := key(p.Namespace, p.Name)
	if _, ok := c.pods[k]; ok {
		return fmt.Errorf("pod %s exists", k)
	}
	c.pods[k] = &pod{Pod: p, uid: fmt.Sprintf("uid-%s-%s", p.Namespace, p.Name), probes: map[[2]string]float64{},
		failNext: map[string]int{}, added: c.last}
	return nil
}

// Delete removes a pod: its series vanish.
func (c *Cluster) Delete(namespace, name string) error {
	return c.change(namespace, name, func(p *pod) { delete(c.pods, key(namespace, name)) })
}

// Restart restarts a pod's container, which terminated for reason (ReasonOOMKilled,
// ReasonError, ...): its restart count goes up by one and its last terminated reason is
// reason.
func (c *Cluster) Restart(namespace, name, reason string) error {
	if reason == "" {
		return errors.New("a termination needs a reason")
	}
	return c.change(namespace, name, func(p *pod) { p.restarts++; p.lastReason = reason })
}

// OOMKill is Restart for ReasonOOMKilled.
func (c *Cluster) OOMKill(namespace, name string) error {
	return c.Restart(namespace, name, ReasonOOMKilled)
}

// FailProbes makes the next n probes of probeType (Liveness or Readiness) of a pod fail.
func (c *Cluster) FailProbes(namespace, name, probeType string, n int) error {
	if probeType != Liveness && probeType != Readiness {
		return fmt.Errorf("probe type %q: want %s or %s", probeType, Liveness, Readiness)
	}
	if n < 0 {
		return fmt.Errorf("probes to fail must be >= 0, got %d", n)
	}
	return c.change(namespace, name, func(p *pod) { p.failNext[probeType] += n })
}

// SetCPU sets a pod's CPU use, in cores, from now.
func (c *Cluster) SetCPU(namespace, name string, cores float64) error {
	if !(cores >= 0) || math.IsInf(cores, 0) {
		return fmt.Errorf("CPU use must be >= 0, got %v", cores)
	}
	return c.change(namespace, name, func(p *pod) { p.CPU = cores })
}

// SetMemory sets a pod's working set, in bytes.
func (c *Cluster) SetMemory(namespace, name string, bytes float64) error {
	if !(bytes >= 0) || math.IsInf(bytes, 0) {
		return fmt.Errorf("working set must be >= 0, got %v", bytes)
	}
	return c.change(namespace, name, func(p *pod) { p.Memory = bytes })
}

// SetThrottled sets the share of a pod's CFS periods that are throttled, from now.
func (c *Cluster) SetThrottled(namespace, name string, share float64) error {
	if !(share >= 0 && share <= 1) {
		return fmt.Errorf("throttled share must be within [0, 1], got %v", share)
	}
	return c.change(namespace, name, func(p *pod) { p.Throttled = share })
}

// change integrates the state up to now, then applies f to the pod.
func (c *Cluster) change(namespace, name string, f func(*pod)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pods[key(namespace, name)]
	if !ok {
		return fmt.Errorf("no pod %s", key(namespace, name))
	}
	c.advance()
	f(p)
	return nil
}

// advance integrates every pod's counters from c.last to now. Called with c.mu held.
func (c *Cluster) advance() {
	now := c.now()
	dt := now.Sub(c.last).Seconds()
	if dt <= 0 {
		return
	}
	c.last = now
	for _, p := range c.pods {
		p.cpuSeconds += p.CPU * dt
		periods := dt / cfsPeriod.Seconds()
		p.periods += periods
		p.throttled += p.Throttled * periods
		due := int64(now.Sub(p.added) / c.probePeriod)
		for ; p.probed < due; p.probed++ {
			for _, t := range []string{Liveness, Readiness} {
				result := "successful"
				if p.failNext[t] > 0 {
					p.failNext[t]--
					result = "failed"
				}
				p.probes[[2]string{t, result}]++
			}
		}
	}
}

// sorted is the pods in a stable order. Called with c.mu held.
func (c *Cluster) sorted() []*pod {
	out := make([]*pod, 0, len(c.pods))
	for _, p := range c.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i].Namespace, out[i].Name) < key(out[j].Namespace, out[j].Name) })
	return out
}

// collector collects one exporter's series from the cluster's state.
type collector struct {
	c       *Cluster
	collect func(ch chan<- prometheus.Metric)
	descs   []*prometheus.Desc
}

func (col collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range col.descs {
		ch <- d
	}
}

func (col collector) Collect(ch chan<- prometheus.Metric) {
	col.c.mu.Lock()
	defer col.c.mu.Unlock()
	col.c.advance()
	col.collect(ch)
}

var (
	podLabels = prometheus.NewDesc("kube_pod_labels", "Kubernetes labels converted to Prometheus labels.",
		[]string{"namespace", "pod", "uid", "label_app", "label_version"}, nil)
	restarts = prometheus.NewDesc("kube_pod_container_status_restarts_total", "The number of container restarts per container.",
		[]string{"namespace", "pod", "uid", "container"}, nil)
	lastReason = prometheus.NewDesc("kube_pod_container_status_last_terminated_reason", "Describes the last reason the container was in terminated state.",
		[]string{"namespace", "pod", "uid", "container", "reason"}, nil)
	limits = prometheus.NewDesc("kube_pod_container_resource_limits", "The number of requested limit resource by a container.",
		[]string{"namespace", "pod", "uid", "container", "node", "resource", "unit"}, nil)
	ksmDescs = []*prometheus.Desc{podLabels, restarts, lastReason, limits}

	cpuUsage = prometheus.NewDesc("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.",
		[]string{"namespace", "pod", "container", "cpu"}, nil)
	cfsPeriods = prometheus.NewDesc("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.",
		[]string{"namespace", "pod", "container"}, nil)
	cfsThrottled = prometheus.NewDesc("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.",
		[]string{"namespace", "pod", "container"}, nil)
	workingSet = prometheus.NewDesc("container_memory_working_set_bytes", "Current working set in bytes.",
		[]string{"namespace", "pod", "container"}, nil)
	cadvisorDescs = []*prometheus.Desc{cpuUsage, cfsPeriods, cfsThrottled, workingSet}

	probeTotal = prometheus.NewDesc("prober_probe_total", "Cumulative number of a liveness, readiness or startup probe for a container by result.",
		[]string{"probe_type", "result", "container", "pod", "namespace", "pod_uid"}, nil)
	probeDescs = []*prometheus.Desc{probeTotal}
)

// The pause container's share of the pod's CPU and memory, as cAdvisor shows them.
const (
	pauseCPU    = 0.0001
	pauseMemory = 1 << 20
)

func (c *Cluster) collectKSM(ch chan<- prometheus.Metric) {
	for _, p := range c.sorted() {
		ch <- prometheus.MustNewConstMetric(podLabels, prometheus.GaugeValue, 1, p.Namespace, p.Name, p.uid, p.App, p.Version)
		ch <- prometheus.MustNewConstMetric(restarts, prometheus.CounterValue, float64(p.restarts), p.Namespace, p.Name, p.uid, Container)
		if p.lastReason != "" {
			// kube-state-metrics v2 reports the last reason only, at 1.
			ch <- prometheus.MustNewConstMetric(lastReason, prometheus.GaugeValue, 1, p.Namespace, p.Name, p.uid, Container, p.lastReason)
		}
		ch <- prometheus.MustNewConstMetric(limits, prometheus.GaugeValue, p.CPULimit, p.Namespace, p.Name, p.uid, Container, "node-1", "cpu", "core")
		ch <- prometheus.MustNewConstMetric(limits, prometheus.GaugeValue, p.MemoryLimit, p.Namespace, p.Name, p.uid, Container, "node-1", "memory", "byte")
	}
}

func (c *Cluster) collectCAdvisor(ch chan<- prometheus.Metric) {
	for _, p := range c.sorted() {
		elapsed := c.last.Sub(p.added).Seconds()
		pause := pauseCPU * elapsed
		for _, s := range []struct {
			container   string
			cpu, memory float64
		}{
			{Container, p.cpuSeconds, p.Memory},
			{"POD", pause, pauseMemory},
			{"", p.cpuSeconds + pause, p.Memory + pauseMemory}, // the pod's cgroup: the sum
		} {
			ch <- prometheus.MustNewConstMetric(cpuUsage, prometheus.CounterValue, s.cpu, p.Namespace, p.Name, s.container, "total")
			ch <- prometheus.MustNewConstMetric(workingSet, prometheus.GaugeValue, s.memory, p.Namespace, p.Name, s.container)
		}
		// CFS counters exist for cgroups with a CPU quota: the container's and the pod's.
		for _, container := range []string{Container, ""} {
			ch <- prometheus.MustNewConstMetric(cfsPeriods, prometheus.CounterValue, p.periods, p.Namespace, p.Name, container)
			ch <- prometheus.MustNewConstMetric(cfsThrottled, prometheus.CounterValue, p.throttled, p.Namespace, p.Name, container)
		}
	}
}

func (c *Cluster) collectProbes(ch chan<- prometheus.Metric) {
	for _, p := range c.sorted() {
		keys := make([][2]string, 0, len(p.probes))
		for k := range p.probes {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
		// The kubelet creates a result's series at its first occurrence: no "failed" series
		// until a probe fails.
		for _, k := range keys {
			ch <- prometheus.MustNewConstMetric(probeTotal, prometheus.CounterValue, p.probes[k], k[0], k[1], Container, p.Name, p.Namespace, p.uid)
		}
	}
}

// Snapshot is a pod's counters and state, as the exporters would show them now: the ground
// truth tests compare with.
type Snapshot struct {
	Restarts      int
	LastReason    string
	CPUSeconds    float64
	Periods       float64
	Throttled     float64
	ProbesFailed  map[string]float64 // by probe type
	ProbesPassed  map[string]float64
	ProbesPending map[string]int // failures still to come
}

// Snapshot returns a pod's state now.
func (c *Cluster) Snapshot(namespace, name string) (Snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pods[key(namespace, name)]
	if !ok {
		return Snapshot{}, fmt.Errorf("no pod %s", key(namespace, name))
	}
	c.advance()
	s := Snapshot{Restarts: p.restarts, LastReason: p.lastReason, CPUSeconds: p.cpuSeconds,
		Periods: p.periods, Throttled: p.throttled,
		ProbesFailed: map[string]float64{}, ProbesPassed: map[string]float64{}, ProbesPending: map[string]int{}}
	for k, v := range p.probes {
		if k[1] == "failed" {
			s.ProbesFailed[k[0]] = v
		} else {
			s.ProbesPassed[k[0]] = v
		}
	}
	for t, n := range p.failNext {
		s.ProbesPending[t] = n
	}
	return s, nil
}
