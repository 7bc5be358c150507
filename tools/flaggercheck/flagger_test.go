package flaggercheck

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/controller"

	"github.com/analyzerd/analyzerd/tools/ctlharness"
)

// readmeCanary is the README's Canary, decoded strictly (unknown fields are errors).
func readmeCanary(t *testing.T) *flaggerv1.Canary {
	t.Helper()
	doc := readmeBlock(t, "flagger-canary")
	var c flaggerv1.Canary
	if err := yaml.UnmarshalStrict([]byte(doc), &c); err != nil {
		t.Fatalf("README flagger-canary: %v\n%s", err, doc)
	}
	if c.Kind != "Canary" || c.Spec.Analysis == nil {
		t.Fatalf("README flagger-canary: kind %q, analysis %v: want a Canary with an analysis", c.Kind, c.Spec.Analysis)
	}
	return &c
}

// TestReadmeFlaggerYAML checks the README's Canary as Flagger reads it: every webhook has a
// hook type Flagger knows, and those of analyzerd carry the same metadata.
func TestReadmeFlaggerYAML(t *testing.T) {
	c := readmeCanary(t)
	known := map[flaggerv1.HookType]bool{
		flaggerv1.ConfirmRolloutHook: true, flaggerv1.PreRolloutHook: true, flaggerv1.RolloutHook: true,
		flaggerv1.ConfirmTrafficIncreaseHook: true, flaggerv1.ConfirmPromotionHook: true,
		flaggerv1.PostRolloutHook: true, flaggerv1.RollbackHook: true, flaggerv1.EventHook: true,
	}
	var first *map[string]string
	for _, w := range c.Spec.Analysis.Webhooks {
		if !known[w.Type] {
			t.Errorf("webhook %s: type %q is not one of Flagger's", w.Name, w.Type)
		}
		if w.Metadata == nil {
			t.Errorf("webhook %s has no metadata (Flagger then omits it)", w.Name)
			continue
		}
		if first == nil {
			first = w.Metadata
		} else if fmt.Sprint(*first) != fmt.Sprint(*w.Metadata) {
			t.Errorf("webhook %s: metadata %v differs from the first webhook's %v", w.Name, *w.Metadata, *first)
		}
	}
	t.Logf("README Canary %s/%s: stepWeight %d maxWeight %d threshold %d, %d webhooks", c.Namespace, c.Name,
		c.Spec.Analysis.StepWeight, c.Spec.Analysis.MaxWeight, c.Spec.Analysis.Threshold, len(c.Spec.Analysis.Webhooks))
}

// hookCall is one CallWebhook as the scheduler made it, and analyzerd's answer.
type hookCall struct {
	at       time.Time
	hook     flaggerv1.HookType
	phase    flaggerv1.CanaryPhase
	weight   int
	tick     int   // the scheduler's run it was made in (0: the start)
	err      error // CallWebhook's: nil for a status up to 202
	status   int
	response string
}

// scheduler runs the Canary's webhooks the way Flagger v1.44.0's advanceCanary does for the
// progressive canary strategy (pkg/controller/scheduler.go and scheduler_hooks.go), with the
// traffic routing and the Deployment's copy left out: every call is Flagger's CallWebhook.
type scheduler struct {
	t      *testing.T
	canary *flaggerv1.Canary
	calls  []hookCall
	ticks  int
	done   bool
	// onWeight is called when the canary's weight changes (the traffic shift).
	onWeight func(weight int)
}

func (s *scheduler) call(w flaggerv1.CanaryWebhook, phase flaggerv1.CanaryPhase) error {
	n := len(env.rec.Exchanges())
	err := controller.CallWebhook(*s.canary, phase, w)
	c := hookCall{at: time.Now(), tick: s.ticks, hook: w.Type, phase: phase, weight: s.canary.Status.CanaryWeight, err: err}
	if exs := env.rec.Exchanges(); len(exs) > n {
		ex := exs[len(exs)-1]
		c.status, c.response = ex.Status, ex.ResponseBody
	}
	s.calls = append(s.calls, c)
	return err
}

// hooks calls every webhook of the type; all must pass (the gates' loop).
func (s *scheduler) hooks(typ flaggerv1.HookType, phase flaggerv1.CanaryPhase) bool {
	for _, w := range s.canary.GetAnalysis().Webhooks {
		if w.Type == typ && s.call(w, phase) != nil {
			return false
		}
	}
	return true
}

