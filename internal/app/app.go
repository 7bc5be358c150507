// Package app assembles the daemon from its parts and runs them as one group under one
// context: the event consumer, the analyzer loop, the verdict publisher and the HTTP server.
// main only turns signals into a cancelled context, so the whole daemon runs inside a test.
package app

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/analyzer"
	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/history"
	"github.com/analyzerd/analyzerd/internal/httpapi"
	"github.com/analyzerd/analyzerd/internal/ingest"
	"github.com/analyzerd/analyzerd/internal/natsembed"
	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
	"github.com/analyzerd/analyzerd/internal/streams"
	"github.com/analyzerd/analyzerd/internal/tracing"
)

// Info tells a caller (a test, the demo) where a started daemon can be reached.
type Info struct {
	// NATSURL is the NATS server the daemon uses (the embedded one's client URL).
	NATSURL string
	// HTTPAddr is the address the HTTP server listens on.
	HTTPAddr string
}

// Options are the dependencies of a daemon beyond its configuration.
type Options struct {
	Logger *zap.Logger
	// Registry receives every metric of the daemon; a fresh one when nil.
	Registry *prometheus.Registry
	// TracerProvider records the evaluations' spans. When nil, the daemon builds one from
	// cfg.Tracing and the OTEL_* variables (see internal/tracing): it exports with OTLP when
	// an endpoint is set, and otherwise only gives verdicts their trace ids.
	TracerProvider trace.TracerProvider
	// Version is the daemon's version, the service.version of exported spans.
	Version string
	// OnReady is called once the daemon consumes events and serves HTTP.
	OnReady func(Info)
	// Now is the clock of the scheduler (time.Now when nil).
	Now func() time.Time
	// Resolution is how often the scheduler looks for due evaluations (1s when zero).
	Resolution time.Duration
	// LookupEnv reads the environment variables that may hold secrets (config.EnvNATSPassword
	// and the others); the process's environment when nil.
	LookupEnv config.Env
}

