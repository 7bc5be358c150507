package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/replay"
)

func TestParseSteps(t *testing.T) {
	from := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return from.Add(d) }
	steps, err := parseSteps("10@14:00,25@14:10, 50@14:20:30\n100@2026-11-25T15:00:00Z", from)
	require.NoError(t, err)
	step := func(w int, at time.Time) replay.Step { return replay.Step{Weight: w, At: at} }
	require.Equal(t, []replay.Step{step(10, from), step(25, at(10*time.Minute)), step(50, at(20*time.Minute+30*time.Second)), step(100, at(time.Hour))}, steps)

	steps, err = parseSteps("# the rollout of Tuesday\n10        # the start, at --from\n25@14:05  # after the first proceed\n", from)
	require.NoError(t, err)
	require.Equal(t, []replay.Step{step(10, from), step(25, at(5*time.Minute))}, steps)

	for text, want := range map[string]string{
		"":                 "none given",
		"# nothing\n":      "none given",
		"x@14:00":          `"x@14:00": the weight must be a whole percent`,
		"101":              "within 0..100",
		"10,25":            `"25": want weight@time`,
		"10@14:01":         "the first step is the rollout's start, at --from (2026-11-25T14:00:00Z)",
		"10,25@25:00":      "not a time of day",
		"10,25@tomorrow":   "HH:MM[:SS] (on --from's day, UTC) or RFC 3339",
		"10,25@14:05:61":   "not a time of day",
		"10@14:00:00,5@2x": "HH:MM[:SS]",
	} {
		_, err := parseSteps(text, from)
		require.ErrorContains(t, err, want, "%q", text)
	}
}

// backtestArgs are a backtest's flags that work, but for Prometheus.
func backtestArgs(prometheus string, extra ...string) []string {
	return append([]string{"backtest", "--config", "../../configs/analyzerd.yaml", "--template", "http-golden-signals",
		"--prometheus", prometheus, "--from", "2026-11-25T14:00:00Z", "--to", "2026-11-25T14:20:00Z",
		"--arg", "service=checkout", "--canary", "version=v2", "--stable", "version=v1",
		"--steps", "10@14:00,25@14:05"}, extra...)
}

func TestBacktestBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("name: bad\nchecks:\n  - name: c\n    kind: ratio\n    tolerence: 1\n"), 0o600))
	other := filepath.Join(dir, "other.yaml")
	require.NoError(t, os.WriteFile(other, []byte("name: other\nchecks:\n  - name: c\n    kind: value\n    query: x\n    guards: [{max: 1}]\n"), 0o600))
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown flag":   {[]string{"backtest", "--no-such-flag"}, "no-such-flag"},
		"no times":       {[]string{"backtest", "--steps", "10"}, "--from and --to are required"},
		"bad time":       {backtestArgs("http://127.0.0.1:9", "--from", "yesterday"), "--from: parsing time"},
		"no steps":       {backtestArgs("http://127.0.0.1:9", "--steps", ""), "--steps or --steps-file is required"},
		"both steps":     {backtestArgs("http://127.0.0.1:9", "--steps-file", "x"), "give one"},
		"no steps file":  {backtestArgs("http://127.0.0.1:9", "--steps", "", "--steps-file", filepath.Join(dir, "none")), "--steps-file: open"},
		"steps order":    {backtestArgs("http://127.0.0.1:9", "--steps", "10,25@14:05,50@14:01"), "step 2 (2026-11-25T14:01:00Z) does not come after step 1"},
		"step after end": {backtestArgs("http://127.0.0.1:9", "--steps", "10,25@14:30"), "begins after the end"},
		"missing var": {[]string{"backtest", "--config", "../../configs/analyzerd.yaml", "--template", "http-golden-signals",
			"--from", "2026-11-25T14:00:00Z", "--to", "2026-11-25T14:20:00Z", "--arg", "service=checkout",
			"--canary", "version=v2", "--stable", "zone=a", "--steps", "10"}, "data.stable.version: required"},
		"repeated arg":    {backtestArgs("http://127.0.0.1:9", "--arg", "service=x"), "service given twice"},
		"bad kv":          {backtestArgs("http://127.0.0.1:9", "--canary", "v2"), "want key=value"},
		"no template":     {backtestArgs("http://127.0.0.1:9", "--template", "nope"), `has no template named "nope"`},
		"which template":  {backtestArgs("http://127.0.0.1:9", "--template", ""), "--template NAME is required"},
		"template file":   {backtestArgs("http://127.0.0.1:9", "--template", "", "--template-file", bad), `unknown key "tolerence" in checks[0] (c)`},
		"template names":  {backtestArgs("http://127.0.0.1:9", "--template-file", other), `--template "http-golden-signals": --template-file`},
		"bad prometheus":  {backtestArgs("ftp://example"), "prometheus.url"},
		"bad config":      {backtestArgs("http://127.0.0.1:9", "--config", bad), "bad.yaml"},
		"stray argument":  {append(backtestArgs("http://127.0.0.1:9"), "extra"), `unexpected argument "extra"`},
		"bad rollout ref": {backtestArgs("http://127.0.0.1:9", "--rollout", "checkout"), "--rollout: want namespace/name"},
		"bad report path": {backtestArgs("http://127.0.0.1:9", "--report", filepath.Join(dir, "no", "such", "dir.html")), "--report: open"},
		"two problems": {backtestArgs("http://127.0.0.1:9", "--steps", "10,25@14:30,50@14:01"),
			"analyzerd backtest: the rollout is not valid:\n  - step 1 (2026-11-25T14:30:00Z) begins after the end (2026-11-25T14:20:00Z)\n  - step 2 (2026-11-25T14:01:00Z) does not come after step 1"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCmd(tc.args...)
			require.Equal(t, exitUsage, code, "stdout: %s\nstderr: %s", out, errOut)
			require.Contains(t, errOut, tc.want)
			require.Empty(t, out)
		})
	}

	code, out, _ := runCmd("backtest", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "0 proceed, 1 rollback, 2 never decided")
	require.Contains(t, out, "-steps-file")
}

func TestBacktestPrometheusUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	steps := filepath.Join(t.TempDir(), "steps")
	require.NoError(t, os.WriteFile(steps, []byte("10 # at --from\n25@14:05\n"), 0o600))
	code, out, errOut := runCmd(backtestArgs(url, "--steps", "", "--steps-file", steps)...)
	require.Equal(t, exitUnavailable, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Contains(t, errOut, "metrics source unavailable at 2026-11-25T14:00:00Z")
}

// TestBacktestSecretsNeverPrinted: the configuration's Prometheus credentials go to
// Prometheus, never to the output, even when Prometheus answers with them.
func TestBacktestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(token, []byte("s3cr3t-token\n"), 0o600))
	cfg, err := os.ReadFile("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	path := filepath.Join(dir, "analyzerd.yaml")
	// The shipped configuration with a bearer token file.
	text := string(cfg)
	text = replaceOnce(t, text, "  timeout: 10s\n", "  timeout: 10s\n  bearerTokenFile: "+token+"\n")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))

	srv := echoServer(t)
	code, out, errOut := runCmd(backtestArgs(srv, "--config", path)...)
	require.NotContains(t, out+errOut, "s3cr3t-token")
	require.Equal(t, exitUndecided, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Contains(t, out, "refused", "the answer reached the output, redacted")
}

func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	require.Equal(t, 1, strings.Count(s, old), "%q once in the text", old)
	return strings.Replace(s, old, new, 1)
}

// echoServer answers every query with an error that repeats the request's
// Authorization header, as a careless proxy might.
func echoServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"refused %s"}`, r.Header.Get("Authorization"))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
