package e2e

// Field conditions, end to end (issue 10): the real daemon with the shipped template (made
// fast by replicaConfig: a 2 s interval bound, a 6 s minimum step, a 1 m baseline window and a
// 1% tolerance), a real Prometheus scraping every 15 s (one pod of each version of the shared
// incident every 30 s), and three workload processes (pods) per version, which Prometheus
// scrapes at offsets of its own (it spreads targets by hashing their labels). Four rollouts
// run at once, each a service of its own, so that the file takes about four minutes:
//
//   - incident: a healthy canary; both versions fail every request for 40 s, then recover;
//   - regression: the canary's error rate goes from 0.5% to 5% (10x) at a known time;
//   - outage: the canary's pods are killed for 50 s after a proceed, then started again;
//   - rollout: a healthy canary through 10 -> 25 -> 50 -> 75 -> 100.
//
// Every verdict of every scenario is logged (t.Logf) for the figures of the closing note.
// Waits poll with deadlines; the only fixed durations are the scenarios' own (how long an
// incident or an outage lasts). Timing is asserted only within generous bounds.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

const (
	// fieldScrape is Prometheus's scrape interval; fieldSlowScrape that of the slow job.
	fieldScrape     = 15 * time.Second
	fieldSlowScrape = 30 * time.Second
	// fieldScrapeGrace is compare's scrapeGrace: how late a scrape may land before a series
	// is taken for gone, on top of two of its intervals.
	fieldScrapeGrace = 2 * time.Second
	// fieldRecentWindow is the shipped template's recentWindow: the span the guards against
	// the baseline judge.
	fieldRecentWindow = time.Minute
	podsPerVersion    = 3
)

// workloadBinary builds test/workload once for the package.
var workloadBinary = sync.OnceValues(func() (string, error) {
	// Beside the daemon's binary, in the directory TestMain removes.
	bin := filepath.Join(filepath.Dir(binary), "workload")
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../workload").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build test/workload: %v: %s", err, out)
	}
	return bin, nil
})

// pod is one workload process: a pod of one version of a service. It can be killed
// (SIGKILL, as a crashed or evicted pod) and started again on the same address, where it
// counts from 0 again (a counter reset).
type pod struct {
	name    string
	addr    string
	service string
	version string
	seed    int64

	mu        sync.Mutex
	rate      float64
	errorRate float64
	cmd       *exec.Cmd
	done      chan error
	logs      *syncBuffer
}

func newPod(t *testing.T, service, version string, i int, rate, errorRate float64, seed int64) *pod {
	t.Helper()
	p := &pod{
		name: fmt.Sprintf("%s-%s-%d", service, version, i), addr: freeAddr(t),
		service: service, version: version, seed: seed, rate: rate, errorRate: errorRate, logs: &syncBuffer{},
	}
	p.start(t)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("logs of pod %s:\n%s", p.name, tail(p.logs.String(), 20))
		}
	})
	return p
}

// start starts the process and waits until it serves its control API; t is the test that
// does it.
func (p *pod) start(t *testing.T) {
	t.Helper()
	bin, err := workloadBinary()
	require.NoError(t, err)
	p.mu.Lock()
	require.Nil(t, p.cmd, "pod %s already runs", p.name)
	p.cmd = exec.Command(bin, "--listen", p.addr, "--service", p.service, "--version", p.version,
		"--rate", fmt.Sprint(p.rate), "--error-rate", fmt.Sprint(p.errorRate), "--seed", fmt.Sprint(p.seed))
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, p.cmd.Start())
	p.done = make(chan error, 1)
	cmd, done := p.cmd, p.done
	go func() { done <- cmd.Wait() }()
	p.mu.Unlock()
	client := http.Client{Timeout: 2 * time.Second}
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + p.addr + "/profile")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "pod %s serves on %s", p.name, p.addr)
}

// kill SIGKILLs the process, if it runs, and waits for it to be gone.
func (p *pod) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd, p.done = nil, nil
}