// Run runs the daemon until ctx is cancelled, then stops it gracefully: it stops consuming,
// finishes the evaluations in flight, flushes the verdicts not yet published, and shuts the
// embedded NATS server down, all within cfg.ShutdownTimeout.
func Run(ctx context.Context, cfg config.Config, opts Options) (err error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return fmt.Errorf("register go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fmt.Errorf("register process collector: %w", err)
	}
	tp := opts.TracerProvider
	stopTracing := func(context.Context) {}
	if tp == nil {
		sdk, export, err := tracing.New(ctx, tracing.Options{
			Endpoint: cfg.Tracing.Endpoint, Protocol: cfg.Tracing.Protocol,
			SampleRatio: cfg.Tracing.SampleRatio, RepeatSampleRatio: cfg.Tracing.RepeatSampleRatio,
			ServiceVersion: opts.Version,
		})
		if err != nil {
			return err
		}
		var once sync.Once
		stopTracing = func(sctx context.Context) {
			once.Do(func() {
				if err := sdk.Shutdown(sctx); err != nil {
					log.Warn("spans left unexported at shutdown", zap.Error(err))
				}
			})
		}
		// On the way out of a failed start; a graceful stop exports them earlier, after the
		// last verdicts.
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout/2)
			defer cancel()
			stopTracing(sctx)
		}()
		tp = sdk
		if export.Enabled {
			// Never the headers: they may hold credentials.
			log.Info("exporting spans", zap.String("protocol", export.Protocol), zap.String("endpoint", export.Endpoint),
				zap.String("sampler", export.Sampler), zap.Float64("sampleRatio", cfg.Tracing.SampleRatio),
				zap.Float64("repeatSampleRatio", cfg.Tracing.RepeatSampleRatio))
		} else {
			log.Info("not exporting spans: no tracing.endpoint nor OTEL_EXPORTER_OTLP_ENDPOINT")
		}
	}

	templates := make(map[string]*compare.Template, len(cfg.Templates))
	for _, t := range cfg.Templates {
		ct, err := compare.CompileTemplate(t)
		if err != nil {
			return fmt.Errorf("template %s: %w", t.Name, err)
		}
		templates[t.Name] = ct
	}
	source, err := compare.NewPrometheus(compare.PrometheusOptions{
		URL:                   cfg.Prometheus.URL,
		Timeout:               cfg.Prometheus.Timeout,
		BearerTokenFile:       cfg.Prometheus.BearerTokenFile,
		BasicAuthUsername:     cfg.Prometheus.BasicAuth.Username,
		BasicAuthPasswordFile: cfg.Prometheus.BasicAuth.PasswordFile,
		BearerToken:           opts.LookupEnv.Value(config.EnvPrometheusBearerToken),
		BasicAuthPassword:     opts.LookupEnv.Value(config.EnvPrometheusPassword),
		TLS: compare.TLSOptions{
			CAFile: cfg.Prometheus.TLS.CAFile, CertFile: cfg.Prometheus.TLS.CertFile, KeyFile: cfg.Prometheus.TLS.KeyFile,
			ServerName: cfg.Prometheus.TLS.ServerName, InsecureSkipVerify: cfg.Prometheus.TLS.InsecureSkipVerify,
		},
		Concurrency:    cfg.Prometheus.Concurrency,
		Registerer:     reg,
		TracerProvider: tp,
	})
	if err != nil {
		return err
	}

	// HTTP first, so that probes answer while NATS is still being reached: /healthz says the
	// process is alive, /readyz names what is missing, and the read API answers 404 until the
	// analyses are loaded.
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w", cfg.HTTP.Addr, err)
	}
	var up atomic.Pointer[running]
	writeToken, err := cfg.WriteToken(opts.LookupEnv)
	if err != nil {
		_ = ln.Close()
		return err
	}
	byName := make(map[string]rollout.Template, len(cfg.Templates))
	for _, t := range cfg.Templates {
		byName[t.Name] = t
	}
	web := httpapi.New(httpapi.Options{
		Verdicts:                   lazyVerdicts{&up},
		Positions:                  lazyVerdicts{&up},
		Events:                     lazyPublisher{&up},
		Templates:                  byName,
		WriteToken:                 writeToken,
		AllowUnauthenticatedWrites: cfg.HTTP.AllowUnauthenticatedWrites,
		MaxEventBytes:              cfg.Ingest.MaxEventBytes,
		Gatherer:                   reg,
		History:                    lazyHistory{&up},
		TraceURL:                   cfg.HTTP.TraceURL,
		Logger:                     log.Named("http"),
		Ready: []httpapi.Check{
			{Name: "nats", Check: func(context.Context) error {
				r := up.Load()
				if r == nil {
					return errors.New("not connected yet")
				}
				if s := r.nc.Status(); s != nats.CONNECTED {
					return fmt.Errorf("connection is %s", s)
				}
				return nil
			}},
			{Name: "streams", Check: func(ctx context.Context) error {
				r := up.Load()
				if r == nil {
					return errors.New("not checked yet: NATS is not connected")
				}
				return streams.Check(ctx, r.js)
			}},
			{Name: "prometheus", Check: source.Ping},
			{Name: "analyses", Check: func(context.Context) error {
				r := up.Load()
				if r == nil || !r.an.Loaded() {
					return errors.New("the stored analyses are not loaded yet")
				}
				return nil
			}},
		},
	})
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	httpDone := make(chan error, 1)
	go func() { httpDone <- web.Serve(httpCtx, ln) }()
	defer func() {
		stopHTTP()
		if err := <-httpDone; err != nil {
			log.Warn("http server stopped with an error", zap.Error(err))
		}
	}()

	// connCtx ends when nats.go closes the connection for good (the server refused the
	// credentials twice): retrying then stops, and the daemon fails, saying why.
	connCtx, connClosed := context.WithCancelCause(ctx)
	defer connClosed(nil)
	nc, info, shutdownNATS, err := connect(cfg, opts.LookupEnv, log, connClosed)
	if err != nil {
		return err
	}
	defer shutdownNATS()

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	streamOpts := streams.Options{
		Prefix: cfg.NATS.SubjectPrefix, Replicas: cfg.NATS.Replicas,
		MaxAge: cfg.NATS.StreamMaxAge, VerdictsMaxAge: cfg.NATS.StreamMaxAge,
	}
	if err := retry(connCtx, log, "create streams", func() error { return streams.Ensure(connCtx, js, streamOpts) }); err != nil {
		return err
	}

	var store *state.Store
	if err := retry(connCtx, log, "open the state bucket", func() error {
		var err error
		store, err = state.Open(connCtx, js, state.Options{Bucket: cfg.State.Bucket, Replicas: cfg.NATS.Replicas, EndedTTL: cfg.State.EndedTTL})
		return err
	}); err != nil {
		return err
	}
	replicaID := cfg.State.ReplicaID
	if replicaID == "" {
		if replicaID, err = os.Hostname(); err != nil || replicaID == "" {
			return fmt.Errorf("state.replicaID is empty and the host name is unknown: %v", err)
		}
	}

	// The analyzer learns which verdicts JetStream acknowledged, so that the state keeps to
	// publish again only those it did not.
	var an *analyzer.Analyzer
	publisher := publish.New(js, publish.Options{
		Prefix: cfg.NATS.SubjectPrefix, Source: "analyzerd", Logger: log.Named("publish"), Registerer: reg,
		TracerProvider: tp,
		OnPublished:    func(v rollout.Verdict) { an.Acknowledged(v) },
		OnDropped:      func(v rollout.Verdict) { an.Dropped(v) },
	})
	an, err = analyzer.New(analyzer.Options{
		Templates: templates,
		Measurer:  compare.New(source),
		Sink:      publisher,
		Store:     store,
		Published: func(ctx context.Context, ref rollout.Ref) (string, uint64, bool, error) {
			return publish.LastPublished(ctx, js, cfg.NATS.SubjectPrefix, ref)
		},
		ReplicaID:    replicaID,
		Lease:        cfg.State.Lease,
		IdleExpiry:   cfg.State.IdleExpiry,
		Resolution:   opts.Resolution,
		DrainTimeout: cfg.ShutdownTimeout / 2,
		Now:          opts.Now,
		Tracer:       tp.Tracer("github.com/analyzerd/analyzerd"),
		Logger:       log.Named("analyzer"),
		Registerer:   reg,
	})
	if err != nil {
		return err
	}
	var consumer *ingest.Consumer
	if err := retry(connCtx, log, "create consumer", func() error {
		var err error
		consumer, err = ingest.New(js, an, ingest.Options{
			Prefix:        cfg.NATS.SubjectPrefix,
			MaxEventBytes: cfg.Ingest.MaxEventBytes,
			MaxDeliver:    cfg.Ingest.MaxDeliver,
			AckWait:       cfg.Ingest.AckWait,
			MaxClockSkew:  cfg.Ingest.MaxClockSkew,
			Logger:        log.Named("ingest"),
			Registerer:    reg,
		})
		return err
	}); err != nil {
		return err
	}

	info.HTTPAddr = ln.Addr().String()
	up.Store(&running{nc: nc, js: js, an: an, events: ingest.NewPublisher(js, cfg.NATS.SubjectPrefix),
		history: history.New(js, history.Options{Prefix: cfg.NATS.SubjectPrefix})})

	// The group: everything runs until ctx is done or one part fails; then all stop.
	runCtx, cancel := context.WithCancel(connCtx)
	defer cancel()
	g := group{cancel: cancel}
	g.spawn("analyzer", func() error { return an.Run(runCtx) })
	g.spawn("publisher", func() error { return publisher.Run(runCtx) })
	g.spawn("consumer", func() error { return consumer.Run(runCtx) })
	log.Info("analyzerd started", zap.String("nats", info.NATSURL), zap.String("http", info.HTTPAddr),
		zap.String("prometheus", cfg.Prometheus.URL), zap.Int("templates", len(templates)))
	if opts.OnReady != nil {
		opts.OnReady(info)
	}
	runErr := g.wait()
	if cause := context.Cause(connCtx); errors.Is(cause, errNATSClosed) {
		runErr = errors.Join(cause, runErr)
	}

	// The analyzer has drained its evaluations into the publisher; publish what is left.
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), cfg.ShutdownTimeout/2)
	defer cancelFlush()
	if err := publisher.Flush(flushCtx); err != nil {
		log.Error("verdicts left unpublished at shutdown", zap.Error(err))
	}
	// Every span has ended: export what is left, within what remains of the same bound.
	stopTracing(flushCtx)
	log.Info("analyzerd stopped")
	return runErr
}

