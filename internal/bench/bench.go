// Package bench measures analyzerd at scale with real parts: a nats-server, a Prometheus
// scraping a synthetic exporter of N services, and the daemon in a process of its own (so
// that its CPU and memory are its own), analysing N live rollouts with the shipped template.
// Where a real Prometheus would take the machine, Source "synthetic" puts in its place the
// bench answering the daemon's queries itself, from the exporter's model (synthetic.go): the
// daemon's own costs, without Prometheus's.
// It prints what an operator sizing analyzerd needs: how regularly each rollout gets a
// verdict, how fast a new one gets its first, what the daemon and Prometheus cost, and how
// long a restart takes until every rollout has a verdict again.
//
// Speed is measured here, never asserted by tests: the figures depend on the machine.
package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/ingest"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
)

// benchTemplate is the template of the configuration that the bench's rollouts are analysed
// with (the shipped configuration's HTTP golden signals: errors and latency).
const benchTemplate = "http-golden-signals"

// Options configure a bench run.
type Options struct {
	// Rollouts is the number of live rollouts, one per synthetic service.
	Rollouts int
	// Duration is the measurement window, after every rollout has its first verdict (or
	// Warmup has passed).
	Duration time.Duration
	// Warmup bounds the wait for every rollout's first verdict before the window opens.
	Warmup time.Duration
	// Interval is what the gaps are judged against: by default the interval of the
	// configuration's http-golden-signals template, the one analysed.
	Interval time.Duration
	// ScrapeInterval is Prometheus's; Rate the requests per second of each side of each
	// service; PerShard the services per scrape target.
	ScrapeInterval time.Duration
	Rate           float64
	PerShard       int
	// Restart measures, after the window, a SIGKILL and restart of the daemon; with
	// Replicas > 1, a SIGKILL of one replica and the takeover of its rollouts by the others.
	Restart bool
	// Replicas is the number of daemons, each a replica of its own on its own node of a
	// JetStream cluster of as many servers (1: one daemon on one server).
	Replicas int
	// Daemon is the analyzerd binary; Config the configuration it runs with (its
	// http-golden-signals template is the one analysed).
	Daemon, Config string
	// Source is the daemon's metrics source: SourcePrometheus (the default), a real
	// Prometheus scraping the exporter, or SourceSynthetic, the bench answering the daemon's
	// queries itself from the exporter's model (synthetic.go), for the daemon's own costs at
	// sizes where a real Prometheus would take the machine.
	Source string
	// Prometheus is the prometheus binary (promproc.Find when empty).
	Prometheus string
	// Progress receives a line per phase; DaemonLog the daemon's output.
	Progress, DaemonLog io.Writer
}

