package argocheck

import (
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	analysisutil "github.com/argoproj/argo-rollouts/utils/analysis"
)

// readmeObjects are the README's Argo objects, decoded strictly.
type readmeObjects struct {
	template *v1alpha1.AnalysisTemplate
	rollout  *v1alpha1.Rollout
	secrets  []*corev1.Secret
	others   []string // kinds decoded into their types but not used by the scenarios
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decodeStrict decodes YAML into obj; unknown or duplicate fields are errors.
func decodeStrict(t *testing.T, what string, doc []byte, obj any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, doc)
	}
}

// argoReadme decodes every document of the README's blocks marked `argo-...` into Argo's or
// Kubernetes' type for its kind.
func argoReadme(t *testing.T) readmeObjects {
	t.Helper()
	var objs readmeObjects
	names := argoBlockNames(t)
	if len(names) == 0 {
		t.Fatal("README.md has no code block marked <!-- yaml: argo-... -->")
	}
	for _, name := range names {
		for i, doc := range docSeparator.Split(readmeBlock(t, name), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("README block %s, document %d: %v", name, i, err)
			}
			what := "README block " + name + " (" + head.Kind + ")"
			switch head.Kind {
			case "AnalysisTemplate":
				var o v1alpha1.AnalysisTemplate
				decodeStrict(t, what, []byte(doc), &o)
				objs.template = &o
			case "Rollout":
				var o v1alpha1.Rollout
				decodeStrict(t, what, []byte(doc), &o)
				objs.rollout = &o
			case "Secret":
				var o corev1.Secret
				decodeStrict(t, what, []byte(doc), &o)
				objs.secrets = append(objs.secrets, &o)
			case "ConfigMap":
				var o corev1.ConfigMap
				decodeStrict(t, what, []byte(doc), &o)
				objs.others = append(objs.others, "ConfigMap "+o.Name)
			default:
				t.Fatalf("%s: a kind argocheck cannot decode strictly (apiVersion %q)", what, head.APIVersion)
			}
		}
	}
	if objs.template == nil || objs.rollout == nil {
		t.Fatalf("README's argo blocks %v: want an AnalysisTemplate and a Rollout", names)
	}
	return objs
}

func argoBlockNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, m := range regexp.MustCompile(`<!--\s*yaml:\s*(argo-\S+)\s*-->`).FindAllStringSubmatch(readme, -1) {
		names = append(names, m[1])
	}
	return names
}

func stripComments(doc string) string {
	var out []string
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// analysisSteps are the Rollout's steps with their weights: for each analysis step, the weight
// of the setWeight before it.
type analysisStep struct {
	index    int32
	weight   int32
	analysis *v1alpha1.RolloutAnalysis
}

func analysisSteps(t *testing.T, r *v1alpha1.Rollout) []analysisStep {
	t.Helper()
	if r.Spec.Strategy.Canary == nil {
		t.Fatal("README Rollout: no canary strategy")
	}
	var steps []analysisStep
	var weight int32
	for i, s := range r.Spec.Strategy.Canary.Steps {
		if s.SetWeight != nil {
			weight = *s.SetWeight
		}
		if s.Analysis != nil {
			steps = append(steps, analysisStep{index: int32(i), weight: weight, analysis: s.Analysis})
		}
	}
	return steps
}

// TestReadmeArgoYAML decodes the README's Argo objects strictly and checks them as Argo's
// controllers would: the template's metrics validate, every analysis step names the template,
// and the step's args fill every template argument that has no value.
func TestReadmeArgoYAML(t *testing.T) {
	objs := argoReadme(t)
	tmpl := objs.template
	if err := analysisutil.ValidateMetrics(tmpl.Spec.Metrics); err != nil {
		t.Errorf("AnalysisTemplate %s: Argo's ValidateMetrics: %v", tmpl.Name, err)
	}
	if len(tmpl.Spec.Metrics) != 1 || tmpl.Spec.Metrics[0].Provider.Web == nil {
		t.Fatalf("AnalysisTemplate %s: want one web metric, got %+v", tmpl.Name, tmpl.Spec.Metrics)
	}
	steps := analysisSteps(t, objs.rollout)
	if len(steps) == 0 {
		t.Fatal("README Rollout has no analysis step")
	}
	var weights []int32
	for _, s := range steps {
		weights = append(weights, s.weight)
		if len(s.analysis.Templates) != 1 || s.analysis.Templates[0].TemplateName != tmpl.Name {
			t.Errorf("step %d: templates %+v, want [%s]", s.index, s.analysis.Templates, tmpl.Name)
		}
		given := map[string]bool{}
		for _, a := range s.analysis.Args {
			given[a.Name] = true
		}
		for _, a := range tmpl.Spec.Args {
			if a.Value == nil && a.ValueFrom == nil && !given[a.Name] {
				t.Errorf("step %d: template argument %q has no value", s.index, a.Name)
			}
		}
	}
	t.Logf("README: AnalysisTemplate %s, Rollout %s with analysis steps at weights %v; other objects: %v", tmpl.Name, objs.rollout.Name, weights, objs.others)
}