// setErrorRate changes the share of failed requests at run time, through the control API; a
// restarted pod keeps it.
func (p *pod) setErrorRate(t *testing.T, rate float64) {
	t.Helper()
	p.mu.Lock()
	p.errorRate = rate
	p.mu.Unlock()
	body, err := json.Marshal(map[string]float64{"errorRate": rate})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPut, "http://"+p.addr+"/profile", bytes.NewReader(body))
	require.NoError(t, err)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	require.NoError(t, err, "pod %s: PUT /profile", p.name)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "pod %s: PUT /profile", p.name)
}

// fieldService is one scenario's service: its pods per version and the scrape job of each.
type fieldService struct {
	name           string
	stable, canary []*pod
}

func (s *fieldService) all() []*pod { return append(append([]*pod(nil), s.stable...), s.canary...) }

// fieldRun is what the scenarios share: one Prometheus, one daemon, the verdict feed.
type fieldRun struct {
	ctx    context.Context
	source *compare.Prometheus
	feed   *verdictFeed
	pub    rolloutclient.Publisher
}

func (f *fieldRun) start(t *testing.T, name string) time.Time {
	t.Helper()
	ref := rollout.Ref{Namespace: "e2e", Name: name}
	at := time.Now()
	require.NoError(t, f.pub.Publish(f.ctx, ref, "field-start-"+name, rollout.EventStarted, at, rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
		Args: map[string]string{"service": name}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Step: 0, Weight: 10,
	}))
	return at
}

func (f *fieldRun) verdicts(name string) []rollout.Verdict {
	var out []rollout.Verdict
	for _, r := range f.feed.of(name) {
		out = append(out, r.Verdict)
	}
	return out
}