// rollbackHooks is runRollbackHooks: true when one answers 2xx.
func (s *scheduler) rollbackHooks() bool {
	for _, w := range s.canary.GetAnalysis().Webhooks {
		if w.Type == flaggerv1.RollbackHook && s.call(w, s.canary.Status.Phase) == nil {
			return true
		}
	}
	return false
}

func (s *scheduler) setWeight(w int) {
	s.canary.Status.CanaryWeight = w
	if s.onWeight != nil {
		s.onWeight(w)
	}
}

func (s *scheduler) rollback() {
	s.setWeight(0)
	s.canary.Status.Phase = flaggerv1.CanaryPhaseFailed
	s.hooks(flaggerv1.PostRolloutHook, flaggerv1.CanaryPhaseFailed)
	s.done = true
}

// start is checkCanaryStatus for a new revision: confirm-rollout, then Progressing.
func (s *scheduler) start() bool {
	if !s.hooks(flaggerv1.ConfirmRolloutHook, s.canary.Status.Phase) {
		return false
	}
	s.canary.Status.Phase = flaggerv1.CanaryPhaseProgressing
	return true
}

// tick is one advanceCanary of a progressing canary.
func (s *scheduler) tick() {
	s.ticks++
	st := &s.canary.Status
	a := s.canary.GetAnalysis()
	if st.Phase == flaggerv1.CanaryPhaseProgressing || st.Phase == flaggerv1.CanaryPhaseWaiting || st.Phase == flaggerv1.CanaryPhaseWaitingPromotion {
		if s.rollbackHooks() {
			s.rollback()
			return
		}
	}
	switch st.Phase {
	case flaggerv1.CanaryPhasePromoting:
		st.Phase = flaggerv1.CanaryPhaseFinalising // all traffic back to the primary
		s.setWeight(0)
		return
	case flaggerv1.CanaryPhaseFinalising:
		st.Phase = flaggerv1.CanaryPhaseSucceeded
		s.hooks(flaggerv1.PostRolloutHook, flaggerv1.CanaryPhaseSucceeded)
		s.done = true
		return
	}
	if (st.Phase == flaggerv1.CanaryPhaseProgressing || st.Phase == flaggerv1.CanaryPhaseWaitingPromotion) && st.FailedChecks >= a.Threshold {
		s.rollback()
		return
	}
	if st.CanaryWeight == 0 && st.Iterations == 0 {
		if !s.hooks(flaggerv1.PreRolloutHook, flaggerv1.CanaryPhaseProgressing) {
			st.FailedChecks++
			return
		}
	} else if !s.hooks(flaggerv1.RolloutHook, flaggerv1.CanaryPhaseProgressing) { // runAnalysis's webhooks
		st.FailedChecks++
		return
	}
	if a.StepWeight <= 0 {
		s.t.Fatal("the README Canary has no stepWeight")
	}
	if st.Phase != flaggerv1.CanaryPhasePromoting && st.Phase != flaggerv1.CanaryPhaseWaitingPromotion && st.Phase != flaggerv1.CanaryPhaseFinalising {
		if !s.hooks(flaggerv1.ConfirmTrafficIncreaseHook, flaggerv1.CanaryPhaseProgressing) {
			return
		}
	}
	// runCanary
	maxWeight := a.MaxWeight
	if maxWeight == 0 {
		maxWeight = 100
	}
	if st.CanaryWeight < maxWeight {
		s.setWeight(min(st.CanaryWeight+a.StepWeight, 100))
		return
	}
	if !s.hooks(flaggerv1.ConfirmPromotionHook, flaggerv1.CanaryPhaseProgressing) {
		st.Phase = flaggerv1.CanaryPhaseWaitingPromotion
		return
	}
	st.Phase = flaggerv1.CanaryPhasePromoting
}

// run starts the canary and ticks every interval until it succeeds or fails.
func (s *scheduler) run(interval, timeout time.Duration) {
	if !s.start() {
		s.t.Fatal("confirm-rollout refused")
	}
	tick := time.NewTicker(interval) // Flagger's own scheduler ticks at analysis.interval
	defer tick.Stop()
	deadline := time.After(timeout)
	for !s.done {
		s.tick()
		if s.done {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			s.report()
			s.t.Fatalf("the canary neither succeeded nor failed within %s (phase %s, weight %d)", timeout, s.canary.Status.Phase, s.canary.Status.CanaryWeight)
		}
	}
	s.report()
}

