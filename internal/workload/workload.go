// Package workload is a synthetic HTTP service for end-to-end tests and the demo: it
// simulates requests (no real traffic) and exposes the conventional HTTP metrics the
// shipped analysis template reads (CONTRACT.md section 6):
//
//	http_requests_total{service, version, code}          counter, code "200" or "500"
//	http_request_duration_seconds{service, version}      histogram, prometheus.DefBuckets
//
// on its own registry. Its traffic profile (rate, error rate, latency) can be changed while
// it runs, which is how tests inject a fault into a canary.
package workload

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Workload.
type Config struct {
	// Service and Version are the values of the service and version labels.
	Service, Version string
	// Profile is the initial traffic profile.
	Profile Profile
	// Seed makes the traffic deterministic: the same Config and the same sequence of Steps
	// give the same metrics. The random stream depends on Service and Version too, so a
	// stable and a canary given the same Seed still draw independent traffic.
	Seed int64
	// Tick is how often Run generates traffic; DefaultTick when zero.
	Tick time.Duration
}

// Validate reports the first invalid field of c, defaults applied.
func (c Config) Validate() error {
	switch {
	case c.Service == "":
		return errors.New("service must not be empty")
	case !utf8.ValidString(c.Service):
		return fmt.Errorf("service %q is not valid UTF-8", c.Service)
	case c.Version == "":
		return errors.New("version must not be empty")
	case !utf8.ValidString(c.Version):
		return fmt.Errorf("version %q is not valid UTF-8", c.Version)
	case c.Tick < 0:
		return fmt.Errorf("tick must be >= 0 (0 means %s), got %s", DefaultTick, c.Tick)
	case c.Tick > 0 && c.Tick < time.Millisecond:
		return fmt.Errorf("tick must be at least 1ms, got %s", c.Tick)
	}
	if err := c.Profile.withDefaults().Validate(); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	return nil
}

// Totals is what a workload has generated so far: the ground truth that tests compare with
// what Prometheus reports.
type Totals struct {
	Requests uint64 // all requests, errors included
	Errors   uint64 // requests answered 500
	// Simulated is the traffic time simulated, the sum of all Steps.
	Simulated time.Duration
}

// Workload simulates one version of a service. Its methods are safe for concurrent use.
type Workload struct {
	service, version string
	tick             time.Duration
	registry         *prometheus.Registry
	ok, failed       prometheus.Counter
	latency          prometheus.Observer
	running          atomic.Bool

	mu      sync.Mutex // guards the fields below
	profile Profile
	rng     *rand.Rand
	totals  Totals
}

// New returns a Workload for cfg, its metrics registered on a registry of its own.
func New(cfg Config) (*Workload, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("workload: invalid config: %w", err)
	}
	if cfg.Tick == 0 {
		cfg.Tick = DefaultTick
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "HTTP requests handled, by status code.",
	}, []string{"service", "version", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "HTTP request latency.",
		Buckets: prometheus.DefBuckets,
	}, []string{"service", "version"})
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{requests, duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("workload: registering metrics: %w", err)
		}
	}
	// Create every series now, so that the error counter exists (at 0) before the first
	// error, as with an application that pre-initialises its metrics.
	w := &Workload{
		service:  cfg.Service,
		version:  cfg.Version,
		tick:     cfg.Tick,
		registry: reg,
		ok:       requests.WithLabelValues(cfg.Service, cfg.Version, "200"),
		failed:   requests.WithLabelValues(cfg.Service, cfg.Version, "500"),
		latency:  duration.WithLabelValues(cfg.Service, cfg.Version),
		profile:  cfg.Profile.withDefaults(),
		rng:      rand.New(rand.NewPCG(uint64(cfg.Seed), streamID(cfg.Service, cfg.Version))),
	}
	return w, nil
}

// streamID derives the second PCG seed word from the labels.
func streamID(service, version string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(service))
	h.Write([]byte{0})
	h.Write([]byte(version))
	return h.Sum64()
}

// Service returns the value of the service label.
func (w *Workload) Service() string { return w.service }

// Version returns the value of the version label.
func (w *Workload) Version() string { return w.version }

// Profile returns the current profile, defaults applied.
func (w *Workload) Profile() Profile {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.profile
}

// SetProfile replaces the profile from the next Step on. Zero LatencyMedian and
// LatencySpread take their defaults. An invalid profile is an error and changes nothing.
func (w *Workload) SetProfile(p Profile) error {
	_, err := w.updateProfile(func(Profile) Profile { return p })
	return err
}

// updateProfile replaces the profile by update(current profile), atomically, when the result
// is valid, and returns the profile in force.
func (w *Workload) updateProfile(update func(Profile) Profile) (Profile, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := update(w.profile).withDefaults()
	if err := p.Validate(); err != nil {
		return w.profile, fmt.Errorf("workload: invalid profile: %w", err)
	}
	w.profile = p
	return p, nil
}

// Totals returns what the workload has generated so far.
func (w *Workload) Totals() Totals {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.totals
}

// Step simulates d of traffic at once under the current profile: a Poisson(rate*d) number of
// requests, each an error with probability ErrorRate, each with a log-normal latency. Run
// calls it every tick; tests call it directly to simulate time without sleeping.
func (w *Workload) Step(d time.Duration) {
	if d <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.profile
	n := poisson(w.rng, p.Rate*d.Seconds())
	median := p.LatencyMedian.Seconds()
	var errs uint64
	for range n {
		if w.rng.Float64() < p.ErrorRate {
			errs++
		}
		w.latency.Observe(median * math.Exp(p.LatencySpread*w.rng.NormFloat64()))
	}
	w.ok.Add(float64(n - errs))
	w.failed.Add(float64(errs))
	w.totals.Requests += n
	w.totals.Errors += errs
	w.totals.Simulated += d
}

// Run generates traffic every tick until ctx is done, then returns nil. Each tick simulates
// the time actually elapsed since the previous one (by the monotonic clock), so the rate
// holds when ticks are late or dropped. Only one Run may be active at a time.
func (w *Workload) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("workload: Run is already running")
	}
	defer w.running.Store(false)
	start := time.Now()
	ticker := time.NewTicker(w.tick)
	defer ticker.Stop()
	w.run(ctx, start, ticker.C)
	return nil
}

// run steps the workload at each time received from ticks by the time elapsed since the
// previous one, starting from start.
func (w *Workload) run(ctx context.Context, start time.Time, ticks <-chan time.Time) {
	last := start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticks:
			if d := now.Sub(last); d > 0 {
				w.Step(d)
				last = now
			}
		}
	}
}
