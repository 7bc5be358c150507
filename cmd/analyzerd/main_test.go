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
	require.Contains(t, out, "is valid: 2 analysis template(s): http-golden-signals (3 checks), kubernetes-golden-signals (9 checks)")
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
	f, fs, err := parseDaemonFlags([]string{"--config", "../../configs/analyzerd.yaml",
		"--nats-url", "nats://10.0.0.1:4222", "--http-addr", "127.0.0.1:9999"})
	require.NoError(t, err)
	cfg, err := load(f, fs)
	require.NoError(t, err)
	require.Equal(t, "nats://10.0.0.1:4222", cfg.NATS.URL)
	require.Equal(t, "127.0.0.1:9999", cfg.HTTP.Addr)
	require.Equal(t, "http://localhost:9090", cfg.Prometheus.URL, "the file's value, not the flag's default")

	f, fs, err = parseDaemonFlags([]string{"--config", "../../configs/analyzerd.yaml", "--prometheus-url", "not a url"})
	require.NoError(t, err)
	_, err = load(f, fs)
	require.ErrorContains(t, err, "prometheus.url")
	require.ErrorContains(t, err, "with the flags applied")
}

// writeConfig writes a configuration file with one valid template and the given prometheus
// section, and returns its path.
func writeConfig(t *testing.T, prometheus string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "analyzerd.yaml")
	require.NoError(t, os.WriteFile(path, []byte("prometheus:\n"+prometheus+`
templates:
  - name: t
    checks:
      - name: up
        kind: value
        query: up
        guards:
          - min: 1
`), 0o600))
	return path
}

func TestFlagsCanFixTheFile(t *testing.T) {
	path := writeConfig(t, "  url: ftp://broken")
	// The file alone is not valid.
	code, _, errOut := runCmd("validate", "--config", path)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "prometheus.url: ")

	f, fs, err := parseDaemonFlags([]string{"--config", path})
	require.NoError(t, err)
	_, err = load(f, fs)
	require.ErrorContains(t, err, "config "+path+": prometheus.url: ")

	// The flag fixes it: the file is validated once, with the flag applied.
	f, fs, err = parseDaemonFlags([]string{"--config", path, "--prometheus-url", "http://ok:9090"})
	require.NoError(t, err)
	cfg, err := load(f, fs)
	require.NoError(t, err)
	require.Equal(t, "http://ok:9090", cfg.Prometheus.URL)
	require.Len(t, cfg.Templates, 1)

	// An unknown key is still an error, listed with what else is wrong after the flags.
	path = writeConfig(t, "  url: ftp://broken\n  tiemout: 5s")
	f, fs, err = parseDaemonFlags([]string{"--config", path, "--prometheus-url", "http://ok:9090", "--http-addr", "nope"})
	require.NoError(t, err)
	_, err = load(f, fs)
	require.ErrorContains(t, err, `unknown key "tiemout" in prometheus`)
	require.ErrorContains(t, err, "http.addr: ")
	require.NotContains(t, err.Error(), "prometheus.url")

	// The daemon lists the problems one a line, and does not start.
	code, out, errOut := runCmd("--config", path, "--prometheus-url", "http://ok:9090", "--http-addr", "nope")
	require.Equal(t, 2, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "analyzerd: config "+path+" with the flags applied is not valid:\n")
	require.Contains(t, errOut, "\n  - line ")
	require.Contains(t, errOut, "\n  - http.addr: ")
}

func TestValidateListsUnknownKeysWithTheOtherErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`prometheus:
  url: http://localhost:9090
  tiemout: 5s
http:
  addr: nope
templates: []
colour: blue
`), 0o600))
	code, out, errOut := runCmd("validate", "--config", path)
	require.Equal(t, 1, code)
	require.Empty(t, out)
	require.Equal(t, path+` is not valid:
  - line 3: unknown key "tiemout" in prometheus
  - line 7: unknown key "colour" at the top level
  - http.addr: "nope" is not host:port (e.g. :8080)
  - templates: at least one analysis template is needed
`, errOut)
}

func TestHelpPrintsTheFlags(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"--config", "x.yaml", "--help"}} {
		code, out, errOut := runCmd(args...)
		require.Equal(t, 0, code, args)
		require.Empty(t, errOut, args)
		require.Contains(t, out, "Usage:", args)
		for _, want := range []string{
			"-config string",
			"-nats-url string",
			"-prometheus-url string",
			`(default "http://localhost:9090")`,
			"-http-addr string",
			`(default ":8080")`,
			"-log-level string",
			`(default "info")`,
			"-log-format string",
			`(default "json")`,
		} {
			require.Contains(t, out, want, args)
		}
	}

	for _, args := range [][]string{{"validate", "--help"}, {"validate", "-h"}} {
		code, out, errOut := runCmd(args...)
		require.Equal(t, 0, code, args)
		require.Empty(t, errOut, args)
		require.Contains(t, out, "Usage: analyzerd validate --config FILE")
		require.Contains(t, out, "-config string")
		require.Contains(t, out, "configuration file to check")
	}

	// A bad flag is reported once, on stderr, with where to find help.
	code, out, errOut := runCmd("--config", "x.yaml", "--no-such-flag")
	require.Equal(t, 2, code)
	require.Empty(t, out)
	require.Equal(t, 1, strings.Count(errOut, "no-such-flag"), errOut)
	require.Contains(t, errOut, "analyzerd --help")

	code, out, errOut = runCmd("validate", "--no-such-flag")
	require.Equal(t, 2, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "no-such-flag")
	require.Contains(t, errOut, "-config string")

	code, _, errOut = runCmd("validate", "--config", "x.yaml", "extra")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unexpected argument "extra"`)
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd("version")
	require.Equal(t, 0, code)
	require.Equal(t, "dev\n", out)
}
