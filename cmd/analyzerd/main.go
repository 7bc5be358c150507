// Command analyzerd is the canary analysis daemon: it consumes rollout events from NATS
// JetStream, compares canary and stable metrics in Prometheus, and publishes verdicts.
//
//	analyzerd --config FILE [--nats-url URL] [--prometheus-url URL] [--http-addr ADDR]
//	analyzerd validate --config FILE
//	analyzerd demo
//	analyzerd version
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

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analyzerd/analyzerd/internal/app"
	"github.com/analyzerd/analyzerd/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "validate":
			return validate(args[1:], stdout, stderr)
		case "demo":
			return demo(args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, version)
			return 0
		case "help", "-h", "--help":
			usage(stdout)
			return 0
		}
	}
	return daemon(args, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `analyzerd: canary analysis as a service.

Usage:
  analyzerd --config FILE [--nats-url URL] [--prometheus-url URL] [--http-addr ADDR]
            [--log-level LEVEL] [--log-format json|console]
                                   run the daemon (no --nats-url: embedded NATS on 127.0.0.1:4222)
  analyzerd validate --config FILE check a configuration file; lists every error
  analyzerd demo [flags]           the whole loop on one machine (see analyzerd demo --help)
  analyzerd version                print the version
`)
}

// daemonFlags are the flags that override the configuration file.
type daemonFlags struct {
	configPath    string
	natsURL       string
	prometheusURL string
	httpAddr      string
	logLevel      string
	logFormat     string
}

func parseDaemonFlags(args []string, stderr io.Writer) (daemonFlags, *flag.FlagSet, error) {
	var f daemonFlags
	fs := flag.NewFlagSet("analyzerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr); fmt.Fprintln(stderr, "\nFlags:"); fs.PrintDefaults() }
	fs.StringVar(&f.configPath, "config", "", "configuration file (required)")
	fs.StringVar(&f.natsURL, "nats-url", "", "NATS server URL; empty starts an embedded server with JetStream")
	fs.StringVar(&f.prometheusURL, "prometheus-url", config.DefaultPrometheusURL, "Prometheus URL")
	fs.StringVar(&f.httpAddr, "http-addr", config.DefaultHTTPAddr, "address of the HTTP server (metrics, health, read API)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or console")
	if err := fs.Parse(args); err != nil {
		return f, fs, err
	}
	if fs.NArg() > 0 {
		return f, fs, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if f.configPath == "" {
		return f, fs, errors.New("--config FILE is required (the repository ships configs/analyzerd.yaml)")
	}
	return f, fs, nil
}

// load reads the configuration and applies the flags that were set explicitly.
func load(f daemonFlags, fs *flag.FlagSet) (config.Config, error) {
	cfg, err := config.Load(f.configPath)
	if err != nil {
		return cfg, err
	}
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "nats-url":
			cfg.NATS.URL = f.natsURL
		case "prometheus-url":
			cfg.Prometheus.URL = f.prometheusURL
		case "http-addr":
			cfg.HTTP.Addr = f.httpAddr
		case "log-level":
			cfg.Log.Level = f.logLevel
		case "log-format":
			cfg.Log.Format = f.logFormat
		}
	})
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("with the flags applied: %w", err)
	}
	return cfg, nil
}

func daemon(args []string, stderr io.Writer) int {
	f, fs, err := parseDaemonFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "analyzerd:", err)
		return 2
	}
	cfg, err := load(f, fs)
	if err != nil {
		fmt.Fprintln(stderr, "analyzerd:", err)
		return 2
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "analyzerd:", err)
		return 2
	}
	defer func() { _ = logger.Sync() }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig, ok := <-signals
		if !ok {
			return
		}
		signal.Stop(signals) // a second signal kills the process at once
		logger.Info("stopping", zap.String("signal", sig.String()), zap.Stringer("timeout", cfg.ShutdownTimeout))
		cancel()
	}()
	defer func() { signal.Stop(signals); close(signals) }()
	if err := app.Run(ctx, cfg, app.Options{Logger: logger}); err != nil {
		logger.Error("analyzerd failed", zap.Error(err))
		return 1
	}
	return 0
}

func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyzerd validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file to check")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "analyzerd validate: --config FILE is required")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "%s is not valid:\n", *path)
		for _, e := range config.Errors(err) {
			fmt.Fprintf(stderr, "  - %s\n", e)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s is valid: %d analysis template(s)", *path, len(cfg.Templates))
	for i, t := range cfg.Templates {
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(stdout, "%s%s (%d checks)", sep, t.Name, len(t.Checks))
	}
	fmt.Fprintln(stdout)
	return 0
}

func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level)), nil
}
