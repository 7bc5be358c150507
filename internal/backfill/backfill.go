// Package backfill records synthetic deployments as Prometheus history: a service's stable and
// canary pods, each scraped every 15 s at its own offset, exposing http_requests_total by code
// and http_request_duration_seconds_bucket as raw counters (hours of uptime before, a pod
// restart resetting them), their traffic split by the rollout's steps; written as OpenMetrics
// text, turned into TSDB blocks by `promtool tsdb create-blocks-from openmetrics`, and served
// by a real Prometheus (internal/promproc). For the backtest's tests and for trying
// `analyzerd backtest` by hand (test/backfill).
package backfill

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/replay"
)

// Buckets are the histogram's upper bounds, client_golang's DefBuckets.
var Buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Pod is one scrape target of a version.
type Pod struct {
	Name    string
	Version string
	// Offset is where in each scrape interval the pod is scraped.
	Offset time.Duration
	// Restart, when set, is when the pod's process restarts: its counters start again at 0.
	Restart time.Time
}

// Deployment is one service's rollout as its pods' metrics record it.
type Deployment struct {
	Service        string
	Stable, Canary string // the versions
	Pods           []Pod
	// Steps split the traffic: the canary takes Steps[i].Weight percent from Steps[i].At on,
	// spread evenly over its pods, the stable side the rest over its own. Before Steps[0]
	// the stable side takes it all.
	Steps []replay.Step
	// Rate is the service's requests per second, ErrorRate the share that fail with a 500,
	// and the latency is log-normal around LatencyMedian (LatencySigma its log's spread).
	Rate          float64
	ErrorRate     float64
	LatencyMedian time.Duration
	LatencySigma  float64
	// FaultFrom, when set, is when the canary starts failing FaultErrorRate of its requests.
	FaultFrom      time.Time
	FaultErrorRate float64
	// From and To bound the recorded history; Scrape is every pod's scrape interval.
	From, To time.Time
	Scrape   time.Duration
	Seed     uint64
}

// weight is the canary's share of traffic at t, in percent.
func (d Deployment) weight(t time.Time) int {
	w := 0
	for _, s := range d.Steps {
		if !t.Before(s.At) {
			w = s.Weight
		}
	}
	return w
}

// series is one counter of one pod: its labels and its samples.
type series struct {
	family string // the metric family (http_requests, http_request_duration_seconds)
	name   string
	labels map[string]string
	t      []time.Time
	v      []float64
}

// OpenMetrics renders the deployments' scrapes as OpenMetrics text with explicit timestamps
// (milliseconds), one metric family after the other, each series' samples in time order.
func OpenMetrics(deps ...Deployment) string { return openMetrics(records(deps)) }

func records(deps []Deployment) []*series {
	var all []*series
	for _, d := range deps {
		all = append(all, d.record()...)
	}
	return all
}

