package workload

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func validConfig() Config {
	return Config{
		Service: "checkout",
		Version: "v1",
		Profile: Profile{Rate: 100, ErrorRate: 0.01, LatencyMedian: 80 * time.Millisecond},
		Seed:    42,
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // empty: valid
	}{
		{"valid", func(*Config) {}, ""},
		{"zero profile takes defaults", func(c *Config) { c.Profile = Profile{} }, ""},
		{"error rate 1", func(c *Config) { c.Profile.ErrorRate = 1 }, ""},
		{"no service", func(c *Config) { c.Service = "" }, "service must not be empty"},
		{"no version", func(c *Config) { c.Version = "" }, "version must not be empty"},
		{"service not UTF-8", func(c *Config) { c.Service = "\xff" }, "not valid UTF-8"},
		{"negative rate", func(c *Config) { c.Profile.Rate = -1 }, "rate must be a finite number of requests per second >= 0, got -1"},
		{"NaN rate", func(c *Config) { c.Profile.Rate = math.NaN() }, "rate must be a finite number"},
		{"infinite rate", func(c *Config) { c.Profile.Rate = math.Inf(1) }, "rate must be a finite number"},
		{"rate too high", func(c *Config) { c.Profile.Rate = MaxRate + 1 }, "exceeds the maximum"},
		{"error rate above 1", func(c *Config) { c.Profile.ErrorRate = 1.5 }, "error rate must be a share within [0, 1], got 1.5"},
		{"negative error rate", func(c *Config) { c.Profile.ErrorRate = -0.1 }, "error rate must be a share within [0, 1]"},
		{"NaN error rate", func(c *Config) { c.Profile.ErrorRate = math.NaN() }, "error rate must be a share within [0, 1]"},
		{"negative latency", func(c *Config) { c.Profile.LatencyMedian = -time.Second }, "latency median must be >= 0, got -1s"},
		{"negative spread", func(c *Config) { c.Profile.LatencySpread = -0.5 }, "latency spread must be a finite number >= 0"},
		{"negative tick", func(c *Config) { c.Tick = -time.Second }, "tick must be >= 0"},
		{"tick too short", func(c *Config) { c.Tick = time.Microsecond }, "tick must be at least 1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.mutate(&cfg)
			w, err := New(cfg)
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.NotNil(t, w)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			require.ErrorContains(t, err, "workload: invalid config")
		})
	}
}

func TestDefaults(t *testing.T) {
	w, err := New(Config{Service: "s", Version: "v", Profile: Profile{Rate: 1}})
	require.NoError(t, err)
	require.Equal(t, Profile{Rate: 1, LatencyMedian: DefaultLatencyMedian, LatencySpread: DefaultLatencySpread}, w.Profile())
	require.Equal(t, DefaultTick, w.tick)
}

func TestSetProfile(t *testing.T) {
	w, err := New(validConfig())
	require.NoError(t, err)

	require.NoError(t, w.SetProfile(Profile{Rate: 5, ErrorRate: 0.5, LatencySpread: 1}))
	require.Equal(t, Profile{Rate: 5, ErrorRate: 0.5, LatencyMedian: DefaultLatencyMedian, LatencySpread: 1}, w.Profile())

	err = w.SetProfile(Profile{Rate: 5, ErrorRate: 2})
	require.ErrorContains(t, err, "workload: invalid profile: error rate must be a share within [0, 1], got 2")
	require.Equal(t, 0.5, w.Profile().ErrorRate, "an invalid profile changes nothing")
}

// The whole exposition, byte for byte, is a function of the config and the steps.
func TestDeterministicFromSeed(t *testing.T) {
	run := func(cfg Config) string {
		w, err := New(cfg)
		require.NoError(t, err)
		for i := range 50 {
			w.Step(time.Duration(i+1) * 7 * time.Millisecond)
			if i == 25 {
				require.NoError(t, w.SetProfile(Profile{Rate: 300, ErrorRate: 0.2, LatencyMedian: 300 * time.Millisecond}))
			}
		}
		return scrape(t, w)
	}
	cfg := validConfig()
	first := run(cfg)
	require.Equal(t, first, run(cfg))
	require.Contains(t, first, `http_requests_total{code="500",service="checkout",version="v1"}`)

	other := cfg
	other.Seed++
	require.NotEqual(t, first, run(other), "another seed draws other traffic")

	canary := cfg
	canary.Version = "v2"
	a, b := snapshotOf(t, run(cfg)), snapshotOf(t, run(canary))
	require.NotEqual(t, a.requests, b.requests, "the same seed for another version draws other traffic")
}

func TestSeriesExistBeforeTraffic(t *testing.T) {
	w, err := New(validConfig())
	require.NoError(t, err)
	body := scrape(t, w)
	require.Contains(t, body, `http_requests_total{code="200",service="checkout",version="v1"} 0`)
	require.Contains(t, body, `http_requests_total{code="500",service="checkout",version="v1"} 0`)
	require.Contains(t, body, `http_request_duration_seconds_count{service="checkout",version="v1"} 0`)
}

