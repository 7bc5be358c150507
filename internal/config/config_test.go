package config

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

func num(f float64) *float64 { return &f }

func TestShippedConfig(t *testing.T) {
	cfg, err := Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)

	tm, ok := cfg.Template("http-golden-signals")
	require.True(t, ok)
	require.Equal(t, []string{"service"}, tm.Args)
	require.Equal(t, []string{"version"}, tm.Variables)
	require.Equal(t, 10*time.Second, tm.Interval)
	require.Equal(t, 10*time.Minute, tm.BaselineWindow)
	require.Equal(t, time.Minute, tm.MinStepDuration)

	// The seed checklist's guards, as DESIGN.md states them.
	type guard struct {
		expression string
		critical   bool
		fromWeight int
	}
	want := map[string]struct {
		kind     rollout.CheckKind
		quantile float64
		guards   []guard
	}{
		"error-rate": {rollout.KindRatio, 0, []guard{
			{"canary - stable < 0.01", false, 0},  // error rate delta < 1 percentage point
			{"canary - baseline < 0.05", true, 0}, // rollback at > 5 points above baseline
		}},
		"latency-p95": {rollout.KindHistogram, 0.95, []guard{
			{"canary / stable < 1.1", false, 0},   // p95 delta < 10%
			{"canary / baseline < 1.25", true, 0}, // rollback at p95 > 25% above baseline
		}},
		"latency-p99": {rollout.KindHistogram, 0.99, []guard{
			{"canary / stable < 1.15", false, 50}, // p99 delta < 15% from the 50% step on
			{"canary / baseline < 2", true, 0},    // rollback at p99 > 2x baseline
		}},
	}
	require.Len(t, tm.Checks, len(want))
	for _, c := range tm.Checks {
		w, ok := want[c.Name]
		require.True(t, ok, c.Name)
		require.Equal(t, w.kind, c.Kind, c.Name)
		require.Equal(t, w.quantile, c.Quantile, c.Name)
		require.Equal(t, int64(1000), c.MinSamples, c.Name)
		var got []guard
		for _, g := range c.Guards {
			got = append(got, guard{g.Expression(), g.Critical, g.FromWeight})
		}
		require.Equal(t, w.guards, got, c.Name)
	}

	// Its queries use the conventional metrics of CONTRACT.md section 6 and render.
	ct, err := compare.CompileTemplate(tm)
	require.NoError(t, err)
	for _, c := range ct.Checks {
		for _, q := range []string{c.Errors, c.Total, c.Buckets} {
			if q == "" {
				continue
			}
			compiled, err := compare.Compile(q, tm.Args, tm.Variables)
			require.NoError(t, err)
			out, err := compiled.Render(compare.Values{Args: map[string]string{"service": "checkout"},
				Vars: map[string]string{"version": "v2.3.0"}, Window: 30 * time.Second})
			require.NoError(t, err)
			require.Contains(t, out, `service="checkout"`)
			require.Contains(t, out, `version="v2.3.0"`)
			require.True(t, compiled.IsSelector(), "a counter check's query is a series selector: %s", q)
			require.True(t, strings.Contains(out, "http_requests_total{") || strings.Contains(out, "http_request_duration_seconds_bucket{"), out)
		}
	}

	// What the file does not set comes from Default.
	d := Default()
	require.Equal(t, "", cfg.NATS.URL)
	require.Equal(t, d.NATS.Replicas, cfg.NATS.Replicas)
	require.Equal(t, d.NATS.StreamMaxAge, cfg.NATS.StreamMaxAge)
	require.Equal(t, d.Prometheus.Concurrency, cfg.Prometheus.Concurrency)
	require.Equal(t, d.Ingest, cfg.Ingest)
	require.Equal(t, d.Log, cfg.Log)
	require.Equal(t, d.ShutdownTimeout, cfg.ShutdownTimeout)
}