func (o *Options) defaults() {
	if o.Duration <= 0 {
		o.Duration = 3 * time.Minute
	}
	if o.Warmup <= 0 {
		o.Warmup = 5 * time.Minute
	}
	if o.ScrapeInterval <= 0 {
		o.ScrapeInterval = 5 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 20
	}
	if o.PerShard <= 0 {
		o.PerShard = 100
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Source == "" {
		o.Source = SourcePrometheus
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.DaemonLog == nil {
		o.DaemonLog = io.Discard
	}
}

// The metrics sources (Options.Source).
const (
	SourcePrometheus = "prometheus"
	SourceSynthetic  = "synthetic"
)

// Report is what a run measured.
type Report struct {
	// Source is the run's Options.Source.
	Source   string
	Rollouts int
	Interval time.Duration
	Window   time.Duration

	// Gaps between consecutive verdicts of a rollout within the window, over all rollouts.
	GapP50, GapP99, GapMax time.Duration
	// EveryInterval is the share of rollouts whose every gap in the window (counting from
	// the window's start and to its end) was at most 1.5 intervals.
	EveryInterval float64
	// NoVerdict counts the rollouts that had no verdict in the window.
	NoVerdict int
	// Verdicts counts the rollouts by their last verdict at the window's end (proceed,
	// pause...): the exporter's canaries are healthy, so proceed once enough is counted.
	Verdicts map[string]int
	// FirstP50 and FirstP99: from publishing rollout.started to receiving the first
	// verdict; FirstMissing counts those without one by the end of the warm-up.
	FirstP50, FirstP99 time.Duration
	FirstMissing       int
	// OverheadP50 and OverheadP99: for the step events published during the window, one
	// rollout at a time, the daemon's own time from each event to its verdict's publication,
	// the evaluation excepted (analyzerd_event_verdict_overhead_seconds, interpolated within
	// its buckets); StepEvents counts the events it observed.
	OverheadP50, OverheadP99 time.Duration
	StepEvents               int
	// EvaluationsPerSecond over the window, and IdlePerSecond those of them that found no
	// new sample.
	EvaluationsPerSecond, IdlePerSecond float64
	// QueriesPerInterval: the daemon's queries to its source; PrometheusQuerySeconds: the
	// time the source spent serving /api/v1/query, per interval; SourceRefused: the queries
	// the synthetic source refused (none, when it understands every query the daemon sends).
	QueriesPerInterval     float64
	PrometheusQuerySeconds float64
	SourceRefused          int64
	// CPU in cores, RSS the daemon's largest resident set over the window. PrometheusCPU is
	// the source's: with the synthetic one, the bench's own process (which also receives the
	// verdicts).
	DaemonCPU, PrometheusCPU, MachineCPU float64
	DaemonRSS                            int64
	// KVWritesPerSecond: writes to the state bucket (puts and deletes).
	KVWritesPerSecond float64
	// Overdue is the daemon's backlog gauge at the window's end.
	Overdue float64

	// The restart, when measured: until /readyz answered, and until each rollout received a
	// verdict again (p50, and the last of them); RestartMissing counts those without one
	// within the restart's bound.
	Restarted              bool
	RestartReady           time.Duration
	RestartP50, RestartAll time.Duration
	RestartMissing         int

	// With replicas: Owned is how many rollouts each replica owned at the window's end (by
	// their stored records); Lease the configuration's. After a SIGKILL of the first replica,
	// TakeoverP50 and TakeoverAll are from the kill until each of its Killed rollouts
	// received a verdict again (TakeoverMissing without one within the bound), and TakenBy
	// how many of them each survivor owned then.
	Replicas                 int
	Owned                    []int
	Lease                    time.Duration
	Killed                   int
	TakeoverP50, TakeoverAll time.Duration
	TakeoverMissing          int
	TakenBy                  []int
}

// Run runs the bench. It returns when the window (and the restart) have been measured, or ctx
// is done.
func Run(ctx context.Context, o Options) (Report, error) {
	o.defaults()
	if o.Rollouts < 1 {
		return Report{}, errors.New("bench: at least one rollout")
	}
	if o.Daemon == "" || o.Config == "" {
		return Report{}, errors.New("bench: the daemon binary and its configuration are required")
	}
	if o.Source != SourcePrometheus && o.Source != SourceSynthetic {
		return Report{}, fmt.Errorf("bench: source %q: want %s or %s", o.Source, SourcePrometheus, SourceSynthetic)
	}
	dir, err := os.MkdirTemp("", "analyzerd-bench-")
	if err != nil {
		return Report{}, err
	}
	defer os.RemoveAll(dir)
	say := func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}

	cfg, err := config.Load(o.Config)
	if err != nil {
		return Report{}, err
	}
	t, ok := cfg.Template(benchTemplate)
	if !ok {
		return Report{}, fmt.Errorf("bench: %s has no template %s, the one the bench analyses", o.Config, benchTemplate)
	}
	if o.Interval <= 0 {
		o.Interval = t.Interval
	}
	nodes, err := startCluster(ctx, dir, o.Replicas)
	if err != nil {
		return Report{}, err
	}
	defer nodes.shutdown()

	exp := newExporter(o.Rollouts, o.PerShard, o.Rate, 0.005, time.Now().Add(-time.Hour))
	var src *source
	if o.Source == SourceSynthetic {
		// No exporter to scrape: each shard is a target in name only, at an address of its own.
		var targets []promproc.Target
		for i := range exp.shards {
			targets = append(targets, promproc.Target{Job: "bench", Address: "exporter-" + strconv.Itoa(i) + ".bench:9100"})
		}
		syn := newSynthetic(exp, targets, o.ScrapeInterval)
		syn.logf = say
		if err := syn.start(); err != nil {
			return Report{}, err
		}
		defer syn.Close()
		src = &source{url: syn.URL(), synthetic: syn}
		say("synthetic source %s: %d services in %d targets at %.0f req/s per side, as if scraped every %s (no Prometheus)",
			syn.URL(), o.Rollouts, len(targets), o.Rate, o.ScrapeInterval)
	} else {
		var targets []promproc.Target
		for i := range exp.shards {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return Report{}, err
			}
			srv := &http.Server{Handler: exp.handler(i), ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			targets = append(targets, promproc.Target{Job: "bench", Address: ln.Addr().String()})
		}
		say("exporter: %d services in %d scrape targets, %.0f req/s per side", o.Rollouts, len(targets), o.Rate)

		prom, err := promproc.Start(ctx, promproc.Options{
			Binary: o.Prometheus, Dir: filepath.Join(dir, "prometheus"), Targets: targets, ScrapeInterval: o.ScrapeInterval,
		})
		if err != nil {
			return Report{}, err
		}
		defer prom.Close()
		if err := prom.WaitTargetsUp(ctx); err != nil {
			return Report{}, err
		}
		src = &source{url: prom.URL()}
		say("prometheus %s scraping every %s", prom.URL(), o.ScrapeInterval)
	}

	nc, err := nats.Connect(nodes.urls())
	if err != nil {
		return Report{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return Report{}, err
	}
	rec := newRecorder(o.Rollouts)
	sub, err := nc.Subscribe("rollouts.verdicts.>", rec.verdict)
	if err != nil {
		return Report{}, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)

	var daemons []*daemon
	for i := range o.Replicas {
		d := &daemon{opts: o, config: o.Config, natsURL: nodes.url(i), promURL: src.url, id: "bench-" + strconv.Itoa(i+1)}
		if o.Replicas > 1 {
			if d.config, err = replicaConfig(dir, o.Config, d.id, o.Replicas); err != nil {
				return Report{}, err
			}
		}
		readyIn, err := d.start(ctx)
		if err != nil {
			return Report{}, err
		}
		defer d.kill()
		daemons = append(daemons, d)
		say("analyzerd %s ready in %s (pid %d, on %s)", d.id, readyIn.Round(time.Millisecond), d.cmd.Process.Pid, d.natsURL)
	}
	d := daemons[0]

	pub := ingest.NewPublisher(js, "")
	for i := range o.Rollouts {
		ev := rollout.Event{
			ID: fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i), Source: "analyzerd-bench",
			Type: rollout.EventStarted, Time: time.Now(),
			Rollout: rollout.Ref{Namespace: "bench", Name: serviceName(i)}, Revision: "v2",
			Analysis: benchTemplate,
			Args:     map[string]string{"service": serviceName(i)},
			Canary:   map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"},
			Weight: 10,
		}
		rec.sent(i, time.Now())
		if err := pub.Publish(ctx, ev); err != nil {
			return Report{}, fmt.Errorf("publish rollout.started: %w", err)
		}
	}
	say("%d rollouts started; waiting for their first verdicts (at most %s)", o.Rollouts, o.Warmup)
	if err := rec.waitFirst(ctx, o.Warmup); err != nil {
		return Report{}, err
	}

	r := Report{Source: o.Source, Rollouts: o.Rollouts, Interval: o.Interval, Window: o.Duration, Replicas: o.Replicas, Lease: cfg.State.Lease}
	r.FirstP50, r.FirstP99, r.FirstMissing = rec.firsts()
	say("measuring for %s", o.Duration)
	before, err := snapshotOf(ctx, daemons, js, src)
	if err != nil {
		return Report{}, err
	}
	windowStart := time.Now()
	var rss int64
	tick := time.NewTicker(time.Second)
	// One rollout at a time goes to its next step, spread over the window (at most ten a
	// second), for the daemon's overhead from an event to its verdict under the load.
	steps := time.NewTicker(max(100*time.Millisecond, o.Duration/time.Duration(o.Rollouts+1)))
	deadline := time.NewTimer(o.Duration)
	stepped := 0
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return Report{}, ctx.Err()
		case <-deadline.C:
			done = true
		case <-tick.C:
			for _, d := range daemons {
				if v, err := rssBytes(d.cmd.Process.Pid); err == nil {
					rss = max(rss, v)
				}
			}
		case <-steps.C:
			if stepped == o.Rollouts {
				continue
			}
			ev := rollout.Event{
				ID: fmt.Sprintf("bench-step-%d-%d", time.Now().UnixNano(), stepped), Source: "analyzerd-bench",
				Type: rollout.EventStep, Time: time.Now(),
				Rollout: rollout.Ref{Namespace: "bench", Name: serviceName(stepped)}, Revision: "v2",
				Step: 1, Weight: 25,
			}
			if err := pub.Publish(ctx, ev); err != nil {
				return Report{}, fmt.Errorf("publish rollout.step: %w", err)
			}
			stepped++
		}
	}
	tick.Stop()
	steps.Stop()
	windowEnd := time.Now()
	after, err := snapshotOf(ctx, daemons, js, src)
	if err != nil {
		return Report{}, err
	}
	window := windowEnd.Sub(windowStart)
	intervals := window.Seconds() / o.Interval.Seconds()
	r.Window = window
	r.GapP50, r.GapP99, r.GapMax, r.EveryInterval, r.NoVerdict = rec.gaps(windowStart, windowEnd, o.Interval)
	r.Verdicts = rec.lastVerdicts()
	r.EvaluationsPerSecond = (after.evaluations - before.evaluations) / window.Seconds()
	r.IdlePerSecond = (after.idle - before.idle) / window.Seconds()
	r.QueriesPerInterval = (after.queries - before.queries) / intervals
	r.PrometheusQuerySeconds = (after.promQuerySeconds - before.promQuerySeconds) / intervals
	r.SourceRefused = after.refused
	r.DaemonCPU = (after.daemonCPU - before.daemonCPU) / window.Seconds()
	r.PrometheusCPU = (after.promCPU - before.promCPU) / window.Seconds()
	r.MachineCPU = (after.machine - before.machine) / window.Seconds()
	r.DaemonRSS = rss
	r.KVWritesPerSecond = float64(after.kvSeq-before.kvSeq) / window.Seconds()
	r.Overdue = after.overdue
	r.OverheadP50, r.StepEvents = histogramQuantile(0.5, before.overhead, after.overhead)
	r.OverheadP99, _ = histogramQuantile(0.99, before.overhead, after.overhead)

	if o.Replicas > 1 {
		store, err := state.Open(ctx, js, state.Options{Bucket: cfg.State.Bucket, Replicas: o.Replicas})
		if err != nil {
			return Report{}, err
		}
		owners, err := ownersOf(ctx, store)
		if err != nil {
			return Report{}, err
		}
		for _, d := range daemons {
			r.Owned = append(r.Owned, len(owners[d.id]))
		}
		if o.Restart {
			victims := append([]int{}, owners[d.id]...) // none is none, not every one (waitAfterOf)
			say("killing replica %s (SIGKILL), which owns %d rollouts", d.id, len(victims))
			d.kill()
			killed := time.Now()
			r.Killed = len(victims)
			r.TakeoverP50, r.TakeoverAll, r.TakeoverMissing = rec.waitAfterOf(ctx, victims, killed, max(5*time.Minute, 20*o.Interval))
			now, err := ownersOf(ctx, store)
			if err != nil {
				return Report{}, err
			}
			for _, s := range daemons[1:] {
				taken := 0
				for _, i := range now[s.id] {
					if slices.Contains(victims, i) {
						taken++
					}
				}
				r.TakenBy = append(r.TakenBy, taken)
			}
		}
		return r, nil
	}
	if o.Restart {
		say("killing analyzerd (SIGKILL) and starting it again")
		d.kill()
		killed := time.Now()
		readyIn, err := d.start(ctx)
		if err != nil {
			return Report{}, err
		}
		r.Restarted, r.RestartReady = true, readyIn
		bound := max(5*time.Minute, 20*o.Interval)
		r.RestartP50, r.RestartAll, r.RestartMissing = rec.waitAfter(ctx, killed, bound)
	}
	return r, nil
}

