package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReadTemplate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
		return path
	}

	good := write("good.yaml", `name: tuned
minStepDuration: 2m
args: [service]
variables: [version]
checks:
  - name: error-rate
    kind: ratio
    errors: http_requests_total{service={{ arg "service" }}, version={{ var "version" }}, code=~"5.."}
    total: http_requests_total{service={{ arg "service" }}, version={{ var "version" }}}
`)
	tm, err := ReadTemplate(good)
	require.NoError(t, err)
	require.Equal(t, "tuned", tm.Name)
	require.Equal(t, 2*time.Minute, tm.MinStepDuration)
	require.Equal(t, DefaultInterval, tm.Interval, "the defaults are set")
	require.NotNil(t, tm.Checks[0].Sequential, "a ratio check's sequential test is on by default")
	cfg := Default()
	cfg.Templates = append(cfg.Templates, tm)
	require.NoError(t, cfg.ValidateEnv(func(string) (string, bool) { return "", false }))

	_, err = ReadTemplate(write("unknown.yaml", "name: x\nchecks:\n  - name: a\n    kind: ratio\n    tolerence: 1\n"))
	require.ErrorContains(t, err, `line 5: unknown key "tolerence" in checks[0] (a)`)

	_, err = ReadTemplate(write("empty.yaml", ""))
	require.ErrorContains(t, err, "empty")

	_, err = ReadTemplate(write("two.yaml", "name: a\n---\nname: b\n"))
	require.ErrorContains(t, err, "more than one YAML document")

	_, err = ReadTemplate(filepath.Join(dir, "missing.yaml"))
	require.ErrorContains(t, err, "missing.yaml")

	// A template that decodes but is not valid is found by the configuration's Validate.
	bad, err := ReadTemplate(write("bad.yaml", "name: bad\ninterval: 10s\nchecks:\n  - name: a\n    kind: value\n"))
	require.NoError(t, err)
	cfg = Default()
	cfg.Templates = append(cfg.Templates, bad)
	require.ErrorContains(t, cfg.ValidateEnv(func(string) (string, bool) { return "", false }), "templates[0] (bad)")
}
