package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/app"
	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
	"github.com/analyzerd/analyzerd/internal/workload"
)

// demo shows the whole loop on one machine: Prometheus scraping a synthetic stable and canary
// service, the daemon with embedded NATS, a rollout that proceeds, a step to 50% during which
// the canary starts failing, and the rollback; every verdict is printed as it arrives.
func demo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyzerd demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "configs/analyzerd.yaml", "configuration whose http-golden-signals template the demo uses")
	natsPort := fs.Int("nats-port", 4222, "port of the embedded NATS server (for the nats CLI)")
	httpAddr := fs.String("http-addr", "127.0.0.1:8080", "address of the daemon's HTTP server")
	interval := fs.Duration("interval", 2*time.Second, "analysis interval for the demo (the shipped template says 10s)")
	minStep := fs.Duration("min-step", 15*time.Second, "minimum step duration for the demo (the shipped template says 1m)")
	faultRate := fs.Float64("fault-error-rate", 0.10, "the canary's error rate once the fault is injected")
	hold := fs.Bool("hold", false, "keep everything running after the rollback until Ctrl-C (to explore the rollout page /ui/, curl and the nats CLI)")
	verbose := fs.Bool("v", false, "show the daemon's logs")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := &demoRun{out: stdout, verbose: *verbose, stderr: stderr}
	if err := d.run(ctx, demoOptions{
		configPath: *configPath, natsPort: *natsPort, httpAddr: *httpAddr,
		interval: *interval, minStep: *minStep, faultRate: *faultRate, hold: *hold,
	}); err != nil {
		fmt.Fprintln(stderr, "analyzerd demo:", err)
		return 1
	}
	return 0
}

// demoTolerance is the error rate below which the demo's canary passes.
const demoTolerance = 0.01

type demoOptions struct {
	configPath string
	natsPort   int
	httpAddr   string
	interval   time.Duration
	minStep    time.Duration
	faultRate  float64
	hold       bool
}

type demoRun struct {
	out     io.Writer
	stderr  io.Writer
	verbose bool
	mu      sync.Mutex
}

func (d *demoRun) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "==> "+format+"\n", args...)
}