// Over ten simulated minutes the observed rate, error share and latency distribution are within
// five standard deviations of the profile's. The seed is fixed, so the test is deterministic;
// the bounds check the sampler, not luck.
func TestTrafficMatchesProfile(t *testing.T) {
	for _, p := range []Profile{
		{Rate: 200, ErrorRate: 0.05, LatencyMedian: 100 * time.Millisecond},
		{Rate: 3, ErrorRate: 0.5, LatencyMedian: 100 * time.Millisecond, LatencySpread: 0.5},
		{Rate: 1000, ErrorRate: 0.001, LatencyMedian: 100 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("rate=%g", p.Rate), func(t *testing.T) {
			cfg := validConfig()
			cfg.Profile = p
			w, err := New(cfg)
			require.NoError(t, err)
			const simulated = 10 * time.Minute
			for elapsed := time.Duration(0); elapsed < simulated; elapsed += DefaultTick {
				w.Step(DefaultTick)
			}
			got := w.Totals()
			require.Equal(t, simulated, got.Simulated)

			n := float64(got.Requests)
			wantN := p.Rate * simulated.Seconds()
			requireWithin(t, "requests", n, wantN, 5*math.Sqrt(wantN))
			share := float64(got.Errors) / n
			requireWithin(t, "error share", share, p.ErrorRate, 5*math.Sqrt(p.ErrorRate*(1-p.ErrorRate)/n))

			s := snapshotOf(t, scrape(t, w))
			require.Equal(t, float64(got.Requests-got.Errors), s.requests["200"])
			require.Equal(t, float64(got.Errors), s.requests["500"])
			require.Equal(t, n, s.count)
			// Half the latencies are below the median, 0.1s, which is a bucket bound.
			requireWithin(t, "share <= median", s.buckets["0.1"]/n, 0.5, 5*math.Sqrt(0.25/n))
			sigma := p.LatencySpread
			if sigma == 0 {
				sigma = DefaultLatencySpread
			}
			// The mean of a log-normal is median * exp(sigma^2/2).
			wantMean := 0.1 * math.Exp(sigma*sigma/2)
			sd := wantMean * math.Sqrt(math.Exp(sigma*sigma)-1)
			requireWithin(t, "mean latency", s.sum/n, wantMean, 5*sd/math.Sqrt(n))
		})
	}
}

func TestZeroRateGeneratesNothing(t *testing.T) {
	cfg := validConfig()
	cfg.Profile.Rate = 0
	w, err := New(cfg)
	require.NoError(t, err)
	w.Step(time.Hour)
	require.Equal(t, Totals{Simulated: time.Hour}, w.Totals())
}

func TestPoissonMoments(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, lambda := range []float64{0.01, 0.5, 3, 9.99, 10, 42, 1000, 1e6} {
		const draws = 20000
		var sum, sumSq float64
		for range draws {
			k := float64(poisson(r, lambda))
			sum += k
			sumSq += k * k
		}
		mean := sum / draws
		variance := sumSq/draws - mean*mean
		// The variance of the sample mean is lambda/draws.
		requireWithin(t, fmt.Sprintf("mean for lambda %g", lambda), mean, lambda, 5*math.Sqrt(lambda/draws))
		// The sample variance of a Poisson has variance about (lambda + 2 lambda^2)/draws.
		requireWithin(t, fmt.Sprintf("variance for lambda %g", lambda), variance, lambda, 5*math.Sqrt((lambda+2*lambda*lambda)/draws))
	}
	require.Zero(t, poisson(r, 0))
	require.Zero(t, poisson(r, math.NaN()))
}

// Run accounts for the time actually elapsed between ticks, whether they come late, early or
// not at all.
func TestRunAccountsForElapsedTime(t *testing.T) {
	cfg := validConfig()
	cfg.Profile = Profile{Rate: 1000}
	w, err := New(cfg)
	require.NoError(t, err)

	start := time.Now()
	ticks := make(chan time.Time)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, start, ticks)
	}()
	elapsed := time.Duration(0)
	for _, gap := range []time.Duration{100 * time.Millisecond, 350 * time.Millisecond, 0, 10 * time.Second, time.Millisecond} {
		elapsed += gap
		ticks <- start.Add(elapsed)
	}
	ticks <- start.Add(elapsed - time.Second) // a time going backwards is ignored
	cancel()
	<-done
	got := w.Totals()
	require.Equal(t, elapsed, got.Simulated)
	want := 1000 * elapsed.Seconds()
	requireWithin(t, "requests", float64(got.Requests), want, 5*math.Sqrt(want))
}

func TestRunStopsWithContext(t *testing.T) {
	cfg := validConfig()
	cfg.Tick = time.Millisecond
	w, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()

	require.Eventually(t, func() bool { return w.Totals().Simulated > 0 }, 10*time.Second, time.Millisecond)
	require.ErrorContains(t, w.Run(ctx), "already running")
	cancel()
	require.NoError(t, <-errc)
}

func TestConcurrentUse(t *testing.T) {
	w, err := New(validConfig())
	require.NoError(t, err)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				w.Step(10 * time.Millisecond)
				assert.NoError(t, w.SetProfile(Profile{Rate: float64(i*10 + j)}))
				_ = w.Profile()
				_ = w.Totals()
				resp, err := srv.Client().Get(srv.URL + "/metrics")
				if assert.NoError(t, err) {
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, 200*10*time.Millisecond, w.Totals().Simulated)
}

func requireWithin(t *testing.T, what string, got, want, tolerance float64) {
	t.Helper()
	require.InDelta(t, want, got, tolerance, "%s: got %g, want %g +- %g", what, got, want, tolerance)
}
