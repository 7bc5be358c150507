package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/config"
)

func TestLogFormats(t *testing.T) {
	logLine := func(format string) string {
		var buf bytes.Buffer
		logger, err := newLogger(config.Log{Level: "info", Format: format}, &buf)
		require.NoError(t, err)
		logger.Debug("not at info level")
		logger.Info("verdict", zap.String("rollout", "prod/checkout"), zap.String("verdict", "rollback"),
			zap.String("traceId", "4bf92f3577b34da6a3ce929d0e0e4736"))
		require.NoError(t, logger.Sync())
		require.Equal(t, 1, strings.Count(buf.String(), "\n"), "one line, and no debug line at info level:\n%s", buf.String())
		return buf.String()
	}

	// JSON by default: one object a line, with typed fields.
	var entry map[string]any
	require.NoError(t, json.Unmarshal([]byte(logLine("json")), &entry))
	require.Equal(t, "info", entry["level"])
	require.Equal(t, "verdict", entry["msg"])
	require.Equal(t, "prod/checkout", entry["rollout"])
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", entry["traceId"])
	require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d`, entry["ts"])

	// Console for people: level, message and fields in columns; no colors outside a terminal.
	line := logLine("console")
	require.Error(t, json.Unmarshal([]byte(line), &entry))
	cols := strings.Split(strings.TrimSpace(line), "\t")
	require.Len(t, cols, 4, line)
	require.Equal(t, "INFO", cols[1])
	require.Equal(t, "verdict", cols[2])
	require.JSONEq(t, `{"rollout":"prod/checkout","verdict":"rollback","traceId":"4bf92f3577b34da6a3ce929d0e0e4736"}`, cols[3])
	require.NotContains(t, line, "\x1b[")

	_, err := newLogger(config.Log{Level: "loud", Format: "json"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "log level")
}

func TestLogFormatFlag(t *testing.T) {
	f, fs, err := parseDaemonFlags([]string{"--config", "../../configs/analyzerd.yaml", "--log-format", "console", "--log-level", "debug"})
	require.NoError(t, err)
	cfg, err := load(f, fs)
	require.NoError(t, err)
	require.Equal(t, config.Log{Level: "debug", Format: "console"}, cfg.Log)

	f, fs, err = parseDaemonFlags([]string{"--config", "../../configs/analyzerd.yaml", "--log-format", "xml"})
	require.NoError(t, err)
	_, err = load(f, fs)
	require.ErrorContains(t, err, "log.format")
}