// connect connects to the configured NATS server, or starts the embedded one. The returned
// function closes the connection and stops the embedded server.
//
// An external server gets the credentials and TLS of cfg, with secrets from files or env.
// closed is called with the reason when nats.go closes the connection for good.
func connect(cfg config.Config, env config.Env, log *zap.Logger, closed func(error)) (*nats.Conn, Info, func(), error) {
	var security []nats.Option
	method := "no credentials"
	if cfg.NATS.URL != "" {
		var err error
		if security, method, err = natsSecurity(cfg.NATS, env); err != nil {
			return nil, Info{}, nil, err
		}
	}
	// Failed connection attempts are logged when their error changes, not at each attempt.
	var mu sync.Mutex
	lastAttempt := ""
	attempt := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		msg := ""
		if err != nil {
			// Its kind, not its text: the text names the server tried, which changes at
			// every attempt with several URLs.
			msg = attemptKind(err)
		}
		if msg != lastAttempt && msg != "" {
			log.Warn("nats connection attempt failed; retrying", zap.Error(err))
		}
		lastAttempt = msg
	}
	common := []nats.Option{
		nats.Name("analyzerd"),
		// While disconnected, publications and state writes fail at once instead of waiting
		// in a buffer to be sent on reconnection: a state write replayed late would race with
		// the writes that followed it. They are retried (the verdicts wait, stored first).
		nats.ReconnectBufSize(-1),
		// Asynchronous errors (a watch's consumer gone while disconnected) go to the log, not
		// to stderr.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Debug("nats asynchronous error", zap.String("subject", subject), zap.Error(err))
		}),
		nats.ConnectHandler(func(*nats.Conn) { attempt(nil) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { attempt(err) }),
		nats.ClosedHandler(func(c *nats.Conn) { closed(closedError(c, method)) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed the connection ourselves
				log.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			attempt(nil)
			log.Info("nats reconnected", zap.String("server", c.ConnectedUrlRedacted()))
		}),
	}
	if cfg.NATS.URL == "" {
		ns, err := natsembed.Start(natsembed.Options{
			Host: cfg.NATS.Embedded.Host, Port: cfg.NATS.Embedded.Port, StoreDir: cfg.NATS.Embedded.StoreDir,
		}, log.Named("nats-server"))
		if err != nil {
			return nil, Info{}, nil, err
		}
		stop := func() { ns.Shutdown(); ns.WaitForShutdown() }
		nc, err := nats.Connect("", append(common, nats.InProcessServer(ns))...)
		if err != nil {
			stop()
			return nil, Info{}, nil, fmt.Errorf("connect to the embedded nats server: %w", err)
		}
		return nc, Info{NATSURL: ns.ClientURL()}, func() { drain(nc, log); stop() }, nil
	}
	nc, err := nats.Connect(cfg.NATS.URL, append(append(common, security...),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.NATS.ReconnectWait),
		// Reconnection backs off: reconnectWait, doubled at each round of attempts over the
		// servers, up to 30 s, with jitter.
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := cfg.NATS.ReconnectWait
			for i := 1; i < attempts && d < 30*time.Second; i++ {
				d *= 2
			}
			d = min(d, max(30*time.Second, cfg.NATS.ReconnectWait))
			return d + time.Duration(rand.Int64N(int64(d)/5+1))
		}),
		nats.RetryOnFailedConnect(true),
	)...)
	if err != nil {
		return nil, Info{}, nil, fmt.Errorf("connect to nats: %w", err)
	}
	return nc, Info{NATSURL: nc.ConnectedUrlRedacted()}, func() { drain(nc, log) }, nil
}