// report logs every hook call with its weight and analyzerd's answer, one line per scheduler
// run; consecutive runs that made the same calls with the same answers are folded into one.
func (s *scheduler) report() {
	var b strings.Builder
	fmt.Fprintf(&b, "canary %s/%s: phase %s; %d hook calls in %d scheduler runs", s.canary.Namespace, s.canary.Name, s.canary.Status.Phase, len(s.calls), s.ticks)
	var groups [][]hookCall
	for _, c := range s.calls {
		if n := len(groups); n > 0 && groups[n-1][0].tick == c.tick {
			groups[n-1] = append(groups[n-1], c)
		} else {
			groups = append(groups, []hookCall{c})
		}
	}
	sig := func(g []hookCall) string {
		var parts []string
		for _, c := range g {
			parts = append(parts, fmt.Sprint(c.hook, c.weight, c.status, answerOf(c).Verdict))
		}
		return strings.Join(parts, ",")
	}
	for i := 0; i < len(groups); i++ {
		j := i
		for j+1 < len(groups) && sig(groups[j+1]) == sig(groups[i]) {
			j++
		}
		g := groups[i]
		fmt.Fprintf(&b, "\n  %s run %d", g[0].at.UTC().Format("15:04:05"), g[0].tick)
		if j > i {
			fmt.Fprintf(&b, "-%d (x%d, until %s)", groups[j][0].tick, j-i+1, groups[j][0].at.UTC().Format("15:04:05"))
		}
		for _, c := range g {
			ans := answerOf(c)
			fmt.Fprintf(&b, "\n      %-24s at %3d%% phase %-11s -> %d %s", c.hook, c.weight, c.phase, c.status, ans.Verdict)
			if ans.Stale {
				fmt.Fprint(&b, " (stale)")
			}
			if msg := orDefault(ans.Message, ans.Reason); msg != "" {
				fmt.Fprintf(&b, ": %s", short(msg, 140))
			}
		}
		i = j
	}
	s.t.Log(b.String())
}

type answer struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Stale   bool   `json:"stale"`
}

