package compare

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// An httptest server answering canned JSON: for the client's error paths only (DESIGN.md).

const vectorJSON = `{"status":"success","data":{"resultType":"vector","result":[
	{"metric":{"le":"0.1"},"value":[1764079390.12,"42"]},
	{"metric":{"le":"+Inf"},"value":[1764079390.12,"50"]}]}}`

// request is what the fake Prometheus saw.
type request struct {
	method, path string
	form         map[string]string
	header       http.Header
}

// promServer answers every request with status and body, recording it.
type promServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []request
}

func newPromServer(t *testing.T, status int, body string) *promServer {
	t.Helper()
	s := &promServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.record(t, r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *promServer) record(t *testing.T, r *http.Request) {
	require.NoError(t, r.ParseForm())
	form := map[string]string{}
	for k := range r.Form {
		form[k] = r.Form.Get(k)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, request{method: r.Method, path: r.URL.Path, form: form, header: r.Header.Clone()})
}

func (s *promServer) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.seen...)
}

func newProm(t *testing.T, opts PrometheusOptions) *Prometheus {
	t.Helper()
	p, err := NewPrometheus(opts)
	require.NoError(t, err)
	return p
}

func queryOne(p *Prometheus, expr string) Response {
	return p.Query(context.Background(), []Request{{Expr: expr, Time: at}})[0]
}

func TestPrometheusVector(t *testing.T) {
	srv := newPromServer(t, http.StatusOK, vectorJSON)
	p := newProm(t, PrometheusOptions{URL: srv.URL, Timeout: 5 * time.Second})
	resp := queryOne(p, `sum by (le) (x{a="b"})`)
	require.NoError(t, resp.Err)
	require.Equal(t, []Series{
		{Labels: map[string]string{"le": "0.1"}, Value: 42},
		{Labels: map[string]string{"le": "+Inf"}, Value: 50},
	}, resp.Series)

	reqs := srv.requests()
	require.Len(t, reqs, 1)
	require.Equal(t, "/api/v1/query", reqs[0].path)
	require.Equal(t, `sum by (le) (x{a="b"})`, reqs[0].form["query"])
	ts, err := strconv.ParseFloat(reqs[0].form["time"], 64)
	require.NoError(t, err)
	require.Equal(t, float64(at.Unix()), ts, "the query is evaluated at the request's time")
	require.Equal(t, "5s", reqs[0].form["timeout"])
	require.Empty(t, reqs[0].header.Get("Authorization"))
}

func TestPrometheusResults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   string
		series []Series
		bad    bool
	}{
		{"empty vector", `{"status":"success","data":{"resultType":"vector","result":[]}}`, []Series{}, false},
		{"scalar", `{"status":"success","data":{"resultType":"scalar","result":[1764079390,"3.5"]}}`,
			[]Series{{Labels: map[string]string{}, Value: 3.5}}, false},
		{"NaN scalar is no series", `{"status":"success","data":{"resultType":"scalar","result":[1764079390,"NaN"]}}`, nil, false},
		{"empty matrix", `{"status":"success","data":{"resultType":"matrix","result":[]}}`, []Series{}, false},
		{"matrix holds raw samples, oldest first", `{"status":"success","data":{"resultType":"matrix","result":[` +
			`{"metric":{"pod":"a"},"values":[[1764079375.5,"10"],[1764079390,"12.5"]]}]}}`,
			[]Series{
				{Labels: map[string]string{"pod": "a"}, Samples: []Sample{
					{T: 1764079375500, V: 10}, {T: 1764079390000, V: 12.5}}},
			}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProm(t, PrometheusOptions{URL: newPromServer(t, http.StatusOK, tc.body).URL})
			resp := queryOne(p, "x")
			if tc.bad {
				require.ErrorIs(t, resp.Err, ErrBadQuery)
				return
			}
			require.NoError(t, resp.Err)
			require.Equal(t, tc.series, resp.Series)
		})
	}
}

func TestPrometheusErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		body     string
		sentinel error
		reason   string
		contains string
	}{
		{"bad_data (400) is a bad query", http.StatusBadRequest,
			`{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \"}\""}`,
			ErrBadQuery, "bad_query", "parse error"},
		{"execution (422) is a bad query", http.StatusUnprocessableEntity,
			`{"status":"error","errorType":"execution","error":"vector cannot contain metrics with the same labelset"}`,
			ErrBadQuery, "bad_query", "same labelset"},
		{"503 is unavailable", http.StatusServiceUnavailable,
			`{"status":"error","errorType":"unavailable","error":"TSDB not ready"}`,
			ErrUnavailable, "server_error", "503"},
		{"500 with a text body is unavailable", http.StatusInternalServerError, "oops\n", ErrUnavailable, "server_error", "500"},
		{"502 from a proxy is unavailable", http.StatusBadGateway, "<html>bad gateway</html>", ErrUnavailable, "server_error", "502"},
		{"timeout (503 JSON) is unavailable", http.StatusServiceUnavailable,
			`{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}`,
			ErrUnavailable, "server_error", "503"},
		{"400 with a body that is not JSON is unavailable", http.StatusBadRequest, "<html>no</html>", ErrUnavailable, "client_error", "400"},
		{"200 with a body that is not JSON is unavailable", http.StatusOK, "<html>login</html>", ErrUnavailable, "other", ""},
		{"404 (wrong path prefix) is unavailable", http.StatusNotFound, "404 page not found", ErrUnavailable, "client_error", "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			p := newProm(t, PrometheusOptions{URL: newPromServer(t, tc.status, tc.body).URL, Registerer: reg})
			resp := queryOne(p, "x")
			require.ErrorIs(t, resp.Err, tc.sentinel)
			other := ErrUnavailable
			if tc.sentinel == ErrUnavailable {
				other = ErrBadQuery
			}
			require.NotErrorIs(t, resp.Err, other)
			require.Contains(t, resp.Err.Error(), tc.contains)
			require.NotContains(t, resp.Err.Error(), "\n")
			require.Nil(t, resp.Series)
			require.Equal(t, 1.0, counterValue(t, reg, "analyzerd_query_errors_total", "reason", tc.reason))
		})
	}
}

func TestPrometheusConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	reg := prometheus.NewRegistry()
	p := newProm(t, PrometheusOptions{URL: url, Registerer: reg})
	resp := queryOne(p, "x")
	require.ErrorIs(t, resp.Err, ErrUnavailable)
	require.Equal(t, 1.0, counterValue(t, reg, "analyzerd_query_errors_total", "reason", "unreachable"))
}

func TestPrometheusTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm() // with the body read, the server notices when the client hangs up
		select {          // never answers
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first
	reg := prometheus.NewRegistry()
	p := newProm(t, PrometheusOptions{URL: srv.URL, Timeout: 50 * time.Millisecond, Registerer: reg})
	resp := queryOne(p, "x")
	require.ErrorIs(t, resp.Err, ErrUnavailable)
	require.ErrorIs(t, resp.Err, context.DeadlineExceeded)
	require.Equal(t, 1.0, counterValue(t, reg, "analyzerd_query_errors_total", "reason", "timeout"))
}

