package e2e

// The harness of the crash and failover tests (chaos_test.go, failover_test.go): daemon
// processes that can be SIGKILLed and started again under the same replica id, a fast
// configuration, and recorders of everything the daemons leave on NATS (the verdict stream,
// every verdict message as published, every write of the state bucket), so that the tests can
// check the invariants of DESIGN.md ("State, restarts and replicas") from the outside.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
	"github.com/analyzerd/analyzerd/internal/state"
	"github.com/analyzerd/analyzerd/internal/workload"
)

// The fast analysis of these tests: the shipped http-golden-signals template with a short
// interval, step and baseline window (as the demo does), so that a rollout of several steps
// takes seconds.
const (
	fastInterval = 2 * time.Second
	fastMinStep  = 6 * time.Second
	// fastRate is each side's traffic: at 300 req/s a step gathers the 1,000 samples its
	// checks need in about 4 s, within the minimum step.
	fastRate = 300
	// fastAckWait: an event handed to a daemon that was killed before acknowledging it comes
	// again after this.
	fastAckWait = 3 * time.Second
)

// replicaConfig writes a configuration file for one daemon: the shipped template made fast,
// the given NATS server, Prometheus, HTTP address, replica id and lease. It is validated with
// `analyzerd validate`.
func replicaConfig(t *testing.T, natsURL, promURL, httpAddr, replicaID string, lease time.Duration) string {
	t.Helper()
	shipped, err := os.ReadFile("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	i := strings.Index(string(shipped), "\ntemplates:")
	require.Positive(t, i, "the shipped configuration has a templates section")
	templates := string(shipped[i+1:])
	for _, r := range []struct{ old, new string }{
		{"interval: 10s", "interval: " + fastInterval.String()},
		{"minStepDuration: 1m", "minStepDuration: " + fastMinStep.String()},
		{"baselineWindow: 10m", "baselineWindow: 1m"},
		// A 0.5% canary at 100 req/s needs many minutes to be shown within 1.25 x stable's
		// rate; the tests accept one shown below 1% instead.
		{"tolerance: 0.001", "tolerance: 0.01"},
	} {
		require.Positive(t, strings.Count(templates, r.old), "the shipped templates say %q", r.old)
		templates = strings.ReplaceAll(templates, r.old, r.new)
	}
	head := fmt.Sprintf(`nats:
  url: %q
prometheus:
  url: %q
  timeout: 5s
http:
  addr: %q
ingest:
  ackWait: %s
  maxClockSkew: 2s
log:
  level: debug
state:
  replicaID: %q
  lease: %s
shutdownTimeout: 5s
`, natsURL, promURL, httpAddr, fastAckWait, replicaID, lease)
	path := filepath.Join(t.TempDir(), replicaID+".yaml")
	require.NoError(t, os.WriteFile(path, []byte(head+templates), 0o600))
	out, err := exec.Command(binary, "validate", "--config", path).CombinedOutput()
	require.NoError(t, err, "analyzerd validate: %s", out)
	return path
}

// replica is one daemon that the test kills with SIGKILL and starts again, with the same
// configuration (and so the same state.replicaID), as often as it likes. Its logs span every
// incarnation.
type replica struct {
	t      *testing.T
	id     string
	config string
	http   string
	logs   *syncBuffer

	cmd         *exec.Cmd
	done        chan error // the exit of the running incarnation; nil when none runs
	incarnation int
	started     time.Time // when the running incarnation's process was started
}

func newReplica(t *testing.T, id, natsURL, promURL string, lease time.Duration) *replica {
	t.Helper()
	r := &replica{t: t, id: id, http: freeAddr(t), logs: &syncBuffer{}}
	r.config = replicaConfig(t, natsURL, promURL, r.http, id, lease)
	t.Cleanup(func() {
		r.stop()
		// ANALYZERD_E2E_LOGS names a directory to keep every replica's logs in.
		if dir := os.Getenv("ANALYZERD_E2E_LOGS"); dir != "" {
			name := strings.NewReplacer("/", "_").Replace(t.Name()) + "-" + r.id + "-" + time.Now().Format("150405") + ".log"
			_ = os.WriteFile(filepath.Join(dir, name), []byte(r.logs.String()), 0o644)
		}
		if t.Failed() {
			t.Logf("logs of replica %s (every incarnation; the last 200 lines):\n%s", r.id, tail(r.logs.String(), 200))
		}
	})
	return r
}

// start starts a new incarnation and waits until it is ready.
func (r *replica) start() {
	r.t.Helper()
	require.Nil(r.t, r.done, "replica %s is already running", r.id)
	r.incarnation++
	fmt.Fprintf(r.logs, "=== replica %s, incarnation %d\n", r.id, r.incarnation)
	r.cmd = exec.Command(binary, "--config", r.config)
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r.started = time.Now()
	require.NoError(r.t, r.cmd.Start())
	done := make(chan error, 1)
	cmd := r.cmd
	go func() { done <- cmd.Wait() }()
	r.done = done
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for !r.ready() {
		select {
		case err := <-done:
			done <- err
			r.t.Fatalf("replica %s exited (%v) before it was ready", r.id, err)
		case <-deadline.C:
			r.t.Fatalf("replica %s never became ready", r.id)
		case <-poll.C:
		}
	}
}

func (r *replica) ready() bool {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + r.http + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// kill SIGKILLs the running incarnation and waits for it to be gone; it returns when the
// signal was sent.
func (r *replica) kill() time.Time {
	r.t.Helper()
	require.NotNil(r.t, r.done, "replica %s is not running", r.id)
	at := time.Now()
	require.NoError(r.t, r.cmd.Process.Signal(syscall.SIGKILL))
	err := <-r.done
	r.done = nil
	var exit *exec.ExitError
	require.ErrorAs(r.t, err, &exit, "replica %s", r.id)
	require.Equal(r.t, syscall.SIGKILL, exit.Sys().(syscall.WaitStatus).Signal(), "replica %s died of the SIGKILL", r.id)
	fmt.Fprintf(r.logs, "=== replica %s, incarnation %d: SIGKILL\n", r.id, r.incarnation)
	return at
}

// exited reports an unexpected exit of the running incarnation.
func (r *replica) exited() <-chan error {
	if r.done == nil {
		return nil
	}
	return r.done
}

func (r *replica) stop() {
	if r.done == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	r.done = nil
}

// status answers GET /v1/rollouts/e2e/{name} on this replica.
func (r *replica) status(name string) int {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + r.http + "/v1/rollouts/e2e/" + name)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// logLines counts the lines of logs that contain every one of words.
func logLines(logs string, words ...string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		all := true
		for _, w := range words {
			if !strings.Contains(line, w) {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}

// startPrometheus serves a stable v1 and a canary v2 of each service with the given
// profiles, starts Prometheus scraping them every second, and waits until every stable side
// has the history a baseline needs. It returns Prometheus's URL and the canaries.
func startPrometheus(t *testing.T, ctx context.Context, services []string, stable workload.Profile) (string, map[string]*workload.Workload) {
	t.Helper()
	promBinary := requirePrometheus(t)
	canaries := map[string]*workload.Workload{}
	var targets []promproc.Target
	for i, s := range services {
		st := serveWorkload(t, ctx, s, "v1", stable, int64(2*i+101))
		ca := serveWorkload(t, ctx, s, "v2", stable, int64(2*i+102))
		canaries[s] = ca.w
		targets = append(targets, promproc.Target{Job: "workload", Address: st.addr}, promproc.Target{Job: "workload", Address: ca.addr})
	}
	prom, err := promproc.Start(ctx, promproc.Options{Binary: promBinary, Dir: t.TempDir(), Targets: targets, ScrapeInterval: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prom.Close() })
	require.NoError(t, prom.WaitTargetsUp(ctx))
	source, err := compare.NewPrometheus(compare.PrometheusOptions{URL: prom.URL()})
	require.NoError(t, err)
	// The baseline window is a minute; its checks need 1,000 stable requests: wait for
	// twice that.
	for _, s := range services {
		expr := fmt.Sprintf(`sum(increase(http_requests_total{service=%q, version="v1"}[1m]))`, s)
		require.Eventually(t, func() bool {
			r := source.Query(ctx, []compare.Request{{Expr: expr, Time: time.Now()}})[0]
			return r.Err == nil && len(r.Series) == 1 && r.Series[0].Value >= 2000
		}, 2*time.Minute, 200*time.Millisecond, "history of %s", s)
	}
	return prom.URL(), canaries
}

// verdictFeed is every verdict of the stream in stream order, as an ordered consumer reads
// it while the test runs; notify is signalled at each.
type verdictFeed struct {
	mu     sync.Mutex
	all    []rolloutclient.Received
	notify chan struct{}
}

func watchVerdictFeed(t *testing.T, ctx context.Context, js jetstream.JetStream) *verdictFeed {
	f := &verdictFeed{notify: make(chan struct{}, 1)}
	watchCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rolloutclient.WatchVerdicts(watchCtx, js, prefix, func(r rolloutclient.Received) {
			f.mu.Lock()
			f.all = append(f.all, r)
			f.mu.Unlock()
			select {
			case f.notify <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { stop(); <-done })
	return f
}

func (f *verdictFeed) len() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.all) }

func (f *verdictFeed) at(i int) rolloutclient.Received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.all[i]
}

func (f *verdictFeed) of(name string) []rolloutclient.Received {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []rolloutclient.Received
	for _, r := range f.all {
		if r.Verdict.Rollout == (rollout.Ref{Namespace: "e2e", Name: name}) {
			out = append(out, r)
		}
	}
	return out
}

// wire records every verdict message as published, through a plain subscription: it sees the
// messages JetStream drops as duplicates (same Nats-Msg-Id) too, which the stream hides. A
// sequence number reused for a different verdict shows here and nowhere else.
type wire struct {
	mu   sync.Mutex
	msgs map[string][][]byte // by Nats-Msg-Id, in arrival order
}

func recordWire(t *testing.T, nc *nats.Conn) *wire {
	w := &wire{msgs: map[string][][]byte{}}
	sub, err := nc.Subscribe(prefix+".verdicts.>", func(m *nats.Msg) {
		w.mu.Lock()
		defer w.mu.Unlock()
		id := m.Header.Get(nats.MsgIdHdr)
		w.msgs[id] = append(w.msgs[id], append([]byte(nil), m.Data...))
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

// duplicates returns how many messages repeated an earlier one's Nats-Msg-Id with the same
// content (a verdict published again after a crash: harmless, JetStream drops it), and the
// ids published with different contents (a sequence number reused: a bug).
func (w *wire) duplicates() (same int, conflicting []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, bodies := range w.msgs {
		for _, b := range bodies[1:] {
			if sameVerdict(bodies[0], b) {
				same++
			} else {
				conflicting = append(conflicting, id)
			}
		}
	}
	sort.Strings(conflicting)
	return same, conflicting
}

func (w *wire) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, bodies := range w.msgs {
		n += len(bodies)
	}
	return n
}

// sameVerdict compares two verdict messages by their data: the envelope's id and time may
// differ between two publications of one verdict.
func sameVerdict(a, b []byte) bool {
	var ea, eb rolloutclient.Envelope
	if json.Unmarshal(a, &ea) != nil || json.Unmarshal(b, &eb) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ea.Data, eb.Data)
}

// stateWrite is one write of the state bucket as a watcher saw it.
type stateWrite struct {
	key      string
	revision uint64
	seen     time.Time
	record   *state.Record // nil for a delete or purge
}

// stateLog records every write of the state bucket from its creation.
type stateLog struct {
	mu     sync.Mutex
	writes []stateWrite
}

func watchState(t *testing.T, ctx context.Context, js jetstream.JetStream) *stateLog {
	t.Helper()
	kv, err := js.KeyValue(ctx, state.DefaultBucket)
	require.NoError(t, err)
	w, err := kv.WatchAll(ctx)
	require.NoError(t, err)
	l := &stateLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			sw := stateWrite{key: e.Key(), revision: e.Revision(), seen: time.Now()}
			if e.Operation() == jetstream.KeyValuePut {
				var rec state.Record
				if json.Unmarshal(e.Value(), &rec) == nil {
					sw.record = &rec
				}
			}
			l.mu.Lock()
			l.writes = append(l.writes, sw)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = w.Stop(); <-done })
	return l
}

func (l *stateLog) all() []stateWrite {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]stateWrite(nil), l.writes...)
}