// Print writes the report as a table.
func (r Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s" }
	row("live rollouts", "%d", r.Rollouts)
	row("window", "%s (interval %s)", r.Window.Round(time.Second), r.Interval)
	row("verdict gap p50 / p99 / max", "%s / %s / %s", secs(r.GapP50), secs(r.GapP99), secs(r.GapMax))
	row("rollouts with a verdict every interval", "%.1f%% (gaps <= 1.5 intervals; %d had none in the window)", 100*r.EveryInterval, r.NoVerdict)
	var last []string
	for _, d := range slices.Sorted(maps.Keys(r.Verdicts)) {
		last = append(last, d+" "+strconv.Itoa(r.Verdicts[d]))
	}
	row("last verdict at the window's end", "%s", strings.Join(last, ", "))
	row("event -> first verdict p50 / p99", "%s / %s (%d without one in the warm-up)", secs(r.FirstP50), secs(r.FirstP99), r.FirstMissing)
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
	}
	row("step event -> verdict, daemon overhead p50 / p99", "%s / %s (%d step events in the window; the evaluation excepted)", ms(r.OverheadP50), ms(r.OverheadP99), r.StepEvents)
	row("evaluations/s", "%.1f (%.1f of them found no new sample)", r.EvaluationsPerSecond, r.IdlePerSecond)
	row("queries per interval", "%.0f", r.QueriesPerInterval)
	if r.Source == SourceSynthetic {
		row("synthetic source query time per interval", "%.3f s (no Prometheus: the bench answers from the exporter's model; %d queries refused)", r.PrometheusQuerySeconds, r.SourceRefused)
	} else {
		row("prometheus query time per interval", "%.3f s", r.PrometheusQuerySeconds)
	}
	row("analyzerd CPU / RSS", "%.2f cores / %d MiB", r.DaemonCPU, r.DaemonRSS>>20)
	if r.Source == SourceSynthetic {
		row("bench CPU (synthetic source)", "%.2f cores (the bench's own process)", r.PrometheusCPU)
	} else {
		row("prometheus CPU", "%.2f cores", r.PrometheusCPU)
	}
	row("machine busy", "%.2f cores", r.MachineCPU)
	row("state writes/s", "%.1f", r.KVWritesPerSecond)
	row("overdue at the end", "%.0f", r.Overdue)
	if r.Replicas > 1 {
		row("replicas", "%d on a %d-node NATS cluster; rollouts owned %v (even: %d each)", r.Replicas, r.Replicas, r.Owned, r.Rollouts/r.Replicas)
		if r.Killed > 0 || r.TakenBy != nil {
			row("takeover: verdict again p50 / all", "%s / %s after the kill of %d rollouts' owner (%d without one; lease %s)", secs(r.TakeoverP50), secs(r.TakeoverAll), r.Killed, r.TakeoverMissing, r.Lease)
			row("takeover: taken by the survivors", "%v", r.TakenBy)
		}
	}
	if r.Restarted {
		row("restart: ready after", "%s", secs(r.RestartReady))
		row("restart: verdict again p50 / all", "%s / %s after the kill (%d without one)", secs(r.RestartP50), secs(r.RestartAll), r.RestartMissing)
	}
	_ = tw.Flush()
}