func TestPrometheusCancelled(t *testing.T) {
	srv := newPromServer(t, http.StatusOK, vectorJSON)
	p := newProm(t, PrometheusOptions{URL: srv.URL, Concurrency: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resps := p.Query(ctx, []Request{{Expr: "a"}, {Expr: "b"}, {Expr: "c"}})
	require.Len(t, resps, 3)
	for _, r := range resps {
		require.ErrorIs(t, r.Err, ErrUnavailable)
		require.ErrorIs(t, r.Err, context.Canceled)
	}
}

// TestPrometheusBatch: every request is answered, in order, at most Concurrency at once.
func TestPrometheusBatch(t *testing.T) {
	var inFlight, most atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		if strings.HasPrefix(r.FormValue("query"), "bad") {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"status":"error","errorType":"bad_data","error":"nope"}`)
			return
		}
		_, _ = fmt.Fprintf(w, `{"status":"success","data":{"resultType":"scalar","result":[1,"%s"]}}`, r.FormValue("query"))
	}))
	t.Cleanup(srv.Close)
	p := newProm(t, PrometheusOptions{URL: srv.URL, Concurrency: 3})
	var reqs []Request
	for i := 0; i < 30; i++ {
		expr := strconv.Itoa(i)
		if i%7 == 0 {
			expr = "bad" + expr
		}
		reqs = append(reqs, Request{Expr: expr, Time: at})
	}
	resps := p.Query(context.Background(), reqs)
	require.Len(t, resps, len(reqs))
	for i, r := range resps {
		if i%7 == 0 {
			require.ErrorIs(t, r.Err, ErrBadQuery, "request %d", i)
			continue
		}
		require.NoError(t, r.Err, "request %d", i)
		require.Equal(t, []Series{{Labels: map[string]string{}, Value: float64(i)}}, r.Series, "request %d", i)
	}
	require.LessOrEqual(t, most.Load(), int64(3))
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

const (
	secretToken = "tok-9f8e7d6c5b4a-SECRET"
	password    = "pw-hunter2-SECRET"
)

func TestPrometheusBearerToken(t *testing.T) {
	srv := newPromServer(t, http.StatusOK, vectorJSON)
	tokenFile := writeFile(t, "token", secretToken+"\n")
	p := newProm(t, PrometheusOptions{URL: srv.URL, BearerTokenFile: tokenFile})
	require.NoError(t, queryOne(p, "x").Err)

	// The file is read at each request: a rotated token is picked up.
	require.NoError(t, os.WriteFile(tokenFile, []byte("rotated-"+secretToken), 0o600))
	require.NoError(t, queryOne(p, "x").Err)

	reqs := srv.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, "Bearer "+secretToken, reqs[0].header.Get("Authorization"))
	require.Equal(t, "Bearer rotated-"+secretToken, reqs[1].header.Get("Authorization"))
}

func TestPrometheusBasicAuth(t *testing.T) {
	srv := newPromServer(t, http.StatusOK, vectorJSON)
	p := newProm(t, PrometheusOptions{URL: srv.URL, BasicAuthUsername: "analyzerd",
		BasicAuthPasswordFile: writeFile(t, "password", password+"\n")})
	require.NoError(t, queryOne(p, "x").Err)
	reqs := srv.requests()
	require.Len(t, reqs, 1)
	r := &http.Request{Header: reqs[0].header}
	user, pass, ok := r.BasicAuth()
	require.True(t, ok)
	require.Equal(t, "analyzerd", user)
	require.Equal(t, password, pass)
}

// TestPrometheusSecretsNeverInErrors: whatever the server answers, even an error that echoes
// the credentials it was sent, no error message holds a secret.
func TestPrometheusSecretsNeverInErrors(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte("analyzerd:" + password))
	secrets := []string{secretToken, password, basic}
	echo := func(status int, jsonBody bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			auth := r.Header.Get("Authorization")
			_, pass, _ := r.BasicAuth()
			w.WriteHeader(status)
			if jsonBody {
				_, _ = fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"invalid credentials %s (password %s)"}`, auth, pass)
				return
			}
			_, _ = fmt.Fprintf(w, "invalid credentials %s (password %s)\n", auth, pass)
		}
	}
	for _, tc := range []struct {
		name     string
		handler  http.HandlerFunc
		sentinel error
	}{
		{"401 echoing the credentials", echo(http.StatusUnauthorized, false), ErrUnavailable},
		{"403 echoing the credentials", echo(http.StatusForbidden, false), ErrUnavailable},
		{"400 bad_data echoing the credentials", echo(http.StatusBadRequest, true), ErrBadQuery},
		{"422 echoing the credentials", echo(http.StatusUnprocessableEntity, true), ErrBadQuery},
		{"500 echoing the credentials", echo(http.StatusInternalServerError, false), ErrUnavailable},
	} {
		for _, auth := range []string{"bearer", "basic"} {
			t.Run(tc.name+" "+auth, func(t *testing.T) {
				srv := httptest.NewServer(tc.handler)
				t.Cleanup(srv.Close)
				opts := PrometheusOptions{URL: srv.URL}
				if auth == "bearer" {
					opts.BearerTokenFile = writeFile(t, "token", secretToken)
				} else {
					opts.BasicAuthUsername, opts.BasicAuthPasswordFile = "analyzerd", writeFile(t, "password", password)
				}
				resp := queryOne(newProm(t, opts), "x")
				require.ErrorIs(t, resp.Err, tc.sentinel)
				if tc.sentinel == ErrBadQuery {
					// The server's message is kept, with the secret cut out.
					require.Contains(t, resp.Err.Error(), "invalid credentials")
					require.Contains(t, resp.Err.Error(), "<redacted>")
				}
				for _, s := range secrets {
					require.NotContains(t, resp.Err.Error(), s)
				}
			})
		}
	}

	// A secret file that cannot be read is named by its path, and the source is unavailable.
	srv := newPromServer(t, http.StatusOK, vectorJSON)
	missing := filepath.Join(t.TempDir(), "no-such-token")
	resp := queryOne(newProm(t, PrometheusOptions{URL: srv.URL, BearerTokenFile: missing}), "x")
	require.ErrorIs(t, resp.Err, ErrUnavailable)
	require.Contains(t, resp.Err.Error(), "no-such-token")
	require.Empty(t, srv.requests(), "no request goes out without its credentials")

	resp = queryOne(newProm(t, PrometheusOptions{URL: srv.URL, BasicAuthUsername: "u", BasicAuthPasswordFile: missing}), "x")
	require.ErrorIs(t, resp.Err, ErrUnavailable)
	require.Contains(t, resp.Err.Error(), "basic auth password file")
}