// live returns the writes of a rollout's live record, in order.
func (l *stateLog) live(name string) []stateWrite {
	key := state.LiveKey(rollout.Ref{Namespace: "e2e", Name: name})
	var out []stateWrite
	for _, w := range l.all() {
		if w.key == key {
			out = append(out, w)
		}
	}
	return out
}

// storedVerdict is a verdict as the state bucket held it among a record's pending ones.
type storedVerdict struct {
	traceID string
	owner   string
}

// pending returns, per rollout and sequence, every distinct verdict the state bucket held
// (a sequence decided twice over shows as two).
func (l *stateLog) pending() map[string]map[uint64][]storedVerdict {
	out := map[string]map[uint64][]storedVerdict{}
	for _, w := range l.all() {
		if w.record == nil {
			continue
		}
		for _, p := range w.record.Pending {
			k := p.Verdict.Rollout.String() + "@" + p.Verdict.Revision
			if out[k] == nil {
				out[k] = map[uint64][]storedVerdict{}
			}
			known := false
			for _, s := range out[k][p.Verdict.Sequence] {
				if s.traceID == p.Verdict.TraceID {
					known = true
				}
			}
			if !known {
				out[k][p.Verdict.Sequence] = append(out[k][p.Verdict.Sequence], storedVerdict{traceID: p.Verdict.TraceID, owner: w.record.Owner})
			}
		}
	}
	return out
}