// TestShippedKubernetesTemplate checks the shipped kubernetes-golden-signals template: the
// HTTP checks of http-golden-signals first, then the seed's Kubernetes triggers as value
// checks whose queries select each side's pods through kube_pod_labels.
func TestShippedKubernetesTemplate(t *testing.T) {
	cfg, err := Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	http, ok := cfg.Template("http-golden-signals")
	require.True(t, ok)
	tm, ok := cfg.Template("kubernetes-golden-signals")
	require.True(t, ok)
	require.Equal(t, http.Args, tm.Args)
	require.Equal(t, http.Variables, tm.Variables)
	require.Equal(t, http.Interval, tm.Interval)
	require.Equal(t, http.BaselineWindow, tm.BaselineWindow)
	require.Equal(t, http.MinStepDuration, tm.MinStepDuration)
	require.Equal(t, http.Alpha, tm.Alpha)
	require.Greater(t, len(tm.Checks), len(http.Checks))
	require.Equal(t, http.Checks, tm.Checks[:len(http.Checks)], "the HTTP checks are http-golden-signals'")

	type guard struct {
		expression string
		critical   bool
	}
	want := []struct {
		name         string
		failureLimit int
		guards       []guard
		metrics      []string
	}{
		{"pod-restarts", 0, []guard{{"canary < 6", true}}, []string{"kube_pod_container_status_restarts_total"}},
		{"oom-kills", 0, []guard{{"canary < 1", true}}, []string{"kube_pod_container_status_restarts_total", `kube_pod_container_status_last_terminated_reason{reason="OOMKilled"}`}},
		{"probe-failures", 0, []guard{{"canary < 3", true}}, []string{`prober_probe_total{result="failed"}`}},
		{"cpu-utilisation", 6, []guard{{"canary < 0.7", false}}, []string{"container_cpu_usage_seconds_total", `kube_pod_container_resource_limits{resource="cpu"}`}},
		{"memory-working-set", 6, []guard{{"canary / stable < 1.2", false}}, []string{"container_memory_working_set_bytes"}},
		{"cpu-throttling", 6, []guard{{"canary - stable < 0.1", false}}, []string{"container_cpu_cfs_throttled_periods_total", "container_cpu_cfs_periods_total"}},
	}
	kube := tm.Checks[len(http.Checks):]
	require.Len(t, kube, len(want))
	for i, w := range want {
		c := kube[i]
		require.Equal(t, w.name, c.Name)
		require.Equal(t, rollout.KindValue, c.Kind, c.Name)
		require.Equal(t, w.failureLimit, c.FailureLimit, c.Name)
		require.Equal(t, rollout.NoDataPause, c.NoData, "%s: without kube-state-metrics, a pause", c.Name)
		var got []guard
		for _, g := range c.Guards {
			got = append(got, guard{g.Expression(), g.Critical})
		}
		require.Equal(t, w.guards, got, c.Name)
		for _, m := range w.metrics {
			require.Contains(t, c.Query, m, c.Name)
		}
		q, err := compare.Compile(c.Query, tm.Args, tm.Variables)
		require.NoError(t, err, c.Name)
		out, err := q.Render(compare.Values{Args: map[string]string{"service": "checkout"},
			Vars: map[string]string{"version": "v2.3.0"}, Window: 30 * time.Second})
		require.NoError(t, err, c.Name)
		// Every kube_pod_labels selects the side's pods, every one of them.
		require.Equal(t, strings.Count(out, "kube_pod_labels"), strings.Count(out, `kube_pod_labels{label_app="checkout", label_version="v2.3.0"}`), c.Name)
		require.Positive(t, strings.Count(out, "kube_pod_labels"), c.Name)
	}
}

func TestDefault(t *testing.T) {
	d := Default()
	require.Equal(t, DefaultSubjectPrefix, d.NATS.SubjectPrefix)
	require.Equal(t, Embedded{Host: "127.0.0.1", Port: 4222, StoreDir: "data/nats"}, d.NATS.Embedded)
	require.Equal(t, 1, d.NATS.Replicas)
	require.Equal(t, DefaultPrometheusURL, d.Prometheus.URL)
	require.Equal(t, 10*time.Second, d.Prometheus.Timeout)
	require.Equal(t, 8, d.Prometheus.Concurrency)
	require.Equal(t, DefaultHTTPAddr, d.HTTP.Addr)
	require.Equal(t, 64<<10, d.Ingest.MaxEventBytes, "64 KiB, CONTRACT.md section 2")
	require.Equal(t, Log{Level: "info", Format: "json"}, d.Log)
	require.Empty(t, d.Templates)

	// The defaults are valid but for the templates they leave to the file.
	errs := Errors(d.Validate())
	require.Len(t, errs, 1)
	require.EqualError(t, errs[0], "templates: at least one analysis template is needed")
	d.Templates = []rollout.Template{validTemplate()}
	require.NoError(t, d.Validate())
}

func TestDecodeAppliesDefaults(t *testing.T) {
	cfg, err := Load("testdata/minimal.yaml")
	require.NoError(t, err)
	want := Default()
	want.Templates = cfg.Templates
	require.Equal(t, want, cfg)

	require.Len(t, cfg.Templates, 1)
	tm := cfg.Templates[0]
	require.Equal(t, DefaultInterval, tm.Interval)
	require.Equal(t, DefaultBaselineWindow, tm.BaselineWindow)
	require.Equal(t, DefaultMinStepDuration, tm.MinStepDuration)
	require.Equal(t, rollout.MeasureValue, tm.Checks[0].Guards[0].Measure, "a guard against nothing measures the value")
	require.Equal(t, "canary < 0.7", tm.Checks[0].Guards[0].Expression())

	// Values set in the file win over the defaults.
	cfg, err = Decode(strings.NewReader("prometheus:\n  timeout: 3s\n  concurrency: 2\nnats:\n  embedded:\n    port: -1\n"))
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, cfg.Prometheus.Timeout)
	require.Equal(t, 2, cfg.Prometheus.Concurrency)
	require.Equal(t, -1, cfg.NATS.Embedded.Port)
	require.Equal(t, "127.0.0.1", cfg.NATS.Embedded.Host, "a nested struct keeps the defaults the file does not override")
	require.Equal(t, DefaultPrometheusURL, cfg.Prometheus.URL)
}

