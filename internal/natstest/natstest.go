// Package natstest starts real NATS servers with JetStream for tests, as net/http/httptest
// does for HTTP: in-process, on loopback, with storage in a temporary directory, stopped when
// the test ends.
package natstest

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// Options adjust the server before it starts (for example a fixed Port and StoreDir, so that
// a test can stop a server and start it again in its place).
type Option func(*server.Options)

// WithPort listens on port instead of a random one.
func WithPort(port int) Option { return func(o *server.Options) { o.Port = port } }

// WithStoreDir keeps JetStream's data in dir instead of a fresh temporary directory.
func WithStoreDir(dir string) Option { return func(o *server.Options) { o.StoreDir = dir } }

// WithUser requires clients to authenticate as user with password.
func WithUser(user, password string) Option {
	return func(o *server.Options) { o.Username, o.Password = user, password }
}

// WithToken requires clients to present token.
func WithToken(token string) Option { return func(o *server.Options) { o.Authorization = token } }

// WithNKeyUser requires clients to prove they hold the seed of the user NKey publicKey.
func WithNKeyUser(publicKey string) Option {
	return func(o *server.Options) { o.Nkeys = append(o.Nkeys, &server.NkeyUser{Nkey: publicKey}) }
}

// WithTLS requires TLS with c, which holds the server's certificate; with c.ClientAuth set
// to tls.RequireAndVerifyClientCert, clients need a certificate signed by c.ClientCAs.
// In-process connections (Connect) are not asked for TLS.
func WithTLS(c *tls.Config) Option {
	return func(o *server.Options) {
		o.TLS, o.TLSConfig, o.TLSTimeout = true, c, 5
		o.TLSVerify = c.ClientAuth == tls.RequireAndVerifyClientCert
	}
}

// Start starts a server with JetStream on 127.0.0.1 and a random port, ready for
// connections, and shuts it down when the test ends (Shutdown is idempotent, so a test may
// stop it earlier).
func Start(t testing.TB, opts ...Option) *server.Server {
	t.Helper()
	o := &server.Options{JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true}
	for _, opt := range opts {
		opt(o)
	}
	ns, err := server.NewServer(o)
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	require.True(t, ns.ReadyForConnections(10*time.Second), "NATS server not ready")
	return ns
}

// Connect connects to ns in-process, with opts (credentials for a server that asks for them),
// and closes the connection when the test ends.
func Connect(t testing.TB, ns *server.Server, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(ns)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}
