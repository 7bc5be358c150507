// Package jaegercheck checks analyzerd's traces in a real Jaeger v2 (the Go module
// github.com/jaegertracing/jaeger, cmd/jaeger, the version in go.mod): it runs `analyzerd
// demo` exporting to Jaeger over OTLP/HTTP and over OTLP/gRPC, and asks Jaeger's query API
// what an SRE would. It is a module of its own so that Jaeger's dependencies stay out of the
// daemon's module; it is not part of .ci/run (building Jaeger takes minutes):
//
//	cd tools/jaegercheck && go test ./...
//
// Environment: JAEGER names a jaeger binary to use instead of building one. The demo needs the
// prometheus binary (the Debian package).
package jaegercheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const version = "v0.0.0-jaegercheck"

var repoRoot, _ = filepath.Abs(filepath.Join("..", ".."))

// build builds what the test runs: jaeger (unless JAEGER names one) and analyzerd.
func build(t *testing.T) (jaeger, analyzerd string) {
	t.Helper()
	dir := t.TempDir()
	jaeger = os.Getenv("JAEGER")
	if jaeger == "" {
		jaeger = filepath.Join(dir, "jaeger")
		goCmd(t, ".", "build", "-o", jaeger, "github.com/jaegertracing/jaeger/cmd/jaeger")
	}
	analyzerd = filepath.Join(dir, "analyzerd")
	goCmd(t, repoRoot, "build", "-ldflags", "-X main.version="+version, "-o", analyzerd, "./cmd/analyzerd")
	return jaeger, analyzerd
}

