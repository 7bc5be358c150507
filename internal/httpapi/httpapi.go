// Package httpapi serves analyzerd's HTTP endpoints: /metrics, /healthz, /readyz, the read
// API for pull-based controllers, GET /v1/rollouts and GET /v1/rollouts/{namespace}/{name}
// (step-aware with ?step=&weight=), the rollout pages /ui/ and /ui/rollouts/{namespace}/{name}
// and their JSON GET /v1/rollouts/{namespace}/{name}/history (read from the verdict stream,
// read only), and the endpoints through which controllers start and
// drive analyses with no NATS publisher of their own: POST /v1/events (CloudEvents over
// HTTP), POST /v1/argo/analysis (an Argo Rollouts web metric), and Flagger's webhooks
// POST /v1/flagger/gate, /v1/flagger/rollback and /v1/flagger/post-rollout. Every event they
// stand for is stored on the ROLLOUT_EVENTS stream before they answer, so that dedupe, crash
// safety and replicas hold as for events published on NATS.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Verdicts is what the read API reads: the latest verdict of each live rollout.
type Verdicts interface {
	Latest(ref rollout.Ref) (rollout.Verdict, bool)
	List() []rollout.Verdict
}

// Check is one readiness condition; it returns nil when ready.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Options configure the server. The caller owns the listener (see Serve).
type Options struct {
	Verdicts Verdicts
	Gatherer prometheus.Gatherer
	// Ready are the conditions /readyz checks.
	Ready  []Check
	Logger *zap.Logger

	// Positions says where live analyses stand; nil knows none (no endpoint then starts or
	// steps an analysis more than once per call).
	Positions Positions
	// Events stores the events the write endpoints stand for; nil refuses them with 503.
	Events EventPublisher
	// Templates are the analysis templates a start may name.
	Templates map[string]rollout.Template
	// WriteToken is the bearer token the write endpoints require. Empty: they refuse every
	// call with 403, unless AllowUnauthenticatedWrites.
	WriteToken                 string
	AllowUnauthenticatedWrites bool
	// MaxEventBytes bounds an event's size, as ingest.maxEventBytes (64 KiB when zero).
	MaxEventBytes int
	// Now is the clock of the events' times, and of the list page (time.Now when nil).
	Now func() time.Time

	// History reads the verdict stream for the rollout pages (/ui/) and
	// GET /v1/rollouts/{namespace}/{name}/history; nil: they answer 503.
	History History
	// TraceURL is a trace UI's address of a trace, {traceId} standing for a verdict's trace
	// id: the pages link each verdict to its trace. Empty: no links.
	TraceURL string
	// RecentWindow is how long a rollout whose analysis ended stays on the list page
	// (DefaultRecentWindow when zero).
	RecentWindow time.Duration
}

// Server is the HTTP server.
type Server struct {
	opts Options
	srv  *http.Server
}

// New builds the server; Run serves it.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxEventBytes <= 0 {
		opts.MaxEventBytes = 64 << 10
	}
	if opts.Positions == nil {
		opts.Positions = noPositions{}
	}
	if opts.RecentWindow <= 0 {
		opts.RecentWindow = DefaultRecentWindow
	}
	s := &Server{opts: opts}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	return s
}

// Handler is the router, exposed for tests.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /v1/rollouts", s.list)
	mux.HandleFunc("GET /v1/rollouts/{namespace}/{name}", s.get)
	mux.HandleFunc("GET /v1/rollouts/{namespace}/{name}/history", s.history)
	mux.HandleFunc("GET /ui/{$}", s.listPage)
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusMovedPermanently) })
	mux.HandleFunc("GET /ui/rollouts/{namespace}/{name}", s.rolloutPage)
	mux.HandleFunc("POST /v1/flagger/gate", s.flaggerGate)
	mux.HandleFunc("POST /v1/flagger/rollback", s.flaggerRollback)
	mux.HandleFunc("POST /v1/flagger/post-rollout", s.flaggerPostRollout)
	mux.HandleFunc("POST /v1/argo/analysis", s.argoAnalysis)
	mux.HandleFunc("POST /v1/events", s.events)
	return mux
}

type noPositions struct{}

func (noPositions) Position(rollout.Ref) (rollout.Position, bool) { return rollout.Position{}, false }

// get answers the latest verdict of one rollout, exactly as it was published on NATS. With
// the query parameters step, weight (and revision), it answers for that step: pause, with
// "stale": true, while the latest verdict is about an earlier step (a rollback of the
// revision is final and answered as it is).
func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	ref := rollout.Ref{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	a, err := askedOf(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	v, ok := s.opts.Verdicts.Latest(ref)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no live analysis of rollout %s", ref)})
		return
	}
	body, err := about(v, a).marshal(a)
	if err != nil {
		s.internalError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, json.RawMessage(body))
}

// list answers the latest verdict of every live rollout: {"rollouts": [verdict, ...]}.
func (s *Server) list(w http.ResponseWriter, _ *http.Request) {
	verdicts := s.opts.Verdicts.List()
	out := make([]json.RawMessage, 0, len(verdicts))
	for _, v := range verdicts {
		body, err := publish.MarshalVerdict(v)
		if err != nil {
			s.internalError(w, err)
			return
		}
		out = append(out, body)
	}
	writeJSON(w, http.StatusOK, map[string]any{"rollouts": out})
}

func (s *Server) internalError(w http.ResponseWriter, err error) {
	s.opts.Logger.Error("encode verdict", zap.Error(err))
	writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "cannot encode the verdict"})
}

// readyz runs every readiness check at once, each for at most 2 s, and answers 200 when all
// pass, else 503. The body names each condition, "ok" or what is wrong with it:
// {"status": "not ready", "checks": {"nats": "ok", "prometheus": "..."}, "problems": {"prometheus": "..."}}.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	errs := make([]error, len(s.opts.Ready))
	var wg sync.WaitGroup
	for i, c := range s.opts.Ready {
		wg.Go(func() { errs[i] = c.Check(ctx) })
	}
	wg.Wait()
	checks, problems := map[string]string{}, map[string]string{}
	for i, c := range s.opts.Ready {
		checks[c.Name] = "ok"
		if errs[i] != nil {
			checks[c.Name] = errs[i].Error()
			problems[c.Name] = errs[i].Error()
		}
	}
	if len(problems) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "checks": checks, "problems": problems})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": checks})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body)
}

// Serve serves on ln until ctx is done, then shuts down within 5 s.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(shutdownCtx); err != nil {
		_ = s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}