// recorder keeps when each rollout's verdicts arrived.
type recorder struct {
	mu       sync.Mutex
	sentAt   []time.Time
	received [][]time.Time
	last     []string      // each rollout's last verdict (proceed, pause...)
	changed  chan struct{} // signalled (without blocking) at each verdict
}

func newRecorder(n int) *recorder {
	return &recorder{sentAt: make([]time.Time, n), received: make([][]time.Time, n), last: make([]string, n), changed: make(chan struct{}, 1)}
}

// decisionOf is a verdict's decision, its first "verdict" member (rollout.Verdict's), read
// without decoding the whole verdict: at 10,000 rollouts the bench receives a thousand a second.
func decisionOf(data []byte) string {
	const key = `"verdict":"`
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return "unreadable"
	}
	rest := data[i+len(key):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "unreadable"
	}
	return string(rest[:end])
}

// lastVerdicts counts the rollouts by their last verdict ("none" without one).
func (r *recorder) lastVerdicts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, d := range r.last {
		if d == "" {
			d = "none"
		}
		out[d]++
	}
	return out
}

func (r *recorder) sent(i int, t time.Time) {
	r.mu.Lock()
	r.sentAt[i] = t
	r.mu.Unlock()
}

func (r *recorder) verdict(m *nats.Msg) {
	now := time.Now()
	// rollouts.verdicts.<namespace>.<name>: the bench's names are subject tokens as they are.
	name, ok := strings.CutPrefix(m.Subject, "rollouts.verdicts.bench.svc-")
	if !ok {
		return
	}
	i, err := strconv.Atoi(name)
	if err != nil {
		return
	}
	decision := decisionOf(m.Data)
	r.mu.Lock()
	if i >= 0 && i < len(r.received) {
		r.received[i] = append(r.received[i], now)
		if r.last[i] != decision {
			r.last[i] = decision
		}
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// waitFirst waits until every rollout has a verdict, or bound has passed.
func (r *recorder) waitFirst(ctx context.Context, bound time.Duration) error {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		r.mu.Lock()
		missing := 0
		for _, rs := range r.received {
			if len(rs) == 0 {
				missing++
			}
		}
		r.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return nil
		case <-r.changed:
		}
	}
}

