package chartcheck

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// promtool is Prometheus's rule checker, from the Debian package prometheus that .ci/run
// installs for the end-to-end tests.
func promtool(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed (apt-get install prometheus; .ci/run does it)")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// renderedRules renders the chart with the PrometheusRule and returns its groups.
func renderedRules(t *testing.T, sets ...string) []ruleGroup {
	t.Helper()
	objs, err := decodeAll(render(t, nil, append([]string{"prometheusRule.enabled=true"}, sets...)...))
	if err != nil {
		t.Fatal(err)
	}
	rules := get[*prometheusRule](objs, "PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("want one PrometheusRule, got %d", len(rules))
	}
	return rules[0].Spec.Groups
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAlerts checks the PrometheusRule's rules with promtool (PromQL and the annotations'
// templates), then unit-tests each alert on synthetic series: it fires when it should, for
// the release's series only, and not otherwise.
func TestAlerts(t *testing.T) {
	groups := renderedRules(t)
	var names []string
	for _, g := range groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
		}
	}
	sort.Strings(names)
	if want := "AnalyzerdDeadLetters AnalyzerdNoVerdicts AnalyzerdPrometheusUnreachable"; strings.Join(names, " ") != want {
		t.Fatalf("alerts %v, want %s", names, want)
	}
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	writeYAML(t, rulesFile, map[string]any{"groups": groups})
	promtool(t, "check", "rules", rulesFile)

	// The unit tests compare annotations too; they are checked above, and left out here.
	for gi := range groups {
		for ri := range groups[gi].Rules {
			groups[gi].Rules[ri].Annotations = nil
		}
	}
	bare := filepath.Join(dir, "bare-rules.yaml")
	writeYAML(t, bare, map[string]any{"groups": groups})
	testFile := filepath.Join(dir, "alerts_test.yaml")
	if err := os.WriteFile(testFile, []byte(strings.ReplaceAll(alertTests, "RULES", bare)), 0o600); err != nil {
		t.Fatal(err)
	}
	promtool(t, "test", "rules", testFile)
}

// alertTests are promtool unit tests of the alerts as rendered for the release analyzerd in
// the namespace canary (job analyzerd, the Service's name).
const alertTests = `
rule_files: [RULES]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # Dead letters from minute 11 to 20, then none.
      - series: 'analyzerd_dead_letters_total{namespace="canary",job="analyzerd",pod="a",reason="malformed"}'
        values: '0x10 1+1x9 10x30'
      - series: 'analyzerd_dead_letters_total{namespace="canary",job="analyzerd",pod="a",reason="too_large"}'
        values: '0x50'
      # Another release's.
      - series: 'analyzerd_dead_letters_total{namespace="other",job="analyzerd",pod="x",reason="malformed"}'
        values: '0+1x50'

      # Pod a: Prometheus answers until minute 10, then every query fails, unreachable.
      - series: 'analyzerd_query_errors_total{namespace="canary",job="analyzerd",pod="a",reason="unreachable"}'
        values: '0x10 6+6x40'
      - series: 'analyzerd_query_duration_seconds_count{namespace="canary",job="analyzerd",pod="a",outcome="error"}'
        values: '0x10 6+6x40'
      - series: 'analyzerd_query_duration_seconds_count{namespace="canary",job="analyzerd",pod="a",outcome="ok"}'
        values: '0+6x10 60x40'
      # Pod b: only queries Prometheus rejects (a template's mistake, not an outage).
      - series: 'analyzerd_query_errors_total{namespace="canary",job="analyzerd",pod="b",reason="bad_query"}'
        values: '0+6x50'
      - series: 'analyzerd_query_duration_seconds_count{namespace="canary",job="analyzerd",pod="b",outcome="error"}'
        values: '0+6x50'

      # Pod a: 3 live rollouts, verdicts until minute 10, then none.
      - series: 'analyzerd_live_rollouts{namespace="canary",job="analyzerd",pod="a"}'
        values: '3x50'
      - series: 'analyzerd_verdicts_published_total{namespace="canary",job="analyzerd",pod="a",verdict="pause"}'
        values: '0+1x10 10x40'
      # Pod b: live rollouts and verdicts all along.
      - series: 'analyzerd_live_rollouts{namespace="canary",job="analyzerd",pod="b"}'
        values: '2x50'
      - series: 'analyzerd_verdicts_published_total{namespace="canary",job="analyzerd",pod="b",verdict="proceed"}'
        values: '0+1x50'
      # Pod c: no live rollout, no verdict.
      - series: 'analyzerd_live_rollouts{namespace="canary",job="analyzerd",pod="c"}'
        values: '0x50'
      - series: 'analyzerd_verdicts_published_total{namespace="canary",job="analyzerd",pod="c",verdict="pause"}'
        values: '0x50'

    alert_rule_test:
      - eval_time: 8m
        alertname: AnalyzerdDeadLetters
        exp_alerts: []
      - eval_time: 20m
        alertname: AnalyzerdDeadLetters
        exp_alerts:
          - exp_labels: {severity: warning, namespace: canary, job: analyzerd, reason: malformed}
      - eval_time: 45m
        alertname: AnalyzerdDeadLetters
        exp_alerts: []

      - eval_time: 9m
        alertname: AnalyzerdPrometheusUnreachable
        exp_alerts: []
      - eval_time: 25m
        alertname: AnalyzerdPrometheusUnreachable
        exp_alerts:
          - exp_labels: {severity: critical, namespace: canary, job: analyzerd, pod: a}

      - eval_time: 9m
        alertname: AnalyzerdNoVerdicts
        exp_alerts: []
      - eval_time: 35m
        alertname: AnalyzerdNoVerdicts
        exp_alerts:
          - exp_labels: {severity: critical, namespace: canary, job: analyzerd, pod: a}
`

