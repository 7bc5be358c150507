package natsembed

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestStartServesJetStream(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	ns, err := Start(Options{Port: RandomPort, StoreDir: t.TempDir()}, zap.New(core))
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	nc, err := nats.Connect("", nats.InProcessServer(ns))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	require.NoError(t, err)
	ack, err := js.Publish(ctx, "t.x", []byte("hello"))
	require.NoError(t, err)
	require.Equal(t, uint64(1), ack.Sequence)

	// Clients outside the process reach it over TCP on the configured host.
	tcp, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	tcp.Close()

	// Only warnings and errors reach the log; the server's notices do not.
	for _, e := range logs.All() {
		if e.Message == "embedded NATS server started" {
			continue
		}
		require.GreaterOrEqual(t, e.Level, zap.WarnLevel, "unexpected log %q", e.Message)
	}
}

func TestStartFailsWhenPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	port := l.Addr().(*net.TCPAddr).Port

	start := time.Now()
	ns, err := Start(Options{Port: port, StoreDir: t.TempDir()}, zap.NewNop())
	require.Error(t, err)
	require.Nil(t, ns)
	require.Contains(t, err.Error(), "starting embedded NATS server on 127.0.0.1:")
	require.Contains(t, err.Error(), "address already in use")
	require.Less(t, time.Since(start), readyTimeout, "a port in use should fail before the ready timeout")
}

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, Options{}.WithDefaults().Validate())
	require.Equal(t, Options{Host: DefaultHost, Port: DefaultPort}, Options{}.WithDefaults())
	require.ErrorContains(t, Options{Port: 70000}.WithDefaults().Validate(), "port")
	require.ErrorContains(t, Options{MaxStore: -1}.WithDefaults().Validate(), "maxStore")
	_, err := Start(Options{Port: -5}, nil)
	require.ErrorContains(t, err, "embedded NATS server options: port")
}
