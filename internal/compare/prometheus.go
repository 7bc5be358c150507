package compare

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/analyzerd/analyzerd/internal/telemetry"
)

// PrometheusOptions configure the Prometheus source. Secrets are read from files at each
// request, so that rotated credentials are picked up, and never logged.
type PrometheusOptions struct {
	URL     string
	Timeout time.Duration
	// BearerTokenFile holds a token sent as "Authorization: Bearer <token>".
	BearerTokenFile string
	// BasicAuthUsername and BasicAuthPasswordFile configure HTTP basic auth.
	BasicAuthUsername     string
	BasicAuthPasswordFile string
	// BearerToken and BasicAuthPassword are secrets given as such (from the environment),
	// for when there is no file; a file wins.
	BearerToken       string
	BasicAuthPassword string
	TLS               TLSOptions
	// Concurrency bounds the queries of one batch that run at once.
	Concurrency int
	Registerer  prometheus.Registerer
	// TracerProvider makes a span of every query, a child of the evaluation's span in the
	// query's context; nil makes none.
	TracerProvider trace.TracerProvider
}

// TLSOptions configure TLS to the metrics source.
type TLSOptions struct {
	CAFile             string
	CertFile           string
	KeyFile            string
	ServerName         string
	InsecureSkipVerify bool
}

// Prometheus is a Source over the Prometheus HTTP API (or any compatible one: Thanos,
// Mimir, VictoriaMetrics).
type Prometheus struct {
	client      *apiClient
	auth        *authRoundTripper // nil without credentials
	timeout     time.Duration
	concurrency int
	duration    *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	lastOK      atomic.Int64 // unix nanoseconds of the last successful query
	tracer      trace.Tracer
	host        string
}

// NewPrometheus builds the source. It does not contact Prometheus.
func NewPrometheus(opts PrometheusOptions) (*Prometheus, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus url %q: want http(s)://host[:port][/path]", redactURL(opts.URL))
	}
	if u.User != nil {
		return nil, errors.New("prometheus url: credentials in the URL are not allowed; use basic auth with a password file")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	tlsConfig, err := opts.TLS.config()
	if err != nil {
		return nil, err
	}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: opts.Concurrency,
		IdleConnTimeout:     90 * time.Second,
	}
	var rt http.RoundTripper = transport
	var auth *authRoundTripper
	if opts.BearerTokenFile != "" || opts.BearerToken != "" || opts.BasicAuthUsername != "" {
		auth = &authRoundTripper{next: transport, tokenFile: opts.BearerTokenFile, token: opts.BearerToken,
			username: opts.BasicAuthUsername, passwordFile: opts.BasicAuthPasswordFile, password: opts.BasicAuthPassword}
		rt = auth
	}
	client, err := api.NewClient(api.Config{Address: opts.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	p := &Prometheus{
		tracer:      tp.Tracer("github.com/analyzerd/analyzerd/internal/compare"),
		host:        u.Hostname(),
		client:      &apiClient{api: client, http: &http.Client{Transport: rt}},
		auth:        auth,
		timeout:     opts.Timeout,
		concurrency: opts.Concurrency,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "analyzerd_query_duration_seconds",
			Help:    "Duration of queries to the metrics source, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "analyzerd_query_errors_total",
			Help: "Queries to the metrics source that failed, by reason.",
		}, []string{"reason"}),
	}
	if p.duration, err = telemetry.Register(opts.Registerer, p.duration); err != nil {
		return nil, err
	}
	if p.errors, err = telemetry.Register(opts.Registerer, p.errors); err != nil {
		return nil, err
	}
	// Every label value exists from the start, so that alerts and rate() see zeros, not
	// absent series, before the first failure.
	for _, outcome := range []string{"ok", "error"} {
		p.duration.WithLabelValues(outcome)
	}
	for _, reason := range queryErrorReasons {
		p.errors.WithLabelValues(reason)
	}
	return p, nil
}