func TestUnknownKeys(t *testing.T) {
	for _, tc := range []struct {
		file string
		key  string
	}{
		{"testdata/unknown-top.yaml", "tiemout"},
		{"testdata/unknown-nested.yaml", "tiemout"},
		{"testdata/unknown-in-check.yaml", "treshold"},
		{"testdata/unknown-in-guard.yaml", "maximum"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := Load(tc.file)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.key)
			require.Contains(t, err.Error(), tc.file)
		})
	}
	for _, tc := range []struct {
		yaml string
		key  string
	}{
		{"prometheus: {tiemout: 5s}\n", "tiemout"},
		{"nats:\n  embedded:\n    prot: 4222\n", "prot"},
		{"prometheus:\n  basicAuth:\n    password: hunter2\n", "password"},
		{"templates:\n  - name: t\n    window: 5m\n", "window"},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tc.yaml))
			require.ErrorContains(t, err, tc.key)
			require.NotContains(t, err.Error(), "hunter2", "an unknown key's value is not echoed")
		})
	}
}

func TestBadValuesAreDecodeErrors(t *testing.T) {
	for _, y := range []string{
		"prometheus:\n  timeout: 10\n",                  // a duration needs a unit
		"prometheus:\n  timeout: soon\n",                // not a duration
		"nats:\n  replicas: three\n",                    // not an int
		"templates: {name: t}\n",                        // not a list
		"prometheus: [http://x]\n",                      // not a map
		"http:\n  addr: \":8080\"\n  addr: \":9090\"\n", // a key twice
	} {
		t.Run(y, func(t *testing.T) {
			_, err := Decode(strings.NewReader(y))
			require.Error(t, err)
		})
	}
}

