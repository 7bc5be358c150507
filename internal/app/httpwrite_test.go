package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/config"
)

// TestDaemonStartsAnAnalysisFromAnArgoCall: the daemon wires the write endpoints to its
// stream, token and templates: an Argo Rollouts call alone starts an analysis that the
// daemon then judges (pause here: Prometheus is unreachable), and a call without the token is
// refused.
func TestDaemonStartsAnAnalysisFromAnArgoCall(t *testing.T) {
	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	cfg.NATS.Embedded.Port, cfg.NATS.Embedded.StoreDir = -1, t.TempDir()
	cfg.Prometheus.URL, cfg.Prometheus.Timeout = unreachable(t), 2*time.Second
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Templates[0].Interval = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	info, stop := runDaemonWith(t, ctx, cfg, Options{LookupEnv: envOf(map[string]string{config.EnvHTTPWriteToken: "t0ken"})})
	defer func() { cancel(); stop() }()

	body := []byte(`{"namespace":"prod","name":"checkout","revision":"6d4f8c9b7","stableRevision":"5c8d7f6a1",
	 "analysis":"http-golden-signals","args":{"service":"checkout"},"canary":{"version":"v2"},"stable":{"version":"v1"},
	 "step":"1","weight":"10"}`)
	post := func(token string) (int, map[string]any) {
		req, err := http.NewRequest(http.MethodPost, "http://"+info.HTTPAddr+"/v1/argo/analysis", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp.StatusCode, out
	}
	status, out := post("")
	require.Equal(t, http.StatusUnauthorized, status, out)
	status, out = post("t0ken")
	require.Equal(t, http.StatusOK, status, out)
	require.Equal(t, "pause", out["verdict"])

	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + info.HTTPAddr + "/v1/rollouts/prod/checkout?step=1&weight=10")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var v map[string]any
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
			return false
		}
		return v["revision"] == "6d4f8c9b7" && v["verdict"] == "pause" && v["stale"] == nil && v["weight"] == 10.0
	}, 20*time.Second, 100*time.Millisecond, "the daemon consumed the stored start and judged step 1")
	status, out = post("t0ken")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "pause", out["verdict"])
	require.Nil(t, out["stale"], "step 1's own verdict now")
}