func (r *recorder) firsts() (p50, p99 time.Duration, missing int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ds []time.Duration
	for i, rs := range r.received {
		if len(rs) == 0 {
			missing++
			continue
		}
		ds = append(ds, rs[0].Sub(r.sentAt[i]))
	}
	return quantile(ds, 0.5), quantile(ds, 0.99), missing
}

// gaps measures the window: the gaps between consecutive verdicts, and per rollout whether
// every gap, from the window's start to its end, was within 1.5 intervals.
func (r *recorder) gaps(from, to time.Time, interval time.Duration) (p50, p99, maxGap time.Duration, every float64, none int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []time.Duration
	regular := 0
	limit := interval + interval/2
	for _, rs := range r.received {
		var in []time.Time
		for _, t := range rs {
			if !t.Before(from) && !t.After(to) {
				in = append(in, t)
			}
		}
		if len(in) == 0 {
			none++
			maxGap = max(maxGap, to.Sub(from))
			continue
		}
		worst := max(in[0].Sub(from), to.Sub(in[len(in)-1]))
		for k := 1; k < len(in); k++ {
			g := in[k].Sub(in[k-1])
			all = append(all, g)
			worst = max(worst, g)
		}
		maxGap = max(maxGap, worst)
		if worst <= limit {
			regular++
		}
	}
	return quantile(all, 0.5), quantile(all, 0.99), maxGap, float64(regular) / float64(len(r.received)), none
}

