package chartcheck

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestSchemaRefuses checks that values.schema.json (or, where a schema cannot say it, the
// templates) refuses values the chart cannot run.
func TestSchemaRefuses(t *testing.T) {
	external := []string{"nats.mode=external", "nats.url=nats://nats:4222"}
	cases := []struct {
		name   string
		sets   []string
		want   string // in helm's error
		values string // a values file, for what --set cannot say
	}{
		{"embedded NATS with 2 replicas", []string{"replicaCount=2"}, "/replicaCount", ""},
		{"embedded NATS with 3 stream replicas", []string{"config.nats.replicas=3"}, "/config/nats/replicas", ""},
		{"embedded NATS with a URL", []string{"nats.url=nats://nats:4222"}, "/nats/url", ""},
		{"embedded NATS with credentials", []string{"nats.auth.existingSecret=nats", "nats.auth.tokenKey=token"}, "/nats/auth/existingSecret", ""},
		{"external NATS without a URL", []string{"nats.mode=external"}, "/nats/url", ""},
		{"external NATS exposing the embedded server", append(external, "nats.embedded.expose=true"), "/nats/embedded/expose", ""},
		{"an unknown NATS mode", []string{"nats.mode=cluster"}, "/nats/mode", ""},
		{"credentials in the NATS URL", []string{"nats.mode=external", "nats.url=nats://user:secret@nats:4222"}, "/nats/url", ""},
		{"credentials in the Prometheus URL", []string{"prometheus.url=http://user:secret@prometheus:9090"}, "/prometheus/url", ""},
		{"a key without its Secret", append(external, "nats.auth.tokenKey=token"), "/nats/auth", ""},
		{"a password without a user", append(external, "nats.auth.existingSecret=nats", "nats.auth.passwordKey=password"), "/nats/auth/user", ""},
		{"two NATS methods", append(external, "nats.auth.existingSecret=nats", "nats.auth.tokenKey=token", "nats.auth.nkeySeedKey=seed"), "one authentication method", ""},
		{"a Secret without keys", append(external, "nats.auth.existingSecret=nats"), "none of its keys is named", ""},
		{"a certificate without its key", []string{"prometheus.tls.existingSecret=tls", "prometheus.tls.certKey=tls.crt"}, "/prometheus/tls", ""},
		{"a bearer token and basic auth", []string{"prometheus.auth.existingSecret=p", "prometheus.auth.bearerTokenKey=token", "prometheus.auth.basicAuth.username=u"}, "/prometheus/auth", ""},
		{"a key the chart owns in config", []string{"config.nats.url=nats://nats:4222"}, "/config/nats", ""},
		{"http in config", []string{"config.http.addr=:9090"}, "/config", ""},
		{"an unknown top-level value", []string{"replicas=2"}, "additional properties 'replicas'", ""},
		{"an unknown config key", []string{"config.ingest.maxEvents=10"}, "/config/ingest", ""},
		{"a bad duration", []string{"config.shutdownTimeout=15"}, "/config/shutdownTimeout", ""},
		{"a bad log level", []string{"config.log.level=verbose"}, "/config/log/level", ""},
		{"a check of an unknown kind", []string{"config.templates[0].checks[0].kind=gauge"}, "/config/templates/0/checks/0/kind", ""},
		{"a template without a name", nil, "/config/templates/0", "config:\n  templates:\n    - checks: [{name: x, kind: value, query: up}]\n"},
		{"a check without a kind", nil, "/config/templates/0/checks/0", "config:\n  templates:\n    - name: t\n      checks: [{name: x, query: up}]\n"},
		{"a sample ratio above 1", nil, "/config/tracing/sampleRatio", "config:\n  tracing:\n    sampleRatio: 1.5\n"},
		{"no templates", []string{"config.templates=null"}, "config", ""},
		{"a relative store directory", []string{"nats.embedded.storeDir=data/nats"}, "/nats/embedded/storeDir", ""},
		{"no disruption budget given", []string{"podDisruptionBudget.maxUnavailable="}, "podDisruptionBudget", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var files []string
			if c.values != "" {
				files = append(files, valuesFile(t, c.values))
			}
			out, err := helm(templateArgs(files, c.sets...)...)
			if err == nil {
				t.Fatalf("helm template with %v succeeded, want it refused:\n%s", c.sets, out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("helm template with %v failed, but not on %q:\n%v", c.sets, c.want, err)
			}
		})
	}
}

func TestSchemaAccepts(t *testing.T) {
	cases := [][]string{
		{"nats.mode=external", "nats.url=nats://nats:4222", "replicaCount=5", "config.nats.replicas=3"},
		{"replicaCount=0"},
		{"nats.mode=external", "nats.url=nats://nats:4222", "nats.auth.user=analyzerd", "extraEnv[0].name=ANALYZERD_NATS_PASSWORD", "extraEnv[0].valueFrom.secretKeyRef.name=nats", "extraEnv[0].valueFrom.secretKeyRef.key=password"},
		{"podDisruptionBudget.maxUnavailable=50%"},
		{"extraConfig.log.level=debug"},
	}
	for _, sets := range cases {
		t.Run(strings.Join(sets, ","), func(t *testing.T) {
			t.Parallel()
			if out, err := helm(templateArgs(nil, sets...)...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestSchemaClosed checks that every object of values.schema.json that lists its properties
// refuses others (so that a misspelt value is an error), except the analysis templates,
// whose keys the daemon checks, and that each property is described.
func TestSchemaClosed(t *testing.T) {
	schema := readSchema(t)
	open := map[string]bool{"config.templates[]": true, "config.templates[].checks[]": true}
	var walk func(node map[string]any, at string)
	walk = func(node map[string]any, at string) {
		if props, ok := node["properties"].(map[string]any); ok && !open[at] {
			if node["additionalProperties"] != false {
				t.Errorf("%s: the schema lists its properties but does not refuse others", at)
			}
			for name, p := range props {
				child := strings.TrimPrefix(at+"."+name, ".")
				pm := p.(map[string]any)
				if pm["description"] == nil || pm["description"] == "" {
					t.Errorf("%s has no description", child)
				}
				walk(pm, child)
			}
		}
		if items, ok := node["items"].(map[string]any); ok {
			walk(items, at+"[]")
		}
	}
	walk(schema, "")
}

// TestConfigKeysCovered reads the daemon's configuration structs (internal/config) and checks
// that the chart can set every key: in values.config (the schema's config), or by a value of
// its own for the keys it owns. A key added to the daemon without a way to set it from the
// chart fails here. (The analysis templates go through as they are.)
func TestConfigKeysCovered(t *testing.T) {
	keys := daemonConfigKeys(t)
	schema := readSchema(t)
	configSchema := schema["properties"].(map[string]any)["config"].(map[string]any)
	owned := []string{"nats.url", "nats.embedded.", "nats.auth.", "nats.tls.", "prometheus.url",
		"prometheus.bearerTokenFile", "prometheus.basicAuth.", "prometheus.tls.", "http.addr"}
	for _, k := range keys {
		if slices.ContainsFunc(owned, func(o string) bool { return k == o || (strings.HasSuffix(o, ".") && strings.HasPrefix(k, o)) }) {
			continue
		}
		node := configSchema
		for _, part := range strings.Split(k, ".") {
			props, _ := node["properties"].(map[string]any)
			next, ok := props[part].(map[string]any)
			if !ok {
				t.Errorf("the daemon's configuration key %s is neither in values.schema.json's config nor set by the chart", k)
				break
			}
			node = next
		}
	}
	if len(keys) < 20 {
		t.Errorf("found only %d configuration keys in internal/config: %v", len(keys), keys)
	}
}

// daemonConfigKeys lists the dotted YAML keys of internal/config's Config, down to leaves,
// leaving out templates.
func daemonConfigKeys(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(repoRoot, "internal", "config")
	fset := token.NewFileSet()
	structs := map[string]*ast.StructType{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if st, ok := ts.Type.(*ast.StructType); ok {
					structs[ts.Name.Name] = st
				}
			}
			return true
		})
	}
	root, ok := structs["Config"]
	if !ok {
		t.Fatal("internal/config has no Config struct")
	}
	var keys []string
	var walk func(st *ast.StructType, at string)
	walk = func(st *ast.StructType, at string) {
		for _, f := range st.Fields.List {
			if f.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(f.Tag.Value)
			name := strings.Split(reflect.StructTag(tag).Get("yaml"), ",")[0]
			if name == "" || name == "-" {
				continue
			}
			key := strings.TrimPrefix(at+"."+name, ".")
			if key == "templates" {
				continue
			}
			typ := f.Type
			if star, ok := typ.(*ast.StarExpr); ok {
				typ = star.X
			}
			if id, ok := typ.(*ast.Ident); ok && structs[id.Name] != nil {
				walk(structs[id.Name], key)
				continue
			}
			keys = append(keys, key)
		}
	}
	walk(root, "")
	sort.Strings(keys)
	return keys
}

func readSchema(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	return schema
}

// TestDefaultTemplatesAreTheShippedOnes checks that values.yaml's templates are those of
// configs/analyzerd.yaml: every key the chart's copy has, with the same value. Keys the
// shipped file has beyond them (a setting the daemon gained, often written out at its default)
// are logged, not refused, so that the chart's default keeps working with a daemon that does
// not know them yet.
func TestDefaultTemplatesAreTheShippedOnes(t *testing.T) {
	var values, shipped struct {
		Config struct {
			Templates []any `json:"templates"`
		} `json:"config"`
		Templates []any `json:"templates"`
	}
	for path, into := range map[string]any{
		filepath.Join(chartDir, "values.yaml"):               &values,
		filepath.Join(repoRoot, "configs", "analyzerd.yaml"): &shipped,
	} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, into); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	var missing []string
	for _, d := range subsetOf(values.Config.Templates, shipped.Templates, "templates", &missing) {
		t.Errorf("values.yaml's config.templates differ from configs/analyzerd.yaml's: %s", d)
	}
	if len(missing) > 0 {
		t.Logf("configs/analyzerd.yaml has keys values.yaml's templates leave out (defaults apply): %s", strings.Join(missing, ", "))
	}
}

// subsetOf lists where a differs from b, a's maps being allowed fewer keys than b's (listed
// in missing).
func subsetOf(a, b any, at string, missing *[]string) []string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			return []string{at + ": a map in values.yaml, not in configs/analyzerd.yaml"}
		}
		var diffs []string
		for k, v := range av {
			w, ok := bv[k]
			if !ok {
				diffs = append(diffs, at+"."+k+": not in configs/analyzerd.yaml")
				continue
			}
			diffs = append(diffs, subsetOf(v, w, at+"."+k, missing)...)
		}
		for k := range bv {
			if _, ok := av[k]; !ok {
				*missing = append(*missing, at+"."+k)
			}
		}
		return diffs
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return []string{at + ": lists of different lengths"}
		}
		var diffs []string
		for i := range av {
			diffs = append(diffs, subsetOf(av[i], bv[i], fmt.Sprintf("%s[%d]", at, i), missing)...)
		}
		return diffs
	default:
		if !reflect.DeepEqual(a, b) {
			return []string{fmt.Sprintf("%s: %v in values.yaml, %v in configs/analyzerd.yaml", at, a, b)}
		}
		return nil
	}
}

// TestChecksumFollowsTheConfiguration checks that a change of the configuration changes the
// pods' checksum/config annotation (so the pods roll), and that other changes do not.
func TestChecksumFollowsTheConfiguration(t *testing.T) {
	checksum := func(sets ...string) string {
		objs, err := decodeAll(render(t, nil, sets...))
		if err != nil {
			t.Fatal(err)
		}
		return get[*appsv1.Deployment](objs, "Deployment")[0].Spec.Template.Annotations["checksum/config"]
	}
	base := checksum()
	if got := checksum("config.log.level=debug"); got == base {
		t.Error("changing config.log.level left checksum/config as it was")
	}
	if got := checksum("prometheus.url=http://thanos-query.monitoring.svc:9090"); got == base {
		t.Error("changing prometheus.url left checksum/config as it was")
	}
	if got := checksum("resources.limits.memory=1Gi"); got != base {
		t.Error("changing the resources changed checksum/config")
	}
}