func TestEmptyAndMultiDocument(t *testing.T) {
	for _, file := range []string{"testdata/empty.yaml", "testdata/comments-only.yaml"} {
		_, err := Load(file)
		require.ErrorContains(t, err, "the file is empty", file)
	}
	_, err := Load("testdata/two-documents.yaml")
	require.ErrorContains(t, err, "more than one YAML document")

	_, err = Load("testdata/no-such-file.yaml")
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestCredentialsInURLs(t *testing.T) {
	const secret = "Tr0ub4dor-SECRET"
	_, err := Load("testdata/credentials.yaml")
	require.Error(t, err)
	require.Contains(t, err.Error(), "prometheus.url: credentials in the URL are not allowed")
	require.NotContains(t, err.Error(), secret)

	for _, u := range []string{
		"https://analyzerd:" + secret + "@prometheus:9090",
		"analyzerd:" + secret + "@prometheus:9090",
		"http://analyzerd:" + secret + "%zz@prometheus:9090",
		"http://analyzerd:" + secret + "@prometheus:port",
	} {
		c := validConfig()
		c.Prometheus.URL = u
		err := c.Validate()
		require.ErrorContains(t, err, "prometheus.url: ", u)
		require.NotContains(t, err.Error(), secret, u)

		c = validConfig()
		c.NATS.URL = strings.Replace(u, "https://", "nats://", 1)
		err = c.Validate()
		require.ErrorContains(t, err, "nats.url: ", u)
		require.NotContains(t, err.Error(), secret, u)
	}
}

func validTemplate() rollout.Template {
	sel := `service={{ arg "service" }}, version={{ var "version" }}`
	return rollout.Template{
		Name: "x", Interval: 10 * time.Second, BaselineWindow: 10 * time.Minute, MinStepDuration: time.Minute, Alpha: 0.01,
		Args: []string{"service"}, Variables: []string{"version"},
		Checks: []rollout.Check{
			{
				Name: "error-rate", Kind: rollout.KindRatio,
				Errors:     `http_requests_total{` + sel + `, code=~"5.."}`,
				Total:      `http_requests_total{` + sel + `}`,
				MinSamples: 100, FailureLimit: 2,
				Guards: []rollout.Guard{
					{Against: rollout.AgainstStable, Measure: rollout.MeasureDelta, Max: num(0.01)},
					{Against: rollout.AgainstBaseline, Measure: rollout.MeasureDelta, Max: num(0.05), Critical: true},
				},
			},
			{
				Name: "latency-p95", Kind: rollout.KindHistogram, Quantile: 0.95,
				Buckets: `http_request_duration_seconds_bucket{` + sel + `}`,
				Guards:  []rollout.Guard{{Against: rollout.AgainstStable, Measure: rollout.MeasureRatio, Max: num(1.1), FromWeight: 50, FromStep: 2}},
			},
			{
				Name: "cpu", Kind: rollout.KindValue, Query: `avg(cpu{version={{ var "version" }}})`,
				Guards: []rollout.Guard{{Measure: rollout.MeasureValue, Min: num(0), Max: num(0.7)}},
			},
		},
	}
}

func validConfig() Config {
	c := Default()
	c.Templates = []rollout.Template{validTemplate()}
	return c
}

// TestValidateRules has one row per rule of Config.Validate and rollout.Template.Validate
// (and the placeholder checks of compare.CompileTemplate), each naming its field path.
func TestValidateRules(t *testing.T) {
	require.NoError(t, validConfig().Validate())
	withTraceURL := validConfig()
	withTraceURL.HTTP.TraceURL = "https://jaeger.example/trace/{traceId}?uiFind={traceId}"
	require.NoError(t, withTraceURL.Validate())
	existing := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(existing, []byte("t"), 0o600))
	const tmpl = "templates[0] (x)."
	const ratio = tmpl + "checks[0] (error-rate)."
	const hist = tmpl + "checks[1] (latency-p95)."
	const value = tmpl + "checks[2] (cpu)."
	tm := func(c *Config) *rollout.Template { return &c.Templates[0] }
	check := func(c *Config, i int) *rollout.Check { return &c.Templates[0].Checks[i] }
	guard := func(c *Config, i, j int) *rollout.Guard { return &c.Templates[0].Checks[i].Guards[j] }

	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		field  string // every error starts with it
		count  int    // errors expected; 0 means 1
	}{
		// nats
		{"nats url not a URL", func(c *Config) { c.NATS.URL = "not a url" }, "nats.url", 0},
		{"one of several nats urls not a URL", func(c *Config) { c.NATS.URL = "nats://a:4222, b" }, "nats.url", 0},
		{"nats url with credentials", func(c *Config) { c.NATS.URL = "nats://u:p@a:4222" }, "nats.url", 0},
		{"subject prefix with a dot", func(c *Config) { c.NATS.SubjectPrefix = "rollouts.prod" }, "nats.subjectPrefix", 0},
		{"subject prefix empty", func(c *Config) { c.NATS.SubjectPrefix = "" }, "nats.subjectPrefix", 0},
		{"subject prefix wildcard", func(c *Config) { c.NATS.SubjectPrefix = ">" }, "nats.subjectPrefix", 0},
		{"embedded host a name", func(c *Config) { c.NATS.Embedded.Host = "example.com" }, "nats.embedded.host", 0},
		{"embedded port too large", func(c *Config) { c.NATS.Embedded.Port = 65536 }, "nats.embedded.port", 0},
		{"embedded port below -1", func(c *Config) { c.NATS.Embedded.Port = -2 }, "nats.embedded.port", 0},
		{"embedded store dir empty", func(c *Config) { c.NATS.Embedded.StoreDir = "" }, "nats.embedded.storeDir", 0},
		{"replicas 0", func(c *Config) { c.NATS.Replicas = 0 }, "nats.replicas", 0},
		{"replicas 6", func(c *Config) { c.NATS.Replicas = 6 }, "nats.replicas", 0},
		{"stream max age 0", func(c *Config) { c.NATS.StreamMaxAge = 0 }, "nats.streamMaxAge", 0},
		{"reconnect wait negative", func(c *Config) { c.NATS.ReconnectWait = -time.Second }, "nats.reconnectWait", 0},
		// http
		{"trace url without {traceId}", func(c *Config) { c.HTTP.TraceURL = "https://jaeger.example/trace/" }, "http.traceURL", 0},
		{"trace url not http", func(c *Config) { c.HTTP.TraceURL = "javascript:alert({traceId})" }, "http.traceURL", 0},
		{"trace url relative", func(c *Config) { c.HTTP.TraceURL = "/trace/{traceId}" }, "http.traceURL", 0},
		{"trace url with credentials", func(c *Config) { c.HTTP.TraceURL = "https://u:p@jaeger.example/trace/{traceId}" }, "http.traceURL", 0},
		// prometheus
		{"prometheus url empty", func(c *Config) { c.Prometheus.URL = "" }, "prometheus.url", 0},
		{"prometheus url not http", func(c *Config) { c.Prometheus.URL = "ftp://prometheus:9090" }, "prometheus.url", 0},
		{"prometheus url without host", func(c *Config) { c.Prometheus.URL = "http:///api" }, "prometheus.url", 0},
		{"prometheus url with credentials", func(c *Config) { c.Prometheus.URL = "http://u:p@prometheus:9090" }, "prometheus.url", 0},
		{"prometheus timeout 0", func(c *Config) { c.Prometheus.Timeout = 0 }, "prometheus.timeout", 0},
		{"prometheus concurrency 0", func(c *Config) { c.Prometheus.Concurrency = 0 }, "prometheus.concurrency", 0},
		{"bearer token and basic auth", func(c *Config) {
			c.Prometheus.BearerTokenFile, c.Prometheus.BasicAuth.Username = existing, "u"
		}, "prometheus.bearerTokenFile", 0},
		{"password file without username", func(c *Config) { c.Prometheus.BasicAuth.PasswordFile = existing }, "prometheus.basicAuth.username", 0},
		{"cert without key", func(c *Config) { c.Prometheus.TLS.CertFile = existing }, "prometheus.tls.certFile", 0},
		{"bearer token file missing", func(c *Config) { c.Prometheus.BearerTokenFile = "/nonexistent/token" }, "prometheus.bearerTokenFile", 0},
		{"password file missing", func(c *Config) {
			c.Prometheus.BasicAuth.Username, c.Prometheus.BasicAuth.PasswordFile = "u", "/nonexistent/pw"
		}, "prometheus.basicAuth.passwordFile", 0},
		{"ca file missing", func(c *Config) { c.Prometheus.TLS.CAFile = "/nonexistent/ca.pem" }, "prometheus.tls.caFile", 0},
		{"cert and key files missing", func(c *Config) {
			c.Prometheus.TLS.CertFile, c.Prometheus.TLS.KeyFile = "/nonexistent/c.pem", "/nonexistent/k.pem"
		}, "prometheus.tls.", 2},
		// http, ingest, log, shutdown
		{"http addr without port", func(c *Config) { c.HTTP.Addr = "8080" }, "http.addr", 0},
		{"max event bytes too small", func(c *Config) { c.Ingest.MaxEventBytes = 1023 }, "ingest.maxEventBytes", 0},
		{"max event bytes too large", func(c *Config) { c.Ingest.MaxEventBytes = 1<<20 + 1 }, "ingest.maxEventBytes", 0},
		{"max deliver 0", func(c *Config) { c.Ingest.MaxDeliver = 0 }, "ingest.maxDeliver", 0},
		{"ack wait under a second", func(c *Config) { c.Ingest.AckWait = 999 * time.Millisecond }, "ingest.ackWait", 0},
		{"clock skew under a second", func(c *Config) { c.Ingest.MaxClockSkew = 0 }, "ingest.maxClockSkew", 0},
		{"clock skew not below a template's minimum step", func(c *Config) { c.Ingest.MaxClockSkew = 5 * time.Minute }, "ingest.maxClockSkew: must be below templates[0]", 0},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, "log.level", 0},
		{"log format", func(c *Config) { c.Log.Format = "text" }, "log.format", 0},
		{"shutdown timeout 0", func(c *Config) { c.ShutdownTimeout = 0 }, "shutdownTimeout", 0},
		// templates
		{"no templates", func(c *Config) { c.Templates = nil }, "templates", 0},
		{"duplicate template name", func(c *Config) { c.Templates = append(c.Templates, validTemplate()) }, "templates[1] (x).name", 0},
		{"template name empty", func(c *Config) { tm(c).Name = "" }, "templates[0].name", 0},
		{"interval negative", func(c *Config) { tm(c).Interval = -time.Second }, tmpl + "interval", 0},
		{"baseline window negative", func(c *Config) { tm(c).BaselineWindow = -time.Second }, tmpl + "baselineWindow", 0},
		{"min step duration negative", func(c *Config) { tm(c).MinStepDuration = -time.Second }, tmpl + "minStepDuration", 0},
		{"arg not an identifier", func(c *Config) { tm(c).Args = append(tm(c).Args, "team-name") }, tmpl + "args[1]", 0},
		{"arg starting with a digit", func(c *Config) { tm(c).Args = append(tm(c).Args, "1st") }, tmpl + "args[1]", 0},
		{"arg empty", func(c *Config) { tm(c).Args = append(tm(c).Args, "") }, tmpl + "args[1]", 0},
		{"duplicate arg", func(c *Config) { tm(c).Args = append(tm(c).Args, "service") }, tmpl + "args[1]", 0},
		{"variable not an identifier", func(c *Config) { tm(c).Variables = append(tm(c).Variables, "pod.name") }, tmpl + "variables[1]", 0},
		{"duplicate variable", func(c *Config) { tm(c).Variables = append(tm(c).Variables, "version") }, tmpl + "variables[1]", 0},
		{"no checks", func(c *Config) { tm(c).Checks = nil }, tmpl + "checks", 0},
		{"check name empty", func(c *Config) { check(c, 2).Name = "" }, tmpl + "checks[2].name", 0},
		{"duplicate check name", func(c *Config) { check(c, 2).Name = "error-rate" }, tmpl + "checks[2] (error-rate).name", 0},
		{"unknown kind", func(c *Config) { check(c, 2).Kind = "gauge" }, value + "kind", 0},
		{"empty kind", func(c *Config) { check(c, 2).Kind = "" }, value + "kind", 0},
		{"ratio without errors", func(c *Config) { check(c, 0).Errors = "" }, ratio + "errors", 0},
		{"ratio with blank total", func(c *Config) { check(c, 0).Total = "  " }, ratio + "total", 0},
		{"ratio with buckets", func(c *Config) { check(c, 0).Buckets = "b" }, ratio + "buckets", 0},
		{"ratio with quantile", func(c *Config) { check(c, 0).Quantile = 0.5 }, ratio + "quantile", 0},
		{"ratio with query", func(c *Config) { check(c, 0).Query = "q" }, ratio + "query", 0},
		{"histogram without buckets", func(c *Config) { check(c, 1).Buckets = "" }, hist + "buckets", 0},
		{"histogram quantile 0", func(c *Config) { check(c, 1).Quantile = 0 }, hist + "quantile", 0},
		{"histogram quantile 1", func(c *Config) { check(c, 1).Quantile = 1 }, hist + "quantile", 0},
		{"histogram quantile NaN", func(c *Config) { check(c, 1).Quantile = math.NaN() }, hist + "quantile", 0},
		{"histogram with errors", func(c *Config) { check(c, 1).Errors = "e" }, hist + "errors", 0},
		{"histogram with total", func(c *Config) { check(c, 1).Total = "t" }, hist + "total", 0},
		{"histogram with query", func(c *Config) { check(c, 1).Query = "q" }, hist + "query", 0},
		{"value without query", func(c *Config) { check(c, 2).Query = "" }, value + "query", 0},
		{"value with errors", func(c *Config) { check(c, 2).Errors = "e" }, value + "errors", 0},
		{"value with total", func(c *Config) { check(c, 2).Total = "t" }, value + "total", 0},
		{"value with buckets", func(c *Config) { check(c, 2).Buckets = "b" }, value + "buckets", 0},
		{"value with quantile", func(c *Config) { check(c, 2).Quantile = 0.9 }, value + "quantile", 0},
		{"value with minSamples", func(c *Config) { check(c, 2).MinSamples = 10 }, value + "minSamples", 0},
		{"minSamples negative", func(c *Config) { check(c, 0).MinSamples = -1 }, ratio + "minSamples", 0},
		{"failureLimit negative", func(c *Config) { check(c, 0).FailureLimit = -1 }, ratio + "failureLimit", 0},
		{"no guards", func(c *Config) { check(c, 0).Guards = nil }, ratio + "guards", 0},
		{"measure delta against nothing", func(c *Config) { guard(c, 2, 0).Measure = rollout.MeasureDelta }, value + "guards[0].measure", 0},
		{"measure value against stable", func(c *Config) { guard(c, 0, 0).Measure = rollout.MeasureValue }, ratio + "guards[0].measure", 0},
		{"measure empty against baseline", func(c *Config) { guard(c, 0, 1).Measure = "" }, ratio + "guards[1].measure", 0},
		{"unknown measure against baseline", func(c *Config) { guard(c, 0, 1).Measure = "percent" }, ratio + "guards[1].measure", 0},
		{"against canary", func(c *Config) { guard(c, 0, 1).Against = "canary" }, ratio + "guards[1].against", 0},
		{"no bounds", func(c *Config) { guard(c, 2, 0).Min, guard(c, 2, 0).Max = nil, nil }, value + "guards[0].max", 0},
		{"min equal to max", func(c *Config) { guard(c, 2, 0).Min = num(0.7) }, value + "guards[0].min", 0},
		{"min above max", func(c *Config) { guard(c, 2, 0).Min = num(0.8) }, value + "guards[0].min", 0},
		{"max NaN", func(c *Config) { guard(c, 0, 0).Max = num(math.NaN()) }, ratio + "guards[0].max", 0},
		{"min NaN", func(c *Config) { guard(c, 2, 0).Min = num(math.NaN()) }, value + "guards[0].min", 0},
		{"fromWeight above 100", func(c *Config) { guard(c, 1, 0).FromWeight = 101 }, hist + "guards[0].fromWeight", 0},
		{"fromWeight negative", func(c *Config) { guard(c, 1, 0).FromWeight = -1 }, hist + "guards[0].fromWeight", 0},
		{"fromStep negative", func(c *Config) { guard(c, 1, 0).FromStep = -1 }, hist + "guards[0].fromStep", 0},
		// placeholders (compare.CompileTemplate)
		{"undeclared argument", func(c *Config) {
			check(c, 0).Total = `http_requests_total{team={{ arg "team" }}}`
		}, ratio + "total", 0},
		{"undeclared variable", func(c *Config) { check(c, 2).Query = `avg(cpu{pod={{ var "pod" }}})` }, value + "query", 0},
		{"quoted placeholder", func(c *Config) { check(c, 1).Buckets = `b{version="{{ var "version" }}"}` }, hist + "buckets", 0},
		{"placeholder inside a string", func(c *Config) { check(c, 1).Buckets = `b{version=~"v{{ var "version" }}.*"}` }, hist + "buckets", 0},
		{"unknown placeholder", func(c *Config) { check(c, 2).Query = `avg(cpu{pod={{ .Pod }}})` }, value + "query", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			errs := Errors(err)
			want := max(tc.count, 1)
			require.Len(t, errs, want, "%v", err)
			for _, e := range errs {
				require.True(t, strings.HasPrefix(e.Error(), tc.field), "%q should start with %q", e.Error(), tc.field)
				require.NotContains(t, e.Error(), "\n")
			}
		})
	}
}

