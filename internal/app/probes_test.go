package app

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// TestProbesAnswerWhileNATSIsAway: HTTP starts before NATS is reached, so that a pod's
// probes answer while the daemon waits for it: alive, not ready, and why.
func TestProbesAnswerWhileNATSIsAway(t *testing.T) {
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		return ln.Addr().String()
	}
	cfg := config.Default()
	cfg.NATS.URL = "nats://" + free() // nothing listens there
	cfg.HTTP.Addr = free()
	cfg.Prometheus.URL = "http://" + free()
	cfg.Templates = []rollout.Template{fastTemplate()}
	config.TemplateDefaults(&cfg.Templates[0])
	cfg.Ingest.MaxClockSkew = 2 * time.Second
	require.NoError(t, cfg.Validate())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{Logger: zaptest.NewLogger(t)}) }()
	defer func() { cancel(); <-done }()

	base := "http://" + cfg.HTTP.Addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "alive while NATS is away")

	resp, err := http.Get(base + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "not connected yet", body.Checks["nats"])
	require.Contains(t, body.Checks["streams"], "NATS is not connected")
	require.Equal(t, "the stored analyses are not loaded yet", body.Checks["analyses"])

	resp, err = http.Get(base + "/v1/rollouts/prod/checkout")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}
