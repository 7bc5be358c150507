package argocheck

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	log "github.com/sirupsen/logrus"
	kubeinformers "k8s.io/client-go/informers"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/argoproj/argo-rollouts/analysis"
	"github.com/argoproj/argo-rollouts/controller/metrics"
	"github.com/argoproj/argo-rollouts/pkg/client/clientset/versioned/fake"
	informers "github.com/argoproj/argo-rollouts/pkg/client/informers/externalversions"
	"github.com/argoproj/argo-rollouts/utils/queue"
	"github.com/argoproj/argo-rollouts/utils/record"

	"github.com/analyzerd/analyzerd/tools/ctlharness"
)

// The paths every test uses, set by TestMain.
var (
	repoRoot string
	workDir  string
	readme   string
)

var readmePath = flag.String("readme", "", "the README whose YAML the tests use (default: the repository's README.md)")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := ctlharness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocheck:", err)
		return 1
	}
	repoRoot = root
	path := *readmePath
	if path == "" {
		path = filepath.Join(repoRoot, "README.md")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocheck:", err)
		return 1
	}
	readme = string(b)
	dir, err := os.MkdirTemp("", "argocheck-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocheck:", err)
		return 1
	}
	workDir = dir
	// Argo's controller logs every reconciliation at info.
	log.SetLevel(log.WarnLevel)
	log.SetOutput(io.Discard)
	code := m.Run()
	stopEnv()
	os.RemoveAll(dir)
	return code
}

// env is what the scenarios share: one Prometheus, one analyzerd, one Argo analysis
// controller, as in a cluster. Started on first use.
var (
	envOnce sync.Once
	envErr  error
	env     struct {
		bins   ctlharness.Binaries
		prom   *ctlharness.Prometheus
		daemon *ctlharness.Daemon
		rec    *ctlharness.Recorder
		argo   *argoController
		token  string
	}
	workloads []*ctlharness.Workload
	wlMu      sync.Mutex
)

// daemonToken is the bearer token analyzerd accepts (and the README's Secret holds).
const daemonToken = "argocheck-token-0123456789"

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
	fmt.Fprintf(os.Stderr, "argocheck: built analyzerd and workload in %s\n", time.Since(start).Round(time.Second))
	if env.prom, err = ctlharness.StartPrometheus(filepath.Join(workDir, "prometheus")); err != nil {
		return err
	}
	cfg, err := ctlharness.FastConfig(repoRoot)
	if err != nil {
		return err
	}
	env.token = daemonToken
	opts := ctlharness.DaemonOptions{Config: cfg, Env: []string{"ANALYZERD_HTTP_WRITE_TOKEN=" + daemonToken}}
	if env.daemon, err = ctlharness.StartDaemon(bins.Analyzerd, filepath.Join(workDir, "analyzerd"), env.prom, opts); err != nil {
		return err
	}
	if env.rec, err = ctlharness.NewRecorder(env.daemon.URL); err != nil {
		return err
	}
	env.argo, err = startArgo()
	return err
}

func stopEnv() {
	if env.argo != nil {
		env.argo.cancel()
	}
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

// argoController is Argo Rollouts' analysis controller on fake clientsets, with the real
// provider factory (so the web provider is Argo's).
type argoController struct {
	client *fake.Clientset
	kube   *k8sfake.Clientset
	cancel context.CancelFunc
}

func startArgo() (*argoController, error) {
	client := fake.NewSimpleClientset()
	kube := k8sfake.NewSimpleClientset()
	i := informers.NewSharedInformerFactory(client, 0)
	k8sI := kubeinformers.NewSharedInformerFactory(kube, 0)
	wq := workqueue.NewNamedRateLimitingQueue(queue.DefaultArgoRolloutsRateLimiter(), "AnalysisRuns")
	ms := metrics.NewMetricsServer(metrics.ServerConfig{Addr: "127.0.0.1:0", K8SRequestProvider: &metrics.K8sRequestsCountProvider{}})
	c := analysis.NewController(analysis.ControllerConfig{
		KubeClientSet:        kube,
		ArgoProjClientset:    client,
		AnalysisRunInformer:  i.Argoproj().V1alpha1().AnalysisRuns(),
		JobInformer:          k8sI.Batch().V1().Jobs(),
		ResyncPeriod:         0,
		AnalysisRunWorkQueue: wq,
		MetricsServer:        ms,
		Recorder:             record.NewFakeEventRecorder(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	i.Start(ctx.Done())
	k8sI.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), i.Argoproj().V1alpha1().AnalysisRuns().Informer().HasSynced, k8sI.Batch().V1().Jobs().Informer().HasSynced) {
		cancel()
		return nil, fmt.Errorf("argo informers did not sync")
	}
	go func() {
		c.Run(ctx, 2)
		wq.ShutDown()
	}()
	return &argoController{client: client, kube: kube, cancel: cancel}, nil
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