// TestValidateFromYAML: the same rules reach a file, with its field paths, all at once.
func TestSeveralErrorsAtOnce(t *testing.T) {
	_, err := Load("testdata/many-errors.yaml")
	require.Error(t, err)
	var got []string
	for _, e := range Errors(err) {
		got = append(got, e.Error())
	}
	for _, want := range []string{
		"nats.subjectPrefix: ",
		"nats.replicas: ",
		"prometheus.timeout: ",
		"log.level: ",
		"templates[0] (x).interval: ",
		"templates[0] (x).args[1]: duplicate",
		"templates[0] (x).checks[0] (error-rate).total: is required for a ratio check",
		"templates[0] (x).checks[0] (error-rate).guards[1].measure: ",
		"templates[0] (x).checks[0] (error-rate).guards[1].min: ",
		`templates[0] (x).checks[0] (error-rate).errors: placeholder {{arg "team"}} names argument "team"`,
		"templates[1] (x).name: duplicate template name",
		"templates[1] (x).checks: at least one check is needed",
	} {
		found := false
		for _, g := range got {
			if strings.Contains(g, want) {
				found = true
			}
		}
		require.True(t, found, "missing %q in:\n%s", want, strings.Join(got, "\n"))
	}
	require.Len(t, got, 12, strings.Join(got, "\n"))
}