func drain(nc *nats.Conn, log *zap.Logger) {
	if err := nc.FlushTimeout(2 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Debug("nats flush at shutdown", zap.Error(err))
	}
	nc.Close()
}

// retry runs op with exponential backoff until it succeeds or ctx ends, logging when the
// error changes rather than at every attempt.
func retry(ctx context.Context, log *zap.Logger, what string, op func() error) error {
	var last string
	b := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(10*time.Second)), ctx)
	err := backoff.Retry(func() error {
		err := op()
		if err != nil && err.Error() != last {
			last = err.Error()
			log.Warn(what+" failed; retrying", zap.Error(err))
		}
		return err
	}, b)
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx) // why ctx ended: a cancelled daemon, a connection closed for good
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// group runs actors until the first one returns; then it cancels the rest and waits.
type group struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

func (g *group) spawn(name string, run func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := run()
		if err != nil {
			g.mu.Lock()
			g.errs = append(g.errs, fmt.Errorf("%s: %w", name, err))
			g.mu.Unlock()
		}
		g.cancel()
	}()
}

func (g *group) wait() error {
	g.wg.Wait()
	return errors.Join(g.errs...)
}

// running is what the HTTP server needs of the parts that start once NATS is reached.
type running struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	an      *analyzer.Analyzer
	events  *ingest.Publisher
	history *history.Reader
}