// streamVerdict is one message of the verdict stream.
type streamVerdict struct {
	rolloutclient.Received
	seq  uint64
	time time.Time
}

// readVerdictStream reads every message of ROLLOUT_VERDICTS, in stream order, and checks that
// the stream removed none.
func readVerdictStream(t *testing.T, ctx context.Context, js jetstream.JetStream) []streamVerdict {
	t.Helper()
	s, err := js.Stream(ctx, "ROLLOUT_VERDICTS")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, info.State.LastSeq, info.State.Msgs, "the verdict stream removed no message")
	var out []streamVerdict
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err, "stream message %d", seq)
		r, err := rolloutclient.DecodeVerdict(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
		require.NoError(t, err, "stream message %d", seq)
		out = append(out, streamVerdict{Received: r, seq: seq, time: m.Time})
	}
	return out
}

// byAnalysis groups stream messages by (rollout, revision), in stream order.
func byAnalysis(vs []streamVerdict) map[string][]streamVerdict {
	out := map[string][]streamVerdict{}
	for _, v := range vs {
		k := v.Verdict.Rollout.String() + "@" + v.Verdict.Revision
		out[k] = append(out[k], v)
	}
	return out
}

// sequenceReport checks the contract's sequence rule on the whole stream: for each (rollout,
// revision), in stream order, the sequences are 1, 2, 3, ... (strictly increasing by one:
// no duplicate, no gap), under the matching Nats-Msg-Id. It returns the duplicates and gaps
// it found, for the test's figures, after failing on any.
func sequenceReport(t *testing.T, vs []streamVerdict) (duplicates, gaps int) {
	t.Helper()
	var problems []string
	for k, list := range byAnalysis(vs) {
		seen := map[uint64]bool{}
		for i, v := range list {
			want := uint64(i + 1)
			if i > 0 {
				want = list[i-1].Verdict.Sequence + 1
			}
			switch got := v.Verdict.Sequence; {
			case seen[got]:
				duplicates++
				problems = append(problems, fmt.Sprintf("%s: sequence %d again (stream message %d)", k, got, v.seq))
			case got != want:
				gaps++
				problems = append(problems, fmt.Sprintf("%s: sequence %d where %d was due (stream message %d)", k, got, want, v.seq))
			}
			seen[v.Verdict.Sequence] = true
			wantID := fmt.Sprintf("verdict/%s/%s/%s/%d", v.Verdict.Rollout.Namespace, v.Verdict.Rollout.Name, v.Verdict.Revision, v.Verdict.Sequence)
			if v.MsgID != wantID {
				problems = append(problems, fmt.Sprintf("%s: stream message %d has Nats-Msg-Id %q, not %q", k, v.seq, v.MsgID, wantID))
			}
		}
	}
	sort.Strings(problems)
	require.Empty(t, problems, "the verdict stream breaks the sequence rule")
	return duplicates, gaps
}

