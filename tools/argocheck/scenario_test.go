package argocheck

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	analysisutil "github.com/argoproj/argo-rollouts/utils/analysis"

	"github.com/analyzerd/analyzerd/tools/ctlharness"
)

// measurementInterval replaces the README template's interval, so that a step takes seconds.
// It is the only field of the README's metric the scenarios change (with the URL's host,
// which points at a recording proxy in front of analyzerd).
const measurementInterval = "2s"

// workloadFlags are the synthetic services' traffic: enough requests for the shipped checks'
// minSamples (1000) within a short step.
var workloadFlags = []string{"--rate", "300", "--error-rate", "0.005"}

// verdict is the part of analyzerd's verdict JSON the scenarios check.
type verdict struct {
	Verdict string `json:"verdict"`
	Step    *int   `json:"step"`
	Weight  *int   `json:"weight"`
	Reason  string `json:"reason"`
	Stale   bool   `json:"stale"`
}

// scenario is one rollout, driven through the README's analysis steps.
type scenario struct {
	t                      *testing.T
	objs                   readmeObjects
	rollout                *v1alpha1.Rollout
	canaryHash, stableHash string
	stableRS, newRS        *appsv1.ReplicaSet
	canary, stable         *ctlharness.Workload
	body                   map[string]any // the first step's rendered request body
}

// newScenario makes a Rollout from the README's, named name, with a stable and a canary
// ReplicaSet, and starts the workloads the rendered request names (its service argument and
// the two sides' versions), with enough stable history for the baseline.
func newScenario(t *testing.T, tag string) *scenario {
	t.Helper()
	setup(t)
	objs := argoReadme(t)
	r := objs.rollout.DeepCopy()
	if r.Namespace == "" {
		r.Namespace = "prod"
	}
	r.Name = orDefault(r.Name, "checkout") + "-" + tag
	if r.Annotations == nil {
		r.Annotations = map[string]string{}
	}
	r.Annotations["rollout.argoproj.io/revision"] = "2"
	s := &scenario{t: t, objs: objs, rollout: r,
		canaryHash: "6c" + hashOf(tag) + "b", stableHash: "58" + hashOf(tag) + "d"}
	s.newRS = replicaSet(r, s.canaryHash)
	s.stableRS = replicaSet(r, s.stableHash)
	r.Status.CurrentPodHash = s.canaryHash
	r.Status.StableRS = s.stableHash
	s.ensureSecrets()

	steps := analysisSteps(t, r)
	if len(steps) == 0 {
		t.Fatal("README Rollout has no analysis step")
	}
	s.setStep(steps[0])
	run := s.newRun(steps[0])
	// The controller reads secret arguments from the cluster when it measures; the preview
	// of the request only needs the others.
	args := make([]v1alpha1.Argument, len(run.Spec.Args))
	for i, a := range run.Spec.Args {
		args[i] = *a.DeepCopy()
		if a.ValueFrom != nil && a.ValueFrom.SecretKeyRef != nil {
			hidden := "(secret)"
			args[i].Value, args[i].ValueFrom = &hidden, nil
		}
	}
	m, err := analysisutil.ResolveMetricArgs(run.Spec.Metrics[0], args)
	if err != nil {
		t.Fatalf("resolving the README metric's args: %v", err)
	}
	web := m.Provider.Web
	raw := []byte(web.Body)
	if len(web.JSONBody) > 0 {
		raw = web.JSONBody
	}
	if err := json.Unmarshal(raw, &s.body); err != nil {
		t.Fatalf("the README metric's request body is not JSON: %v\n%s", err, raw)
	}
	service := str(t, s.body, "args", "service")
	s.stable = startWorkload(t, service, str(t, s.body, "stable", "version"), workloadFlags...)
	s.canary = startWorkload(t, service, str(t, s.body, "canary", "version"), workloadFlags...)
	t.Logf("rollout %s/%s: canary %s (version %s), stable %s (version %s), service %q; request body of the first step: %s",
		r.Namespace, r.Name, s.canaryHash, s.canary.Version, s.stableHash, s.stable.Version, service, raw)
	// The baseline is the stable side's history before the analysis starts: wait until
	// Prometheus holds more than the 1000 requests the checks need.
	q := fmt.Sprintf(`sum(http_requests_total{service=%q,version=%q})`, service, s.stable.Version)
	if err := env.prom.WaitAtLeast(60*time.Second, q, 2000); err != nil {
		t.Fatal(err)
	}
	return s
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// hashOf is a few hex digits from tag, so that each scenario's pod template hashes differ.
func hashOf(tag string) string {
	var h uint32 = 2166136261
	for _, c := range []byte(tag) {
		h = (h ^ uint32(c)) * 16777619
	}
	return fmt.Sprintf("%06x", h&0xffffff)
}

func str(t *testing.T, m map[string]any, path ...string) string {
	t.Helper()
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("request body: no %s", strings.Join(path, "."))
		}
		cur = mm[p]
	}
	s, ok := cur.(string)
	if !ok || s == "" {
		t.Fatalf("request body: %s is %v, want a string", strings.Join(path, "."), cur)
	}
	return s
}

