package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/analyzerd/analyzerd/internal/bench"
	"github.com/analyzerd/analyzerd/internal/promproc"
)

// benchCmd measures the daemon at scale with real parts (internal/bench) and prints the
// figures.
func benchCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyzerd bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rollouts := fs.Int("rollouts", 100, "live rollouts (one synthetic service each)")
	duration := fs.Duration("duration", 3*time.Minute, "measurement window, once every rollout has its first verdict")
	warmup := fs.Duration("warmup", 5*time.Minute, "longest wait for every rollout's first verdict before the window")
	restart := fs.Bool("restart", true, "after the window, SIGKILL the daemon, start it again and measure until every rollout has a verdict again (with --replicas: SIGKILL one replica and measure the takeover of its rollouts)")
	replicas := fs.Int("replicas", 1, "daemons, each a replica on its own node of a JetStream cluster of as many servers")
	configPath := fs.String("config", "configs/analyzerd.yaml", "configuration the daemon runs with (its http-golden-signals template is analysed)")
	daemonPath := fs.String("daemon", "", "analyzerd binary (default: this one)")
	scrape := fs.Duration("scrape-interval", 5*time.Second, "Prometheus's scrape interval")
	rate := fs.Float64("rate", 20, "requests per second of each side of each service")
	perShard := fs.Int("per-target", 100, "services per scrape target")
	source := fs.String("source", bench.SourcePrometheus, "the daemon's metrics source: prometheus (a real one scraping the exporter) or synthetic (no Prometheus: the bench answers the daemon's queries from the exporter's model, as if scraped every --scrape-interval; the figures are the daemon's own costs)")
	verbose := fs.Bool("v", false, "show the daemon's logs (warnings and errors)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "analyzerd bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *daemonPath == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "analyzerd bench:", err)
			return 1
		}
		*daemonPath = self
	}
	if _, err := os.Stat(*configPath); err != nil {
		fmt.Fprintf(stderr, "analyzerd bench: %v (run it from the repository's root, or pass --config)\n", err)
		return 2
	}
	if *source != bench.SourcePrometheus && *source != bench.SourceSynthetic {
		fmt.Fprintf(stderr, "analyzerd bench: --source %q: want %s or %s\n", *source, bench.SourcePrometheus, bench.SourceSynthetic)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var prom string
	if *source == bench.SourcePrometheus {
		var err error
		if prom, err = promproc.Install(ctx, stderr); err != nil {
			fmt.Fprintln(stderr, "analyzerd bench:", err)
			return 1
		}
	}
	var daemonLog io.Writer = io.Discard
	if *verbose {
		daemonLog = stderr
	}
	r, err := bench.Run(ctx, bench.Options{
		Rollouts: *rollouts, Duration: *duration, Warmup: *warmup, Restart: *restart, Replicas: *replicas,
		ScrapeInterval: *scrape, Rate: *rate, PerShard: *perShard,
		Daemon: *daemonPath, Config: *configPath, Source: *source, Prometheus: prom,
		Progress: stderr, DaemonLog: daemonLog,
	})
	if err != nil {
		fmt.Fprintln(stderr, "analyzerd bench:", err)
		return 1
	}
	r.Print(stdout)
	return 0
}