// TestAlertsSelector checks that prometheusRule.selector replaces the default matchers.
func TestAlertsSelector(t *testing.T) {
	for _, g := range renderedRules(t, `prometheusRule.selector=service="analyzerd"`) {
		for _, r := range g.Rules {
			if strings.Contains(r.Expr, `job="analyzerd"`) || !strings.Contains(r.Expr, `{service="analyzerd"`) {
				t.Errorf("%s does not use the selector given:\n%s", r.Alert, r.Expr)
			}
		}
	}
}

// grafanaDashboard is the part of a dashboard's JSON the checks read.
type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboard checks the Grafana dashboard's ConfigMap: the sidecar's label, JSON that
// parses, and every panel's query valid PromQL (through promtool, as recording rules) over
// metrics the daemon exports.
func TestDashboard(t *testing.T) {
	objs, err := decodeAll(render(t, nil, "grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring"))
	if err != nil {
		t.Fatal(err)
	}
	cm, ok := objs.all["ConfigMap"][releaseName+"-dashboard"].(*corev1.ConfigMap)
	if !ok {
		t.Fatalf("no dashboard ConfigMap; rendered %v", objs.kindsAndNames())
	}
	if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "monitoring" {
		t.Errorf("the dashboard's ConfigMap is in %q with labels %v, want monitoring and grafana_dashboard=1", cm.Namespace, cm.Labels)
	}
	var d grafanaDashboard
	if err := json.Unmarshal([]byte(cm.Data["analyzerd.json"]), &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	if strings.Join(vars, ",") != "datasource,namespace,job" {
		t.Errorf("the dashboard's variables are %v, want datasource, namespace, job", vars)
	}
	// promtool parses the queries as recording rules, the variables filled in.
	replacer := strings.NewReplacer("$__rate_interval", "5m", "$namespace", "canary", "$job", ".+")
	type recording struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var recs []recording
	var exprs []string
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for j, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `namespace="$namespace", job=~"$job"`) {
				t.Errorf("panel %q query %d does not select by $namespace and $job: %s", p.Title, j, tg.Expr)
			}
			recs = append(recs, recording{Record: fmt.Sprintf("dashboard:query_%d", len(recs)), Expr: replacer.Replace(tg.Expr)})
			exprs = append(exprs, tg.Expr)
		}
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	writeYAML(t, file, map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": recs}}})
	promtool(t, "check", "rules", file)

	var alertExprs []string
	for _, g := range renderedRules(t) {
		for _, r := range g.Rules {
			alertExprs = append(alertExprs, r.Expr)
		}
	}
	checkMetricNames(t, append(exprs, alertExprs...))
}

var (
	metricUse  = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)
	metricDecl = regexp.MustCompile(`prometheus\.(Counter|Gauge|Histogram|Summary)Opts\{\s*Name:\s*"([a-z0-9_]+)"`)
)

// checkMetricNames checks that every metric the queries name is one the daemon exports:
// declared in internal/ (histograms with their _bucket, _count and _sum series), or one of
// the Go and process collectors' that internal/app registers.
func checkMetricNames(t *testing.T, exprs []string) {
	t.Helper()
	exported := map[string]bool{}
	var appSource string
	err := filepath.WalkDir(filepath.Join(repoRoot, "internal"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if filepath.Base(filepath.Dir(path)) == "workload" {
			return nil // the synthetic service's metrics, not the daemon's
		}
		if filepath.Base(filepath.Dir(path)) == "app" {
			appSource += string(data)
		}
		for _, m := range metricDecl.FindAllStringSubmatch(string(data), -1) {
			exported[m[2]] = true
			if m[1] == "Histogram" || m[1] == "Summary" {
				exported[m[2]+"_count"] = true
				exported[m[2]+"_sum"] = true
			}
			if m[1] == "Histogram" {
				exported[m[2]+"_bucket"] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(appSource, "collectors.NewGoCollector(") {
		exported["go_goroutines"] = true
		exported["go_memstats_heap_inuse_bytes"] = true
	}
	if strings.Contains(appSource, "collectors.NewProcessCollector(") {
		exported["process_cpu_seconds_total"] = true
		exported["process_resident_memory_bytes"] = true
	}
	if len(exported) < 10 {
		t.Fatalf("found only %d metrics declared in internal/: %v", len(exported), exported)
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricUse.FindAllStringSubmatch(e, -1) {
			used[m[1]] = true
		}
	}
	for name := range used {
		if !exported[name] {
			t.Errorf("the queries use %s, which analyzerd does not export", name)
		}
	}
}
