package flaggercheck

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/analyzerd/analyzerd/tools/ctlharness"
)

var readmePath = flag.String("readme", "", "the README whose YAML the tests use (default: the repository's README.md)")

// The paths every test uses, set by TestMain.
var (
	repoRoot string
	workDir  string
	readme   string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := ctlharness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "flaggercheck:", err)
		return 1
	}
	repoRoot = root
	path := *readmePath
	if path == "" {
		path = filepath.Join(repoRoot, "README.md")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flaggercheck:", err)
		return 1
	}
	readme = string(b)
	dir, err := os.MkdirTemp("", "flaggercheck-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "flaggercheck:", err)
		return 1
	}
	workDir = dir
	code := m.Run()
	stopEnv()
	os.RemoveAll(dir)
	return code
}

// daemonToken is the write token analyzerd accepts (the README's metadata.token placeholder
// is replaced with it, as a user does).
const daemonToken = "flaggercheck-token-0123456789"

var (
	envOnce sync.Once
	envErr  error
	env     struct {
		bins   ctlharness.Binaries
		prom   *ctlharness.Prometheus
		daemon *ctlharness.Daemon
		rec    *ctlharness.Recorder
	}
	workloads []*ctlharness.Workload
	wlMu      sync.Mutex
)

func setup(t *testing.T) {
	t.Helper()
	envOnce.Do(func() { envErr = startEnv() })
	if envErr != nil {
		t.Fatal(envErr)
	}
}

func startEnv() error {
	start := time.Now()
	bins, err := ctlharness.Build(repoRoot, filepath.Join(workDir, "bin"))
	if err != nil {
		return err
	}
	env.bins = bins
	fmt.Fprintf(os.Stderr, "flaggercheck: built analyzerd and workload in %s\n", time.Since(start).Round(time.Second))
	if env.prom, err = ctlharness.StartPrometheus(filepath.Join(workDir, "prometheus")); err != nil {
		return err
	}
	cfg, err := ctlharness.FastConfig(repoRoot)
	if err != nil {
		return err
	}
	opts := ctlharness.DaemonOptions{Config: cfg, Env: []string{"ANALYZERD_HTTP_WRITE_TOKEN=" + daemonToken}}
	if env.daemon, err = ctlharness.StartDaemon(bins.Analyzerd, filepath.Join(workDir, "analyzerd"), env.prom, opts); err != nil {
		return err
	}
	env.rec, err = ctlharness.NewRecorder(env.daemon.URL)
	return err
}

func stopEnv() {
	if env.rec != nil {
		env.rec.Close()
	}
	if env.daemon != nil {
		env.daemon.Stop()
	}
	if env.prom != nil {
		env.prom.Stop()
	}
	wlMu.Lock()
	for _, w := range workloads {
		w.Stop(10 * time.Second)
	}
	wlMu.Unlock()
}

// startWorkload starts a workload that stopEnv stops, and has Prometheus scrape it.
func startWorkload(t *testing.T, service, version string, flags ...string) *ctlharness.Workload {
	t.Helper()
	w, err := ctlharness.StartWorkload(env.bins.Workload, service, version, flags...)
	if err != nil {
		t.Fatal(err)
	}
	wlMu.Lock()
	workloads = append(workloads, w)
	wlMu.Unlock()
	if err := env.prom.AddTarget(w.Addr); err != nil {
		t.Fatal(err)
	}
	return w
}

// readmeBlock is the code block after the README's marker `<!-- yaml: name -->`.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	blocks, err := ctlharness.ReadmeBlocks(readme)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := blocks[name]
	if !ok {
		var names []string
		for n := range blocks {
			names = append(names, n)
		}
		t.Fatalf("README.md has no code block marked <!-- yaml: %s --> (marked: %s)", name, strings.Join(names, ", "))
	}
	return b
}