func replicaSet(r *v1alpha1.Rollout, hash string) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Name: r.Name + "-" + hash, Namespace: r.Namespace,
		Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: hash},
	}}
}

// ensureSecrets creates the Secrets the template's args read (valueFrom.secretKeyRef) in the
// rollout's namespace, holding the token analyzerd accepts: what a user does with the README's
// Secret (whose value is a placeholder).
func (s *scenario) ensureSecrets() {
	for _, a := range s.objs.template.Spec.Args {
		if a.ValueFrom == nil || a.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := a.ValueFrom.SecretKeyRef
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: s.rollout.Namespace},
			Data: map[string][]byte{ref.Key: []byte(env.token)}}
		_, err := env.argo.kube.CoreV1().Secrets(s.rollout.Namespace).Create(context.Background(), sec, metav1.CreateOptions{})
		if err != nil && !k8serrors.IsAlreadyExists(err) {
			s.t.Fatal(err)
		}
	}
}

// setStep puts the Rollout's status where Argo's rollout controller has it when it starts the
// step's analysis: at the step, with the canary at the step's weight.
func (s *scenario) setStep(st analysisStep) {
	idx := st.index
	s.rollout.Status.CurrentStepIndex = &idx
	s.rollout.Status.Canary.Weights = &v1alpha1.TrafficWeights{
		Canary: v1alpha1.WeightDestination{Weight: st.weight, PodTemplateHash: s.canaryHash},
		Stable: v1alpha1.WeightDestination{Weight: 100 - st.weight, PodTemplateHash: s.stableHash},
	}
}

// template is the README's AnalysisTemplate with the web provider's URL pointing at the
// recording proxy (same path and query) and the interval shortened.
func (s *scenario) template() *v1alpha1.AnalysisTemplate {
	tmpl := s.objs.template.DeepCopy()
	for i := range tmpl.Spec.Metrics {
		m := &tmpl.Spec.Metrics[i]
		m.Interval = measurementInterval
		u, err := url.Parse(m.Provider.Web.URL)
		if err != nil {
			s.t.Fatalf("README metric URL: %v", err)
		}
		m.Provider.Web.URL = env.rec.URL + strings.TrimPrefix(m.Provider.Web.URL, u.Scheme+"://"+u.Host)
	}
	return tmpl
}

// newRun makes the step's AnalysisRun as Argo's rollout controller does
// (rollout/analysis.go: newAnalysisRunFromRollout).
func (s *scenario) newRun(st analysisStep) *v1alpha1.AnalysisRun {
	args, err := analysisutil.BuildArgumentsForRolloutAnalysisRun(st.analysis.Args, s.stableRS, s.newRS, s.rollout)
	if err != nil {
		s.t.Fatalf("step %d args: %v", st.index, err)
	}
	name := strings.Join([]string{s.rollout.Name, s.canaryHash, "2", fmt.Sprint(st.index)}, "-")
	labels := analysisutil.StepLabels(st.index, s.canaryHash, "")
	run, err := analysisutil.NewAnalysisRunFromTemplates([]*v1alpha1.AnalysisTemplate{s.template()}, nil, args,
		st.analysis.DryRun, st.analysis.MeasurementRetention, labels,
		map[string]string{"rollout.argoproj.io/revision": "2"}, name, "", s.rollout.Namespace)
	if err != nil {
		s.t.Fatalf("step %d: NewAnalysisRunFromTemplates: %v", st.index, err)
	}
	return run
}

