package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/chromiumtest"
	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

func pageGet(t *testing.T, u string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body), resp.Header
}

// recordedRollback is a rollout another replica analysed: a step at 10% that proceeded, then
// a step at 50% whose e-value crossed 1/alpha.
func recordedRollback(ref rollout.Ref, at time.Time) []rollout.Verdict {
	f := func(v float64) *float64 { return &v }
	var out []rollout.Verdict
	for i := range 10 {
		step, weight, verdict, e, canary := 0, 10, rollout.Pause, 1+0.1*float64(i), 0.005
		switch {
		case i == 5:
			verdict = rollout.Proceed
		case i > 5:
			step, weight, e, canary = 1, 50, []float64{3, 20, 90, 5e8}[i-6], 0.09
		}
		if i == 9 {
			verdict = rollout.Rollback
		}
		out = append(out, rollout.Verdict{
			Rollout: ref, Revision: "v2", Step: step, Weight: weight, Verdict: verdict, Sequence: uint64(i + 1),
			Reason:    fmt.Sprintf("verdict %d <b>bold</b>", i+1),
			DecidedAt: at.Add(time.Duration(i) * 2 * time.Second), Cause: "evt", TraceID: fmt.Sprintf("%032x", i+1),
			Checks: []rollout.CheckResult{{Metric: "error-rate", Outcome: rollout.Inconclusive, Canary: f(canary), Stable: f(0.005),
				Baseline: f(0.005), EValue: f(e), EValueThreshold: f(100), Threshold: "canary - stable < 0.01",
				Limits: []rollout.Limit{{Guard: "canary - stable < 0.01", Max: f(0.015)}}}},
		})
	}
	return out
}

func publishVerdicts(t *testing.T, js jetstream.JetStream, vs []rollout.Verdict) {
	t.Helper()
	for _, v := range vs {
		body, err := publish.Encode(v, "another-replica")
		require.NoError(t, err)
		msg := &nats.Msg{Subject: rollout.VerdictsSubject("rollouts", v.Rollout), Data: body, Header: nats.Header{}}
		msg.Header.Set(nats.MsgIdHdr, publish.MsgID(v))
		_, err = js.PublishMsg(context.Background(), msg)
		require.NoError(t, err)
	}
}

type historyBody struct {
	Live     bool `json:"live"`
	Analyses []struct {
		Revision string `json:"revision"`
		Timeline []struct {
			Verdict  rollout.Verdict `json:"verdict"`
			TraceURL string          `json:"traceUrl"`
		} `json:"timeline"`
	} `json:"analyses"`
}

