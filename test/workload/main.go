// Command workload runs one synthetic service version (internal/workload) as a process: it
// serves /metrics and /profile on --listen and simulates traffic until SIGINT or SIGTERM.
// Run a stable and a canary side by side on different ports:
//
//	go run ./test/workload --listen 127.0.0.1:9101 --service checkout --version v1
//	go run ./test/workload --listen 127.0.0.1:9102 --service checkout --version v2 --error-rate 0.05
//
// It logs the address it listens on (useful with --listen 127.0.0.1:0) as a JSON line on
// stderr: {"msg":"listening","addr":"127.0.0.1:9101",...}.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/workload"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("workload", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9101", "address to serve /metrics and /profile on")
	service := fs.String("service", "checkout", "value of the service label")
	version := fs.String("version", "v1", "value of the version label")
	rate := fs.Float64("rate", 50, "requests per second")
	errorRate := fs.Float64("error-rate", 0, "share of requests answered 500, in [0, 1]")
	latencyMedian := fs.Duration("latency-median", workload.DefaultLatencyMedian, "median request latency")
	latencySpread := fs.Float64("latency-spread", workload.DefaultLatencySpread, "sigma of the log-normal latency")
	seed := fs.Int64("seed", 1, "random seed (the stream also depends on --service and --version)")
	tick := fs.Duration("tick", workload.DefaultTick, "how often traffic is generated")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "workload: unexpected arguments: %q\n", fs.Args())
		return 2
	}

	logger, err := zap.NewProduction()
	if err != nil {
		fmt.Fprintf(os.Stderr, "workload: creating logger: %v\n", err)
		return 1
	}
	defer logger.Sync()

	w, err := workload.New(workload.Config{
		Service: *service,
		Version: *version,
		Profile: workload.Profile{
			Rate:          *rate,
			ErrorRate:     *errorRate,
			LatencyMedian: *latencyMedian,
			LatencySpread: *latencySpread,
		},
		Seed: *seed,
		Tick: *tick,
	})
	if err != nil {
		logger.Error("invalid flags", zap.Error(err))
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, logger, *listen, w); err != nil {
		logger.Error("workload failed", zap.Error(err))
		return 1
	}
	return 0
}

// serve runs the HTTP server and the traffic generator until ctx is done or the server fails.
func serve(ctx context.Context, logger *zap.Logger, addr string, w *workload.Workload) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 10 * time.Second}
	logger.Info("listening",
		zap.String("addr", ln.Addr().String()),
		zap.String("service", w.Service()),
		zap.String("version", w.Version()),
		zap.Any("profile", w.Profile()))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	generated := make(chan error, 1)
	go func() { generated <- w.Run(ctx) }()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		serveErr = fmt.Errorf("serving HTTP: %w", serveErr)
	}
	cancel()
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if err := srv.Shutdown(shutdownCtx); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("shutting down HTTP: %w", err)
	}
	if err := <-generated; err != nil && serveErr == nil {
		serveErr = err
	}
	t := w.Totals()
	logger.Info("stopped",
		zap.Uint64("requests", t.Requests),
		zap.Uint64("errors", t.Errors),
		zap.Duration("simulated", t.Simulated))
	return serveErr
}