// queryErrorReasons are the values of analyzerd_query_errors_total's reason label.
var queryErrorReasons = []string{"unreachable", "timeout", "server_error", "client_error", "bad_query", "credentials", "bad_result", "other"}

func (o TLSOptions) config() (*tls.Config, error) {
	c := &tls.Config{ServerName: o.ServerName, InsecureSkipVerify: o.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("prometheus tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("prometheus tls ca file %s: no certificate found", o.CAFile)
		}
		c.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("prometheus tls: certFile and keyFile go together")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("prometheus tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// authRoundTripper adds credentials read from files. It clones the request, as
// http.RoundTripper requires. It remembers the secrets it sent lately, so that an error
// message in which a server echoes one can be cleaned.
type authRoundTripper struct {
	next         http.RoundTripper
	tokenFile    string
	token        string // when there is no tokenFile
	username     string
	passwordFile string
	password     string // when there is no passwordFile

	mu     sync.Mutex
	recent []string
}

// maxRecentSecrets bounds the secrets remembered across rotations.
const maxRecentSecrets = 6

func (a *authRoundTripper) remember(secrets ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range secrets {
		if s == "" || slices.Contains(a.recent, s) {
			continue
		}
		a.recent = append(a.recent, s)
		if len(a.recent) > maxRecentSecrets {
			a.recent = a.recent[1:]
		}
	}
}

// redact cuts every secret sent lately out of err's message. The result still matches the
// sentinels and context errors err matched.
func (a *authRoundTripper) redact(err error) error {
	if a == nil || err == nil {
		return err
	}
	a.mu.Lock()
	secrets := slices.Clone(a.recent)
	a.mu.Unlock()
	// Longest first, so that a secret containing another is cut whole.
	slices.SortFunc(secrets, func(x, y string) int { return len(y) - len(x) })
	msg := err.Error()
	clean := msg
	for _, s := range secrets {
		clean = strings.ReplaceAll(clean, s, "<redacted>")
	}
	if clean == msg {
		return err
	}
	var kinds []error
	for _, k := range []error{ErrUnavailable, ErrBadQuery, context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, k) {
			kinds = append(kinds, k)
		}
	}
	return &redactedError{msg: clean, kinds: kinds}
}

// redactedError is an error whose message had secrets cut out. It unwraps only to the
// sentinels the original matched, never to the original.
type redactedError struct {
	msg   string
	kinds []error
}

func (e *redactedError) Error() string   { return e.msg }
func (e *redactedError) Unwrap() []error { return e.kinds }

func (a *authRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	token := a.token
	if a.tokenFile != "" {
		t, err := readSecret(a.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: bearer token file: %w", ErrUnavailable, err)
		}
		token = t
	}
	if token != "" {
		a.remember(token)
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if a.username != "" {
		password := a.password
		if a.passwordFile != "" {
			p, err := readSecret(a.passwordFile)
			if err != nil {
				return nil, fmt.Errorf("%w: basic auth password file: %w", ErrUnavailable, err)
			}
			password = p
		}
		a.remember(password, base64.StdEncoding.EncodeToString([]byte(a.username+":"+password)))
		req.SetBasicAuth(a.username, password)
	}
	return a.next.RoundTrip(req)
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// The path is configuration, not a secret; the content never appears in errors.
		return "", fmt.Errorf("read %s: %w", path, errors.Unwrap(err))
	}
	return strings.TrimSpace(string(b)), nil
}

// Query runs the batch, at most Concurrency queries at once, each under the source's timeout.
func (p *Prometheus) Query(ctx context.Context, reqs []Request) []Response {
	out := make([]Response, len(reqs))
	sem := make(chan struct{}, p.concurrency)
	var wg sync.WaitGroup
	for i, r := range reqs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			out[i] = Response{Err: fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())}
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = p.query(ctx, r)
		}()
	}
	wg.Wait()
	return out
}