// stepResult is a finished step's AnalysisRun and the exchanges its measurements made.
type stepResult struct {
	step      analysisStep
	run       *v1alpha1.AnalysisRun
	exchanges []ctlharness.Exchange
	verdicts  []*verdict // per measurement, nil when the request got no verdict
	askedStep string     // the step the requests asked about ("" when they name none)
}

// startStep sets the rollout at the step and creates its AnalysisRun for Argo's controller.
func (s *scenario) startStep(st analysisStep) (name string, created time.Time) {
	s.setStep(st)
	run := s.newRun(st)
	created = time.Now()
	if _, err := env.argo.client.ArgoprojV1alpha1().AnalysisRuns(run.Namespace).Create(context.Background(), run, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	return run.Name, created
}

func (s *scenario) getRun(name string) *v1alpha1.AnalysisRun {
	run, err := env.argo.client.ArgoprojV1alpha1().AnalysisRuns(s.rollout.Namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	return run
}

// waitMeasurements waits until the run's metric has at least n measurements.
func (s *scenario) waitMeasurements(name string, n int) {
	err := ctlharness.Eventually(2*time.Minute, fmt.Sprintf("%s: %d measurements", name, n), func() (bool, error) {
		run := s.getRun(name)
		return len(run.Status.MetricResults) > 0 && len(run.Status.MetricResults[0].Measurements) >= n, nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

// finishStep waits until Argo's controller completes the run and pairs its measurements with
// the exchanges the recording proxy saw for this rollout and weight.
func (s *scenario) finishStep(st analysisStep, name string, created time.Time) stepResult {
	var run *v1alpha1.AnalysisRun
	err := ctlharness.Eventually(3*time.Minute, name+" completed", func() (bool, error) {
		run = s.getRun(name)
		return run.Status.Phase.Completed(), fmt.Errorf("phase %q", run.Status.Phase)
	})
	if err != nil {
		s.t.Fatalf("%v\nanalyzerd log:\n%s", err, ctlharness.Tail(env.daemon.Output()))
	}
	res := stepResult{step: st, run: run}
	for _, ex := range env.rec.Exchanges() {
		if ex.At.Before(created) {
			continue
		}
		var req struct {
			Namespace string          `json:"namespace"`
			Name      string          `json:"name"`
			Step      json.RawMessage `json:"step"`
			Weight    json.RawMessage `json:"weight"` // a number, or digits in a string
		}
		if json.Unmarshal([]byte(ex.RequestBody), &req) != nil || req.Namespace != s.rollout.Namespace || req.Name != s.rollout.Name {
			continue
		}
		if w := strings.Trim(string(req.Weight), `"`); w != fmt.Sprint(st.weight) {
			s.t.Errorf("%s: a request for weight %s during the step at %d%%: %s", name, w, st.weight, ex.RequestBody)
			continue
		}
		res.askedStep = strings.Trim(string(req.Step), `"`)
		res.exchanges = append(res.exchanges, ex)
	}
	ms := measurements(run)
	switch {
	case len(ms) > len(res.exchanges):
		s.t.Errorf("%s: %d measurements but analyzerd saw %d requests", name, len(ms), len(res.exchanges))
	case len(ms) < len(res.exchanges):
		// Argo keeps the latest measurements only (measurementRetention, 10 by default): they
		// pair with the latest requests.
		res.exchanges = res.exchanges[len(res.exchanges)-len(ms):]
	}
	for i := range ms {
		var v *verdict
		if i < len(res.exchanges) && res.exchanges[i].Status != 0 {
			v = new(verdict)
			if err := json.Unmarshal([]byte(res.exchanges[i].ResponseBody), v); err != nil {
				v = nil
			}
		}
		res.verdicts = append(res.verdicts, v)
	}
	s.report(res)
	return res
}

func measurements(run *v1alpha1.AnalysisRun) []v1alpha1.Measurement {
	if len(run.Status.MetricResults) == 0 {
		return nil
	}
	return run.Status.MetricResults[0].Measurements
}

// report logs the run as Argo recorded it, measurement by measurement, with analyzerd's answer.
func (s *scenario) report(res stepResult) {
	run := res.run
	var b strings.Builder
	fmt.Fprintf(&b, "step %d (weight %d%%): AnalysisRun %s phase %s", res.step.index, res.step.weight, run.Name, run.Status.Phase)
	if run.Status.Message != "" {
		fmt.Fprintf(&b, " (%s)", run.Status.Message)
	}
	for _, mr := range run.Status.MetricResults {
		fmt.Fprintf(&b, "\n  metric %s: phase %s count %d successful %d failed %d inconclusive %d error %d consecutiveError %d consecutiveSuccess %d",
			mr.Name, mr.Phase, mr.Count, mr.Successful, mr.Failed, mr.Inconclusive, mr.Error, mr.ConsecutiveError, mr.ConsecutiveSuccess)
		for i, m := range mr.Measurements {
			fmt.Fprintf(&b, "\n    #%d %-12s started %s finished %s value %s", i+1, m.Phase, fmtTime(m.StartedAt), fmtTime(m.FinishedAt), valueSummary(m.Value))
			if m.Message != "" {
				fmt.Fprintf(&b, " message %q", m.Message)
			}
			if i >= len(res.exchanges) {
				continue
			}
			ex := res.exchanges[i]
			switch {
			case ex.Err != "":
				fmt.Fprintf(&b, " | analyzerd unreachable")
			case ex.Status != http.StatusOK:
				fmt.Fprintf(&b, " | analyzerd %d %s", ex.Status, short(ex.ResponseBody, 300))
			case res.verdicts[i] != nil:
				fmt.Fprintf(&b, " | analyzerd 200 reason %q", short(res.verdicts[i].Reason, 120))
			}
		}
	}
	s.t.Log(b.String())
}

// valueSummary is the measurement's value, the verdict JSON, in brief.
func valueSummary(value string) string {
	var v verdict
	if value == "" || json.Unmarshal([]byte(value), &v) != nil {
		return fmt.Sprintf("%q", short(value, 80))
	}
	stale := ""
	if v.Stale {
		stale = " stale"
	}
	return fmt.Sprintf("{verdict %s step %s weight %s%s}", v.Verdict, intp(v.Step), intp(v.Weight), stale)
}

func short(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func fmtTime(t *metav1.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("15:04:05")
}

func intp(p *int) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

// runStep runs one analysis step start to finish.
func (s *scenario) runStep(st analysisStep) stepResult {
	name, created := s.startStep(st)
	return s.finishStep(st, name, created)
}

// checkOwnEvidence fails unless every Successful measurement was taken on a verdict for the
// step's own weight, not stale.
func (s *scenario) checkOwnEvidence(res stepResult) {
	for i, m := range measurements(res.run) {
		if m.Phase != v1alpha1.AnalysisPhaseSuccessful {
			continue
		}
		if i >= len(res.verdicts) || res.verdicts[i] == nil {
			s.t.Errorf("step %d: measurement #%d Successful without a verdict", res.step.index, i+1)
			continue
		}
		v := res.verdicts[i]
		if v.Verdict != "proceed" || v.Stale || v.Weight == nil || int32(*v.Weight) != res.step.weight ||
			(res.askedStep != "" && intp(v.Step) != res.askedStep) {
			s.t.Errorf("step %d (weight %d%%, asked step %s): measurement #%d Successful on verdict %s for step %s weight %s (stale %t): not the step's own evidence",
				res.step.index, res.step.weight, res.askedStep, i+1, v.Verdict, intp(v.Step), intp(v.Weight), v.Stale)
		}
	}
}

func wantPhase(t *testing.T, res stepResult, want v1alpha1.AnalysisPhase) {
	t.Helper()
	if res.run.Status.Phase != want {
		t.Errorf("step %d (weight %d%%): AnalysisRun %s, want %s", res.step.index, res.step.weight, res.run.Status.Phase, want)
	}
}

func noSuccessful(t *testing.T, res stepResult, when func(i int) bool) {
	t.Helper()
	for i, m := range measurements(res.run) {
		if when(i) && m.Phase == v1alpha1.AnalysisPhaseSuccessful {
			t.Errorf("step %d (weight %d%%): measurement #%d Successful, want none", res.step.index, res.step.weight, i+1)
		}
	}
}

// TestArgoScenarios runs the README's Argo setup on a real Prometheus and analyzerd. The first
// three scenarios share the daemon at once; the outage and the restart run alone.
func TestArgoScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus, analyzerd and workloads")
	}
	setup(t)
	t.Run("together", func(t *testing.T) {
		t.Run("HealthyWholeRollout", testHealthyWholeRollout)
		t.Run("BadAt50", testBadAt50)
		t.Run("UnknownRollout", testUnknownRollout)
	})
	t.Run("PrometheusDown", testPrometheusDown)
	t.Run("AnalyzerdRestarted", testAnalyzerdRestarted)
}

// (a) every step of 10 -> 25 -> 50 -> 75 (then 100) Successful on its own evidence.
func testHealthyWholeRollout(t *testing.T) {
	t.Parallel()
	s := newScenario(t, "healthy")
	steps := analysisSteps(t, s.rollout)
	var weights []int32
	for _, st := range steps {
		weights = append(weights, st.weight)
	}
	if fmt.Sprint(weights) != "[10 25 50 75]" {
		// The README's Rollout is shorter: the same analysis step after each of the weights,
		// with its step and weight arguments set as the README sets them.
		s.rollout.Spec.Strategy.Canary.Steps = extendSteps(t, s.objs.template, steps[0], []int32{10, 25, 50, 75})
		steps = analysisSteps(t, s.rollout)
		t.Logf("the README Rollout's analysis steps are at weights %v: the whole rollout uses its first analysis step after setWeight 10, 25, 50 and 75", weights)
	}
	for _, st := range steps {
		res := s.runStep(st)
		wantPhase(t, res, v1alpha1.AnalysisPhaseSuccessful)
		s.checkOwnEvidence(res)
		if t.Failed() {
			return
		}
	}
}

// bodyArgs are the template arguments the request body's step and weight fields are made of
// ("{{args.step}}" and "{{args.weight}}" in the README).
func bodyArgs(t *testing.T, tmpl *v1alpha1.AnalysisTemplate) (step, weight string) {
	t.Helper()
	web := tmpl.Spec.Metrics[0].Provider.Web
	raw := []byte(web.Body)
	if len(web.JSONBody) > 0 {
		raw = web.JSONBody
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	arg := regexp.MustCompile(`^\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}$`)
	for _, f := range []struct {
		field string
		dst   *string
	}{{"step", &step}, {"weight", &weight}} {
		v, _ := body[f.field].(string)
		m := arg.FindStringSubmatch(v)
		if m == nil {
			t.Fatalf("the README template's body field %s is %v, want {{args.NAME}}", f.field, body[f.field])
		}
		*f.dst = m[1]
	}
	return step, weight
}

// extendSteps is setWeight W and a copy of the pattern analysis step for each weight, with the
// step's step and weight arguments numbered 1, 2, ... and W.
func extendSteps(t *testing.T, tmpl *v1alpha1.AnalysisTemplate, pattern analysisStep, weights []int32) []v1alpha1.CanaryStep {
	t.Helper()
	stepArg, weightArg := bodyArgs(t, tmpl)
	var steps []v1alpha1.CanaryStep
	for i, w := range weights {
		w := w
		a := pattern.analysis.DeepCopy()
		for j := range a.Args {
			var v string
			switch a.Args[j].Name {
			case stepArg:
				v = fmt.Sprint(i + 1)
			case weightArg:
				v = fmt.Sprint(w)
			default:
				continue
			}
			a.Args[j].Value, a.Args[j].ValueFrom = v, nil
		}
		steps = append(steps, v1alpha1.CanaryStep{SetWeight: &w}, v1alpha1.CanaryStep{Analysis: a})
	}
	return steps
}

// (b) a canary that turns bad at 50%: Failed there, never Successful.
func testBadAt50(t *testing.T) {
	t.Parallel()
	s := newScenario(t, "bad50")
	for _, st := range analysisSteps(t, s.rollout) {
		if st.weight < 50 {
			res := s.runStep(st)
			wantPhase(t, res, v1alpha1.AnalysisPhaseSuccessful)
			s.checkOwnEvidence(res)
			continue
		}
		// The traffic shift to 50% brings the fault: 10% of the canary's requests fail.
		if err := s.canary.SetProfile(`{"errorRate":0.10}`); err != nil {
			t.Fatal(err)
		}
		res := s.runStep(st)
		wantPhase(t, res, v1alpha1.AnalysisPhaseFailed)
		noSuccessful(t, res, func(int) bool { return true })
		return
	}
	t.Fatal("the README Rollout has no analysis step at 50%")
}

// (c) a rollout analyzerd has not seen: the read API answers 404, whatever step is asked.
func testUnknownRollout(t *testing.T) {
	t.Parallel()
	for _, q := range []string{"", "?step=1&weight=25"} {
		resp, err := http.Get(env.daemon.URL() + "/v1/rollouts/prod/never-started" + q)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		t.Logf("GET /v1/rollouts/prod/never-started%s: %s %v", q, resp.Status, body)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /v1/rollouts/prod/never-started%s: %s, want 404", q, resp.Status)
		}
	}
}

// (d) Prometheus down during a step: no measurement Successful while it is down; the step
// completes once it is back.
func testPrometheusDown(t *testing.T) {
	s := newScenario(t, "promdown")
	steps := analysisSteps(t, s.rollout)
	if len(steps) < 2 {
		t.Fatal("want two analysis steps")
	}
	wantPhase(t, s.runStep(steps[0]), v1alpha1.AnalysisPhaseSuccessful)
	st := steps[1]
	if err := env.prom.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	name, created := s.startStep(st)
	s.waitMeasurements(name, 3)
	during := len(measurements(s.getRun(name)))
	up := time.Now()
	if err := env.prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Prometheus down from %s to %s (%d measurements taken)", down.UTC().Format("15:04:05"), up.UTC().Format("15:04:05"), during)
	res := s.finishStep(st, name, created)
	noSuccessful(t, res, func(i int) bool { return i < during })
	for i, m := range measurements(res.run)[:during] {
		if m.Phase != v1alpha1.AnalysisPhaseInconclusive && m.Phase != v1alpha1.AnalysisPhaseError {
			t.Errorf("measurement #%d while Prometheus was down: %s, want Inconclusive or Error", i+1, m.Phase)
		}
	}
	wantPhase(t, res, v1alpha1.AnalysisPhaseSuccessful)
	s.checkOwnEvidence(res)
}

// (e) analyzerd restarted mid-step: the step's analysis resumes and completes on its own
// evidence.
func testAnalyzerdRestarted(t *testing.T) {
	s := newScenario(t, "restart")
	steps := analysisSteps(t, s.rollout)
	if len(steps) < 2 {
		t.Fatal("want two analysis steps")
	}
	wantPhase(t, s.runStep(steps[0]), v1alpha1.AnalysisPhaseSuccessful)
	st := steps[1]
	name, created := s.startStep(st)
	s.waitMeasurements(name, 2)
	if ms := measurements(s.getRun(name)); ms[len(ms)-1].Phase == v1alpha1.AnalysisPhaseSuccessful {
		t.Log("the step passed before the restart; the restart then happens after it")
	}
	if err := env.daemon.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// Down long enough for Argo to record the failed request (an Error measurement, which
	// consecutiveErrorLimit tolerates).
	err := ctlharness.Eventually(time.Minute, "an Error measurement while analyzerd is down", func() (bool, error) {
		ms := measurements(s.getRun(name))
		return ms[len(ms)-1].Phase == v1alpha1.AnalysisPhaseError, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("analyzerd stopped at %s, ready again at %s", stopped.UTC().Format("15:04:05"), time.Now().UTC().Format("15:04:05"))
	res := s.finishStep(st, name, created)
	wantPhase(t, res, v1alpha1.AnalysisPhaseSuccessful)
	s.checkOwnEvidence(res)
}