// waitAfter waits until every rollout has received a verdict after t (or bound has passed),
// and returns how long after t the median and the last one came.
func (r *recorder) waitAfter(ctx context.Context, t time.Time, bound time.Duration) (p50, all time.Duration, missing int) {
	return r.waitAfterOf(ctx, nil, t, bound)
}

// waitAfterOf is waitAfter for the rollouts of the given indexes (nil: every one).
func (r *recorder) waitAfterOf(ctx context.Context, which []int, t time.Time, bound time.Duration) (p50, all time.Duration, missing int) {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	if which == nil {
		which = make([]int, len(r.received))
		for i := range which {
			which[i] = i
		}
	}
	for {
		r.mu.Lock()
		var ds []time.Duration
		missing = 0
		for _, i := range which {
			rs := r.received[i]
			k, _ := slices.BinarySearchFunc(rs, t, func(a, b time.Time) int { return a.Compare(b) })
			if k == len(rs) {
				missing++
				continue
			}
			ds = append(ds, rs[k].Sub(t))
		}
		r.mu.Unlock()
		if missing == 0 {
			return quantile(ds, 0.5), quantile(ds, 1), 0
		}
		select {
		case <-ctx.Done():
			return quantile(ds, 0.5), quantile(ds, 1), missing
		case <-timer.C:
			return quantile(ds, 0.5), quantile(ds, 1), missing
		case <-r.changed:
		}
	}
}