// query runs one instant query, in a span of its own: the rendered PromQL (which holds
// template text and escaped event values, never a credential), the evaluation time, the
// number of series or the (redacted) error. The span's duration is the query's.
func (p *Prometheus) query(ctx context.Context, r Request) Response {
	ctx, span := p.tracer.Start(ctx, "query", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		semconv.DBSystemNameKey.String("prometheus"),
		semconv.DBQueryTextKey.String(r.Expr),
		semconv.ServerAddressKey.String(p.host),
		attribute.String("analyzerd.query.time", r.Time.UTC().Format(time.RFC3339Nano)),
	))
	defer span.End()
	resp, reason := p.run(ctx, r)
	if resp.Err != nil {
		span.SetStatus(codes.Error, resp.Err.Error())
		span.SetAttributes(attribute.String("error.type", reason))
		return resp
	}
	span.SetAttributes(semconv.DBResponseReturnedRowsKey.Int(len(resp.Series)))
	return resp
}

func (p *Prometheus) run(ctx context.Context, r Request) (Response, string) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	start := time.Now()
	series, err := instant(ctx, p.client, r.Expr, r.Time, p.timeout)
	if errors.Is(err, ErrBadQuery) {
		// Answered, with a result of a type checks cannot read (a string).
		p.errors.WithLabelValues("bad_result").Inc()
		p.duration.WithLabelValues("ok").Observe(time.Since(start).Seconds())
		return Response{Err: p.auth.redact(err)}, "bad_result"
	}
	if err != nil {
		err, reason := classify(err)
		p.errors.WithLabelValues(reason).Inc()
		p.duration.WithLabelValues("error").Observe(time.Since(start).Seconds())
		// A server may echo the credentials it rejects; they must not reach a reading,
		// a verdict, a span or a log.
		return Response{Err: p.auth.redact(err)}, reason
	}
	p.duration.WithLabelValues("ok").Observe(time.Since(start).Seconds())
	p.lastOK.Store(time.Now().UnixNano())
	return Response{Series: series}, ""
}

// pingFresh is how recent a successful query must be for Ping not to ask again.
const pingFresh = 30 * time.Second

// Ping reports whether Prometheus answered recently: a query within the last 30 s, or else
// a trivial query now.
func (p *Prometheus) Ping(ctx context.Context) error {
	if time.Since(time.Unix(0, p.lastOK.Load())) < pingFresh {
		return nil
	}
	resp, _ := p.run(ctx, Request{Expr: "vector(1)", Time: time.Now()})
	return resp.Err
}

// classify wraps a client error in the matching sentinel and names a bounded reason.
func classify(err error) (error, string) {
	var apiErr *v1.Error
	if errors.As(err, &apiErr) {
		switch apiErr.Type {
		case v1.ErrBadData, v1.ErrExec:
			return fmt.Errorf("%w: %s", ErrBadQuery, oneLine(apiErr.Msg)), "bad_query"
		case v1.ErrTimeout, v1.ErrCanceled:
			return fmt.Errorf("%w: %s: %s", ErrUnavailable, apiErr.Type, oneLine(apiErr.Msg)), "timeout"
		case v1.ErrServer:
			return fmt.Errorf("%w: server error: %s", ErrUnavailable, oneLine(apiErr.Msg)), "server_error"
		case v1.ErrClient:
			return fmt.Errorf("%w: %s", ErrUnavailable, oneLine(apiErr.Msg)), "client_error"
		}
		return fmt.Errorf("%w: %s: %s", ErrUnavailable, apiErr.Type, oneLine(apiErr.Msg)), "other"
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err), "timeout"
	}
	if errors.Is(err, ErrUnavailable) {
		return err, "credentials"
	}
	return fmt.Errorf("%w: %s", ErrUnavailable, oneLine(err.Error())), "unreachable"
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// redactURL drops any userinfo so that an invalid URL can be named in an error. Whatever
// precedes the last '@' goes, parsed or not: "user:pass@host:9090" parses as scheme "user"
// with the password in its opaque part.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		u.User = nil
		raw = u.String()
	}
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		return "…" + raw[i:]
	}
	return raw
}
