package chartcheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// notesChart copies the chart into a temporary directory with a template that renders
// NOTES.txt into a ConfigMap: helm template leaves NOTES.txt out, and helm install
// --dry-run cannot be told the Kubernetes version.
func notesChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "analyzerd")
	err := filepath.WalkDir(chartDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(chartDir, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(chartDir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes-under-test.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\n  namespace: {{ .Release.Namespace }}\n" +
		"data:\n  notes: {{ tpl (.Files.Get \"notes-under-test.txt\") . | toJson }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes-under-test.yaml"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestNotes renders NOTES.txt for each mode and checks what it tells.
func TestNotes(t *testing.T) {
	chart := notesChart(t)
	cases := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
	}{
		{"default", nil,
			[]string{"kubectl -n canary rollout status deployment/analyzerd", "listens on 127.0.0.1 inside the pod only", "http://analyzerd.canary.svc:8080/v1/rollouts/<namespace>/<name>"},
			[]string{"WARNING", "NOTE"}},
		{"exposed", []string{"--set", "nats.embedded.expose=true", "--set", "nats.embedded.persistence.enabled=false"},
			[]string{"nats://analyzerd-nats.canary.svc:4222", "rollouts.events.<namespace>.<name>", "restrict who may reach it", "WARNING: nats.embedded.persistence.enabled is false"},
			nil},
		{"external", []string{"--values", filepath.Join(chartDir, "ci", "external-values.yaml")},
			[]string{"3 replica(s), NATS external", "nats://nats-0.nats.nats.svc:4222", "3 replicas share one durable consumer and the state bucket"},
			[]string{"embedded NATS server"}},
		{"everything", []string{"--values", filepath.Join(chartDir, "ci", "everything-values.yaml")},
			[]string{"ServiceMonitor monitoring/analyzerd", "PrometheusRule canary/analyzerd", "ConfigMap monitoring/analyzerd-dashboard", "canary.verdicts.>"},
			nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"template", releaseName, chart, "--namespace", releaseNamespace, "--kube-version", *kubeVersion,
				"--show-only", "templates/zz-notes-under-test.yaml"}, c.args...)
			out, err := helm(args...)
			if err != nil {
				t.Fatal(err)
			}
			ms, err := splitManifests(out)
			if err != nil || len(ms) != 1 {
				t.Fatalf("want the notes' ConfigMap, got %d documents (%v)", len(ms), err)
			}
			obj, err := decodeStrict(ms[0])
			if err != nil {
				t.Fatal(err)
			}
			notes := obj.(*corev1.ConfigMap).Data["notes"]
			for _, w := range c.want {
				if !strings.Contains(notes, w) {
					t.Errorf("the notes lack %q:\n%s", w, notes)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(notes, w) {
					t.Errorf("the notes say %q:\n%s", w, notes)
				}
			}
		})
	}
}