func TestNaNFromYAML(t *testing.T) {
	cfg, err := Decode(strings.NewReader(`
templates:
  - name: t
    checks:
      - name: up
        kind: value
        query: up
        guards:
          - max: .nan
`))
	require.NoError(t, err)
	require.ErrorContains(t, cfg.Validate(), "templates[0] (t).checks[0] (up).guards[0].max: must be a number")
}

func TestTemplateLookup(t *testing.T) {
	c := validConfig()
	tm, ok := c.Template("x")
	require.True(t, ok)
	require.Equal(t, "x", tm.Name)
	_, ok = c.Template("y")
	require.False(t, ok)
}

func TestErrors(t *testing.T) {
	require.Nil(t, Errors(nil))
	c := validConfig()
	c.Log.Level, c.Log.Format = "loud", "xml"
	_, err := os.Stat("/nonexistent")
	require.Len(t, Errors(c.Validate()), 2)
	require.Equal(t, []error{err}, Errors(err))
}

func errorLines(err error) []string {
	var lines []string
	for _, e := range Errors(err) {
		lines = append(lines, e.Error())
	}
	return lines
}

// TestUnknownKeysDoNotHideOtherProblems: a file with unknown keys is still validated, and
// every problem is listed at once, each on its own line.
func TestUnknownKeysDoNotHideOtherProblems(t *testing.T) {
	_, err := Load("testdata/unknown-and-invalid.yaml")
	require.ErrorContains(t, err, "testdata/unknown-and-invalid.yaml")
	require.Equal(t, []string{
		`line 6: unknown key "tiemout" in prometheus`,
		`line 8: unknown key "colour" at the top level`,
		`http.addr: "nope" is not host:port (e.g. :8080)`,
		"templates: at least one analysis template is needed",
	}, errorLines(err))

	// Deep in a template, the path names the template, the check and the guard as Validate
	// does; and the guard that lost its only bound to the typo is reported too.
	_, err = Load("testdata/unknown-in-guard.yaml")
	lines := errorLines(err)
	require.Len(t, lines, 2, strings.Join(lines, "\n"))
	require.Equal(t, `line 8: unknown key "maximum" in templates[0] (t).checks[0] (cpu).guards[0]`, lines[0])
	require.True(t, strings.HasPrefix(lines[1], "templates[0] (t).checks[0] (cpu).guards[0].max: "), lines[1])

	// Several unknown keys on one line, in a flow mapping.
	_, err = Decode(strings.NewReader("prometheus: {url: http://p:9090, tiemout: 5s, concurency: 2}\ntemplates: []\n"))
	require.Equal(t, []string{
		`line 1: unknown key "tiemout" in prometheus`,
		`line 1: unknown key "concurency" in prometheus`,
		"templates: at least one analysis template is needed",
	}, errorLines(err))
}

