package chartcheck

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// splitManifests splits helm template's output into its documents, skipping empty ones.
func splitManifests(out string) ([]manifest, error) {
	var ms []manifest
	for _, doc := range docSeparator.Split(out, -1) {
		var body []string
		for _, line := range strings.Split(doc, "\n") {
			if strings.TrimSpace(line) != "" && !strings.HasPrefix(strings.TrimSpace(line), "#") {
				body = append(body, line)
			}
		}
		if len(body) == 0 {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		m := manifest{Raw: []byte(doc)}
		if s := sourceLine.FindStringSubmatch(doc); s != nil {
			m.Source = s[1]
		}
		if err := yaml.Unmarshal(m.Raw, &head); err != nil {
			return nil, fmt.Errorf("%s: not YAML: %w", m.Source, err)
		}
		m.API, m.Kind, m.Name = head.APIVersion, head.Kind, head.Metadata.Name
		ms = append(ms, m)
	}
	return ms, nil
}

// kinds are the kinds the chart may render: the apiVersion each must have, and the type it
// is decoded into. The Prometheus Operator's kinds are minimal hand-written structs of what
// the chart writes (the CRDs are not Go types we can import without the operator).
var kinds = map[string]struct {
	api string
	new func() any
}{
	"ConfigMap":             {"v1", func() any { return &corev1.ConfigMap{} }},
	"Service":               {"v1", func() any { return &corev1.Service{} }},
	"ServiceAccount":        {"v1", func() any { return &corev1.ServiceAccount{} }},
	"PersistentVolumeClaim": {"v1", func() any { return &corev1.PersistentVolumeClaim{} }},
	"Deployment":            {"apps/v1", func() any { return &appsv1.Deployment{} }},
	"PodDisruptionBudget":   {"policy/v1", func() any { return &policyv1.PodDisruptionBudget{} }},
	"NetworkPolicy":         {"networking.k8s.io/v1", func() any { return &networkingv1.NetworkPolicy{} }},
	"ServiceMonitor":        {"monitoring.coreos.com/v1", func() any { return &serviceMonitor{} }},
	"PrometheusRule":        {"monitoring.coreos.com/v1", func() any { return &prometheusRule{} }},
}

// decodeStrict decodes a manifest into the type of its kind as the API server does, strictly:
// YAML to JSON (duplicate keys are errors), then JSON with case-sensitive field names (so a
// field spelt with the wrong case is unknown, as encoding/json would not say) and unknown or
// duplicate fields reported.
func decodeStrict(m manifest) (any, error) {
	k, ok := kinds[m.Kind]
	if !ok {
		return nil, fmt.Errorf("%s: kind %q (%s) is not one the chart should render", m.Source, m.Kind, m.API)
	}
	if m.API != k.api {
		return nil, fmt.Errorf("%s: %s has apiVersion %q, want %q", m.Source, m.Kind, m.API, k.api)
	}
	data, err := yaml.YAMLToJSONStrict(m.Raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", m.Source, m.Kind, m.Name, err)
	}
	obj := k.new()
	strictErrs, err := json.UnmarshalStrict(data, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", m.Source, m.Kind, m.Name, err)
	}
	if len(strictErrs) > 0 {
		return nil, fmt.Errorf("%s: %s %s: %w", m.Source, m.Kind, m.Name, errors.Join(strictErrs...))
	}
	return obj, nil
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the chart writes.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NamespaceSelector *struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector,omitempty"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// prometheusRule is the part of monitoring.coreos.com/v1 PrometheusRule the chart writes.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

type ruleGroup struct {
	Name  string `json:"name"`
	Rules []rule `json:"rules"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// monitoringDuration is the pattern of a duration in the Prometheus Operator's CRDs.
var monitoringDuration = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

// objects are the decoded manifests of one render, by kind and name.
type objects struct {
	all map[string]map[string]any
	ms  []manifest
}

func decodeAll(ms []manifest) (objects, error) {
	o := objects{all: map[string]map[string]any{}, ms: ms}
	var errs []string
	for _, m := range ms {
		obj, err := decodeStrict(m)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if o.all[m.Kind] == nil {
			o.all[m.Kind] = map[string]any{}
		}
		if _, dup := o.all[m.Kind][m.Name]; dup {
			errs = append(errs, fmt.Sprintf("%s %s is rendered twice", m.Kind, m.Name))
		}
		o.all[m.Kind][m.Name] = obj
	}
	if len(errs) > 0 {
		return o, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return o, nil
}

func get[T any](o objects, kind string) []T {
	var out []T
	for _, obj := range o.all[kind] {
		out = append(out, obj.(T))
	}
	return out
}

// kindsAndNames lists "Kind/name" of every manifest, in render order.
func (o objects) kindsAndNames() []string {
	var out []string
	for _, m := range o.ms {
		out = append(out, m.Kind+"/"+m.Name)
	}
	return out
}
