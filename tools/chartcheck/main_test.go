package chartcheck

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var kubeVersion = flag.String("kube-version", "1.33.0", "the Kubernetes version helm renders for")

// The paths and binaries every test uses, set by TestMain.
var (
	repoRoot     string // the analyzerd repository
	chartDir     string // deploy/helm/analyzerd
	helmBin      string // helm, built from go.mod's helm.sh/helm/v3
	analyzerdBin string // analyzerd, built with the Dockerfile's command
	binVersion   string // the version analyzerdBin was built with
	dockerBuild  buildCommand
	workDir      string // a temporary directory for the whole run
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartcheck:", err)
		return 1
	}
	repoRoot = root
	chartDir = filepath.Join(repoRoot, "deploy", "helm", "analyzerd")
	dir, err := os.MkdirTemp("", "chartcheck-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartcheck:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	workDir = dir

	dockerBuild, err = parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartcheck: Dockerfile:", err)
		return 1
	}

	// Both builds at once: each takes about a minute on a cold cache.
	var wg sync.WaitGroup
	var helmErr, analyzerdErr error
	helmBin = os.Getenv("HELM")
	if helmBin == "" {
		helmBin = filepath.Join(dir, "helm")
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			// In this module's directory: helm's version is the one go.mod requires.
			helmErr = goCommand(".", nil, "build", "-o", helmBin, "helm.sh/helm/v3/cmd/helm")
			fmt.Fprintf(os.Stderr, "chartcheck: built helm in %s\n", time.Since(start).Round(time.Second))
		}()
	}
	analyzerdBin = filepath.Join(dir, "analyzerd")
	binVersion = "chartcheck-" + time.Now().UTC().Format("20060102T150405")
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		analyzerdErr = dockerBuild.run(repoRoot, analyzerdBin, binVersion, runtime.GOOS, runtime.GOARCH)
		fmt.Fprintf(os.Stderr, "chartcheck: built analyzerd (the Dockerfile's command) in %s\n", time.Since(start).Round(time.Second))
	}()
	wg.Wait()
	if helmErr != nil {
		fmt.Fprintln(os.Stderr, "chartcheck: building helm:", helmErr)
		return 1
	}
	if analyzerdErr != nil {
		fmt.Fprintln(os.Stderr, "chartcheck: building analyzerd with the Dockerfile's command:", analyzerdErr)
		return 1
	}
	return m.Run()
}

// goCommand runs the go command in dir with extra environment variables.
func goCommand(dir string, env []string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}

// helm runs the helm binary; it returns stdout, and an error with stderr when helm fails.
func helm(args ...string) (string, error) {
	cmd := exec.Command(helmBin, args...)
	cmd.Dir = chartDir
	// No user's repositories, plugins or caches.
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(workDir, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(workDir, "helm-config"),
		"HELM_DATA_HOME="+filepath.Join(workDir, "helm-data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// render runs helm template for the release "analyzerd" in namespace "canary" with the
// values files (relative to the chart) and --set flags, and returns the manifests.
func render(t *testing.T, valuesFiles []string, sets ...string) []manifest {
	t.Helper()
	out, err := helm(templateArgs(valuesFiles, sets...)...)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := splitManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func templateArgs(valuesFiles []string, sets ...string) []string {
	args := []string{"template", releaseName, ".", "--namespace", releaseNamespace, "--kube-version", *kubeVersion}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

const (
	releaseName      = "analyzerd"
	releaseNamespace = "canary"
)

// valuesFiles are the chart's values files for CI, relative to the chart.
func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("want at least 3 values files in %s/ci, got %d", chartDir, len(files))
	}
	for i, f := range files {
		files[i] = filepath.Join("ci", filepath.Base(f))
	}
	return files
}

// manifest is one rendered document.
type manifest struct {
	Source string // the template it came from
	Kind   string
	API    string
	Name   string
	Raw    []byte
}

var (
	docSeparator = regexp.MustCompile(`(?m)^---\s*$`)
	sourceLine   = regexp.MustCompile(`(?m)^# Source: (\S+)`)
)
