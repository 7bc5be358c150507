package promproc

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRenderConfig(t *testing.T) {
	got, err := renderConfig(Options{
		ScrapeInterval: 1500 * time.Millisecond,
		Targets: []Target{
			{Job: "stable", Address: "127.0.0.1:9101", Labels: map[string]string{"side": "stable"}},
			{Job: "canary", Address: "127.0.0.1:9102"},
			{Job: "stable", Address: "127.0.0.1:9103", Labels: map[string]string{"note": `on "yes": no`}},
		},
	})
	require.NoError(t, err)
	require.JSONEq(t, `{
	  "global": {"scrape_interval": "1500ms", "scrape_timeout": "1500ms", "evaluation_interval": "1500ms"},
	  "scrape_configs": [
	    {"job_name": "stable", "static_configs": [
	      {"targets": ["127.0.0.1:9101"], "labels": {"side": "stable"}},
	      {"targets": ["127.0.0.1:9103"], "labels": {"note": "on \"yes\": no"}}
	    ]},
	    {"job_name": "canary", "static_configs": [{"targets": ["127.0.0.1:9102"]}]}
	  ]
	}`, string(got))

	// Defaults; no targets is valid; the timeout never exceeds Prometheus's default.
	got, err = renderConfig(Options{})
	require.NoError(t, err)
	require.JSONEq(t, `{"global": {"scrape_interval": "1000ms", "scrape_timeout": "1000ms", "evaluation_interval": "1000ms"}, "scrape_configs": []}`, string(got))
	got, err = renderConfig(Options{ScrapeInterval: time.Minute})
	require.NoError(t, err)
	require.Contains(t, string(got), `"scrape_timeout": "10000ms"`)

	// A job with its own interval, and a timeout of at most it; the others keep the global one.
	got, err = renderConfig(Options{
		ScrapeInterval:     15 * time.Second,
		JobScrapeIntervals: map[string]time.Duration{"slow": time.Minute, "fast": 5 * time.Second},
		Targets: []Target{
			{Job: "slow", Address: "127.0.0.1:9101"},
			{Job: "fast", Address: "127.0.0.1:9102"},
			{Job: "global", Address: "127.0.0.1:9103"},
		},
	})
	require.NoError(t, err)
	require.JSONEq(t, `{
	  "global": {"scrape_interval": "15000ms", "scrape_timeout": "10000ms", "evaluation_interval": "15000ms"},
	  "scrape_configs": [
	    {"job_name": "slow", "scrape_interval": "60000ms", "scrape_timeout": "10000ms", "static_configs": [{"targets": ["127.0.0.1:9101"]}]},
	    {"job_name": "fast", "scrape_interval": "5000ms", "scrape_timeout": "5000ms", "static_configs": [{"targets": ["127.0.0.1:9102"]}]},
	    {"job_name": "global", "static_configs": [{"targets": ["127.0.0.1:9103"]}]}
	  ]
	}`, string(got))
}

// promtool, from the same Debian package, accepts what renderConfig writes.
func TestRenderedConfigPassesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (it comes with `apt-get install -y prometheus`)")
	}
	cfg, err := renderConfig(Options{Targets: []Target{
		{Job: "stable", Address: "127.0.0.1:9101", Labels: map[string]string{"version": "v1", "yes": "on"}},
		{Job: "canary", Address: "localhost:9102"},
	}, JobScrapeIntervals: map[string]time.Duration{"canary": 30 * time.Second}})
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "prometheus.yml")
	require.NoError(t, os.WriteFile(file, cfg, 0o644))
	out, err := exec.CommandContext(t.Context(), promtool, "check", "config", file).CombinedOutput()
	require.NoError(t, err, "%s", out)
}

func TestOptionsValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts Options
		want string
	}{
		{"negative interval", Options{ScrapeInterval: -time.Second}, "scrape interval must be a positive whole number of milliseconds"},
		{"sub-millisecond interval", Options{ScrapeInterval: 1500 * time.Microsecond}, "scrape interval"},
		{"no job", Options{Targets: []Target{{Address: "127.0.0.1:1"}}}, "target 0: job must not be empty"},
		{"bad address", Options{Targets: []Target{{Job: "j", Address: "127.0.0.1"}}}, `address "127.0.0.1" is not host:port`},
		{"duplicate", Options{Targets: []Target{{Job: "j", Address: "h:1"}, {Job: "j", Address: "h:1"}}}, `target 1: job "j" lists h:1 twice`},
		{"bad label", Options{Targets: []Target{{Job: "j", Address: "h:1", Labels: map[string]string{"a-b": "x"}}}}, `invalid label name "a-b"`},
		{"job interval without the job", Options{JobScrapeIntervals: map[string]time.Duration{"j": time.Second}}, `scrape interval of job "j": no target has that job`},
		{"bad job interval", Options{Targets: []Target{{Job: "j", Address: "h:1"}}, JobScrapeIntervals: map[string]time.Duration{"j": 0}}, `scrape interval of job "j" must be a positive whole number of milliseconds`},
		{"reserved label", Options{Targets: []Target{{Job: "j", Address: "h:1", Labels: map[string]string{"__name__": "x"}}}}, `invalid label name "__name__"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorContains(t, tt.opts.Validate(), tt.want)
			_, err := Start(t.Context(), tt.opts)
			require.ErrorContains(t, err, "promproc: invalid options: ")
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestFind(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "prometheus")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	notExe := filepath.Join(t.TempDir(), "prometheus")
	require.NoError(t, os.WriteFile(notExe, nil, 0o644))

	lookPath := func(found map[string]string) func(string) (string, error) {
		return func(name string) (string, error) {
			if strings.Contains(name, "/") {
				return exec.LookPath(name) // checks the file itself
			}
			if p, ok := found[name]; ok {
				return p, nil
			}
			return "", exec.ErrNotFound
		}
	}

	got, err := find(exe, lookPath(nil))
	require.NoError(t, err)
	require.Equal(t, exe, got)

	_, err = find(notExe, lookPath(map[string]string{"prometheus": "/somewhere/prometheus"}))
	require.ErrorIs(t, err, ErrNotFound, "a bad $PROMETHEUS_BINARY is not silently replaced")
	require.ErrorContains(t, err, "$PROMETHEUS_BINARY=")

	got, err = find("", lookPath(map[string]string{"prometheus": "/somewhere/prometheus"}))
	require.NoError(t, err)
	require.Equal(t, "/somewhere/prometheus", got)

	if _, statErr := os.Stat(fallbackBinary); statErr != nil {
		_, err = find("", lookPath(nil))
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorContains(t, err, "apt-get install -y prometheus")
	}
}

func TestInstall(t *testing.T) {
	notFound := func() (string, error) { return "", ErrNotFound }
	tools := func(names ...string) func(string) (string, error) {
		return func(name string) (string, error) {
			for _, n := range names {
				if n == name {
					return "/usr/bin/" + name, nil
				}
			}
			return "", exec.ErrNotFound
		}
	}
	type call struct {
		name string
		args []string
	}

	t.Run("already installed", func(t *testing.T) {
		in := installer{find: func() (string, error) { return "/usr/bin/prometheus", nil }}
		got, err := in.install(t.Context(), nil)
		require.NoError(t, err)
		require.Equal(t, "/usr/bin/prometheus", got)
	})

	install := []string{"install", "-y", "--no-install-recommends", "prometheus"}
	for _, tt := range []struct {
		name    string
		euid    int
		tools   []string
		fails   int // how many runs fail before one succeeds
		want    []call
		wantErr string
	}{
		{name: "root", euid: 0, tools: []string{"apt-get", "sudo"},
			want: []call{{"/usr/bin/apt-get", install}}},
		{name: "sudo", euid: 1000, tools: []string{"apt-get", "sudo"},
			want: []call{{"/usr/bin/sudo", append([]string{"/usr/bin/apt-get"}, install...)}}},
		{name: "no sudo", euid: 1000, tools: []string{"apt-get"}, wantErr: "not root and sudo not found"},
		{name: "no apt-get", euid: 0, wantErr: "apt-get not found"},
		{name: "package lists missing: update, then install again", euid: 0, tools: []string{"apt-get"}, fails: 1,
			want: []call{{"/usr/bin/apt-get", install}, {"/usr/bin/apt-get", []string{"update"}}, {"/usr/bin/apt-get", install}}},
		{name: "apt-get fails after update", euid: 0, tools: []string{"apt-get"}, fails: 3,
			want:    []call{{"/usr/bin/apt-get", install}, {"/usr/bin/apt-get", []string{"update"}}},
			wantErr: "apt-get [update]: exit status 100"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []call
			installed := false
			in := installer{
				find: func() (string, error) {
					if installed {
						return "/usr/bin/prometheus", nil
					}
					return notFound()
				},
				lookPath: tools(tt.tools...),
				euid:     func() int { return tt.euid },
				run: func(_ context.Context, out io.Writer, name string, args ...string) error {
					require.NotNil(t, out)
					got = append(got, call{name, args})
					if len(got) <= tt.fails {
						return errors.New("exit status 100")
					}
					installed = args[len(args)-1] == "prometheus"
					return nil
				},
			}
			path, err := in.install(t.Context(), nil)
			require.Equal(t, tt.want, got)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "/usr/bin/prometheus", path)
		})
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 5}
	tb.Write([]byte("abc"))
	tb.Write([]byte("defg"))
	require.Equal(t, "cdefg", tb.String())
	tb.Write([]byte("0123456789"))
	require.Equal(t, "56789", tb.String())
}
