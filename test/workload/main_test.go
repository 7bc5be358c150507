package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analyzerd/analyzerd/internal/workload"
)

func TestServe(t *testing.T) {
	w, err := workload.New(workload.Config{
		Service: "checkout", Version: "v2",
		Profile: workload.Profile{Rate: 1000, ErrorRate: 0.5},
		Tick:    time.Millisecond,
	})
	require.NoError(t, err)
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, zap.New(core), "127.0.0.1:0", w) }()

	var addr string
	require.Eventually(t, func() bool {
		entries := logs.FilterMessage("listening").All()
		if len(entries) == 0 {
			return false
		}
		addr = entries[0].ContextMap()["addr"].(string)
		return true
	}, 10*time.Second, 5*time.Millisecond)

	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `http_requests_total{code="500",service="checkout",version="v2"}`) &&
			!strings.Contains(string(body), `http_requests_total{code="500",service="checkout",version="v2"} 0`)
	}, 10*time.Second, 10*time.Millisecond, "errors are generated and served")

	cancel()
	require.NoError(t, <-errc)
	require.Len(t, logs.FilterMessage("stopped").All(), 1)
}

func TestRunRejectsBadFlags(t *testing.T) {
	require.Equal(t, 2, run([]string{"--error-rate", "2", "--listen", "127.0.0.1:0"}))
	require.Equal(t, 2, run([]string{"--no-such-flag"}))
	require.Equal(t, 2, run([]string{"extra"}))
}