func (d *demoRun) run(ctx context.Context, o demoOptions) error {
	cfg, err := config.Load(o.configPath)
	if err != nil {
		return fmt.Errorf("%w (run the demo from the repository's root, or pass --config)", err)
	}
	var tmpl *rollout.Template
	for i := range cfg.Templates {
		if cfg.Templates[i].Name == "http-golden-signals" {
			tmpl = &cfg.Templates[i]
		}
	}
	if tmpl == nil {
		return fmt.Errorf("%s has no http-golden-signals template", o.configPath)
	}
	tmpl.Interval, tmpl.MinStepDuration = o.interval, o.minStep
	// Showing a 0.5% error rate within 1.25 x stable's takes thousands of requests; the demo
	// accepts a canary shown below 1% instead, so that it proceeds in seconds.
	for i := range tmpl.Checks {
		if s := tmpl.Checks[i].Sequential; s != nil && tmpl.Checks[i].Kind == rollout.KindRatio {
			seq, tol := *s, demoTolerance
			seq.Tolerance = &tol
			tmpl.Checks[i].Sequential = &seq
		}
	}
	cfg.Ingest.MaxClockSkew = min(cfg.Ingest.MaxClockSkew, o.minStep/2) // must stay below the minimum step
	dir, err := os.MkdirTemp("", "analyzerd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	d.say("looking for prometheus (installing the Debian package when it is missing)")
	binary, err := promproc.Install(ctx, d.stderr)
	if err != nil {
		return err
	}

	d.say("starting the synthetic checkout service: stable v1 and canary v2, 100 req/s each, 0.5%% errors")
	healthy := workload.Profile{Rate: 100, ErrorRate: 0.005, LatencyMedian: 50 * time.Millisecond}
	var targets []promproc.Target
	sides := map[string]*workload.Workload{}
	for i, version := range []string{"v1", "v2"} {
		w, err := workload.New(workload.Config{Service: "checkout", Version: version, Profile: healthy, Seed: int64(i + 1)})
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		go func() { _ = w.Run(ctx) }()
		sides[version] = w
		targets = append(targets, promproc.Target{Job: "checkout", Address: ln.Addr().String()})
	}

	d.say("starting prometheus (%s), scraping both every second", binary)
	prom, err := promproc.Start(ctx, promproc.Options{Binary: binary, Dir: dir + "/prometheus", Targets: targets, ScrapeInterval: time.Second})
	if err != nil {
		return err
	}
	defer prom.Close()
	if err := prom.WaitTargetsUp(ctx); err != nil {
		return err
	}
	d.say("waiting for 20 s of stable history, so that the baseline holds the 1,000 requests the checks need")
	if err := waitForHistory(ctx, prom.URL(), `count_over_time(http_requests_total{service="checkout", version="v1", code="200"}[1m])`, 20); err != nil {
		return err
	}

	cfg.NATS.URL = ""
	cfg.NATS.Embedded.Port = o.natsPort
	cfg.NATS.Embedded.StoreDir = dir + "/nats"
	cfg.Prometheus.URL = prom.URL()
	cfg.HTTP.Addr = o.httpAddr
	logger := zap.NewNop()
	if d.verbose {
		if logger, err = newLogger(config.Log{Level: "info", Format: "console"}, d.stderr); err != nil {
			return err
		}
	}
	daemonCtx, stopDaemon := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDaemon()
	ready := make(chan app.Info, 1)
	daemonDone := make(chan error, 1)
	go func() {
		daemonDone <- app.Run(daemonCtx, cfg, app.Options{Logger: logger, OnReady: func(i app.Info) { ready <- i }})
	}()
	var info app.Info
	select {
	case info = <-ready:
	case err := <-daemonDone:
		return fmt.Errorf("daemon: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() {
		stopDaemon()
		<-daemonDone
	}()
	d.say("analyzerd is running: NATS %s, HTTP http://%s, interval %s, minimum step %s", info.NATSURL, info.HTTPAddr, o.interval, o.minStep)

	nc, err := nats.Connect(info.NATSURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	verdicts := make(chan rolloutclient.Received, 64)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		_ = rolloutclient.WatchVerdicts(watchCtx, js, cfg.NATS.SubjectPrefix, func(r rolloutclient.Received) { verdicts <- r })
	}()

	pub := rolloutclient.Publisher{JS: js, Prefix: cfg.NATS.SubjectPrefix}
	ref := rollout.Ref{Namespace: "demo", Name: "checkout"}
	d.say("publishing rollout.started: demo/checkout, canary v2 at 10%% (a baseline of v1 is captured first)")
	if err := pub.Publish(ctx, ref, "demo-1", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
		Args:   map[string]string{"service": "checkout"},
		Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"},
		Step: 0, Weight: 10,
	}); err != nil {
		return err
	}

	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTEP\tWEIGHT\tVERDICT\tREASON")
	tw.Flush()
	faulted := false
	for {
		var r rolloutclient.Received
		select {
		case r = <-verdicts:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(3 * time.Minute):
			return errors.New("no verdict for 3 minutes")
		}
		v := r.Verdict
		fmt.Fprintf(tw, "%d\t%d\t%d%%\t%s\t%s\n", v.Sequence, v.Step, v.Weight, strings.ToUpper(string(v.Verdict)), v.Reason)
		tw.Flush()
		switch {
		case v.Verdict == rollout.Proceed && !faulted:
			faulted = true
			d.say("the canary may proceed: publishing rollout.step to 50%%, and injecting a fault: v2 now fails %.0f%% of requests", o.faultRate*100)
			if err := pub.Publish(ctx, ref, "demo-2", rollout.EventStep, time.Now(), rolloutclient.Step{Rollout: ref, Revision: "v2", Step: 1, Weight: 50}); err != nil {
				return err
			}
			p := sides["v2"].Profile()
			p.ErrorRate = o.faultRate
			if err := sides["v2"].SetProfile(p); err != nil {
				return err
			}
		case v.Verdict == rollout.Rollback:
			d.say("rolled back. The verdict a controller receives (trace %s):", v.TraceID)
			fmt.Fprintln(d.out, string(indentJSON(r.Envelope.Data)))
			d.say("the same verdict is served at http://%s/v1/rollouts/demo/checkout", info.HTTPAddr)
			d.say("the rollout's page, its verdicts and charts: http://%s/ui/rollouts/demo/checkout (all rollouts: http://%s/ui/)", info.HTTPAddr, info.HTTPAddr)
			if o.hold {
				d.say("holding: the page stays up on http://%s/ui/, NATS on %s, Prometheus on %s; Ctrl-C to stop", info.HTTPAddr, info.NATSURL, prom.URL())
				<-ctx.Done()
			}
			return pub.Publish(context.WithoutCancel(ctx), ref, "demo-3", rollout.EventAborted, time.Now(), rolloutclient.Ended{Rollout: ref, Revision: "v2", Reason: "demo rollback"})
		}
	}
}

func indentJSON(raw []byte) []byte {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return raw
	}
	return b.Bytes()
}

// waitForHistory polls Prometheus until expr returns a value of at least min.
func waitForHistory(ctx context.Context, url, expr string, min float64) error {
	source, err := compare.NewPrometheus(compare.PrometheusOptions{URL: url, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		resp := source.Query(ctx, []compare.Request{{Expr: expr, Time: time.Now()}})[0]
		if resp.Err == nil && len(resp.Series) > 0 && resp.Series[0].Value >= min {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prometheus has no history of %s yet: %w", expr, ctx.Err())
		case <-tick.C:
		}
	}
}