func TestNewPrometheusRejectsURLs(t *testing.T) {
	for _, tc := range []struct {
		url    string
		secret string
	}{
		{"http://admin:" + password + "@prometheus:9090", password},
		{"https://admin:" + password + "@prometheus:9090/prefix", password},
		{"http://" + secretToken + "@prometheus:9090", secretToken},
		{"admin:" + password + "@prometheus:9090", password},
		{"ftp://admin:" + password + "@prometheus:9090", password},
		{"http://admin:" + password + "@prometheus:port", password},
		{"http://admin:" + password + "%zz@prometheus:9090", password},
		{"//admin:" + password + "@prometheus:9090", password},
		{"prometheus:9090", ""},
		{"", ""},
		{"http://", ""},
		{"unix:///var/run/prom.sock", ""},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := NewPrometheus(PrometheusOptions{URL: tc.url})
			require.Error(t, err)
			require.Contains(t, err.Error(), "prometheus url")
			if tc.secret != "" {
				require.NotContains(t, err.Error(), tc.secret)
			}
		})
	}
}

func TestNewPrometheusTLS(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  TLSOptions
		want string
	}{
		{"cert without key", TLSOptions{CertFile: "/x/cert.pem"}, "certFile and keyFile go together"},
		{"key without cert", TLSOptions{KeyFile: "/x/key.pem"}, "certFile and keyFile go together"},
		{"missing CA file", TLSOptions{CAFile: "/nonexistent/ca.pem"}, "prometheus tls ca file"},
		{"CA file without a certificate", TLSOptions{CAFile: writeFile(t, "ca.pem", "not a certificate")}, "no certificate found"},
		{"missing client certificate", TLSOptions{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}, "client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPrometheus(PrometheusOptions{URL: "https://prometheus:9090", TLS: tc.tls})
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestPrometheusMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ok := newPromServer(t, http.StatusOK, vectorJSON)
	p := newProm(t, PrometheusOptions{URL: ok.URL, Registerer: reg})
	require.NoError(t, queryOne(p, "x").Err)

	families, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	require.True(t, names["analyzerd_query_duration_seconds"], "%v", names)
	require.Equal(t, uint64(1), histogramCount(t, reg, "analyzerd_query_duration_seconds", "outcome", "ok"))

	// A second source on the same registry shares the metrics rather than failing.
	p2, err := NewPrometheus(PrometheusOptions{URL: ok.URL, Registerer: reg})
	require.NoError(t, err)
	require.NoError(t, queryOne(p2, "x").Err)
	require.Equal(t, uint64(2), histogramCount(t, reg, "analyzerd_query_duration_seconds", "outcome", "ok"))

	// A collector of the same name but another kind is still an error, not a panic.
	clash := prometheus.NewRegistry()
	clash.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "analyzerd_query_errors_total", Help: "x"}))
	_, err = NewPrometheus(PrometheusOptions{URL: ok.URL, Registerer: clash})
	require.ErrorContains(t, err, "registering metric")

	// No registerer: no metrics, still works.
	require.NoError(t, queryOne(newProm(t, PrometheusOptions{URL: ok.URL}), "x").Err)
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name, label, value string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
