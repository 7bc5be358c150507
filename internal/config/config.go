// Package config loads analyzerd's configuration: one YAML file, decoded strictly (an unknown
// key is an error), with every default set in Default and every rule checked by Validate.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Config is the whole configuration of the daemon.
type Config struct {
	NATS       NATS       `yaml:"nats"`
	Prometheus Prometheus `yaml:"prometheus"`
	HTTP       HTTP       `yaml:"http"`
	Ingest     Ingest     `yaml:"ingest"`
	Log        Log        `yaml:"log"`
	Tracing    Tracing    `yaml:"tracing"`
	State      State      `yaml:"state"`
	// ShutdownTimeout bounds a graceful stop: finishing evaluations in flight and flushing
	// verdicts not yet published.
	ShutdownTimeout time.Duration `yaml:"shutdownTimeout"`
	// Templates are the analysis templates rollout.started events may name.
	Templates []rollout.Template `yaml:"templates"`
}

// NATS configures the connection to NATS JetStream.
type NATS struct {
	// URL of the NATS server(s), comma-separated. Empty starts an embedded server.
	URL string `yaml:"url"`
	// SubjectPrefix is the first token of every subject (CONTRACT.md section 1).
	SubjectPrefix string   `yaml:"subjectPrefix"`
	Embedded      Embedded `yaml:"embedded"`
	// Replicas of the streams analyzerd creates (1 for one server, 3 for a cluster).
	Replicas int `yaml:"replicas"`
	// StreamMaxAge is how long events, verdicts and dead letters are kept.
	StreamMaxAge time.Duration `yaml:"streamMaxAge"`
	// ReconnectWait is the pause between reconnection attempts to an external server.
	ReconnectWait time.Duration `yaml:"reconnectWait"`
	// Auth and TLS apply to an external server only: the embedded one has neither.
	Auth NATSAuth `yaml:"auth"`
	TLS  NATSTLS  `yaml:"tls"`
}

// NATSAuth authenticates analyzerd to an external server, by one method at most. Secrets
// come only from files or the environment, never from this file.
type NATSAuth struct {
	// User goes with a password from PasswordFile or ANALYZERD_NATS_PASSWORD.
	User         string `yaml:"user"`
	PasswordFile string `yaml:"passwordFile"`
	// TokenFile holds a token; or ANALYZERD_NATS_TOKEN.
	TokenFile string `yaml:"tokenFile"`
	// NKeySeedFile holds a user NKey seed.
	NKeySeedFile string `yaml:"nkeySeedFile"`
	// CredentialsFile is a .creds file: a user JWT and its NKey seed.
	CredentialsFile string `yaml:"credentialsFile"`
}

// NATSTLS secures the connection to an external server.
type NATSTLS struct {
	CAFile string `yaml:"caFile"`
	// CertFile and KeyFile are a client certificate and its key, for servers that verify
	// clients.
	CertFile   string `yaml:"certFile"`
	KeyFile    string `yaml:"keyFile"`
	ServerName string `yaml:"serverName"`
}

// State configures where analyses are kept (a JetStream key-value bucket) and how replicas
// share them.
type State struct {
	// Bucket is the key-value bucket, created when missing (with nats.replicas replicas).
	Bucket string `yaml:"bucket"`
	// ReplicaID names this daemon as the owner of the rollouts it evaluates. Empty: the
	// host name. Replicas need distinct ones; a daemon restarted should keep its own, so
	// that it resumes its rollouts at once instead of after their lease.
	ReplicaID string `yaml:"replicaID"`
	// Lease is how long a replica owns a rollout without renewing it: when a replica dies,
	// its rollouts move to the others within a lease.
	Lease time.Duration `yaml:"lease"`
	// EndedTTL is how long what is left of an ended revision is kept (for a retry or a
	// revert of that revision to resume its sequence and evidence).
	EndedTTL time.Duration `yaml:"endedTTL"`
	// IdleExpiry ends, as aborted with reason "idle", an analysis whose latest start or step
	// event is older than it (a controller that never says the rollout ended); 0 never does.
	IdleExpiry time.Duration `yaml:"idleExpiry"`
}

// Embedded configures the embedded NATS server.
type Embedded struct {
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	StoreDir string `yaml:"storeDir"`
}

