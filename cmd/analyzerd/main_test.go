package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestValidateAcceptsTheShippedConfig(t *testing.T) {
	code, out, errOut := runCmd("validate", "--config", "../../configs/analyzerd.yaml")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "is valid: 1 analysis template(s): http-golden-signals (3 checks)")
}

func TestValidateListsEveryError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
prometheus:
  url: ftp://example
  timeout: -1s
http:
  addr: nope
templates:
  - name: t
    checks:
      - name: c
        kind: ratio
        errors: 'sum(x{s={{ arg "missing" }}})'
        total: 'sum(y)'
        guards:
          - against: stable
            measure: value
            max: 1
`), 0o600))
	code, _, errOut := runCmd("validate", "--config", path)
	require.Equal(t, 1, code)
	for _, want := range []string{
		"prometheus.url:",
		"prometheus.timeout: must be positive",
		"http.addr:",
		"templates[0] (t).checks[0] (c).guards[0].measure:",
		`names argument "missing"`,
	} {
		require.Contains(t, errOut, want)
	}
	require.GreaterOrEqual(t, strings.Count(errOut, "\n  - "), 5, "one line per error:\n%s", errOut)
}

func TestValidateNamesAnUnknownKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "typo.yaml")
	require.NoError(t, os.WriteFile(path, []byte("prometheus:\n  tiemout: 5s\n"), 0o600))
	code, _, errOut := runCmd("validate", "--config", path)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "tiemout")
}

func TestUsageErrors(t *testing.T) {
	code, _, errOut := runCmd("validate")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--config FILE is required")

	code, _, errOut = runCmd()
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--config FILE is required")

	code, _, errOut = runCmd("--config", "../../configs/analyzerd.yaml", "--no-such-flag")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "no-such-flag")

	code, _, errOut = runCmd("--config", "does-not-exist.yaml")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "does-not-exist.yaml")
}

func TestFlagsOverrideTheFileOnlyWhenSet(t *testing.T) {
	var errOut bytes.Buffer
	f, fs, err := parseDaemonFlags([]string{"--config", "../../configs/analyzerd.yaml",
		"--nats-url", "nats://10.0.0.1:4222", "--http-addr", "127.0.0.1:9999"}, &errOut)
	require.NoError(t, err)
	cfg, err := load(f, fs)
	require.NoError(t, err)
	require.Equal(t, "nats://10.0.0.1:4222", cfg.NATS.URL)
	require.Equal(t, "127.0.0.1:9999", cfg.HTTP.Addr)
	require.Equal(t, "http://localhost:9090", cfg.Prometheus.URL, "the file's value, not the flag's default")

	f, fs, err = parseDaemonFlags([]string{"--config", "../../configs/analyzerd.yaml", "--prometheus-url", "not a url"}, &errOut)
	require.NoError(t, err)
	_, err = load(f, fs)
	require.ErrorContains(t, err, "prometheus.url")
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd("version")
	require.Equal(t, 0, code)
	require.Equal(t, "dev\n", out)
}