func answerOf(c hookCall) answer {
	var a answer
	json.Unmarshal([]byte(c.response), &a)
	return a
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func short(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// flaggerInterval replaces the README Canary's analysis.interval, so that a run takes seconds.
const flaggerInterval = time.Second

// newCanary is the README's Canary named name, its webhooks pointing at the recording proxy
// (same paths), its metadata token the daemon's, its sides' versions the canary's and its
// primary's names (as the README's for checkout), and a revision checksum of its own.
func newCanary(t *testing.T, name string) (*flaggerv1.Canary, map[string]string) {
	t.Helper()
	c := readmeCanary(t).DeepCopy()
	readmeName := c.Name
	c.Name = name
	c.Status.LastAppliedSpec = "spec-of-" + name
	var md map[string]string
	for i := range c.Spec.Analysis.Webhooks {
		w := &c.Spec.Analysis.Webhooks[i]
		u, err := url.Parse(w.URL)
		if err != nil {
			t.Fatal(err)
		}
		w.URL = env.rec.URL + u.RequestURI()
		if w.Metadata == nil {
			continue
		}
		m := *w.Metadata
		if m["token"] != "" {
			m["token"] = daemonToken
		}
		for k, v := range m {
			// canary.version: checkout -> the canary's name; stable.version: checkout-primary
			if strings.HasPrefix(k, "canary.") || strings.HasPrefix(k, "stable.") {
				m[k] = strings.Replace(v, readmeName, name, 1)
			}
		}
		md = m
	}
	if md == nil {
		t.Fatal("the README Canary's webhooks have no metadata")
	}
	return c, md
}

// startSides starts the primary and canary workloads the metadata names, with stable history
// for the baseline.
func startSides(t *testing.T, md map[string]string) (canary, primary *ctlharness.Workload) {
	t.Helper()
	flags := []string{"--rate", "300", "--error-rate", "0.005"}
	primary = startWorkload(t, md["args.service"], md["stable.version"], flags...)
	canary = startWorkload(t, md["args.service"], md["canary.version"], flags...)
	q := fmt.Sprintf(`sum(http_requests_total{service=%q,version=%q})`, md["args.service"], md["stable.version"])
	if err := env.prom.WaitAtLeast(60*time.Second, q, 2000); err != nil {
		t.Fatal(err)
	}
	return canary, primary
}

func checkOrder(t *testing.T, s *scheduler) {
	t.Helper()
	if len(s.calls) == 0 {
		t.Fatal("no hook calls")
	}
	var gates []hookCall
	for _, c := range s.calls {
		if c.hook == flaggerv1.ConfirmTrafficIncreaseHook {
			gates = append(gates, c)
		}
	}
	if len(gates) == 0 || gates[0].weight != 0 || gates[0].err != nil {
		t.Errorf("the first confirm-traffic-increase (at 0%%) must open the gate: %+v", gates)
	}
	for _, g := range gates {
		if g.weight > 0 && g.err == nil {
			var ans struct {
				Verdict string `json:"verdict"`
				Stale   bool   `json:"stale"`
			}
			json.Unmarshal([]byte(g.response), &ans)
			if ans.Verdict != "proceed" || ans.Stale {
				t.Errorf("confirm-traffic-increase granted at %d%% on verdict %q (stale %t)", g.weight, ans.Verdict, ans.Stale)
			}
		}
	}
}

// TestFlaggerScenarios runs the README's Canary on a real Prometheus and analyzerd.
func TestFlaggerScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus, analyzerd and workloads")
	}
	setup(t)
	t.Run("HealthyPromoted", func(t *testing.T) {
		t.Parallel()
		c, md := newCanary(t, "checkout-healthy")
		startSides(t, md)
		s := &scheduler{t: t, canary: c}
		s.run(flaggerInterval, 3*time.Minute)
		checkOrder(t, s)
		if c.Status.Phase != flaggerv1.CanaryPhaseSucceeded {
			t.Errorf("phase %s, want Succeeded", c.Status.Phase)
		}
		var granted []int
		for _, call := range s.calls {
			if call.hook == flaggerv1.ConfirmTrafficIncreaseHook && call.err == nil {
				granted = append(granted, call.weight)
			}
		}
		max := c.Spec.Analysis.MaxWeight
		var want []int
		for w := 0; w <= max; w += c.Spec.Analysis.StepWeight {
			want = append(want, w)
		}
		if fmt.Sprint(granted) != fmt.Sprint(want) {
			t.Errorf("confirm-traffic-increase granted at %v, want %v", granted, want)
		}
		last := s.calls[len(s.calls)-1]
		if last.hook != flaggerv1.PostRolloutHook || last.err != nil {
			t.Errorf("last call %s -> %d, want post-rollout -> 200", last.hook, last.status)
		}
	})
	t.Run("BadRolledBack", func(t *testing.T) {
		t.Parallel()
		c, md := newCanary(t, "checkout-bad")
		canary, _ := startSides(t, md)
		s := &scheduler{t: t, canary: c}
		badAt := 2 * c.Spec.Analysis.StepWeight
		s.onWeight = func(w int) {
			if w == badAt {
				// The traffic shift brings the fault: 10% of the canary's requests fail.
				if err := canary.SetProfile(`{"errorRate":0.10}`); err != nil {
					t.Error(err)
				}
			}
		}
		s.run(flaggerInterval, 3*time.Minute)
		checkOrder(t, s)
		if c.Status.Phase != flaggerv1.CanaryPhaseFailed {
			t.Errorf("phase %s, want Failed", c.Status.Phase)
		}
		for _, call := range s.calls {
			if call.hook == flaggerv1.ConfirmTrafficIncreaseHook && call.err == nil && call.weight >= badAt {
				t.Errorf("confirm-traffic-increase granted at %d%%, after the fault at %d%%", call.weight, badAt)
			}
			if call.hook == flaggerv1.ConfirmPromotionHook && call.err == nil {
				t.Error("confirm-promotion granted to a bad canary")
			}
		}
		var rolledBack bool
		for i, call := range s.calls {
			if call.hook == flaggerv1.RollbackHook && call.err == nil {
				rolledBack = true
				if i+1 >= len(s.calls) || s.calls[i+1].hook != flaggerv1.PostRolloutHook || s.calls[i+1].err != nil {
					t.Error("the rollback is not followed by a successful post-rollout (phase Failed)")
				}
			}
		}
		if !rolledBack {
			t.Error("the rollback hook never answered 200")
		}
	})
}