// quantile is the q-quantile of ds (nearest rank); 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// daemon is the analyzerd process under test.
type daemon struct {
	opts             Options
	id, config       string // its replica id and configuration file
	natsURL, promURL string
	httpAddr         string
	cmd              *exec.Cmd
	exited           chan struct{}
}

func (d *daemon) start(ctx context.Context) (time.Duration, error) {
	if d.httpAddr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		d.httpAddr = ln.Addr().String()
		_ = ln.Close()
	}
	began := time.Now()
	d.cmd = exec.Command(d.opts.Daemon, "--config", d.config, "--nats-url", d.natsURL,
		"--prometheus-url", d.promURL, "--http-addr", d.httpAddr, "--log-level", "warn")
	d.cmd.Stdout, d.cmd.Stderr = d.opts.DaemonLog, d.opts.DaemonLog
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return 0, fmt.Errorf("start analyzerd: %w", err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(d.cmd, d.exited)
	client := &http.Client{Timeout: 2 * time.Second}
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		resp, err := client.Get("http://" + d.httpAddr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(began), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-d.exited:
			return 0, errors.New("analyzerd exited before it was ready (its log says why)")
		case <-poll.C:
		}
	}
}

func (d *daemon) kill() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.exited
	d.cmd = nil
}

// snapshot is the counters a window is measured between.
type snapshot struct {
	evaluations, queries      float64
	idle                      float64
	overdue                   float64
	promQuerySeconds, promCPU float64
	refused                   int64
	daemonCPU, machine        float64
	kvSeq                     uint64
	overhead                  []bucket // analyzerd_event_verdict_overhead_seconds
}

// source is the daemon's metrics source: a Prometheus at url, or the synthetic one.
type source struct {
	url       string
	synthetic *synthetic
}

// snapshotOf takes the counters of every running daemon (added up), the metrics source, the
// machine and the state bucket.
func snapshotOf(ctx context.Context, daemons []*daemon, js jetstream.JetStream, src *source) (snapshot, error) {
	var s snapshot
	for _, d := range daemons {
		if d.cmd == nil {
			continue // killed
		}
		m, err := scrape(ctx, "http://"+d.httpAddr+"/metrics")
		if err != nil {
			return s, fmt.Errorf("analyzerd %s metrics: %w", d.id, err)
		}
		s.evaluations += m.sum("analyzerd_evaluations_total", nil)
		s.idle += m.sum("analyzerd_evaluations_without_new_samples_total", nil)
		s.queries += m.sum("analyzerd_query_duration_seconds_count", nil)
		s.overdue += m.sum("analyzerd_evaluations_overdue", nil)
		s.overhead = addBuckets(s.overhead, m.buckets("analyzerd_event_verdict_overhead_seconds"))
		cpu, err := cpuSeconds(d.cmd.Process.Pid)
		if err != nil {
			return s, err
		}
		s.daemonCPU += cpu
	}
	var err error
	if src.synthetic != nil {
		s.promQuerySeconds, s.refused = src.synthetic.busySeconds(), src.synthetic.refused.Load()
		if s.promCPU, err = cpuSeconds(os.Getpid()); err != nil {
			return s, err
		}
	} else {
		pm, err := scrape(ctx, src.url+"/metrics")
		if err != nil {
			return s, fmt.Errorf("prometheus metrics: %w", err)
		}
		s.promQuerySeconds = pm.sum("prometheus_http_request_duration_seconds_sum", map[string]string{"handler": "/api/v1/query"})
		s.promCPU = pm.sum("process_cpu_seconds_total", nil)
	}
	if s.machine, err = machineBusy(); err != nil {
		return s, err
	}
	stream, err := js.Stream(ctx, "KV_"+state.DefaultBucket)
	if err != nil {
		return s, fmt.Errorf("state bucket: %w", err)
	}
	s.kvSeq = stream.CachedInfo().State.LastSeq
	return s, nil
}