func goCmd(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// jaegerConfig is an all-in-one Jaeger v2 with in-memory storage on the given ports.
const jaegerConfig = `
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

type jaegerProc struct {
	query    string // the query API's base URL
	otlpGRPC string
	otlpHTTP string
}

func startJaeger(t *testing.T, binary string) jaegerProc {
	t.Helper()
	qHTTP, qGRPC, oGRPC, oHTTP := freePort(t), freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, qHTTP, qGRPC, oGRPC, oHTTP), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(binary, "--config", cfg)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("jaeger's log:\n%s", logs.String())
		}
	})
	j := jaegerProc{
		query:    fmt.Sprintf("http://127.0.0.1:%d", qHTTP),
		otlpGRPC: fmt.Sprintf("http://127.0.0.1:%d", oGRPC),
		otlpHTTP: fmt.Sprintf("http://127.0.0.1:%d", oHTTP),
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(j.query + "/api/services")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger's query API did not answer within 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling a process's readiness, not synchronising
	}
}

// The parts of Jaeger's query API answers (/api/traces...) the checks read.
type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerSpan struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []jaegerRef `json:"references"`
	StartTime     int64       `json:"startTime"` // µs
	Duration      int64       `json:"duration"`  // µs
	Tags          []jaegerKV  `json:"tags"`
	ProcessID     string      `json:"processID"`
}

type jaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jaegerProcess struct {
	ServiceName string     `json:"serviceName"`
	Tags        []jaegerKV `json:"tags"`
}

func tag(kvs []jaegerKV, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			return fmt.Sprint(kv.Value)
		}
	}
	return ""
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" && r.TraceID == s.TraceID {
			return r.SpanID
		}
	}
	return ""
}

func getJSON(t *testing.T, u string, into any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", u, resp.Status, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v\n%s", u, err, body)
	}
}

func traces(t *testing.T, j jaegerProc, query url.Values) []jaegerTrace {
	t.Helper()
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	getJSON(t, j.query+"/api/traces?"+query.Encode(), &out)
	return out.Data
}

var (
	rolledBackRE = regexp.MustCompile(`rolled back\. The verdict a controller receives \(trace ([0-9a-f]{32})\)`)
	verdictRowRE = regexp.MustCompile(`^\d+\s+\d+\s+\d+%\s+(PAUSE|PROCEED|ROLLBACK)\b`)
)

// runDemo runs `analyzerd demo` to its rollback, exporting to endpoint with protocol and
// tracing.repeatSampleRatio 0, and returns the rollback's trace id and how many verdicts it
// printed.
func runDemo(t *testing.T, analyzerd, protocol, endpoint string) (traceID string, verdicts int) {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "configs", "analyzerd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "analyzerd.yaml")
	if err := os.WriteFile(cfgPath, append(cfg, "\ntracing:\n  repeatSampleRatio: 0\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyzerd, "demo", "--config", cfgPath,
		"--nats-port", fmt.Sprint(freePort(t)), "--http-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--interval", "1s", "--min-step", "6s")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT="+endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL="+protocol,
		"OTEL_TRACES_SAMPLER=", "OTEL_TRACES_SAMPLER_ARG=", "OTEL_SERVICE_NAME=", "OTEL_RESOURCE_ATTRIBUTES=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("analyzerd demo: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := rolledBackRE.FindStringSubmatch(line); m != nil {
			traceID = m[1]
		}
		if verdictRowRE.MatchString(strings.TrimSpace(line)) {
			verdicts++
		}
	}
	if traceID == "" {
		t.Fatalf("the demo printed no rollback:\n%s", out)
	}
	t.Logf("the demo rolled back after %d verdicts, trace %s", verdicts, traceID)
	return traceID, verdicts
}

// TestTracesInJaeger: for each OTLP protocol, the demo's rollback is found in Jaeger by its
// trace id and by analyzerd.verdict=rollback; the evaluation's spans are named without the
// rollout, carry the event id, end before their root and come from service analyzerd at its
// version; the publication is linked to the verdict's creation; and with
// tracing.repeatSampleRatio 0 no repeated evaluation reached Jaeger, but fewer traces than
// verdicts did.
func TestTracesInJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("builds jaeger and runs the demo")
	}
	jaegerBin, analyzerd := build(t)
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			j := startJaeger(t, jaegerBin)
			endpoint := j.otlpHTTP
			if protocol == "grpc" {
				endpoint = j.otlpGRPC
			}
			traceID, verdicts := runDemo(t, analyzerd, protocol, endpoint)
			checkJaeger(t, j, traceID, verdicts)
		})
	}
}

func checkJaeger(t *testing.T, j jaegerProc, traceID string, verdicts int) {
	t.Helper()
	// By its trace id (exported at the latest when the demo stopped).
	var byID struct {
		Data []jaegerTrace `json:"data"`
	}
	getJSON(t, j.query+"/api/traces/"+traceID, &byID)
	if len(byID.Data) != 1 {
		t.Fatalf("trace %s: %d traces", traceID, len(byID.Data))
	}
	tr := byID.Data[0]
	var root jaegerSpan
	names := map[string]jaegerSpan{}
	for _, s := range tr.Spans {
		names[s.OperationName] = s
		if s.parent() == "" {
			root = s
		}
	}
	if root.OperationName != "evaluate" {
		t.Fatalf("root %q, spans %v", root.OperationName, names)
	}
	for k, want := range map[string]string{
		"analyzerd.verdict": "rollback", "analyzerd.sampling": "rollback", "analyzerd.event.id": "demo-2",
		"rollout.namespace": "demo", "rollout.name": "checkout",
	} {
		if got := tag(root.Tags, k); got != want {
			t.Errorf("root's %s = %q, want %q", k, got, want)
		}
	}
	p := tr.Processes[root.ProcessID]
	if p.ServiceName != "analyzerd" || tag(p.Tags, "service.version") != version {
		t.Errorf("process %+v: want service analyzerd version %s", p, version)
	}
	create, ok := names["create rollouts.verdicts.{namespace}.{name}"]
	if !ok {
		t.Fatalf("no creation span among %v", names)
	}
	for _, s := range tr.Spans {
		if s.StartTime+s.Duration > root.StartTime+root.Duration {
			t.Errorf("%s ends after its root", s.OperationName)
		}
	}
	if _, ok := names["decide"]; !ok {
		t.Errorf("no decide span among %v", names)
	}

	// By the verdict: the evaluation and its publication, linked to the creation.
	found := traces(t, j, url.Values{"service": {"analyzerd"}, "tags": {`{"analyzerd.verdict":"rollback"}`}, "lookback": {"1h"}, "limit": {"100"}})
	var evaluation, publication bool
	for _, ft := range found {
		for _, s := range ft.Spans {
			switch {
			case s.TraceID == traceID && s.OperationName == "evaluate":
				evaluation = true
			case s.OperationName == "publish rollouts.verdicts.{namespace}.{name}" && s.parent() == "":
				for _, r := range s.References {
					if r.TraceID == traceID && r.SpanID == create.SpanID {
						publication = true
					}
				}
			}
		}
	}
	if !evaluation || !publication {
		t.Errorf("searching analyzerd.verdict=rollback: evaluation found %v, its publication linked to the creation %v", evaluation, publication)
	}

	// The operations: a fixed list, whatever the rollouts.
	var ops struct {
		Data []string `json:"data"`
	}
	getJSON(t, j.query+"/api/services/analyzerd/operations", &ops)
	for _, op := range ops.Data {
		if strings.Contains(op, "checkout") || strings.Contains(op, "demo") {
			t.Errorf("operation %q names a rollout", op)
		}
	}
	t.Logf("operations: %v", ops.Data)

	// Sampling: at repeatSampleRatio 0 no repeat is exported, and so fewer evaluations than
	// verdicts.
	evaluations := traces(t, j, url.Values{"service": {"analyzerd"}, "operation": {"evaluate"}, "lookback": {"1h"}, "limit": {"1000"}})
	if n := len(traces(t, j, url.Values{"service": {"analyzerd"}, "tags": {`{"analyzerd.sampling":"repeat"}`}, "lookback": {"1h"}, "limit": {"100"}})); n != 0 {
		t.Errorf("%d repeated evaluations exported at repeatSampleRatio 0", n)
	}
	if len(evaluations) == 0 || len(evaluations) >= verdicts {
		t.Errorf("%d evaluations exported of %d verdicts", len(evaluations), verdicts)
	}
	t.Logf("%d evaluation traces in Jaeger of %d verdicts", len(evaluations), verdicts)
}
