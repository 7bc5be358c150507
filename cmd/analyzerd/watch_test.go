package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

var watchNow = time.Date(2026, 11, 25, 14, 10, 0, 0, time.UTC)

func watchVerdict(ns, name, revision string, seq uint64, d rollout.Decision, ago time.Duration, reason string) rollout.Verdict {
	return rollout.Verdict{
		Rollout: rollout.Ref{Namespace: ns, Name: name}, Revision: revision, Step: int(seq % 3), Weight: 10 * int(seq%3+1),
		Verdict: d, Reason: reason, Sequence: seq, Checks: []rollout.CheckResult{},
		DecidedAt: watchNow.Add(-ago), Cause: "evt", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

func TestRenderWatchRowsSortsByRolloutAndAlignsColumns(t *testing.T) {
	rows := []rollout.Verdict{
		watchVerdict("staging", "api", "v7", 12, rollout.Rollback, 2*time.Hour+5*time.Minute, "error-rate: canary 8.7% vs baseline 0.33%"),
		watchVerdict("prod", "checkout", "v2.3.0", 7, rollout.Proceed, 3*time.Second, "all 3 checks pass"),
		watchVerdict("prod", "cart", "abc123", 1, rollout.Pause, 65*time.Second, "error-rate: 335 of the 1000\ncanary samples it needs"),
	}
	got := renderWatchRows(rows, watchNow, true, false)
	require.Equal(t, strings.Join([]string{
		"ROLLOUT        REVISION  STEP  WEIGHT  VERDICT   SEQ  AGE    REASON",
		"prod/cart      abc123    1     20%     pause     1    1m05s  error-rate: 335 of the 1000 canary samples it needs",
		"prod/checkout  v2.3.0    1     20%     proceed   7    3s     all 3 checks pass",
		"staging/api    v7        0     10%     rollback  12   2h05m  error-rate: canary 8.7% vs baseline 0.33%",
	}, "\n")+"\n", got)

	// On a terminal the verdicts are colored, and the columns stay aligned on screen.
	colored := renderWatchRows(rows, watchNow, true, true)
	require.Contains(t, colored, colorRed+"rollback"+colorReset)
	require.Contains(t, colored, colorGreen+"proceed"+colorReset)
	require.Contains(t, colored, colorYellow+"pause"+colorReset)
	var visible []string
	for _, line := range strings.Split(strings.TrimSpace(colored), "\n") {
		for _, c := range []string{colorReset, colorDefault, colorGreen, colorYellow, colorRed} {
			line = strings.ReplaceAll(line, c, "")
		}
		visible = append(visible, line)
	}
	require.Equal(t, strings.Split(strings.TrimSpace(got), "\n"), visible)

	// Without the header, rows are lines to append.
	require.Equal(t, "prod/checkout  v2.3.0  1  20%  proceed  7  3s  all 3 checks pass\n",
		renderWatchRows(rows[1:2], watchNow, false, false))
}

func TestWatchRedrawReplacesTheScreen(t *testing.T) {
	out := watchRedraw("title", "A  B\n1  2\n")
	require.Equal(t, "\x1b[H"+"title\x1b[K\n"+"\x1b[K\n"+"A  B\x1b[K\n"+"1  2\x1b[K\n"+"\x1b[J", out)
}

func TestWatchAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                  "0s",
		0:                             "0s",
		59 * time.Second:              "59s",
		time.Minute:                   "1m00s",
		61*time.Minute + time.Second:  "1h01m",
		49*time.Hour + 30*time.Minute: "2d1h",
	} {
		require.Equal(t, want, watchAge(d), d.String())
	}
}

// noWatchLeaks fails the test when goroutines it started still run once it and its cleanups
// are done.
func noWatchLeaks(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// syncBuffer is an io.Writer that a test reads while runWatch writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func publishVerdict(t *testing.T, js jetstream.JetStream, prefix string, v rollout.Verdict) {
	t.Helper()
	data, err := publish.Encode(v, "analyzerd")
	require.NoError(t, err)
	msg := nats.NewMsg(rollout.VerdictsSubject(prefix, v.Rollout))
	msg.Data = data
	msg.Header.Set(nats.MsgIdHdr, publish.MsgID(v))
	_, err = js.PublishMsg(context.Background(), msg)
	require.NoError(t, err)
}

// startWatch runs runWatch until the test ends or stop is called, and fails the test unless
// it returns nil promptly once stopped.
func startWatch(t *testing.T, o watchOptions) (*syncBuffer, func()) {
	t.Helper()
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWatch(ctx, o, out) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("watch did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return out, stop
}

func waitForOutput(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), want) }, 10*time.Second, 10*time.Millisecond,
		"waiting for %q in:\n%s", want, out)
}

