package chartcheck

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the values table of the chart's README.md")

const (
	tableBegin = "<!-- values-table:begin (tools/chartcheck: go test -run TestChartREADME -update) -->"
	tableEnd   = "<!-- values-table:end -->"
)

// TestChartREADME checks that the chart's README lists every value, with the schema's type
// and description and values.yaml's default, as valuesTable writes them.
func TestChartREADME(t *testing.T) {
	path := filepath.Join(chartDir, "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := bytes.Index(readme, []byte(tableBegin)), bytes.Index(readme, []byte(tableEnd))
	if begin < 0 || end < begin {
		t.Fatalf("%s lacks the markers %q and %q", path, tableBegin, tableEnd)
	}
	table := valuesTable(t)
	want := append(append(append([]byte{}, readme[:begin+len(tableBegin)]...), "\n"+table...), readme[end:]...)
	if bytes.Equal(readme, want) {
		return
	}
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the values table of %s", path)
		return
	}
	t.Errorf("the values table of %s is not up to date with values.schema.json and values.yaml: run `go test -run TestChartREADME -update` in tools/chartcheck", path)
}

// valuesTable is the Markdown table of every value: each leaf of the schema (an object whose
// properties the schema lists is not a leaf; the analysis templates are one), in the schema's
// order.
func valuesTable(t *testing.T) string {
	t.Helper()
	schemaData, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema yamlv3.Node // JSON is YAML, and a yaml.v3 node keeps the keys' order
	if err := yamlv3.Unmarshal(schemaData, &schema); err != nil {
		t.Fatal(err)
	}
	valuesData, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(valuesData, &values); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("| value | type | default | description |\n|---|---|---|---|\n")
	var walk func(node *yamlv3.Node, at string)
	walk = func(node *yamlv3.Node, at string) {
		props := mapGet(node, "properties")
		if props == nil || at == "config.templates" {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", at, schemaType(node), defaultOf(values, at), cell(mapGet(node, "description").Value))
			return
		}
		for i := 0; i+1 < len(props.Content); i += 2 {
			walk(props.Content[i+1], strings.TrimPrefix(at+"."+props.Content[i].Value, "."))
		}
	}
	walk(schema.Content[0], "")
	return b.String()
}

func mapGet(n *yamlv3.Node, key string) *yamlv3.Node {
	if n == nil || n.Kind != yamlv3.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func schemaType(n *yamlv3.Node) string {
	if ref := mapGet(n, "$ref"); ref != nil {
		return map[string]string{
			"#/definitions/duration":     "duration",
			"#/definitions/secretKey":    "string",
			"#/definitions/intOrPercent": "int or percentage",
		}[ref.Value]
	}
	typ := mapGet(n, "type")
	if typ == nil {
		return ""
	}
	if typ.Kind == yamlv3.SequenceNode {
		var types []string
		for _, c := range typ.Content {
			types = append(types, c.Value)
		}
		return strings.Join(types, " or ")
	}
	if items := mapGet(n, "items"); typ.Value == "array" && items != nil && mapGet(items, "type") != nil {
		return "array of " + mapGet(items, "type").Value
	}
	return typ.Value
}

// defaultOf renders values.yaml's value at the dotted path.
func defaultOf(values map[string]any, at string) string {
	var v any = values
	for _, part := range strings.Split(at, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "unset"
		}
		if v, ok = m[part]; !ok {
			return "unset"
		}
	}
	if list, ok := v.([]any); ok && len(list) > 0 && at == "config.templates" {
		return "`http-golden-signals` (see values.yaml)"
	}
	data, err := json.Marshal(v)
	if err != nil {
		return "?"
	}
	if len(data) > 48 {
		return "see values.yaml"
	}
	return "`" + string(data) + "`"
}

func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}