// Prometheus configures the metrics source.
type Prometheus struct {
	URL     string        `yaml:"url"`
	Timeout time.Duration `yaml:"timeout"`
	// BearerTokenFile holds a bearer token; the file is read at each request. Or
	// ANALYZERD_PROMETHEUS_BEARER_TOKEN.
	BearerTokenFile string    `yaml:"bearerTokenFile"`
	BasicAuth       BasicAuth `yaml:"basicAuth"`
	TLS             TLS       `yaml:"tls"`
	Concurrency     int       `yaml:"concurrency"`
}

// BasicAuth configures HTTP basic auth; the password only ever comes from a file or from
// ANALYZERD_PROMETHEUS_PASSWORD.
type BasicAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"passwordFile"`
}

// TLS configures TLS to the metrics source.
type TLS struct {
	CAFile             string `yaml:"caFile"`
	CertFile           string `yaml:"certFile"`
	KeyFile            string `yaml:"keyFile"`
	ServerName         string `yaml:"serverName"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// HTTP configures the HTTP server (metrics, health, read API, and the endpoints that write
// events: POST /v1/events, /v1/argo/analysis and Flagger's self-starting webhooks).
type HTTP struct {
	Addr string `yaml:"addr"`
	// WriteTokenFile holds the bearer token the endpoints that write events require, read
	// at start; or ANALYZERD_HTTP_WRITE_TOKEN. Without one they refuse every call, unless
	// AllowUnauthenticatedWrites.
	WriteTokenFile string `yaml:"writeTokenFile"`
	// AllowUnauthenticatedWrites opens the endpoints that write events to anyone who can
	// reach the HTTP server, when no token is configured (a trusted network, a demo).
	AllowUnauthenticatedWrites bool `yaml:"allowUnauthenticatedWrites"`
	// TraceURL is the address of a trace in a trace UI, {traceId} standing for a verdict's
	// trace id (https://jaeger.example/trace/{traceId}): the rollout page links each verdict
	// to its trace. Empty: no links.
	TraceURL string `yaml:"traceURL"`
}

// Ingest configures the event consumer.
type Ingest struct {
	// MaxEventBytes: a larger event is dead-lettered unread.
	MaxEventBytes int `yaml:"maxEventBytes"`
	// MaxDeliver is how often an event whose handling fails is delivered before it is
	// dead-lettered.
	MaxDeliver int `yaml:"maxDeliver"`
	// AckWait is how long a delivered event may stay unacknowledged before redelivery.
	AckWait time.Duration `yaml:"ackWait"`
	// MaxClockSkew is how far an event's time may lie from the time the stream stored it;
	// beyond it the stream's time is used.
	MaxClockSkew time.Duration `yaml:"maxClockSkew"`
}