func TestDecodeErrorsOnePerProblem(t *testing.T) {
	// Values of the wrong type are listed with the unknown keys, one a line; the file is not
	// validated then (templates would be reported missing).
	_, err := Decode(strings.NewReader("nats:\n  replicas: three\nprometheus:\n  tiemout: 5s\n  timeout: soon\n"))
	lines := errorLines(err)
	require.Len(t, lines, 3, strings.Join(lines, "\n"))
	require.Contains(t, lines[0], "line 2: cannot unmarshal")
	require.Equal(t, `line 4: unknown key "tiemout" in prometheus`, lines[1])
	require.Contains(t, lines[2], "line 5: cannot unmarshal")

	_, err = Decode(strings.NewReader("http:\n  addr: \":8080\"\n  addr: \":9090\"\nlog: {level: info, level: debug}\n"))
	require.Len(t, errorLines(err), 2, "%v", err)

	// A file that is not YAML stays one error.
	_, err = Decode(strings.NewReader("prometheus: [\ntemplates: {\n"))
	require.Len(t, Errors(err), 1)
	require.ErrorContains(t, err, "decode: yaml: ")

	// Unknown keys and a second document: both reported.
	_, err = Decode(strings.NewReader("colour: blue\n---\nhttp: {}\n"))
	require.Equal(t, []string{
		`line 1: unknown key "colour" at the top level`,
		"decode: the file holds more than one YAML document",
	}, errorLines(err))
}