// waitVerdict polls the scenario's verdicts until cond holds, failing at the deadline, or at
// once when fatal names a verdict that must never come.
func (f *fieldRun) waitVerdict(t *testing.T, name string, timeout time.Duration, what string,
	cond func([]rollout.Verdict) bool, fatal func(rollout.Verdict) bool) []rollout.Verdict {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		vs := f.verdicts(name)
		for _, v := range vs {
			if fatal != nil && fatal(v) {
				t.Fatalf("%s: while waiting for %s, verdict %d: %s (%s)", name, what, v.Sequence, v.Verdict, v.Reason)
			}
		}
		if cond(vs) {
			return vs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out after %s waiting for %s (%d verdicts)", name, timeout, what, len(vs))
		}
		select {
		case <-f.ctx.Done():
			t.Fatalf("%s: %v while waiting for %s", name, f.ctx.Err(), what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// hold lets a scenario's phase last d (an incident, an outage), failing at once on a fatal
// verdict meanwhile.
func (f *fieldRun) hold(t *testing.T, name string, d time.Duration, what string, fatal func(rollout.Verdict) bool) {
	t.Helper()
	end := time.Now().Add(d)
	f.waitVerdict(t, name, d+time.Minute, what, func([]rollout.Verdict) bool { return !time.Now().Before(end) }, fatal)
}

// sampleTimes returns, for each series of a selector, the times of its raw samples in
// (from, through], as Prometheus stored them.
func (f *fieldRun) sampleTimes(t *testing.T, selector string, from, through time.Time) map[string][]time.Time {
	t.Helper()
	rng := through.Sub(from).Truncate(time.Second) + time.Second
	r := f.source.Query(f.ctx, []compare.Request{{Expr: fmt.Sprintf("%s[%ds]", selector, int(rng.Seconds())), Time: through}})[0]
	require.NoError(t, r.Err, "query %s", selector)
	out := map[string][]time.Time{}
	for _, s := range r.Series {
		key := fmt.Sprint(s.Labels)
		for _, x := range s.Samples {
			if x.Time().After(from) && !x.Time().After(through) {
				out[key] = append(out[key], x.Time())
			}
		}
	}
	return out
}

func isRollback(v rollout.Verdict) bool { return v.Verdict == rollout.Rollback }

func firstOf(vs []rollout.Verdict, pred func(rollout.Verdict) bool) (rollout.Verdict, bool) {
	for _, v := range vs {
		if pred(v) {
			return v, true
		}
	}
	return rollout.Verdict{}, false
}

// describe is one verdict on one line: its sequence, step, weight, decision, time (and
// seconds since t0), reason, and the error-rate check's numbers.
func describe(v rollout.Verdict, t0 time.Time) string {
	s := fmt.Sprintf("seq=%d step=%d weight=%d %s decidedAt=%s (+%.1fs) reason=%q",
		v.Sequence, v.Step, v.Weight, v.Verdict, v.DecidedAt.UTC().Format("15:04:05.000"), v.DecidedAt.Sub(t0).Seconds(), v.Reason)
	var checks []string
	for _, c := range v.Checks {
		x := fmt.Sprintf("%s=%s", c.Metric, c.Outcome)
		if c.Canary != nil && c.Stable != nil {
			x += fmt.Sprintf("(canary %.4g stable %.4g", *c.Canary, *c.Stable)
			if c.EValue != nil {
				x += fmt.Sprintf(" e %.3g", *c.EValue)
			}
			x += fmt.Sprintf(" n %d/%d)", c.Samples.Canary, c.Samples.Stable)
		}
		if c.Message != "" {
			x += fmt.Sprintf(" %q", c.Message)
		}
		checks = append(checks, x)
	}
	return s + " checks: " + strings.Join(checks, "; ")
}

func (f *fieldRun) logVerdicts(t *testing.T, name string, t0 time.Time) {
	for _, v := range f.verdicts(name) {
		t.Logf("%s verdict %s", name, describe(v, t0))
	}
}

// TestField runs the four scenarios at once against one daemon and one Prometheus.
func TestField(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	promBinary := requirePrometheus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()
	ns := natstest.Start(t)

	// The pods. Each version of incident, outage and rollout serves 300 req/s (100 a pod);
	// the regression's, 100 req/s (33 a pod), the figure for the 10x regression.
	// Every pod starts at 0.5% errors.
	const healthyErrors = 0.005
	services := map[string]*fieldService{}
	var targets []promproc.Target
	seed := int64(1000)
	for _, s := range []struct {
		name    string
		podRate float64
		slow    bool // the third pod of each version in the slow job
	}{
		{"incident", 100, true},
		{"regression", 100.0 / 3, false},
		{"outage", 100, false},
		{"rollout", 100, false},
	} {
		svc := &fieldService{name: s.name}
		for _, version := range []string{"v1", "v2"} {
			for i := range podsPerVersion {
				seed++
				p := newPod(t, s.name, version, i, s.podRate, healthyErrors, seed)
				job := "workload"
				if s.slow && i == podsPerVersion-1 {
					job = "workload-slow"
				}
				targets = append(targets, promproc.Target{Job: job, Address: p.addr, Labels: map[string]string{"pod": p.name}})
				if version == "v1" {
					svc.stable = append(svc.stable, p)
				} else {
					svc.canary = append(svc.canary, p)
				}
			}
		}
		services[s.name] = svc
	}
	prom, err := promproc.Start(ctx, promproc.Options{
		Binary: promBinary, Dir: t.TempDir(), Targets: targets, ScrapeInterval: fieldScrape,
		JobScrapeIntervals: map[string]time.Duration{"workload-slow": fieldSlowScrape},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prom.Close() })
	promUp := time.Now()
	require.NoError(t, prom.WaitTargetsUp(ctx))
	source, err := compare.NewPrometheus(compare.PrometheusOptions{URL: prom.URL()})
	require.NoError(t, err)
	// The baseline (1 minute before each rollout.started) needs 1,000 stable requests it is
	// sure of. A series first scraped within the window may have counted everything before
	// it (here, since its pod started): only what it counted between its samples is certain.
	// Wait until every stable pod has been scraped twice within the last 45 s (the rollouts
	// start a few seconds later, within the minute) and those scrapes hold twice that.
	for name := range services {
		require.Eventually(t, func() bool {
			return certainHistory(ctx, source, name, 45*time.Second) >= 2000
		}, 2*time.Minute, 250*time.Millisecond, "history of %s", name)
	}
	t.Logf("Prometheus every %s (%s for the slow job), %d pods; history after %.1fs",
		fieldScrape, fieldSlowScrape, len(targets), time.Since(promUp).Seconds())

	d := newReplica(t, "field-1", ns.ClientURL(), prom.URL(), 15*time.Second)
	d.start()
	_, js := natstest.Connect(t, ns)
	f := &fieldRun{ctx: ctx, source: source, feed: watchVerdictFeed(t, ctx, js), pub: rolloutclient.Publisher{JS: js, Prefix: prefix}}

	t.Run("scenarios", func(t *testing.T) {
		t.Run("SharedIncident", func(t *testing.T) { t.Parallel(); fieldSharedIncident(t, f, services["incident"]) })
		t.Run("Regression10x", func(t *testing.T) { t.Parallel(); fieldRegression(t, f, services["regression"]) })
		t.Run("CanaryStopsServing", func(t *testing.T) { t.Parallel(); fieldOutage(t, f, services["outage"]) })
		t.Run("WholeRollout", func(t *testing.T) { t.Parallel(); fieldWholeRollout(t, f, services["rollout"]) })
	})
}

// certainHistory is how many requests the stable pods of a service counted between their
// first and last samples in the last d, or 0 while any of them has fewer than two.
func certainHistory(ctx context.Context, source *compare.Prometheus, service string, d time.Duration) float64 {
	now := time.Now()
	r := source.Query(ctx, []compare.Request{{Expr: fmt.Sprintf(`http_requests_total{service=%q, version="v1", code="200"}[%ds]`, service, int(d.Seconds())), Time: now}})[0]
	if r.Err != nil || len(r.Series) != podsPerVersion {
		return 0
	}
	total := 0.0
	for _, s := range r.Series {
		if len(s.Samples) < 2 {
			return 0
		}
		total += s.Samples[len(s.Samples)-1].V - s.Samples[0].V
	}
	return total
}

// withCanaryData: a verdict whose error-rate check counted canary requests.
func withCanaryData(v rollout.Verdict) bool { return check(v, "error-rate").Samples.Canary > 0 }

// hasCanaryData: a verdict with canary data among vs.
func hasCanaryData(vs []rollout.Verdict) bool {
	_, ok := firstOf(vs, withCanaryData)
	return ok
}

// fieldSharedIncident: a healthy canary; after its first verdicts with canary data, every
// pod of both versions fails every request for 40 s, then recovers. No rollback ever; a
// pause while the incident is in the data; a proceed after it.
func fieldSharedIncident(t *testing.T, f *fieldRun, svc *fieldService) {
	const name, incident = "incident", 40 * time.Second
	t0 := f.start(t, name)
	t.Cleanup(func() { f.logVerdicts(t, name, t0) })
	vs := f.waitVerdict(t, name, 90*time.Second, "a verdict with canary data", hasCanaryData, isRollback)
	// The shared incident is told from the canary's own by the critical guard against the
	// baseline: it must be judged (a baseline sure of too few requests skips it, and the
	// check says so).
	first, _ := firstOf(vs, withCanaryData)
	require.Contains(t, check(first, "error-rate").Threshold, "canary - baseline", "seq %d: %s", first.Sequence, check(first, "error-rate").Message)

	begin := time.Now()
	for _, p := range svc.all() {
		p.setErrorRate(t, 1)
	}
	t.Logf("incident: every pod of both versions at 100%% errors from +%.1fs", begin.Sub(t0).Seconds())
	f.hold(t, name, incident, "the incident to end", isRollback)
	end := time.Now()
	for _, p := range svc.all() {
		p.setErrorRate(t, 0.005)
	}
	t.Logf("incident: recovered at +%.1fs", end.Sub(t0).Seconds())

	// The incident is in every evaluation's data from when each series has been scraped
	// during it (the slow job's pods every 30 s; the span ends at the oldest of the last
	// samples) until it leaves the recent window of the baseline's guards. Allow two slow
	// intervals on each side for scrape offsets and lateness: in that window the critical
	// guard sees both versions far above the baseline, so no verdict may proceed. Every
	// verdict through that window is judged, however early a proceed comes.
	inFrom, inTo := begin.Add(2*fieldSlowScrape), end.Add(fieldRecentWindow)
	vs = f.waitVerdict(t, name, 200*time.Second, "a proceed after the incident", func(vs []rollout.Verdict) bool {
		_, ok := firstOf(vs, func(v rollout.Verdict) bool { return v.Verdict == rollout.Proceed && v.DecidedAt.After(end) })
		return ok && time.Now().After(inTo)
	}, isRollback)

	var shared, pausedDuring []rollout.Verdict
	for _, v := range vs {
		require.NotEqual(t, rollout.Rollback, v.Verdict, "seq %d: %s", v.Sequence, v.Reason)
		if v.Verdict == rollout.Pause && strings.Contains(v.Reason, "shared degradation") {
			shared = append(shared, v)
		}
		if v.DecidedAt.After(inFrom) && v.DecidedAt.Before(inTo) {
			require.NotEqual(t, rollout.Proceed, v.Verdict, "seq %d proceeds at +%.1fs with the incident in its data: %s",
				v.Sequence, v.DecidedAt.Sub(t0).Seconds(), v.Reason)
			if v.Verdict == rollout.Pause {
				pausedDuring = append(pausedDuring, v)
			}
		}
	}
	require.True(t, len(shared) > 0 || len(pausedDuring) > 0, "a pause naming the shared degradation, or a pause during the incident")
	after, _ := firstOf(vs, func(v rollout.Verdict) bool { return v.Verdict == rollout.Proceed && v.DecidedAt.After(end) })
	t.Logf("FIGURES incident: %d verdicts, 0 rollbacks, %d pauses naming the shared degradation, %d pauses during it; "+
		"first proceed after recovery: seq %d, %.1fs after the recovery (+%.1fs)",
		len(vs), len(shared), len(pausedDuring), after.Sequence, after.DecidedAt.Sub(end).Seconds(), after.DecidedAt.Sub(t0).Seconds())
	if len(shared) > 0 {
		t.Logf("first shared-degradation reason: seq %d at +%.1fs: %s", shared[0].Sequence, shared[0].DecidedAt.Sub(t0).Seconds(), shared[0].Reason)
	}
}

// fieldRegression: the canary goes from 0.5% to 5% errors (10x) at a known time, at 100
// req/s a version. It is rolled back; the time from the fault to the verdict is logged.
func fieldRegression(t *testing.T, f *fieldRun, svc *fieldService) {
	const name = "regression"
	t0 := f.start(t, name)
	t.Cleanup(func() { f.logVerdicts(t, name, t0) })
	f.waitVerdict(t, name, 90*time.Second, "a verdict with canary data", hasCanaryData, isRollback)

	fault := time.Now()
	for _, p := range svc.canary {
		p.setErrorRate(t, 0.05)
	}
	t.Logf("regression: the canary's pods at 5%% errors from +%.1fs", fault.Sub(t0).Seconds())
	vs := f.waitVerdict(t, name, 90*time.Second, "the rollback", func(vs []rollout.Verdict) bool {
		_, ok := firstOf(vs, isRollback)
		return ok
	}, nil)
	rb, _ := firstOf(vs, isRollback)
	for _, v := range vs {
		if v.Sequence < rb.Sequence && v.DecidedAt.Before(fault) {
			continue
		}
		// After the fault, the same step may not proceed once every canary pod has been
		// scraped since the fault (its data then shows it).
		if v.Verdict == rollout.Proceed {
			require.True(t, v.DecidedAt.Before(fault.Add(2*fieldScrape+fieldScrapeGrace)),
				"seq %d proceeds at +%.1fs, after the fault reached every pod's scrapes: %s", v.Sequence, v.DecidedAt.Sub(t0).Seconds(), v.Reason)
		}
	}
	require.Contains(t, rb.Reason, "error-rate")
	require.Less(t, rb.DecidedAt.Sub(fault), 90*time.Second, "rolled back within a generous bound")

	// When the fault reached Prometheus: the first scrape of a canary pod after it, and the
	// first at which every canary pod had been scraped since.
	times := f.sampleTimes(t, `http_requests_total{service="regression", version="v2", code="200"}`, fault, rb.DecidedAt)
	var firsts []time.Time
	for _, ts := range times {
		if len(ts) > 0 {
			firsts = append(firsts, ts[0])
		}
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i].Before(firsts[j]) })
	require.Len(t, firsts, podsPerVersion, "every canary pod was scraped between the fault and the rollback")
	c := check(rb, "error-rate")
	t.Logf("FIGURES regression: fault -> rollback %.1fs (decidedAt); fault -> first canary scrape %.1fs, -> every canary pod scraped %.1fs; "+
		"first faulty scrape -> rollback %.1fs, every pod scraped -> rollback %.1fs; rollback seq %d: %s (canary %v stable %v, e-value %v, n %d/%d)",
		rb.DecidedAt.Sub(fault).Seconds(), firsts[0].Sub(fault).Seconds(), firsts[len(firsts)-1].Sub(fault).Seconds(),
		rb.DecidedAt.Sub(firsts[0]).Seconds(), rb.DecidedAt.Sub(firsts[len(firsts)-1]).Seconds(), rb.Sequence, rb.Reason,
		deref(c.Canary), deref(c.Stable), deref(c.EValue), c.Samples.Canary, c.Samples.Stable)
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// fieldOutage: after a proceed, every canary pod is killed for 50 s, then started again (its
// counters from 0). No proceed while the daemon can know the canary serves nothing; a
// proceed again once it serves.
func fieldOutage(t *testing.T, f *fieldRun, svc *fieldService) {
	const name, outage = "outage", 50 * time.Second
	t0 := f.start(t, name)
	t.Cleanup(func() { f.logVerdicts(t, name, t0) })
	isProceed := func(v rollout.Verdict) bool { return v.Verdict == rollout.Proceed }
	f.waitVerdict(t, name, 150*time.Second, "a first proceed", func(vs []rollout.Verdict) bool {
		_, ok := firstOf(vs, isProceed)
		return ok
	}, isRollback)

	down := time.Now()
	for _, p := range svc.canary {
		p.kill()
	}
	t.Logf("outage: every canary pod killed at +%.1fs", down.Sub(t0).Seconds())
	f.hold(t, name, outage, "the outage to end", isRollback)
	up := time.Now()
	for _, p := range svc.canary {
		p.start(t)
	}
	t.Logf("outage: canary pods started again at +%.1fs", up.Sub(t0).Seconds())
	vs := f.waitVerdict(t, name, 120*time.Second, "a proceed after the canary serves again", func(vs []rollout.Verdict) bool {
		_, ok := firstOf(vs, func(v rollout.Verdict) bool { return isProceed(v) && v.DecidedAt.After(up) })
		return ok
	}, isRollback)

	// The fair assertion. A proceed decided at t rests on the samples Prometheus had at t.
	// The canary's last samples before the kill (each pod's last scrape, up to one scrape
	// interval before it) show a canary that served; a verdict that rests on them is not a
	// proceed on no traffic, and the daemon cannot tell "not scraped yet" from "gone" until
	// the staleness rule (README, "Measuring"): a series whose last sample is older than two
	// of its scrape intervals (plus compare's scrapeGrace) is gone. So from
	//
	//	known = (the newest of the canary's last samples before the kill) + 2 x 15 s + 2 s
	//	        + one evaluation (the interval bound, 2 s)
	//
	// until the first canary sample after the restart, the daemon knows that the canary
	// serves nothing and has nothing new from it: no verdict in that window may proceed. (A
	// proceed between the kill and `known` is logged: it rests on evidence from before the
	// kill, as the last judgement standing.)
	before := f.sampleTimes(t, `http_requests_total{service="outage", version="v2", code="200"}`, down.Add(-2*time.Minute), up)
	var last time.Time
	for _, ts := range before {
		if n := len(ts); n > 0 && ts[n-1].After(last) {
			last = ts[n-1]
		}
	}
	require.False(t, last.IsZero(), "the canary was scraped before the kill")
	require.False(t, last.After(down), "no canary sample between the kill and the restart")
	afterTimes := f.sampleTimes(t, `http_requests_total{service="outage", version="v2", code="200"}`, up, time.Now())
	var back time.Time
	for _, ts := range afterTimes {
		if len(ts) > 0 && (back.IsZero() || ts[0].Before(back)) {
			back = ts[0]
		}
	}
	require.False(t, back.IsZero(), "the canary was scraped after the restart")
	known := last.Add(2*fieldScrape + fieldScrapeGrace + fastInterval)
	var paused, early []rollout.Verdict
	for _, v := range vs {
		if v.DecidedAt.After(down) && !v.DecidedAt.After(known) && isProceed(v) {
			early = append(early, v)
		}
		if v.DecidedAt.After(known) && v.DecidedAt.Before(back) {
			require.NotEqual(t, rollout.Proceed, v.Verdict, "seq %d proceeds at +%.1fs, %.1fs after the canary's last sample (+%.1fs) with none since: %s",
				v.Sequence, v.DecidedAt.Sub(t0).Seconds(), v.DecidedAt.Sub(last).Seconds(), last.Sub(t0).Seconds(), v.Reason)
			if v.Verdict == rollout.Pause {
				paused = append(paused, v)
			}
		}
	}
	for _, v := range early {
		t.Logf("outage: proceed between the kill and the staleness horizon (evidence from before the kill): %s", describe(v, t0))
	}
	if known.Before(back) {
		require.NotEmpty(t, paused, "the daemon pauses while the canary serves nothing")
	}
	again, _ := firstOf(vs, func(v rollout.Verdict) bool { return isProceed(v) && v.DecidedAt.After(up) })
	t.Logf("FIGURES outage: killed +%.1fs, last canary sample +%.1fs, staleness horizon +%.1fs, restarted +%.1fs, first canary sample again +%.1fs; "+
		"%d proceeds between kill and horizon, %d pauses between horizon and first sample again, 0 proceeds there; proceed again seq %d at +%.1fs (%.1fs after the first sample again)",
		down.Sub(t0).Seconds(), last.Sub(t0).Seconds(), known.Sub(t0).Seconds(), up.Sub(t0).Seconds(), back.Sub(t0).Seconds(),
		len(early), len(paused), again.Sequence, again.DecidedAt.Sub(t0).Seconds(), again.DecidedAt.Sub(back).Seconds())
	if len(paused) > 0 {
		t.Logf("outage: first pause reason in the window: %s", paused[0].Reason)
	}
}

// fieldWholeRollout: a healthy canary through 10 -> 25 -> 50 -> 75 -> 100, a rollout.step
// event on each proceed, rollout.completed after the last; the time per step is logged.
func fieldWholeRollout(t *testing.T, f *fieldRun, svc *fieldService) {
	const name = "rollout"
	_ = svc
	ref := rollout.Ref{Namespace: "e2e", Name: name}
	t0 := f.start(t, name)
	t.Cleanup(func() { f.logVerdicts(t, name, t0) })
	weights := []int{10, 25, 50, 75, 100}
	stepStart := t0
	var per []string
	for step, w := range weights {
		vs := f.waitVerdict(t, name, 150*time.Second, fmt.Sprintf("a proceed at step %d (weight %d)", step, w), func(vs []rollout.Verdict) bool {
			_, ok := firstOf(vs, func(v rollout.Verdict) bool { return v.Step == step && v.Verdict == rollout.Proceed })
			return ok
		}, isRollback)
		p, _ := firstOf(vs, func(v rollout.Verdict) bool { return v.Step == step && v.Verdict == rollout.Proceed })
		require.Equal(t, w, p.Weight)
		per = append(per, fmt.Sprintf("%d%%: %.1fs", w, p.DecidedAt.Sub(stepStart).Seconds()))
		t.Logf("rollout: step %d (weight %d) proceeds after %.1fs: %s", step, w, p.DecidedAt.Sub(stepStart).Seconds(), p.Reason)
		stepStart = time.Now()
		if step+1 < len(weights) {
			require.NoError(t, f.pub.Publish(f.ctx, ref, fmt.Sprintf("field-step-%s-%d", name, step+1), rollout.EventStep, stepStart,
				rolloutclient.Step{Rollout: ref, Revision: "v2", Step: step + 1, Weight: weights[step+1]}))
		}
	}
	require.NoError(t, f.pub.Publish(f.ctx, ref, "field-completed-"+name, rollout.EventCompleted, time.Now(),
		rolloutclient.Ended{Rollout: ref, Revision: "v2"}))
	for _, v := range f.verdicts(name) {
		require.NotEqual(t, rollout.Rollback, v.Verdict, "seq %d: %s", v.Sequence, v.Reason)
	}
	t.Logf("FIGURES rollout: 0 rollbacks, time to proceed per step (from the step's event): %s; whole rollout %.1fs",
		strings.Join(per, ", "), time.Since(t0).Seconds())
}
