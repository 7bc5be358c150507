// Command analyzerd is the canary analysis daemon: it consumes rollout events from NATS
// JetStream, compares canary and stable metrics in Prometheus, and publishes verdicts.
//
//	analyzerd --config FILE [--nats-url URL] [--prometheus-url URL] [--http-addr ADDR]
//	analyzerd validate --config FILE
//	analyzerd demo
//	analyzerd watch [--nats-url URL] [--namespace NS]
//	analyzerd backtest --from TIME --to TIME --steps W@T,... [--template NAME] [flags]
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
	"time"

	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analyzerd/analyzerd/internal/app"
	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/tracing"
)

// version is set at build time with -ldflags "-X main.version=..."; unset, tracing.Version
// takes the module's version or VCS revision from the build information.
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
		case "watch":
			return watch(args[1:], stdout, stderr)
		case "simulate":
			return simulateCmd(args[1:], stdout, stderr)
		case "bench":
			return benchCmd(args[1:], stdout, stderr)
		case "backtest":
			return backtestCmd(args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, tracing.Version(version))
			return 0
		case "help", "-h", "-help", "--help":
			help(stdout)
			return 0
		}
	}
	return daemon(args, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `analyzerd: canary analysis as a service.

Usage:
  analyzerd --config FILE [--nats-url URL] [--prometheus-url URL] [--http-addr ADDR]
            [--log-level LEVEL] [--log-format json|console]
                                   run the daemon (no --nats-url: embedded NATS on 127.0.0.1:4222)
  analyzerd validate --config FILE check a configuration file; lists every error
  analyzerd demo [flags]           the whole loop on one machine (see analyzerd demo --help)
  analyzerd watch [flags]          a live view of the rollouts and their latest verdicts
  analyzerd simulate [flags]       benchmark a template on simulated traffic against threshold policies
  analyzerd bench [flags]          measure the daemon at scale: N live rollouts on real NATS and Prometheus
  analyzerd backtest [flags]       run a template on Prometheus history of a past deployment; exit 0 proceed, 1 rollback, 2 undecided
  analyzerd version                print the version
`)
}

// help writes the usage and the daemon's flags with their defaults.
func help(w io.Writer) {
	usage(w)
	fmt.Fprintln(w, "\nFlags of the daemon (each overrides the file's value only when given):")
	fs := daemonFlagSet(&daemonFlags{})
	fs.SetOutput(w)
	fs.PrintDefaults()
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

// daemonFlagSet defines the daemon's flags over f. The FlagSet prints nothing itself: the
// caller reports a bad flag once, and writes the help where it belongs.
func daemonFlagSet(f *daemonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("analyzerd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&f.configPath, "config", "", "configuration file (required)")
	fs.StringVar(&f.natsURL, "nats-url", "", "NATS server URL; empty starts an embedded server with JetStream")
	fs.StringVar(&f.prometheusURL, "prometheus-url", config.DefaultPrometheusURL, "Prometheus URL")
	fs.StringVar(&f.httpAddr, "http-addr", config.DefaultHTTPAddr, "address of the HTTP server (metrics, health, read API)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or console")
	return fs
}

// parseDaemonFlags parses the daemon's flags; flag.ErrHelp when help was asked for.
func parseDaemonFlags(args []string) (daemonFlags, *flag.FlagSet, error) {
	var f daemonFlags
	fs := daemonFlagSet(&f)
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

// load decodes the configuration file, applies the flags that were set explicitly, and only
// then validates, so that a flag can fix a value of the file.
func load(f daemonFlags, fs *flag.FlagSet) (config.Config, error) {
	applyFlags := func(cfg *config.Config) {
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
	}
	cfg, err := config.ReadFile(f.configPath, applyFlags)
	if err != nil {
		return config.Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("%s: %w", configName(f, fs), err)
	}
	return cfg, nil
}

// configName names the configuration in errors: the file, and whether flags changed it.
func configName(f daemonFlags, fs *flag.FlagSet) string {
	name := "config " + f.configPath
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name != "config" {
			name = "config " + f.configPath + " with the flags applied"
		}
	})
	return name
}

func daemon(args []string, stdout, stderr io.Writer) int {
	f, fs, err := parseDaemonFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		help(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "analyzerd:", err)
		fmt.Fprintln(stderr, "run 'analyzerd --help' for the commands and flags")
		return 2
	}
	cfg, err := load(f, fs)
	if err != nil {
		if len(config.Errors(err)) == 1 {
			fmt.Fprintln(stderr, "analyzerd:", err)
		} else {
			printProblems(stderr, "analyzerd: "+configName(f, fs)+" is not valid:", err)
		}
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
	// OpenTelemetry reports export failures to a process-wide handler: to the log, once per
	// distinct error a minute.
	otel.SetErrorHandler(tracing.ErrorHandler(logger.Named("tracing"), time.Minute, nil))
	if err := app.Run(ctx, cfg, app.Options{Logger: logger, Version: tracing.Version(version)}); err != nil {
		logger.Error("analyzerd failed", zap.Error(err))
		return 1
	}
	return 0
}

func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyzerd validate", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file to check")
	if code, ok := parseCommand(fs, validateUsage, args, stdout, stderr); !ok {
		return code
	}
	if *path == "" {
		fmt.Fprintln(stderr, "analyzerd validate: --config FILE is required")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "analyzerd validate: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, *path+" is not valid:", err)
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

// parseCommand parses a command's flags from args. On -h it prints usage and the flags to
// stdout; on a bad flag it says so on stderr, with the usage and the flags. ok is false when
// the command is done then, with code as its exit status.
func parseCommand(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	help := func(w io.Writer) {
		fmt.Fprint(w, usage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			help(stdout)
			return 0, false
		}
		fmt.Fprintln(stderr, fs.Name()+":", err)
		help(stderr)
		return 2, false
	}
	return 0, true
}

// printProblems writes header and then each problem of err on its own line.
func printProblems(w io.Writer, header string, err error) {
	fmt.Fprintln(w, header)
	for _, e := range config.Errors(err) {
		fmt.Fprintf(w, "  - %s\n", e)
	}
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
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		if isTerminal(w) { // colors only where they are seen, not in a file or a pipe
			encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level)), nil
}

const validateUsage = `Usage: analyzerd validate --config FILE

Checks a configuration file as the daemon would read it, without flags; lists every error
and exits 1 when there is one.

Flags:
`
