package ctlharness

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// natscliVersion is the version the README tells users to install.
const natscliVersion = "v0.5.0"

// readmeNATSCommands are the `nats ...` commands of the README's section "Publishing events
// with the `nats` CLI", as written (a command continues over lines ending in a backslash and
// over a single-quoted string spanning lines).
func readmeNATSCommands(t *testing.T, readme string) []string {
	t.Helper()
	start := strings.Index(readme, "## Publishing events with the `nats` CLI")
	if start < 0 {
		t.Fatal("README.md has no section \"Publishing events with the `nats` CLI\"")
	}
	section := readme[start+3:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var cmds []string
	inBlock := false
	var cur strings.Builder
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "```") {
			inBlock = !inBlock && strings.TrimPrefix(line, "```") == "sh"
			continue
		}
		if !inBlock {
			continue
		}
		if cur.Len() == 0 && !strings.HasPrefix(line, "nats ") {
			continue
		}
		cur.WriteString(line)
		cur.WriteString("\n")
		s := cur.String()
		if strings.HasSuffix(strings.TrimRight(line, " "), `\`) || strings.Count(s, "'")%2 == 1 {
			continue
		}
		cmds = append(cmds, strings.TrimSpace(s))
		cur.Reset()
	}
	if len(cmds) < 2 {
		t.Fatalf("want the README's nats pub and sub commands, got %q", cmds)
	}
	return cmds
}

// TestReadmeNATSCommands runs the README's `nats pub` and `nats sub` commands, as written, with
// the nats CLI the README names (go install github.com/nats-io/natscli/nats@v0.5.0), against
// analyzerd with embedded NATS. The only change is the server: NATS_URL points at the
// daemon's embedded server on a free port instead of 127.0.0.1:4222.
func TestReadmeNATSCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the nats CLI and analyzerd, starts Prometheus")
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	cmds := readmeNATSCommands(t, readme)
	dir := t.TempDir()

	natsDir := filepath.Join(dir, "natsbin")
	install := exec.Command("go", "install", "github.com/nats-io/natscli/nats@"+natscliVersion)
	install.Env = append(os.Environ(), "GOBIN="+natsDir, "CGO_ENABLED=0")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install github.com/nats-io/natscli/nats@%s: %v\n%s", natscliVersion, err, out)
	}
	bins, err := Build(root, filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}

	// The workloads the README's rollout.started names: service checkout, each side's version.
	service := regexp.MustCompile(`"args":\{"service":"([^"]+)"\}`).FindStringSubmatch(readme)
	canaryV := regexp.MustCompile(`"canary":\{"version":"([^"]+)"\}`).FindStringSubmatch(readme)
	stableV := regexp.MustCompile(`"stable":\{"version":"([^"]+)"\}`).FindStringSubmatch(readme)
	if service == nil || canaryV == nil || stableV == nil {
		t.Fatal("the README's rollout.started names no service and versions")
	}
	prom, err := StartPrometheus(filepath.Join(dir, "prometheus"))
	if err != nil {
		t.Fatal(err)
	}
	defer prom.Stop()
	for _, v := range []string{stableV[1], canaryV[1]} {
		w, err := StartWorkload(bins.Workload, service[1], v, "--rate", "300")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop(10 * time.Second)
		if err := prom.AddTarget(w.Addr); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(root, "configs", "analyzerd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := StartDaemon(bins.Analyzerd, filepath.Join(dir, "analyzerd"), prom, DaemonOptions{Config: string(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Stop()
		if t.Failed() {
			t.Logf("analyzerd log:\n%s", Tail(d.Output()))
		}
	}()

	shell := func(cmd string) *exec.Cmd {
		c := exec.Command("bash", "-c", cmd)
		c.Env = append(os.Environ(), "PATH="+natsDir+string(os.PathListSeparator)+os.Getenv("PATH"), "NATS_URL="+d.NATSURL)
		return c
	}
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(d.URL() + path)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}

	var subs []*exec.Cmd
	var subOut []*logBuffer
	defer func() {
		for _, s := range subs {
			s.Process.Kill()
			s.Wait()
		}
	}()
	for i, cmd := range cmds {
		t.Logf("$ %s", cmd)
		if strings.HasPrefix(cmd, "nats sub ") {
			c := shell("exec " + cmd)
			out := &logBuffer{}
			c.Stdout, c.Stderr = out, out
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			subs, subOut = append(subs, c), append(subOut, out)
			// Subscribed once the CLI says so.
			if err := Eventually(30*time.Second, "nats sub subscribed", func() (bool, error) {
				return strings.Contains(out.String(), "Subscribing on"), fmt.Errorf("output %q", out.String())
			}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		out, err := shell(cmd).CombinedOutput()
		t.Logf("%s", strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatalf("command %d: %v", i+1, err)
		}
		// What each published event should do, read through the HTTP API.
		switch {
		case strings.Contains(cmd, `"type":"rollout.started"`):
			err = Eventually(60*time.Second, "prod/checkout under analysis", func() (bool, error) {
				code, body := get("/v1/rollouts/prod/checkout")
				return code == http.StatusOK, fmt.Errorf("%d %v", code, body)
			})
		case strings.Contains(cmd, `"type":"rollout.step"`):
			err = Eventually(60*time.Second, "a verdict for step 1", func() (bool, error) {
				code, body := get("/v1/rollouts/prod/checkout?step=1&weight=25")
				return code == http.StatusOK && body["stale"] == nil, fmt.Errorf("%d %v", code, body)
			})
		case strings.Contains(cmd, `"type":"rollout.completed"`):
			err = Eventually(60*time.Second, "prod/checkout no longer under analysis", func() (bool, error) {
				code, body := get("/v1/rollouts/prod/checkout")
				return code == http.StatusNotFound, fmt.Errorf("%d %v", code, body)
			})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(subs) == 0 {
		t.Fatal("the README has no nats sub command")
	}
	// The verdicts subscription saw the rollout's verdicts, at step 0 and step 1.
	out := subOut[0]
	err = Eventually(30*time.Second, "nats sub shows verdicts of both steps", func() (bool, error) {
		s := out.String()
		return strings.Contains(s, "rollouts.verdicts.prod.checkout") && strings.Contains(s, `"step":1`), nil
	})
	t.Logf("nats sub output:\n%s", Tail(out.String()))
	if err != nil {
		t.Fatal(err)
	}
}