// addBuckets adds the buckets of one histogram's series to another's (the same bounds).
func addBuckets(sum, b []bucket) []bucket {
	if sum == nil {
		return slices.Clone(b)
	}
	for i := range sum {
		if i < len(b) && b[i].le == sum[i].le {
			sum[i].count += b[i].count
		}
	}
	return sum
}

// ownersOf lists the rollouts (by index) each replica owns, by their stored records.
func ownersOf(ctx context.Context, store *state.Store) (map[string][]int, error) {
	live, err := store.Live(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]int{}
	for _, e := range live {
		i, err := strconv.Atoi(strings.TrimPrefix(e.Record.Rollout.Name, "svc-"))
		if err != nil || e.Record.Rollout.Namespace != "bench" {
			continue
		}
		out[e.Record.Owner] = append(out[e.Record.Owner], i)
	}
	return out, nil
}

// samples are a scraped exposition's samples, flattened (a histogram's as Prometheus's text
// format writes them: _count, _sum and a _bucket per bound, labelled le).
type samples []sample

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func scrape(ctx context.Context, url string) (samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	var out samples
	for name, f := range families {
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			add := func(n string, v float64) { out = append(out, sample{n, labels, v}) }
			switch {
			case m.Counter != nil:
				add(name, m.Counter.GetValue())
			case m.Gauge != nil:
				add(name, m.Gauge.GetValue())
			case m.Histogram != nil:
				add(name+"_count", float64(m.Histogram.GetSampleCount()))
				add(name+"_sum", m.Histogram.GetSampleSum())
				for _, b := range m.Histogram.Bucket {
					le := maps.Clone(labels)
					le["le"] = strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)
					out = append(out, sample{name + "_bucket", le, float64(b.GetCumulativeCount())})
				}
			case m.Summary != nil:
				add(name+"_count", float64(m.Summary.GetSampleCount()))
				add(name+"_sum", m.Summary.GetSampleSum())
			case m.Untyped != nil:
				add(name, m.Untyped.GetValue())
			}
		}
	}
	return out, nil
}

// sum adds the samples of a name whose labels include match.
func (s samples) sum(name string, match map[string]string) float64 {
	var total float64
next:
	for _, x := range s {
		if x.name != name {
			continue
		}
		for k, v := range match {
			if x.labels[k] != v {
				continue next
			}
		}
		total += x.value
	}
	return total
}

// bucket is one bucket of a histogram: the observations at or below le.
type bucket struct {
	le    float64
	count float64
}

// buckets are a histogram's buckets (of one series: the bench's have no labels), by le;
// the +Inf bucket is implicit in the count.
func (s samples) buckets(name string) []bucket {
	var out []bucket
	for _, x := range s {
		if x.name == name+"_bucket" {
			le, err := strconv.ParseFloat(x.labels["le"], 64)
			if err == nil {
				out = append(out, bucket{le, x.value})
			}
		}
	}
	slices.SortFunc(out, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	if n := len(out); n > 0 && !math.IsInf(out[n-1].le, 1) {
		out = append(out, bucket{math.Inf(1), s.sum(name+"_count", nil)})
	}
	return out
}

// histogramQuantile is the q-quantile of the observations between two snapshots of one
// histogram's buckets, interpolated linearly within its bucket as Prometheus's
// histogram_quantile does, and how many there were. Past the largest finite bound it is
// that bound.
func histogramQuantile(q float64, before, after []bucket) (time.Duration, int) {
	if len(after) == 0 {
		return 0, 0
	}
	diff := make([]bucket, len(after))
	for i, b := range after {
		diff[i] = b
		if i < len(before) && before[i].le == b.le {
			diff[i].count -= before[i].count
		}
	}
	total := diff[len(diff)-1].count // the +Inf bucket's (see buckets)
	diff = diff[:len(diff)-1]
	if total <= 0 {
		return 0, 0
	}
	rank := q * total
	lo, below := 0.0, 0.0
	for _, b := range diff {
		if b.count >= rank {
			if b.count == below {
				return seconds(b.le), int(total)
			}
			return seconds(lo + (b.le-lo)*(rank-below)/(b.count-below)), int(total)
		}
		lo, below = b.le, b.count
	}
	return seconds(lo), int(total)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