// Tracing configures the export of the evaluations' spans with OTLP. Headers (which may
// hold credentials) come only from OTEL_EXPORTER_OTLP_HEADERS or
// OTEL_EXPORTER_OTLP_TRACES_HEADERS, never from this file.
type Tracing struct {
	// Endpoint is the OTLP receiver's URL: http:// for plaintext, https:// for TLS. Empty:
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, and no export
	// when neither is set.
	Endpoint string `yaml:"endpoint"`
	// Protocol is grpc or http/protobuf. Empty: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
	// OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.
	Protocol string `yaml:"protocol"`
	// SampleRatio is the share of evaluations whose spans are exported, in [0, 1].
	SampleRatio float64 `yaml:"sampleRatio"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// The environment variables that may hold a secret instead of a file.
const (
	EnvNATSPassword          = "ANALYZERD_NATS_PASSWORD"
	EnvNATSToken             = "ANALYZERD_NATS_TOKEN"
	EnvPrometheusBearerToken = "ANALYZERD_PROMETHEUS_BEARER_TOKEN"
	EnvPrometheusPassword    = "ANALYZERD_PROMETHEUS_PASSWORD"
	EnvHTTPWriteToken        = "ANALYZERD_HTTP_WRITE_TOKEN"
)

// Env looks an environment variable up as os.LookupEnv does, which a nil Env stands for.
// Tests pass their own rather than change the process's environment.
type Env func(key string) (string, bool)

// Value returns the variable's value trimmed of surrounding white space, as a secret read
// from a file is; "" when it is not set. A variable set to "" counts as not set.
func (e Env) Value(key string) string {
	if e == nil {
		e = os.LookupEnv
	}
	v, _ := e(key)
	return strings.TrimSpace(v)
}

// The defaults, in one place.
const (
	DefaultPrometheusURL   = "http://localhost:9090"
	DefaultHTTPAddr        = ":8080"
	DefaultSubjectPrefix   = "rollouts"
	DefaultInterval        = 10 * time.Second
	DefaultBaselineWindow  = 10 * time.Minute
	DefaultMinStepDuration = time.Minute
	DefaultRecentWindow    = time.Minute
	DefaultMinInterval     = time.Second
	DefaultSharedEscalate  = 15 * time.Minute
)

// Default returns the configuration with every default set and no templates.
func Default() Config {
	return Config{
		NATS: NATS{
			SubjectPrefix: DefaultSubjectPrefix,
			Embedded:      Embedded{Host: "127.0.0.1", Port: 4222, StoreDir: "data/nats"},
			Replicas:      1,
			StreamMaxAge:  7 * 24 * time.Hour,
			ReconnectWait: 2 * time.Second,
		},
		Prometheus:      Prometheus{URL: DefaultPrometheusURL, Timeout: 10 * time.Second, Concurrency: 8},
		HTTP:            HTTP{Addr: DefaultHTTPAddr},
		Ingest:          Ingest{MaxEventBytes: 64 << 10, MaxDeliver: 10, AckWait: 30 * time.Second, MaxClockSkew: 30 * time.Second},
		Log:             Log{Level: "info", Format: "json"},
		Tracing:         Tracing{SampleRatio: 1},
		State:           State{Bucket: "ANALYZERD_STATE", Lease: 15 * time.Second, EndedTTL: 7 * 24 * time.Hour, IdleExpiry: 24 * time.Hour},
		ShutdownTimeout: 15 * time.Second,
	}
}

// TemplateDefaults fills the unset fields of a template with their defaults.
func TemplateDefaults(t *rollout.Template) {
	if t.Interval == 0 {
		t.Interval = DefaultInterval
	}
	if t.BaselineWindow == 0 {
		t.BaselineWindow = DefaultBaselineWindow
	}
	if t.MinStepDuration == 0 {
		t.MinStepDuration = DefaultMinStepDuration
	}
	if t.Alpha == 0 {
		t.Alpha = rollout.DefaultAlpha
	}
	if t.RecentWindow == 0 {
		t.RecentWindow = DefaultRecentWindow
	}
	if t.MinInterval == 0 {
		t.MinInterval = DefaultMinInterval
		if t.Interval > 0 {
			t.MinInterval = min(t.MinInterval, t.Interval)
		}
	}
	if t.SharedDegradation.EscalateAfter == 0 {
		t.SharedDegradation.EscalateAfter = DefaultSharedEscalate
	}
	if t.SharedDegradation.Then == "" {
		t.SharedDegradation.Then = rollout.EscalatePause
	}
	for i := range t.Checks {
		c := &t.Checks[i]
		if c.ConsecutiveErrorLimit == nil {
			limit := rollout.DefaultConsecutiveErrorLimit
			c.ConsecutiveErrorLimit = &limit
		}
		if c.OnErrorLimit == "" {
			c.OnErrorLimit = rollout.EscalatePause
		}
		if c.OnInconclusiveLimit == "" {
			c.OnInconclusiveLimit = rollout.EscalatePause
		}
		if c.NoData == "" {
			c.NoData = rollout.NoDataPause
		}
		if c.Kind == rollout.KindRatio || c.Kind == rollout.KindHistogram {
			if c.Sequential == nil {
				c.Sequential = &rollout.Sequential{}
			}
			sequentialDefaults(c.Kind, c.Sequential)
		}
		for j := range c.Guards {
			if c.Guards[j].Against == rollout.AgainstNone && c.Guards[j].Measure == "" {
				c.Guards[j].Measure = rollout.MeasureValue
			}
		}
	}
}

func sequentialDefaults(kind rollout.CheckKind, s *rollout.Sequential) {
	if s.Enabled == nil {
		on := true
		s.Enabled = &on
	}
	if len(s.Against) == 0 {
		s.Against = []rollout.Reference{rollout.AgainstStable}
	}
	if s.Margin == nil {
		m := rollout.DefaultMargin
		s.Margin = &m
	}
	if s.Tolerance == nil && kind == rollout.KindRatio {
		tol := rollout.DefaultTolerance
		s.Tolerance = &tol
	}
	if s.PriorScale == 0 {
		s.PriorScale = rollout.DefaultPriorScale
	}
}

// Load reads, decodes and validates the file at path: ReadFile, then Validate.
func Load(path string) (Config, error) {
	cfg, err := ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ReadFile reads the file at path and decodes it strictly over the defaults, then applies
// the overrides (for example the daemon's flags) in order. It does not validate, so that an
// override can still fix a bad value; the caller validates the result.
//
// When the file has unknown keys, the error lists each of them and, with them, what Validate
// finds in the rest of the file with the overrides applied (see Decode).
func ReadFile(path string, overrides ...func(*Config)) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := decode(data, overrides)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Decode decodes YAML strictly over the defaults. It does not validate a file it can decode.
//
// It reports every problem at once. A value of the wrong type, or a key given twice, is one
// error per problem, each naming its line. An unknown key is one error per key, naming its
// line and where it is; and as an unknown key alone would hide the file's other problems, the
// file is then decoded again ignoring unknown keys and validated, and the error lists what
// Validate finds too. (With values of the wrong type as well, it is not validated: what a
// half-decoded file lacks would be reported twice, once wrongly.) A file that is not YAML is
// one error. Errors splits the error into its problems.
func Decode(r io.Reader) (Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Config{}, fmt.Errorf("read: %w", err)
	}
	return decode(data, nil)
}

var (
	errEmpty       = errors.New("the file is empty")
	errMultiDoc    = errors.New("decode: the file holds more than one YAML document")
	unknownKeyLine = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)
)

func decode(data []byte, overrides []func(*Config)) (Config, error) {
	cfg, err := decodeOnce(data, true)
	if err == nil {
		for _, o := range overrides {
			o(&cfg)
		}
		return cfg, nil
	}
	var typeErr *yaml.TypeError
	if !errors.As(err, &typeErr) {
		return Config{}, err
	}

	var errs []error
	unknown := false
	for _, msg := range typeErr.Errors {
		if m := unknownKeyLine.FindStringSubmatch(msg); m != nil {
			unknown = true
			line, _ := strconv.Atoi(m[1])
			errs = append(errs, unknownKey(data, line, m[2]))
			continue
		}
		errs = append(errs, errors.New(msg))
	}
	if !unknown {
		return Config{}, errors.Join(errs...)
	}
	// The unknown keys alone would hide the file's other problems: decode it again
	// ignoring them, and validate what it says.
	lenient, err := decodeOnce(data, false)
	switch {
	case err == nil:
		for _, o := range overrides {
			o(&lenient)
		}
		errs = append(errs, Errors(lenient.Validate())...)
	case errors.As(err, &typeErr):
		// Values of the wrong type: already listed, and the file is not validated.
	default:
		errs = append(errs, err) // more than one document
	}
	return Config{}, errors.Join(errs...)
}

// decodeOnce decodes one YAML document over the defaults, failing on unknown keys when
// strict; an error of the wrong types is the *yaml.TypeError that lists them.
func decodeOnce(data []byte, strict bool) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(strict)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, errEmpty
		}
		var typeErr *yaml.TypeError
		if errors.As(err, &typeErr) {
			return Config{}, err
		}
		return Config{}, fmt.Errorf("decode: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, errMultiDoc
	}
	for i := range cfg.Templates {
		TemplateDefaults(&cfg.Templates[i])
	}
	return cfg, nil
}

// unknownKey describes the unknown key at line: `line 3: unknown key "tiemout" in prometheus`,
// with the path written as Validate writes field paths.
func unknownKey(data []byte, line int, key string) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err == nil {
		if path, ok := keyPath(&root, "", line, key); ok {
			if path == "" {
				return fmt.Errorf("line %d: unknown key %q at the top level", line, key)
			}
			return fmt.Errorf("line %d: unknown key %q in %s%s", line, key, path, secretHint(path+"."+key))
		}
	}
	return fmt.Errorf("line %d: unknown key %q", line, key)
}

// secretKeys are the keys one might expect for secrets given in clear, with where such a
// secret goes instead.
var secretKeys = map[string]string{
	"nats.auth.password":            "nats.auth.passwordFile or the environment variable " + EnvNATSPassword,
	"nats.auth.token":               "nats.auth.tokenFile or the environment variable " + EnvNATSToken,
	"nats.auth.nkeySeed":            "nats.auth.nkeySeedFile",
	"nats.auth.credentials":         "nats.auth.credentialsFile",
	"prometheus.bearerToken":        "prometheus.bearerTokenFile or the environment variable " + EnvPrometheusBearerToken,
	"prometheus.basicAuth.password": "prometheus.basicAuth.passwordFile or the environment variable " + EnvPrometheusPassword,
	"http.writeToken":               "http.writeTokenFile or the environment variable " + EnvHTTPWriteToken,
}

// secretHint says where the secret goes when path is a key for a secret in clear.
func secretHint(path string) string {
	if instead, ok := secretKeys[path]; ok {
		return "; secrets are never written in the configuration: use " + instead
	}
	return ""
}

// keyPath finds the mapping that holds key at line under n, and returns its path.
func keyPath(n *yaml.Node, path string, line int, key string) (string, bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if p, ok := keyPath(c, path, line, key); ok {
				return p, true
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Line == line && k.Value == key {
				return path, true
			}
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			if p, ok := keyPath(v, sub, line, key); ok {
				return p, true
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			if name := nameOf(c); name != "" {
				sub = fmt.Sprintf("%s (%s)", sub, name)
			}
			if p, ok := keyPath(c, sub, line, key); ok {
				return p, true
			}
		}
	}
	return "", false
}

// nameOf returns the name of a list item that has one, as Validate names templates and checks.
func nameOf(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

var subjectToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// bucketName matches key-value bucket names and replica ids.
var bucketName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate reports every problem, each naming its field; nil when the configuration is good.
// It reads the process's environment for the secrets that may come from it (ValidateEnv).
func (c Config) Validate() error { return c.ValidateEnv(nil) }

// ValidateEnv is Validate with the environment looked up in env (nil: the process's).
func (c Config) ValidateEnv(env Env) error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	if c.NATS.URL != "" {
		for _, u := range strings.Split(c.NATS.URL, ",") {
			parsed, err := url.Parse(strings.TrimSpace(u))
			if err != nil || parsed.Host == "" {
				add("nats.url", "%q is not a URL such as nats://host:4222", redact(u))
				continue
			}
			if parsed.User != nil {
				add("nats.url", "credentials in the URL are not allowed")
			}
		}
	}
	if !bucketName.MatchString(c.State.Bucket) {
		add("state.bucket", "must be a bucket name of [A-Za-z0-9_-], got %q", c.State.Bucket)
	}
	if len(c.State.ReplicaID) > 128 || strings.ContainsFunc(c.State.ReplicaID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		add("state.replicaID", "must be at most 128 characters without spaces or control characters (or empty for the host name), got %q", c.State.ReplicaID)
	}
	if c.State.Lease < 2*time.Second {
		add("state.lease", "must be at least 2s, got %s", c.State.Lease)
	}
	if c.State.EndedTTL < time.Minute {
		add("state.endedTTL", "must be at least 1m, got %s", c.State.EndedTTL)
	}
	if c.State.IdleExpiry != 0 && c.State.IdleExpiry < time.Minute {
		add("state.idleExpiry", "must be 0 (never) or at least 1m, got %s", c.State.IdleExpiry)
	}
	if !subjectToken.MatchString(c.NATS.SubjectPrefix) {
		add("nats.subjectPrefix", "must be one subject token of [A-Za-z0-9_-], got %q", c.NATS.SubjectPrefix)
	}
	if c.NATS.URL == "" {
		if net.ParseIP(c.NATS.Embedded.Host) == nil && c.NATS.Embedded.Host != "localhost" {
			add("nats.embedded.host", "must be an IP address or localhost, got %q", c.NATS.Embedded.Host)
		}
		if c.NATS.Embedded.Port < -1 || c.NATS.Embedded.Port > 65535 {
			add("nats.embedded.port", "must be within 0..65535 (or -1 for a random port), got %d", c.NATS.Embedded.Port)
		}
		if c.NATS.Embedded.StoreDir == "" {
			add("nats.embedded.storeDir", "must not be empty")
		}
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		add("nats.replicas", "must be within 1..5, got %d", c.NATS.Replicas)
	}
	if c.NATS.StreamMaxAge <= 0 {
		add("nats.streamMaxAge", "must be positive, got %s", c.NATS.StreamMaxAge)
	}
	if c.NATS.ReconnectWait <= 0 {
		add("nats.reconnectWait", "must be positive, got %s", c.NATS.ReconnectWait)
	}
	c.NATS.validateSecurity(env, add)

	if u, err := url.Parse(c.Prometheus.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("prometheus.url", "%q is not an http(s) URL", redact(c.Prometheus.URL))
	} else if u.User != nil {
		add("prometheus.url", "credentials in the URL are not allowed; use prometheus.basicAuth with a passwordFile")
	}
	if c.Prometheus.Timeout <= 0 {
		add("prometheus.timeout", "must be positive, got %s", c.Prometheus.Timeout)
	}
	if c.Prometheus.Concurrency < 1 {
		add("prometheus.concurrency", "must be at least 1, got %d", c.Prometheus.Concurrency)
	}
	if c.Prometheus.BearerTokenFile != "" && c.Prometheus.BasicAuth.Username != "" {
		add("prometheus.bearerTokenFile", "cannot be used together with prometheus.basicAuth")
	}
	if c.Prometheus.BasicAuth.PasswordFile != "" && c.Prometheus.BasicAuth.Username == "" {
		add("prometheus.basicAuth.username", "is required with passwordFile")
	}
	if (c.Prometheus.TLS.CertFile == "") != (c.Prometheus.TLS.KeyFile == "") {
		add("prometheus.tls.certFile", "certFile and keyFile go together")
	}
	bearerEnv, passwordEnv := env.Value(EnvPrometheusBearerToken) != "", env.Value(EnvPrometheusPassword) != ""
	if bearerEnv && c.Prometheus.BearerTokenFile != "" {
		add("prometheus.bearerTokenFile", "cannot be used together with %s: give the token one way", EnvPrometheusBearerToken)
	}
	if bearerEnv && c.Prometheus.BasicAuth.Username != "" {
		add("prometheus.basicAuth", "cannot be used together with a bearer token (%s)", EnvPrometheusBearerToken)
	}
	if passwordEnv && c.Prometheus.BasicAuth.PasswordFile != "" {
		add("prometheus.basicAuth.passwordFile", "cannot be used together with %s: give the password one way", EnvPrometheusPassword)
	}
	if passwordEnv && c.Prometheus.BasicAuth.Username == "" {
		add("prometheus.basicAuth.username", "is required with %s", EnvPrometheusPassword)
	}
	for field, path := range map[string]string{
		"prometheus.bearerTokenFile":        c.Prometheus.BearerTokenFile,
		"prometheus.basicAuth.passwordFile": c.Prometheus.BasicAuth.PasswordFile,
		"prometheus.tls.caFile":             c.Prometheus.TLS.CAFile,
		"prometheus.tls.certFile":           c.Prometheus.TLS.CertFile,
		"prometheus.tls.keyFile":            c.Prometheus.TLS.KeyFile,
	} {
		if path == "" {
			continue
		}
		if err := readable(path); err != nil {
			add(field, "%v", err)
		}
	}

	if _, _, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		add("http.addr", "%q is not host:port (e.g. :8080)", c.HTTP.Addr)
	}
	if c.HTTP.TraceURL != "" {
		if err := validTraceURL(c.HTTP.TraceURL); err != nil {
			add("http.traceURL", "%v", err)
		}
	}
	writeTokenEnv := env.Value(EnvHTTPWriteToken) != ""
	if writeTokenEnv && c.HTTP.WriteTokenFile != "" {
		add("http.writeTokenFile", "cannot be used together with %s: give the token one way", EnvHTTPWriteToken)
	}
	if (writeTokenEnv || c.HTTP.WriteTokenFile != "") && c.HTTP.AllowUnauthenticatedWrites {
		add("http.allowUnauthenticatedWrites", "cannot be true when a write token is configured")
	}
	if c.HTTP.WriteTokenFile != "" {
		if err := readable(c.HTTP.WriteTokenFile); err != nil {
			add("http.writeTokenFile", "%v", err)
		}
	}
	if c.Ingest.MaxEventBytes < 1024 || c.Ingest.MaxEventBytes > 1<<20 {
		add("ingest.maxEventBytes", "must be within 1024..1048576, got %d", c.Ingest.MaxEventBytes)
	}
	if c.Ingest.MaxDeliver < 1 {
		add("ingest.maxDeliver", "must be at least 1, got %d", c.Ingest.MaxDeliver)
	}
	if c.Ingest.AckWait < time.Second {
		add("ingest.ackWait", "must be at least 1s, got %s", c.Ingest.AckWait)
	}
	if c.Ingest.MaxClockSkew < time.Second {
		add("ingest.maxClockSkew", "must be at least 1s, got %s", c.Ingest.MaxClockSkew)
	}
	for i, t := range c.Templates {
		// An event time off by up to the skew is believed: below minStepDuration, or a
		// step could look old enough to proceed the moment it starts.
		if t.MinStepDuration > 0 && c.Ingest.MaxClockSkew >= t.MinStepDuration {
			add("ingest.maxClockSkew", "must be below templates[%d] (%s).minStepDuration (%s), got %s",
				i, t.Name, t.MinStepDuration, c.Ingest.MaxClockSkew)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "must be json or console, got %q", c.Log.Format)
	}
	if c.Tracing.Endpoint != "" {
		if u, err := url.Parse(c.Tracing.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("tracing.endpoint", "%q is not an http(s) URL such as http://otel-collector:4318", redact(c.Tracing.Endpoint))
		} else if u.User != nil {
			add("tracing.endpoint", "credentials in the URL are not allowed; set OTEL_EXPORTER_OTLP_HEADERS")
		}
	}
	switch c.Tracing.Protocol {
	case "", "grpc", "http/protobuf":
	default:
		add("tracing.protocol", "must be grpc or http/protobuf, got %q", c.Tracing.Protocol)
	}
	if !(c.Tracing.SampleRatio >= 0 && c.Tracing.SampleRatio <= 1) {
		add("tracing.sampleRatio", "must be within 0..1, got %v", c.Tracing.SampleRatio)
	}
	if c.ShutdownTimeout <= 0 {
		add("shutdownTimeout", "must be positive, got %s", c.ShutdownTimeout)
	}

	if len(c.Templates) == 0 {
		add("templates", "at least one analysis template is needed")
	}
	names := map[string]bool{}
	for i, t := range c.Templates {
		field := fmt.Sprintf("templates[%d]", i)
		if t.Name != "" {
			field = fmt.Sprintf("templates[%d] (%s)", i, t.Name)
			if names[t.Name] {
				add(field+".name", "duplicate template name %q", t.Name)
			}
			names[t.Name] = true
		}
		for _, err := range t.Validate() {
			errs = append(errs, fmt.Errorf("%s.%w", field, err))
		}
		if _, err := compare.CompileTemplate(t); err != nil {
			for _, e := range unjoin(err) {
				errs = append(errs, fmt.Errorf("%s.%w", field, e))
			}
		}
	}
	return errors.Join(errs...)
}

// validateSecurity checks nats.auth and nats.tls, with the secrets that may come from env.
func (n NATS) validateSecurity(env Env, add func(field, format string, args ...any)) {
	a := n.Auth
	password, token := env.Value(EnvNATSPassword) != "", env.Value(EnvNATSToken) != ""
	// The methods given, each named by the first key or variable that selects it.
	var methods []string
	switch {
	case a.User != "":
		methods = append(methods, "nats.auth.user")
	case a.PasswordFile != "":
		methods = append(methods, "nats.auth.passwordFile")
	case password:
		methods = append(methods, EnvNATSPassword)
	}
	switch {
	case a.TokenFile != "":
		methods = append(methods, "nats.auth.tokenFile")
	case token:
		methods = append(methods, EnvNATSToken)
	}
	if a.NKeySeedFile != "" {
		methods = append(methods, "nats.auth.nkeySeedFile")
	}
	if a.CredentialsFile != "" {
		methods = append(methods, "nats.auth.credentialsFile")
	}

	if n.URL == "" && len(methods) > 0 {
		add("nats.auth", "needs an external server (nats.url): the embedded server has no authentication, got %s",
			strings.Join(methods, " and "))
	}
	if n.URL == "" && n.TLS != (NATSTLS{}) {
		add("nats.tls", "needs an external server (nats.url): the embedded server has no TLS")
	}
	if len(methods) > 1 {
		add("nats.auth", "at most one authentication method, got %s", strings.Join(methods, " and "))
	}
	switch {
	case a.User != "" && a.PasswordFile == "" && !password:
		add("nats.auth.user", "needs a password: nats.auth.passwordFile or %s", EnvNATSPassword)
	case a.User == "" && a.PasswordFile != "":
		add("nats.auth.user", "is required with nats.auth.passwordFile")
	case a.User == "" && password:
		add("nats.auth.user", "is required with %s", EnvNATSPassword)
	}
	if a.PasswordFile != "" && password {
		add("nats.auth.passwordFile", "cannot be used together with %s: give the password one way", EnvNATSPassword)
	}
	if a.TokenFile != "" && token {
		add("nats.auth.tokenFile", "cannot be used together with %s: give the token one way", EnvNATSToken)
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		add("nats.tls.certFile", "certFile and keyFile go together")
	}
	for _, f := range []struct{ field, path string }{
		{"nats.auth.passwordFile", a.PasswordFile},
		{"nats.auth.tokenFile", a.TokenFile},
		{"nats.auth.nkeySeedFile", a.NKeySeedFile},
		{"nats.auth.credentialsFile", a.CredentialsFile},
		{"nats.tls.caFile", n.TLS.CAFile},
		{"nats.tls.certFile", n.TLS.CertFile},
		{"nats.tls.keyFile", n.TLS.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if err := readable(f.path); err != nil {
			add(f.field, "%v", err)
		}
	}
}

// readable reports why the file at path cannot be read, without reading it: the error names
// the path, never what the file holds.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.IsDir() {
		return fmt.Errorf("%s is a directory, not a file", path)
	}
	return nil
}

// Template returns the named template.
func (c Config) Template(name string) (rollout.Template, bool) {
	for _, t := range c.Templates {
		if t.Name == name {
			return t, true
		}
	}
	return rollout.Template{}, false
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func redact(raw string) string {
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		return "…" + raw[i:]
	}
	return raw
}

// Errors splits an error from Load, ReadFile, Decode or Validate into its separate problems,
// for listing; nil for nil.
func Errors(err error) []error {
	if err == nil {
		return nil
	}
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		return joined.Unwrap()
	}
	return []error{err}
}

// validTraceURL checks a trace UI's address template: an absolute http(s) URL holding
// {traceId}.
func validTraceURL(s string) error {
	if !strings.Contains(s, "{traceId}") {
		return fmt.Errorf("%q must contain {traceId}, where a verdict's trace id goes", s)
	}
	u, err := url.Parse(strings.ReplaceAll(s, "{traceId}", "0"))
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q must be an absolute http:// or https:// URL", s)
	}
	if u.User != nil {
		return fmt.Errorf("%q must not hold credentials", s)
	}
	return nil
}

// WriteToken returns the bearer token of the HTTP endpoints that write events, from
// http.writeTokenFile or ANALYZERD_HTTP_WRITE_TOKEN (trimmed of surrounding white space); ""
// when none is configured. The error names the file, never what it holds.
func (c Config) WriteToken(env Env) (string, error) {
	if c.HTTP.WriteTokenFile == "" {
		return env.Value(EnvHTTPWriteToken), nil
	}
	b, err := os.ReadFile(c.HTTP.WriteTokenFile)
	if err != nil {
		return "", fmt.Errorf("http.writeTokenFile: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("http.writeTokenFile: %s is empty", c.HTTP.WriteTokenFile)
	}
	return token, nil
}
