// Package promproc runs a real Prometheus server as a child process, for integration tests
// and the demo: it writes the configuration, picks a free loopback port, starts the binary,
// waits for it to be ready, and stops, kills or restarts it on demand.
//
// The process belongs to the caller: call Stop (or Close) when done, in t.Cleanup in tests.
// On Linux the child is also killed when the thread that started it dies, so a crashed test
// leaves no orphan behind.
package promproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
)

const (
	// startTimeout bounds the wait for readiness when the context has no earlier deadline.
	startTimeout = 2 * time.Minute
	// stopTimeout bounds the wait after SIGTERM, before SIGKILL.
	stopTimeout = 10 * time.Second
	// portAttempts bounds the retries when another process takes the port first.
	portAttempts = 5
	pollInterval = 50 * time.Millisecond
	tailSize     = 16 << 10
)

// errPortInUse means Prometheus could not listen on its port.
var errPortInUse = errors.New("address already in use")

// Process is a running (or stopped) Prometheus server. Its methods are safe for concurrent use.
type Process struct {
	binary     string
	dir        string
	ownsDir    bool
	configFile string
	dataDir    string
	args       []string
	log        *lenientWriter
	targets    int
	addr       string // 127.0.0.1:port, fixed for the life of the Process
	fixedAddr  string // Options.Addr
	api        v1.API
	http       *http.Client

	mu  sync.Mutex // serialises Stop, Kill, Restart and Close
	cur *instance  // the latest launch, nil before the first
}

// instance is one run of the binary.
type instance struct {
	cmd    *exec.Cmd
	tail   *tailBuffer
	exited chan struct{} // closed once the process has exited and err is set
	err    error
	// expected is set (under Process.mu) when we stop or kill it on purpose.
	expected bool
}

// Start writes the configuration, starts Prometheus on a free loopback port and returns once
// it answers /-/ready. ctx bounds the start only, not the life of the process: end it with
// Stop or Close.
func Start(ctx context.Context, opts Options) (*Process, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("promproc: invalid options: %w", err)
	}
	opts = opts.withDefaults()
	config, err := renderConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("promproc: %w", err)
	}
	binary := opts.Binary
	if binary == "" {
		if binary, err = Find(); err != nil {
			return nil, fmt.Errorf("promproc: %w", err)
		}
	}
	p, err := newProcess(opts, binary, config)
	if err != nil {
		return nil, fmt.Errorf("promproc: %w", err)
	}
	if err := p.start(ctx); err != nil {
		return nil, fmt.Errorf("promproc: %w", p.cleanup(err))
	}
	return p, nil
}

// newProcess prepares the directories and the configuration file, without starting anything.
func newProcess(opts Options, binary string, config []byte) (*Process, error) {
	p := &Process{
		binary:    binary,
		dir:       opts.Dir,
		args:      opts.Args,
		fixedAddr: opts.Addr,
		log:       &lenientWriter{w: opts.Log},
		targets:   len(opts.Targets),
		http:      &http.Client{Timeout: 5 * time.Second},
	}
	if p.dir == "" {
		dir, err := os.MkdirTemp("", "promproc-")
		if err != nil {
			return nil, fmt.Errorf("creating a data directory: %w", err)
		}
		p.dir, p.ownsDir = dir, true
	}
	p.configFile = filepath.Join(p.dir, "prometheus.yml")
	p.dataDir = filepath.Join(p.dir, "data")
	if err := os.MkdirAll(p.dataDir, 0o755); err != nil {
		return nil, p.cleanup(fmt.Errorf("creating %s: %w", p.dataDir, err))
	}
	if err := os.WriteFile(p.configFile, config, 0o644); err != nil {
		return nil, p.cleanup(fmt.Errorf("writing %s: %w", p.configFile, err))
	}
	return p, nil
}

// cleanup removes the directory if newProcess created it, and returns err.
func (p *Process) cleanup(err error) error {
	if p.ownsDir {
		os.RemoveAll(p.dir)
	}
	return err
}