func TestReadFileDoesNotValidate(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("prometheus:\n  url: ftp://nope\n"), 0o600))

	cfg, err := ReadFile(bad)
	require.NoError(t, err)
	require.Equal(t, "ftp://nope", cfg.Prometheus.URL)
	_, err = Load(bad)
	require.ErrorContains(t, err, "config "+bad+": ")
	require.ErrorContains(t, err, "prometheus.url: ")

	// The overrides apply in order after decoding.
	cfg, err = ReadFile(bad,
		func(c *Config) { c.Prometheus.URL = "http://first:9090" },
		func(c *Config) { c.Prometheus.URL += "/x" })
	require.NoError(t, err)
	require.Equal(t, "http://first:9090/x", cfg.Prometheus.URL)

	// With an unknown key, the validation that comes with it sees the overrides.
	typo := filepath.Join(dir, "typo.yaml")
	require.NoError(t, os.WriteFile(typo, []byte("prometheus:\n  url: ftp://nope\n  tiemout: 5s\n"), 0o600))
	_, err = ReadFile(typo, func(c *Config) { c.Prometheus.URL = "http://ok:9090" })
	require.Equal(t, []string{
		`line 3: unknown key "tiemout" in prometheus`,
		"templates: at least one analysis template is needed",
	}, errorLines(err))
	require.ErrorContains(t, err, "config "+typo+": ")

	_, err = ReadFile(filepath.Join(dir, "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestTemplateDefaultsStatistics: ratio and histogram checks get the sequential test with its
// defaults, value checks none; limits get theirs; values set in the file, zero included, win.
func TestTemplateDefaultsStatistics(t *testing.T) {
	cfg, err := Decode(strings.NewReader(`
templates:
  - name: t
    args: [service]
    checks:
      - name: errors
        kind: ratio
        errors: e{service={{ arg "service" }}}
        total: t{service={{ arg "service" }}}
      - name: p95
        kind: histogram
        quantile: 0.95
        buckets: b_bucket{service={{ arg "service" }}}
        consecutiveErrorLimit: 0
        onErrorLimit: rollback
        sequential:
          margin: 0
          against: [stable, baseline]
      - name: cpu
        kind: value
        query: avg(cpu{service={{ arg "service" }}})
        guards: [{max: 0.7}]
`))
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	tm := cfg.Templates[0]
	require.Equal(t, rollout.DefaultAlpha, tm.Alpha)

	ratio := tm.Checks[0]
	require.True(t, ratio.Sequential.On())
	require.Equal(t, []rollout.Reference{rollout.AgainstStable}, ratio.Sequential.Against)
	require.Equal(t, rollout.DefaultMargin, *ratio.Sequential.Margin)
	require.Equal(t, rollout.DefaultTolerance, *ratio.Sequential.Tolerance)
	require.Equal(t, rollout.DefaultPriorScale, ratio.Sequential.PriorScale)
	require.Equal(t, rollout.DefaultConsecutiveErrorLimit, *ratio.ConsecutiveErrorLimit)
	require.Equal(t, rollout.EscalatePause, ratio.OnErrorLimit)
	require.Equal(t, rollout.EscalatePause, ratio.OnInconclusiveLimit)
	require.Equal(t, rollout.NoDataPause, ratio.NoData)

	hist := tm.Checks[1]
	require.Zero(t, *hist.Sequential.Margin, "an explicit margin of 0 is kept")
	require.Nil(t, hist.Sequential.Tolerance, "tolerance is for ratio checks")
	require.Equal(t, []rollout.Reference{rollout.AgainstStable, rollout.AgainstBaseline}, hist.Sequential.Against)
	require.Zero(t, *hist.ConsecutiveErrorLimit, "an explicit limit of 0 is kept")
	require.Equal(t, rollout.EscalateRollback, hist.OnErrorLimit)

	require.Nil(t, tm.Checks[2].Sequential, "value checks run no sequential test")
}

func TestStateSettings(t *testing.T) {
	d := Default()
	require.Equal(t, "ANALYZERD_STATE", d.State.Bucket)
	require.Equal(t, 15*time.Second, d.State.Lease)
	require.Empty(t, d.State.ReplicaID, "the host name by default")

	c := Default()
	c.Templates = []rollout.Template{validTemplate()}
	c.State = State{Bucket: "state.bucket", ReplicaID: "pod 1", Lease: time.Second, EndedTTL: time.Second}
	var fields []string
	for _, err := range Errors(c.Validate()) {
		fields = append(fields, strings.SplitN(err.Error(), ":", 2)[0])
	}
	require.Equal(t, []string{"state.bucket", "state.replicaID", "state.lease", "state.endedTTL"}, fields)

	cfg, err := Decode(strings.NewReader("state:\n  replicaID: analyzerd-0\n  lease: 20s\n"))
	require.NoError(t, err)
	require.Equal(t, "analyzerd-0", cfg.State.ReplicaID)
	require.Equal(t, 20*time.Second, cfg.State.Lease)
	require.Equal(t, "ANALYZERD_STATE", cfg.State.Bucket, "defaults stay for the keys not given")
}