// lazyVerdicts serves the analyzer's verdicts once it exists, and none before.
type lazyVerdicts struct{ up *atomic.Pointer[running] }

func (l lazyVerdicts) Latest(ref rollout.Ref) (rollout.Verdict, bool) {
	if r := l.up.Load(); r != nil {
		return r.an.Latest(ref)
	}
	return rollout.Verdict{}, false
}

func (l lazyVerdicts) Position(ref rollout.Ref) (rollout.Position, bool) {
	if r := l.up.Load(); r != nil {
		return r.an.Position(ref)
	}
	return rollout.Position{}, false
}

// lazyPublisher stores the events of the HTTP endpoints once NATS is reached, and refuses
// them (503) before.
type lazyPublisher struct{ up *atomic.Pointer[running] }

func (l lazyPublisher) Publish(ctx context.Context, ev rollout.Event) error {
	if r := l.up.Load(); r != nil {
		return r.events.Publish(ctx, ev)
	}
	return httpapi.ErrNotConnected
}

// lazyHistory reads the verdict stream once NATS is reached, and fails before.
type lazyHistory struct{ up *atomic.Pointer[running] }

var errHistoryNotConnected = fmt.Errorf("%w: not connected to NATS yet", history.ErrUnavailable)

func (l lazyHistory) Rollout(ctx context.Context, ref rollout.Ref) ([]rollout.Verdict, int, error) {
	if r := l.up.Load(); r != nil {
		return r.history.Rollout(ctx, ref)
	}
	return nil, 0, errHistoryNotConnected
}

func (l lazyHistory) Latest(ctx context.Context) ([]rollout.Verdict, bool, error) {
	if r := l.up.Load(); r != nil {
		return r.history.Latest(ctx)
	}
	return nil, false, errHistoryNotConnected
}

func (l lazyVerdicts) List() []rollout.Verdict {
	if r := l.up.Load(); r != nil {
		return r.an.List()
	}
	return nil
}

// attemptKind names the kind of a connection error, without the server it was about.
func attemptKind(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "dial tcp"); i >= 0 {
		return "dial: " + msg[strings.LastIndex(msg, ":")+1:]
	}
	return msg
}