// start launches Prometheus on a free port.
func (p *Process) start(ctx context.Context) error {
	ctx, cancel := withStartDeadline(ctx)
	defer cancel()
	if p.fixedAddr != "" {
		if err := p.useAddr(p.fixedAddr); err != nil {
			return err
		}
		return p.launch(ctx)
	}
	// Another process may take the free port between our check and Prometheus's listen:
	// then try another one.
	var err error
	for range portAttempts {
		var port int
		if port, err = freePort(); err != nil {
			return err
		}
		if err = p.setAddr(port); err != nil {
			return err
		}
		if err = p.launch(ctx); !errors.Is(err, errPortInUse) {
			return err
		}
	}
	return fmt.Errorf("no free port after %d attempts: %w", portAttempts, err)
}

func (p *Process) setAddr(port int) error {
	return p.useAddr(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

func (p *Process) useAddr(addr string) error {
	p.addr = addr
	client, err := api.NewClient(api.Config{Address: p.URL()})
	if err != nil {
		return fmt.Errorf("creating an API client for %s: %w", p.URL(), err)
	}
	p.api = v1.NewAPI(client)
	return nil
}

// launch starts the binary on p.addr and waits until it is ready, it exits, or ctx is done.
func (p *Process) launch(ctx context.Context) error {
	tail := &tailBuffer{max: tailSize}
	out := multiWriter{p.log, tail}
	args := append([]string{
		"--config.file=" + p.configFile,
		"--storage.tsdb.path=" + p.dataDir,
		"--web.listen-address=" + p.addr,
		"--web.enable-lifecycle",
	}, p.args...)
	cmd := exec.Command(p.binary, args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second // in case the output pipe is held open by something else
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.binary, err)
	}
	in := &instance{cmd: cmd, tail: tail, exited: make(chan struct{})}
	go func() {
		in.err = cmd.Wait()
		close(in.exited)
	}()
	p.cur = in

	err := p.waitReady(ctx, in)
	if err == nil {
		return nil
	}
	in.expected = true
	cmd.Process.Kill()
	<-in.exited
	if strings.Contains(tail.String(), "address already in use") {
		return fmt.Errorf("prometheus on %s: %w", p.addr, errPortInUse)
	}
	return fmt.Errorf("%w; %s", err, in.output())
}

// waitReady polls /-/ready until it answers 200.
func (p *Process) waitReady(ctx context.Context, in *instance) error {
	// Abandon a poll in flight as soon as the process exits.
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-in.exited:
			cancel()
		case <-pollCtx.Done():
		}
	}()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	lastErr := errors.New("not polled yet")
	for {
		req, err := http.NewRequestWithContext(pollCtx, http.MethodGet, p.URL()+"/-/ready", nil)
		if err != nil {
			return err
		}
		resp, err := p.http.Do(req)
		if err == nil {
			// The body tells Prometheus from a server that took the port first.
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.HasPrefix(body, []byte("Prometheus")) {
				return nil
			}
			err = fmt.Errorf("/-/ready answered %s: %q", resp.Status, body)
		}
		lastErr = err
		select {
		case <-in.exited:
			return fmt.Errorf("prometheus exited before it was ready: %v", in.err)
		case <-ctx.Done():
			return fmt.Errorf("prometheus not ready on %s: %w (last: %v)", p.addr, ctx.Err(), lastErr)
		case <-ticker.C:
		}
	}
}

// URL returns Prometheus's base URL, http://127.0.0.1:PORT. It stays the same across Restart.
func (p *Process) URL() string { return "http://" + p.addr }

// Dir returns the directory that holds prometheus.yml and the data directory.
func (p *Process) Dir() string { return p.dir }

// DataDir returns the TSDB directory (--storage.tsdb.path), e.g. for backfilled blocks.
func (p *Process) DataDir() string { return p.dataDir }

// Stop sends SIGTERM and waits for Prometheus to exit, sending SIGKILL after 10s. It is
// idempotent. It reports an earlier unexpected exit (a crash) once, with the end of the
// output; the data directory is kept, so Restart can start it again.
func (p *Process) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stop()
}

