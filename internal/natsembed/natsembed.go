// Package natsembed starts the NATS server with JetStream that analyzerd embeds when it is not
// given a NATS URL (CONTRACT.md section 6), so the daemon runs with nothing else but Prometheus.
package natsembed

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultHost = "127.0.0.1"
	DefaultPort = 4222
	// RandomPort asks for a port the operating system picks (tests).
	RandomPort = -1
)

// readyTimeout bounds how long Start waits for the server to accept connections.
const readyTimeout = 10 * time.Second

// Options configures the embedded server.
type Options struct {
	// Host is the address clients outside the process connect to (DefaultHost when empty).
	Host string
	// Port is the client port: DefaultPort when 0, RandomPort (-1) for one the system picks.
	Port int
	// StoreDir is where JetStream keeps its data. Empty leaves the choice to nats-server
	// (a directory under the system's temporary directory, which does not survive a reboot).
	StoreDir string
	// MaxMemory and MaxStore bound JetStream's memory and file storage in bytes; 0 lets
	// nats-server size them from the machine.
	MaxMemory, MaxStore int64
}

// WithDefaults returns o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Host == "" {
		o.Host = DefaultHost
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	return o
}

// Validate reports the first problem with o (after WithDefaults).
func (o Options) Validate() error {
	if o.Port != RandomPort && (o.Port < 1 || o.Port > 65535) {
		return fmt.Errorf("port: must be within 1-65535 or %d for a random port, got %d", RandomPort, o.Port)
	}
	if o.MaxMemory < 0 {
		return fmt.Errorf("maxMemory: must not be negative, got %d", o.MaxMemory)
	}
	if o.MaxStore < 0 {
		return fmt.Errorf("maxStore: must not be negative, got %d", o.MaxStore)
	}
	return nil
}

// Start starts a NATS server with JetStream in this process and waits until it accepts
// connections. Callers connect with nats.Connect("", nats.InProcessServer(ns)) and stop it
// with ns.Shutdown(); ns.WaitForShutdown().
//
// The server installs no signal handlers (the daemon's main owns signals) and logs only
// warnings and errors, through logger.
func Start(opts Options, logger *zap.Logger) (*server.Server, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("embedded NATS server options: %w", err)
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	logger = logger.With(zap.String("component", "nats-server"))

	ns, err := server.NewServer(&server.Options{
		ServerName:         "analyzerd-embedded",
		Host:               opts.Host,
		Port:               opts.Port,
		JetStream:          true,
		StoreDir:           opts.StoreDir,
		JetStreamMaxMemory: opts.MaxMemory,
		JetStreamMaxStore:  opts.MaxStore,
		NoSigs:             true,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring embedded NATS server on %s:%d: %w", opts.Host, opts.Port, err)
	}
	zl := &zapLogger{logger: logger}
	ns.SetLogger(zl, false, false)

	ns.Start()
	if err := waitReady(ns, zl, readyTimeout); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("starting embedded NATS server on %s:%d: %w", opts.Host, opts.Port, err)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("starting embedded NATS server on %s:%d: JetStream is not enabled", opts.Host, opts.Port)
	}
	logger.Info("embedded NATS server started",
		zap.String("url", ns.ClientURL()),
		zap.String("storeDir", ns.StoreDir()))
	return ns, nil
}

// waitReady waits until ns accepts connections, failing early when the server reported a
// fatal error (a port in use, a store directory it cannot write) rather than waiting out the
// whole timeout.
func waitReady(ns *server.Server, zl *zapLogger, timeout time.Duration) error {
	const slice = 50 * time.Millisecond
	deadline := time.Now().Add(timeout)
	for {
		if ns.ReadyForConnections(slice) {
			return nil
		}
		if msg := zl.fatal(); msg != "" {
			return errors.New(msg)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready for connections after %s", timeout)
		}
	}
}

// zapLogger routes nats-server's log to zap: warnings and errors only, the rest is dropped.
// Fatal messages are logged as errors and remembered, never exit the process.
type zapLogger struct {
	logger *zap.Logger

	mu        sync.Mutex
	fatalText string
}

func (l *zapLogger) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalText
}

func (l *zapLogger) Noticef(string, ...any) {}
func (l *zapLogger) Debugf(string, ...any)  {}
func (l *zapLogger) Tracef(string, ...any)  {}

func (l *zapLogger) Warnf(format string, v ...any) {
	l.logger.Warn(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l *zapLogger) Errorf(format string, v ...any) {
	l.logger.Error(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l *zapLogger) Fatalf(format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	l.logger.Error(msg, zap.Bool("fatal", true))
	l.mu.Lock()
	if l.fatalText == "" {
		l.fatalText = msg
	}
	l.mu.Unlock()
}