func openMetrics(all []*series) string {
	var b strings.Builder
	for _, fam := range []struct{ name, typ string }{
		{"http_requests", "counter"}, {"http_request_duration_seconds", "histogram"},
	} {
		fmt.Fprintf(&b, "# TYPE %s %s\n", fam.name, fam.typ)
		for _, s := range all {
			if s.family != fam.name {
				continue
			}
			keys := make([]string, 0, len(s.labels))
			for k := range s.labels {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			pairs := make([]string, len(keys))
			for i, k := range keys {
				pairs[i] = k + "=" + strconv.Quote(s.labels[k])
			}
			id := s.name + "{" + strings.Join(pairs, ",") + "}"
			for i := range s.t {
				ms := s.t[i].UnixMilli()
				fmt.Fprintf(&b, "%s %s %d.%03d\n", id, strconv.FormatFloat(s.v[i], 'f', -1, 64), ms/1000, ms%1000)
			}
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

// record simulates every pod second by second (Poisson traffic, each request's latency and
// failure drawn independently) and samples its counters at its scrapes.
func (d Deployment) record() []*series {
	rng := rand.New(rand.NewPCG(d.Seed, 0x6261636b66696c6c))
	// The share of requests in each bucket's interval (the last: above the largest bound).
	shares := make([]float64, len(Buckets)+1)
	prev := 0.0
	mu := math.Log(d.LatencyMedian.Seconds())
	for i, le := range Buckets {
		c := 0.5 * math.Erfc(-(math.Log(le)-mu)/(d.LatencySigma*math.Sqrt2))
		shares[i], prev = c-prev, c
	}
	shares[len(Buckets)] = 1 - prev
	var pods [2][]int // by side: 0 stable, 1 canary
	for i, p := range d.Pods {
		side := 0
		if p.Version == d.Canary {
			side = 1
		}
		pods[side] = append(pods[side], i)
	}

	var out []*series
	for pi, p := range d.Pods {
		base := map[string]string{"service": d.Service, "version": p.Version, "pod": p.Name,
			"job": d.Service, "instance": p.Name + ":8080"}
		with := func(k, v string) map[string]string {
			m := make(map[string]string, len(base)+1)
			for a, b := range base {
				m[a] = b
			}
			m[k] = v
			return m
		}
		ok := &series{family: "http_requests", name: "http_requests_total", labels: with("code", "200")}
		failed := &series{family: "http_requests", name: "http_requests_total", labels: with("code", "500")}
		buckets := make([]*series, len(Buckets)+1)
		for i := range buckets {
			le := "+Inf"
			if i < len(Buckets) {
				le = strconv.FormatFloat(Buckets[i], 'f', -1, 64)
			}
			buckets[i] = &series{family: "http_request_duration_seconds", name: "http_request_duration_seconds_bucket", labels: with("le", le)}
		}
		// Hours of uptime before the history: the counters start high (the same on every
		// pod of a side but for a per-pod factor).
		uptime := 3600 * (2 + float64(pi))
		side := 0
		if p.Version == d.Canary {
			side = 1
		}
		perPodRate := d.Rate / float64(max(len(pods[0]), 1))
		if side == 1 {
			perPodRate = d.Rate / float64(max(len(pods[1]), 1))
		}
		var cOK, cFailed float64
		cBuckets := make([]float64, len(Buckets)+1)
		if side == 0 {
			cOK = math.Round(perPodRate * uptime * (1 - d.ErrorRate))
			cFailed = math.Round(perPodRate * uptime * d.ErrorRate)
			for i, s := range shares {
				cBuckets[i] = math.Round(perPodRate * uptime * s)
			}
		}
		restarted := p.Restart.IsZero()
		from := d.From
		if side == 1 && len(d.Steps) > 0 {
			from = d.Steps[0].At.Add(-time.Minute) // the canary's pods are created for the rollout
		}
		next := from.Truncate(d.Scrape).Add(p.Offset)
		for next.Before(from) {
			next = next.Add(d.Scrape)
		}
		for sec := from; !sec.After(d.To); sec = sec.Add(time.Second) {
			if !restarted && !sec.Before(p.Restart) {
				restarted = true
				cOK, cFailed = 0, 0
				clear(cBuckets)
			}
			// The pod's requests in this second.
			w := float64(d.weight(sec)) / 100
			share := 1 - w
			errRate := d.ErrorRate
			if side == 1 {
				share = w
				if !d.FaultFrom.IsZero() && !sec.Before(d.FaultFrom) {
					errRate = d.FaultErrorRate
				}
			}
			mean := perPodRate * share
			var total float64
			for i, s := range shares {
				n := poisson(rng, mean*s)
				cBuckets[i] += n
				total += n
			}
			nFailed := binomial(rng, total, errRate)
			cFailed += nFailed
			cOK += total - nFailed
			for !next.After(sec.Add(time.Second)) && !next.After(d.To) {
				if !next.Before(sec) { // scraped within this second: what it counted so far
					ok.add(next, cOK)
					if cFailed > 0 || side == 0 {
						failed.add(next, cFailed)
					}
					run := 0.0
					for i := range buckets {
						run += cBuckets[i]
						buckets[i].add(next, run)
					}
				}
				next = next.Add(d.Scrape)
			}
		}
		out = append(out, ok)
		if len(failed.t) > 0 {
			out = append(out, failed)
		}
		out = append(out, buckets...)
	}
	return out
}

func (s *series) add(t time.Time, v float64) {
	s.t = append(s.t, t)
	s.v = append(s.v, v)
}

// poisson draws a Poisson count of the given mean (a rounded normal above 50).
func poisson(rng *rand.Rand, mean float64) float64 {
	switch {
	case mean <= 0:
		return 0
	case mean > 50:
		return math.Max(0, math.Round(mean+math.Sqrt(mean)*rng.NormFloat64()))
	}
	l, k, p := math.Exp(-mean), 0.0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// binomial draws the failures among n requests each failing with probability p (Poisson:
// p is small).
func binomial(rng *rand.Rand, n, p float64) float64 {
	return math.Min(n, poisson(rng, n*p))
}

// Prometheus is a real Prometheus serving backfilled history.
type Prometheus struct {
	*promproc.Process
}

// Serve writes the deployments' history into a TSDB in dir with promtool, and starts a
// Prometheus on it (no scrape targets; a retention that keeps history of any age), listening
// on addr ("" for a free loopback port). It returns once every series answers. promtool is
// looked up next to the prometheus binary, then in PATH.
func Serve(ctx context.Context, dir, addr string, deps ...Deployment) (*Prometheus, error) {
	binary, err := promproc.Find()
	if err != nil {
		return nil, err
	}
	promtool, err := exec.LookPath(filepath.Join(filepath.Dir(binary), "promtool"))
	if err != nil {
		if promtool, err = exec.LookPath("promtool"); err != nil {
			return nil, fmt.Errorf("promtool not found next to %s or in PATH (it comes with `apt-get install -y prometheus`): %w", binary, err)
		}
	}
	input := filepath.Join(dir, "history.om")
	all := records(deps)
	if err := os.WriteFile(input, []byte(openMetrics(all)), 0o600); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data") // promproc's TSDB directory for Options.Dir
	if out, err := exec.CommandContext(ctx, promtool, "tsdb", "create-blocks-from", "openmetrics", input, data).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("promtool tsdb create-blocks-from openmetrics: %w: %s", err, out)
	}
	proc, err := promproc.Start(ctx, promproc.Options{Binary: binary, Dir: dir, Addr: addr,
		Args: []string{"--storage.tsdb.retention.time=36500d"}})
	if err != nil {
		return nil, err
	}
	if err := waitSeries(ctx, proc.URL(), all, deps); err != nil {
		return nil, errors.Join(err, proc.Close())
	}
	return &Prometheus{Process: proc}, nil
}

// waitSeries polls until Prometheus answers every recorded series: ready means its TSDB is
// open, not yet that the backfilled blocks are loaded.
func waitSeries(ctx context.Context, url string, all []*series, deps []Deployment) error {
	want := len(all)
	var last time.Time
	for _, d := range deps {
		if d.To.After(last) {
			last = d.To
		}
	}
	src, err := compare.NewPrometheus(compare.PrometheusOptions{URL: url, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	expr := `count(last_over_time({__name__=~"http_requests_total|http_request_duration_seconds_bucket"}[2h]))`
	for {
		r := src.Query(ctx, []compare.Request{{Expr: expr, Time: last}})[0]
		got := -1
		if r.Err == nil && len(r.Series) == 1 {
			got = int(r.Series[0].Value)
			if got == want {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prometheus does not serve the %d backfilled series (%d; %v): %w", want, got, r.Err, ctx.Err())
		case <-tick.C:
		}
	}
}

// Healthy is a deployment whose canary is as good as its stable version: 4,000 req/s, 0.05%
// errors, 50 ms median latency; stable on four pods, the canary on two, each scraped every 15
// s at its own offset; one stable pod restarts in the 25% step and one canary pod in the 50%
// step. Its history runs from 20 minutes before start to 25 minutes after; its steps are 10%
// at start, 25% 5 minutes later, 50% at 10 and 100% at 15.
func Healthy(service string, start time.Time) Deployment {
	return Deployment{
		Service: service, Stable: "v1", Canary: "v2",
		Pods: []Pod{
			{Name: service + "-v1-a", Version: "v1", Offset: 1200 * time.Millisecond},
			{Name: service + "-v1-b", Version: "v1", Offset: 4700 * time.Millisecond, Restart: start.Add(7*time.Minute + 20*time.Second)},
			{Name: service + "-v1-c", Version: "v1", Offset: 8300 * time.Millisecond},
			{Name: service + "-v1-d", Version: "v1", Offset: 12900 * time.Millisecond},
			{Name: service + "-v2-a", Version: "v2", Offset: 2600 * time.Millisecond},
			{Name: service + "-v2-b", Version: "v2", Offset: 10100 * time.Millisecond, Restart: start.Add(12*time.Minute + 40*time.Second)},
		},
		Steps: []replay.Step{
			{Weight: 10, At: start}, {Weight: 25, At: start.Add(5 * time.Minute)},
			{Weight: 50, At: start.Add(10 * time.Minute)}, {Weight: 100, At: start.Add(15 * time.Minute)},
		},
		Rate: 4000, ErrorRate: 0.0005, LatencyMedian: 40 * time.Millisecond, LatencySigma: 0.25,
		From: start.Add(-20 * time.Minute), To: start.Add(25 * time.Minute), Scrape: 15 * time.Second,
		Seed: 1,
	}
}

// Bad is Healthy but for its canary, which fails 2% of its requests from the 25% step on (the
// code path that fails is hit only under the load that step brings).
func Bad(service string, start time.Time) Deployment {
	d := Healthy(service, start)
	d.FaultFrom, d.FaultErrorRate = d.Steps[1].At, 0.02
	d.Seed = 2
	return d
}