func (p *Process) stop() error {
	if in := p.cur; in != nil {
		select {
		case <-in.exited:
			return in.unexpectedExit()
		default:
		}
	}
	return p.halt()
}

// halt stops the process if it runs: SIGTERM, then SIGKILL after stopTimeout.
func (p *Process) halt() error {
	in := p.cur
	if in == nil {
		return nil
	}
	in.expected = true
	select {
	case <-in.exited:
		return nil
	default:
	}
	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return p.kill()
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-in.exited:
		return nil
	case <-timer.C:
		if err := p.kill(); err != nil {
			return err
		}
		return fmt.Errorf("promproc: prometheus did not stop within %s of SIGTERM: killed", stopTimeout)
	}
}

// unexpectedExit returns an error once if the instance exited without being asked to.
func (in *instance) unexpectedExit() error {
	if in.expected {
		return nil
	}
	in.expected = true
	return fmt.Errorf("promproc: prometheus had exited unexpectedly (%v); %s", in.err, in.output())
}

// output describes the end of the instance's output, for error messages.
func (in *instance) output() string {
	if out := in.tail.String(); out != "" {
		return "prometheus output ends with:\n" + out
	}
	return "prometheus wrote nothing"
}

// Kill sends SIGKILL, as a crash would, and waits for the process to exit. The data is kept
// (as a crash would leave it), so Restart can start it again. Idempotent.
func (p *Process) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kill()
}

func (p *Process) kill() error {
	in := p.cur
	if in == nil {
		return nil
	}
	in.expected = true
	if err := in.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("promproc: killing prometheus: %w", err)
	}
	<-in.exited
	return nil
}

// Restart stops Prometheus if it runs, then starts it again on the same port with the same
// configuration and data, and waits until it is ready. When the port is taken in the meantime
// it keeps trying until ctx is done (or 2 minutes).
func (p *Process) Restart(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// A crash before the restart is what an outage test simulates, not an error.
	if err := p.halt(); err != nil {
		return err
	}
	ctx, cancel := withStartDeadline(ctx)
	defer cancel()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	portTaken := false
	for {
		err := p.launch(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errPortInUse):
			portTaken = true
		case portTaken && ctx.Err() != nil:
			// The deadline interrupted the latest attempt: report why the others failed.
			return fmt.Errorf("promproc: restarting: %s still taken by another process: %w", p.addr, ctx.Err())
		default:
			return fmt.Errorf("promproc: restarting: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promproc: restarting: %s still taken by another process: %w", p.addr, ctx.Err())
		case <-ticker.C:
		}
	}
}

// Close stops Prometheus, then removes the directory Start created when Options.Dir was
// empty. The Process cannot be restarted after Close.
func (p *Process) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.stop()
	if p.ownsDir {
		if rmErr := os.RemoveAll(p.dir); rmErr != nil && err == nil {
			err = fmt.Errorf("promproc: removing %s: %w", p.dir, rmErr)
		}
		p.ownsDir = false
	}
	return err
}

// WaitTargetsUp polls /api/v1/targets until every configured target has been scraped
// successfully (health "up"), or ctx is done; give ctx a deadline.
func (p *Process) WaitTargetsUp(ctx context.Context) error {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var last string
	for {
		res, err := p.api.Targets(ctx)
		if err != nil {
			last = err.Error()
		} else {
			up := 0
			var states []string
			for _, t := range res.Active {
				if t.Health == v1.HealthGood {
					up++
				}
				s := fmt.Sprintf("%s %s: %s", t.ScrapePool, t.ScrapeURL, t.Health)
				if t.LastError != "" {
					s += " (" + t.LastError + ")"
				}
				states = append(states, s)
			}
			if up == p.targets && len(res.Active) == p.targets {
				return nil
			}
			sort.Strings(states)
			last = fmt.Sprintf("%d of %d targets up: %s", up, p.targets, strings.Join(states, "; "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promproc: waiting for targets to be up: %w; last: %s", ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

// withStartDeadline bounds ctx by startTimeout.
func withStartDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, startTimeout)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