// requireStoredMatchesStream checks that no sequence number was decided twice over in the
// state bucket (two different verdicts stored under one number), and that the verdict the
// stream holds under each number is the one stored.
func requireStoredMatchesStream(t *testing.T, l *stateLog, vs []streamVerdict) {
	t.Helper()
	stored := l.pending()
	var problems []string
	for k, bySeq := range stored {
		for seq, list := range bySeq {
			if len(list) > 1 {
				problems = append(problems, fmt.Sprintf("%s: sequence %d stored as %d different verdicts %v", k, seq, len(list), list))
			}
		}
	}
	for _, v := range vs {
		k := v.Verdict.Rollout.String() + "@" + v.Verdict.Revision
		list := stored[k][v.Verdict.Sequence]
		if len(list) == 0 {
			continue // the watcher may miss a write overwritten at once (the bucket keeps one revision)
		}
		if list[0].traceID != v.Verdict.TraceID {
			problems = append(problems, fmt.Sprintf("%s: sequence %d published with trace %s but stored with %s", k, v.Verdict.Sequence, v.Verdict.TraceID, list[0].traceID))
		}
	}
	sort.Strings(problems)
	require.Empty(t, problems)
}

// requireBaselineOnce checks that a rollout's baseline was captured once: every stored record
// that holds a baseline holds the same one, none loses it once stored, and every verdict
// that shows a check's baseline shows the same number. It returns how many records held it.
func requireBaselineOnce(t *testing.T, name string, l *stateLog, verdicts []streamVerdict) int {
	t.Helper()
	var first map[string]rollout.Reading
	held := 0
	for _, w := range l.live(name) {
		if w.record == nil {
			continue
		}
		if w.record.Baseline == nil {
			require.Nil(t, first, "%s: the stored baseline was lost at revision %d (owner %s)", name, w.revision, w.record.Owner)
			continue
		}
		held++
		if first == nil {
			first = w.record.Baseline
			continue
		}
		a, _ := json.Marshal(first)
		b, _ := json.Marshal(w.record.Baseline)
		require.JSONEq(t, string(a), string(b), "%s: the stored baseline changed at revision %d (owner %s): captured again", name, w.revision, w.record.Owner)
	}
	require.NotNil(t, first, "%s: a baseline was stored", name)
	values := map[string]map[float64]bool{}
	for _, v := range verdicts {
		for _, c := range v.Verdict.Checks {
			if c.Baseline == nil {
				continue
			}
			if values[c.Metric] == nil {
				values[c.Metric] = map[float64]bool{}
			}
			values[c.Metric][*c.Baseline] = true
		}
	}
	require.NotEmpty(t, values, "%s: verdicts show the baseline", name)
	for metric, vals := range values {
		require.Len(t, vals, 1, "%s: check %s shows one baseline in every verdict, not %v", name, metric, vals)
	}
	return held
}

// requireConsumerDrained waits until the shared durable consumer has every event delivered
// and acknowledged, and checks that nothing was dead-lettered.
func requireConsumerDrained(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := js.Consumer(ctx, "ROLLOUT_EVENTS", "analyzerd")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 30*time.Second, 100*time.Millisecond, "every event acknowledged")
	dl, err := js.Stream(ctx, "ROLLOUT_DEADLETTER")
	require.NoError(t, err)
	info, err := dl.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "no event was dead-lettered")
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// loadDelays returns, for each incarnation in logs, how long after "analyzerd started" it
// logged "stored analyses loaded": how long a restarted daemon took to read its state.
func loadDelays(logs string) []time.Duration {
	var out []time.Duration
	var started time.Time
	for _, line := range strings.Split(logs, "\n") {
		var l struct {
			TS  time.Time `json:"ts"`
			Msg string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch l.Msg {
		case "analyzerd started":
			started = l.TS
		case "stored analyses loaded":
			if !started.IsZero() {
				out = append(out, l.TS.Sub(started))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
