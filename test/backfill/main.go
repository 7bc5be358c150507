// Command backfill serves the two recorded deployments the backtest's tests use
// (internal/backfill: service checkout, healthy; service payments, whose canary fails 2% of
// its requests from its 25% step on; 10 -> 25 -> 50 -> 100% from 2026-11-25T14:00:00Z, five
// minutes a step) on a real Prometheus, until SIGINT or SIGTERM, so that `analyzerd backtest`
// can be tried by hand:
//
//	go run ./test/backfill --listen 127.0.0.1:9091
//
// It needs prometheus and promtool (`apt-get install -y prometheus`); the TSDB lives in a
// temporary directory, removed at the end.
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

	"github.com/analyzerd/analyzerd/internal/backfill"
)

// Start is the recorded rollouts' start.
var Start = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backfill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9091", "address for Prometheus to listen on")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "backfill: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "analyzerd-backfill-")
	if err != nil {
		fmt.Fprintln(stderr, "backfill:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	prom, err := backfill.Serve(ctx, dir, *listen, backfill.Healthy("checkout", Start), backfill.Bad("payments", Start))
	if err != nil {
		fmt.Fprintln(stderr, "backfill:", err)
		return 1
	}
	defer prom.Close()
	fmt.Fprintf(stdout, `Prometheus at %s serves the recorded deployments of 2026-11-25 14:00-14:25 UTC
(services checkout and payments, versions v1 and v2); Ctrl-C stops it. Try:

  go run ./cmd/analyzerd backtest --template http-golden-signals --prometheus %s \
    --from 2026-11-25T14:00:00Z --to 2026-11-25T14:20:00Z \
    --arg service=payments --canary version=v2 --stable version=v1 \
    --steps 10@14:00,25@14:05,50@14:10,100@14:15 --changes
`, prom.URL(), prom.URL())
	<-ctx.Done()
	return 0
}