// TestRolloutPagesEndToEnd: the daemon on a real NATS server serves the rollout pages and
// their JSON from the verdict stream, for the verdicts it published itself and for those
// another replica did; an unknown rollout is 404, and while NATS is down the pages say 503.
func TestRolloutPagesEndToEnd(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	ns := natstest.Start(t, natstest.WithPort(port), natstest.WithStoreDir(dir))
	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	cfg.NATS.URL = "nats://127.0.0.1:" + strconv.Itoa(port)
	cfg.NATS.ReconnectWait = 50 * time.Millisecond
	cfg.Prometheus.URL = unreachable(t)
	cfg.Prometheus.Timeout = time.Second
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.HTTP.TraceURL = "https://jaeger.example/trace/{traceId}"
	cfg.Templates[0].Interval = 200 * time.Millisecond
	require.NoError(t, cfg.Validate())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	info, stop := runDaemon(t, ctx, cfg)
	base := "http://" + info.HTTPAddr
	_, js := natstest.Connect(t, ns)

	// A live rollout: the daemon publishes its (pause) verdicts.
	live := rollout.Ref{Namespace: "prod", Name: "checkout"}
	pub := rolloutclient.Publisher{JS: js, Prefix: "rollouts"}
	require.NoError(t, pub.Publish(ctx, live, "evt-1", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: live, Revision: "v2", Analysis: "http-golden-signals",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Weight: 10,
	}))
	var h historyBody
	require.Eventually(t, func() bool {
		code, body, _ := pageGet(t, base+"/v1/rollouts/prod/checkout/history")
		if code != http.StatusOK {
			return false
		}
		h = historyBody{}
		require.NoError(t, json.Unmarshal([]byte(body), &h))
		return len(h.Analyses) == 1 && len(h.Analyses[0].Timeline) >= 3
	}, 30*time.Second, 50*time.Millisecond, "the daemon's verdicts on the history")
	require.True(t, h.Live)
	for i, e := range h.Analyses[0].Timeline {
		require.Equal(t, live, e.Verdict.Rollout)
		require.Equal(t, uint64(i+1), e.Verdict.Sequence, "in the order published")
		require.Equal(t, rollout.Pause, e.Verdict.Verdict)
		require.NotEmpty(t, e.Verdict.TraceID)
		require.Equal(t, "https://jaeger.example/trace/"+e.Verdict.TraceID, e.TraceURL)
	}
	code, body, header := pageGet(t, base+"/ui/rollouts/prod/checkout")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "text/html; charset=utf-8", header.Get("Content-Type"))
	require.Contains(t, body, "Under analysis now.")
	require.Contains(t, body, "metrics source unavailable")

	// A rollout another replica analysed and that ended; its reason holds markup.
	recorded := rollout.Ref{Namespace: "demo", Name: "recorded"}
	publishVerdicts(t, js, recordedRollback(recorded, time.Now().Add(-time.Minute)))
	code, body, _ = pageGet(t, base+"/ui/rollouts/demo/recorded")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "Not under analysis")
	require.Contains(t, body, `verdict 10 &lt;b&gt;bold&lt;/b&gt;`)
	require.NotContains(t, body, "<b>bold</b>")
	require.Contains(t, body, `id="analysis-1-check-1-evidence"`)
	require.Contains(t, body, "It reached 1/alpha (100)")

	code, body, _ = pageGet(t, base+"/ui/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `<a href="/ui/rollouts/prod/checkout">prod/checkout</a></td><td>live</td>`)
	require.Contains(t, body, `<a href="/ui/rollouts/demo/recorded">demo/recorded</a></td><td>ended</td>`)

	// A hostile name, escaped in the path and on the page.
	evil := rollout.Ref{Namespace: "ns", Name: `<script>alert(1)</script>`}
	publishVerdicts(t, js, recordedRollback(evil, time.Now().Add(-time.Minute))[:2])
	code, body, _ = pageGet(t, base+"/ui/rollouts/ns/"+url.PathEscape(evil.Name))
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "<h1>Rollout ns/&lt;script&gt;alert(1)&lt;/script&gt;</h1>")
	require.NotContains(t, body, "<script")

	// Unknown: 404, page and JSON.
	code, body, _ = pageGet(t, base+"/ui/rollouts/prod/nope")
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, body, "Rollout prod/nope not found")
	code, _, _ = pageGet(t, base+"/v1/rollouts/prod/nope/history")
	require.Equal(t, http.StatusNotFound, code)

	// In a real browser, through the real server: the e-value line crosses above 1/alpha (a
	// subtest: without chromium, only it is skipped).
	t.Run("screenshot", func(t *testing.T) {
		img := chromiumtest.Screenshot(t, "app-recorded", base+"/ui/rollouts/demo/recorded", 1100, 1600)
		threshold := chromiumtest.Pixels(img, chromiumtest.Hex("#009e73"), 8)
		rows := map[int]int{}
		row := 0
		for _, p := range threshold {
			rows[p.Y]++
			if rows[p.Y] > rows[row] {
				row = p.Y
			}
		}
		require.Greater(t, rows[row], 300, "the 1/alpha line")
		above := 0
		for _, p := range chromiumtest.Pixels(img, chromiumtest.Hex("#cc79a7"), 24) {
			if p.Y < row-2 && p.Y > row-200 {
				above++
			}
		}
		require.Greater(t, above, 20, "the e-value above 1/alpha")
	})

	// NATS goes away: the pages say the history cannot be read; it comes back, and so do they.
	ns.Shutdown()
	ns.WaitForShutdown()
	require.Eventually(t, func() bool {
		code, body, _ := pageGet(t, base+"/ui/rollouts/demo/recorded")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "Verdict history unavailable")
	}, 30*time.Second, 50*time.Millisecond)
	code, body, _ = pageGet(t, base+"/v1/rollouts/demo/recorded/history")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "the verdict history cannot be read now")
	code, _, _ = pageGet(t, base+"/ui/")
	require.Equal(t, http.StatusServiceUnavailable, code)

	natstest.Start(t, natstest.WithPort(port), natstest.WithStoreDir(dir))
	require.Eventually(t, func() bool {
		code, _, _ := pageGet(t, base+"/ui/rollouts/demo/recorded")
		return code == http.StatusOK
	}, 60*time.Second, 50*time.Millisecond)

	cancel()
	stop()
}