// TestWatchShowsTheCurrentStateThenFollows runs the watch against a real NATS server whose
// verdict stream already holds verdicts: the latest of each rollout shows at once, sorted, the
// stale ones hidden; then each new verdict is appended as a line.
func TestWatchShowsTheCurrentStateThenFollows(t *testing.T) {
	noWatchLeaks(t)
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx := context.Background()
	require.NoError(t, streams.Ensure(ctx, js, streams.Options{Prefix: "ro"}))
	publishVerdict(t, js, "ro", watchVerdict("staging", "api", "v7", 1, rollout.Rollback, 10*time.Second, "error-rate failed"))
	publishVerdict(t, js, "ro", watchVerdict("prod", "checkout", "v2", 1, rollout.Pause, 20*time.Second, "first, superseded"))
	publishVerdict(t, js, "ro", watchVerdict("prod", "checkout", "v2", 2, rollout.Proceed, 5*time.Second, "all 3 checks pass"))
	publishVerdict(t, js, "ro", watchVerdict("prod", "old", "v1", 9, rollout.Proceed, 3*time.Hour, "ended long ago"))

	o := watchOptions{natsURL: ns.ClientURL(), prefix: "ro", since: time.Hour, plain: true, refresh: time.Hour,
		now: func() time.Time { return watchNow }}
	out, stop := startWatch(t, o)
	waitForOutput(t, out, "staging/api")
	require.Equal(t, strings.Join([]string{
		"ROLLOUT        REVISION  STEP  WEIGHT  VERDICT   SEQ  AGE  REASON",
		"prod/checkout  v2        2     30%     proceed   2    5s   all 3 checks pass",
		"staging/api    v7        1     20%     rollback  1    10s  error-rate failed",
	}, "\n")+"\n", out.String(), "the latest verdict of each rollout, sorted; prod/old is older than --since")

	publishVerdict(t, js, "ro", watchVerdict("prod", "checkout", "v2", 3, rollout.Rollback, 0, "latency-p99: twice the baseline"))
	waitForOutput(t, out, "latency-p99")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 4)
	require.Equal(t, "prod/checkout  v2  0  10%  rollback  3  0s  latency-p99: twice the baseline", lines[3])
	stop()
}

func TestWatchFiltersANamespaceAndShowsAnEmptyTable(t *testing.T) {
	noWatchLeaks(t)
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	require.NoError(t, streams.Ensure(context.Background(), js, streams.Options{}))
	publishVerdict(t, js, "rollouts", watchVerdict("prod", "checkout", "v2", 1, rollout.Pause, time.Second, "warming up"))
	// "prod.x" shares the subject token "prod_x" with "prod_x": only the payload tells them apart.
	publishVerdict(t, js, "rollouts", watchVerdict("prod.x", "api", "v1", 1, rollout.Pause, time.Second, "other namespace"))
	publishVerdict(t, js, "rollouts", watchVerdict("prod_x", "web", "v1", 1, rollout.Pause, time.Second, "this namespace"))

	o := watchOptions{natsURL: ns.ClientURL(), prefix: "rollouts", namespace: "prod_x", plain: true, refresh: time.Hour,
		now: func() time.Time { return watchNow }}
	out, stop := startWatch(t, o)
	waitForOutput(t, out, "prod_x/web")
	require.NotContains(t, out.String(), "prod.x/api")
	require.NotContains(t, out.String(), "prod/checkout")
	stop()

	o.namespace = "nothing-here"
	out, stop = startWatch(t, o)
	waitForOutput(t, out, "ROLLOUT")
	require.Equal(t, "ROLLOUT  REVISION  STEP  WEIGHT  VERDICT  SEQ  AGE  REASON\n", out.String(), "no verdicts: the header at once")
	stop()
}

// TestWatchRedrawsOnATerminal: without --plain the table is drawn in place, with a title.
func TestWatchRedrawsOnATerminal(t *testing.T) {
	noWatchLeaks(t)
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	require.NoError(t, streams.Ensure(context.Background(), js, streams.Options{}))
	publishVerdict(t, js, "rollouts", watchVerdict("prod", "checkout", "v2", 1, rollout.Pause, time.Second, "warming up"))
	o := watchOptions{natsURL: ns.ClientURL(), prefix: "rollouts", refresh: 10 * time.Millisecond, now: func() time.Time { return watchNow }}
	out, stop := startWatch(t, o)
	waitForOutput(t, out, "warming up")
	publishVerdict(t, js, "rollouts", watchVerdict("prod", "checkout", "v2", 2, rollout.Proceed, 0, "all checks pass"))
	waitForOutput(t, out, "all checks pass")
	stop()
	frames := strings.Split(out.String(), "\x1b[H")
	last := frames[len(frames)-1]
	require.Contains(t, last, "analyzerd watch: 1 rollout(s) in every namespace")
	require.Contains(t, last, colorGreen+"proceed"+colorReset)
	require.NotContains(t, last, "warming up", "the row was replaced, not appended")
	require.True(t, strings.HasSuffix(last, "\x1b[J"))
}

func TestWatchCommand(t *testing.T) {
	noWatchLeaks(t)
	code, out, _ := runCmd("watch", "--help")
	require.Equal(t, 0, code)
	for _, flag := range []string{"-nats-url", "-subject-prefix", "-namespace", "-plain", "-since"} {
		require.Contains(t, out, flag)
	}

	code, _, errOut := runCmd("watch", "--no-such-flag")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "no-such-flag")

	code, _, errOut = runCmd("watch", "--subject-prefix", "a.>")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--subject-prefix")

	// Nothing listens there: a clear error, exit 1, no password shown.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	code, _, errOut = runCmd("watch", "--nats-url", "nats://watcher:hunter2@"+addr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "connect to nats://watcher:xxxxx@"+addr)
	require.NotContains(t, errOut, "hunter2")

	// A server without analyzerd's streams.
	ns := natstest.Start(t)
	code, _, errOut = runCmd("watch", "--nats-url", ns.ClientURL())
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no stream ROLLOUT_VERDICTS")
}
