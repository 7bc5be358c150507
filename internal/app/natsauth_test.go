package app

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

// envOf looks variables up in m: no test changes the process's environment.
func envOf(m map[string]string) config.Env {
	return func(key string) (string, bool) { v, ok := m[key]; return v, ok }
}

// logBuffer holds every log line of a daemon, as JSON.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) Sync() error { return nil }

func (b *logBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// debugLogger logs everything, debug included, into a buffer shown when the test fails.
func debugLogger(t *testing.T) (*zap.Logger, *logBuffer) {
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon logs:\n%s", b.Bytes())
		}
	})
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), b, zap.DebugLevel)), b
}

// daemon is app.Run running in the background.
type daemon struct {
	cancel   context.CancelFunc
	ready    chan Info
	finished chan struct{}
	err      error // set once finished is closed
	logs     *logBuffer
}

// startDaemon runs the daemon with cfg and opts (a debug logger and a fast scheduler unless
// given); it is stopped when the test ends at the latest.
func startDaemon(t *testing.T, cfg config.Config, opts Options) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, ready: make(chan Info, 1), finished: make(chan struct{})}
	if opts.Logger == nil {
		opts.Logger, d.logs = debugLogger(t)
	}
	if opts.Resolution == 0 {
		opts.Resolution = 50 * time.Millisecond
	}
	opts.OnReady = func(i Info) { d.ready <- i }
	go func() {
		defer close(d.finished)
		d.err = Run(ctx, cfg, opts)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.finished:
		case <-time.After(cfg.ShutdownTimeout + 10*time.Second):
			t.Error("daemon did not stop")
		}
	})
	return d
}

// waitReady waits until the daemon consumes events and serves HTTP.
func (d *daemon) waitReady(t *testing.T) Info {
	t.Helper()
	select {
	case info := <-d.ready:
		return info
	case <-d.finished:
		t.Fatalf("daemon stopped before it was ready: %v", d.err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready within 30s")
	}
	return Info{}
}

// waitFailed waits until the daemon stops on its own, without ever being ready.
func (d *daemon) waitFailed(t *testing.T) error {
	t.Helper()
	select {
	case <-d.ready:
		t.Fatal("the daemon became ready")
	case <-d.finished:
		require.Error(t, d.err)
		return d.err
	case <-time.After(30 * time.Second):
		t.Fatal("daemon still running after 30s")
	}
	return nil
}

// stop cancels the daemon and returns what Run returned.
func (d *daemon) stop(t *testing.T) error {
	t.Helper()
	d.cancel()
	select {
	case <-d.finished:
		return d.err
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop within 30s")
	}
	return nil
}

// externalConfig is the shipped configuration against the external server at url, with
// Prometheus unreachable (every verdict a pause) and a fast interval.
func externalConfig(t *testing.T, url string) config.Config {
	t.Helper()
	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	cfg.NATS.URL = url
	cfg.NATS.ReconnectWait = 50 * time.Millisecond
	cfg.Prometheus.URL = unreachable(t)
	cfg.Prometheus.Timeout = time.Second
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Templates[0].Interval = 200 * time.Millisecond
	return cfg
}

var checkout = rollout.Ref{Namespace: "prod", Name: "checkout"}

func started(revision string) rolloutclient.Started {
	return rolloutclient.Started{
		Rollout: checkout, Revision: revision, Analysis: "http-golden-signals",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": revision},
		Stable: map[string]string{"version": "v1"}, Weight: 10,
	}
}

// firstVerdict starts a rollout through js, as a controller would, and returns the first
// verdict the daemon publishes on it.
func firstVerdict(t *testing.T, js jetstream.JetStream) rolloutclient.Received {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan rolloutclient.Received, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rolloutclient.WatchVerdicts(ctx, js, "rollouts", func(r rolloutclient.Received) {
			select {
			case got <- r:
			default:
			}
		})
	}()
	defer func() { cancel(); <-done }()
	pub := rolloutclient.Publisher{JS: js, Prefix: "rollouts"}
	require.NoError(t, pub.Publish(ctx, checkout, "evt-1", rollout.EventStarted, time.Now(), started("v2")))
	select {
	case r := <-got:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no verdict within 30s")
	}
	return rolloutclient.Received{}
}

// writeSecret writes content to a new file of mode 0600 and returns its path.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// authCase is one way to authenticate: the server that demands it, the test's own client's
// credentials, and the daemon's configuration with the right secret and with a wrong one.
type authCase struct {
	name   string
	server []natstest.Option
	client []nats.Option
	// configure sets the daemon's credentials, good or wrong, in its config and environment.
	configure func(t *testing.T, auth *config.NATSAuth, env map[string]string, good bool)
	field     string   // the config key or variable a failure names
	secrets   []string // no error, log line or output may hold them
}

func authCases(t *testing.T) []authCase {
	const user, password, wrongPassword = "analyzerd", "pw-6c1f0e-GOOD", "pw-93ab7d-WRONG"
	const token, wrongToken = "tok-5be2a1-GOOD", "tok-0d4f88-WRONG"

	userKey, err := nkeys.CreateUser()
	require.NoError(t, err)
	userPub, err := userKey.PublicKey()
	require.NoError(t, err)
	userSeed, err := userKey.Seed()
	require.NoError(t, err)
	otherKey, err := nkeys.CreateUser()
	require.NoError(t, err)
	otherSeed, err := otherKey.Seed()
	require.NoError(t, err)
	seedFile := writeSecret(t, "user.nk", string(userSeed))
	nkeyOpt, err := nats.NkeyOptionFromSeed(seedFile)
	require.NoError(t, err)

	op := newOperator(t)
	goodCreds, goodCredsSeed := op.userCreds(t, op.account)
	strangerAccount, err := nkeys.CreateAccount()
	require.NoError(t, err)
	wrongCreds, wrongCredsSeed := op.userCreds(t, strangerAccount) // an account the server does not know

	return []authCase{
		{
			name: "user and password file", server: []natstest.Option{natstest.WithUser(user, password)},
			client: []nats.Option{nats.UserInfo(user, password)},
			configure: func(t *testing.T, a *config.NATSAuth, _ map[string]string, good bool) {
				a.User, a.PasswordFile = user, writeSecret(t, "password", pick(good, password, wrongPassword)+"\n")
			},
			field: "nats.auth.passwordFile", secrets: []string{password, wrongPassword},
		},
		{
			name: "user and password in the environment", server: []natstest.Option{natstest.WithUser(user, password)},
			client: []nats.Option{nats.UserInfo(user, password)},
			configure: func(_ *testing.T, a *config.NATSAuth, env map[string]string, good bool) {
				a.User, env[config.EnvNATSPassword] = user, pick(good, password, wrongPassword)
			},
			field: config.EnvNATSPassword, secrets: []string{password, wrongPassword},
		},
		{
			name: "token file", server: []natstest.Option{natstest.WithToken(token)},
			client: []nats.Option{nats.Token(token)},
			configure: func(t *testing.T, a *config.NATSAuth, _ map[string]string, good bool) {
				a.TokenFile = writeSecret(t, "token", pick(good, token, wrongToken))
			},
			field: "nats.auth.tokenFile", secrets: []string{token, wrongToken},
		},
		{
			name: "token in the environment", server: []natstest.Option{natstest.WithToken(token)},
			client: []nats.Option{nats.Token(token)},
			configure: func(_ *testing.T, _ *config.NATSAuth, env map[string]string, good bool) {
				env[config.EnvNATSToken] = pick(good, token, wrongToken)
			},
			field: config.EnvNATSToken, secrets: []string{token, wrongToken},
		},
		{
			name: "nkey seed file", server: []natstest.Option{natstest.WithNKeyUser(userPub)},
			client: []nats.Option{nkeyOpt},
			configure: func(t *testing.T, a *config.NATSAuth, _ map[string]string, good bool) {
				a.NKeySeedFile = writeSecret(t, "daemon.nk", string(pick(good, userSeed, otherSeed)))
			},
			field: "nats.auth.nkeySeedFile", secrets: []string{string(userSeed), string(otherSeed)},
		},
		{
			name: "credentials file in operator mode", server: []natstest.Option{op.option},
			client: []nats.Option{nats.UserCredentials(goodCreds)},
			configure: func(_ *testing.T, a *config.NATSAuth, _ map[string]string, good bool) {
				a.CredentialsFile = pick(good, goodCreds, wrongCreds)
			},
			field: "nats.auth.credentialsFile", secrets: []string{goodCredsSeed, wrongCredsSeed},
		},
	}
}

func pick[T any](good bool, right, wrong T) T {
	if good {
		return right
	}
	return wrong
}

// TestNATSAuthMethods: with each method and the right secret, the daemon connects to a real
// server that demands it, creates its streams and publishes a verdict; with a wrong secret,
// app.Run fails with an error that says the server refused it and names where the secret
// came from, and neither the error nor any log line holds a secret.
func TestNATSAuthMethods(t *testing.T) {
	for _, tc := range authCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			ns := natstest.Start(t, tc.server...)

			// Without credentials, the server refuses (so the rows below test something).
			_, err := nats.Connect(ns.ClientURL(), nats.Timeout(5*time.Second))
			require.ErrorIs(t, err, nats.ErrAuthorization)

			t.Run("right secret", func(t *testing.T) {
				cfg, env := externalConfig(t, ns.ClientURL()), map[string]string{}
				tc.configure(t, &cfg.NATS.Auth, env, true)
				require.NoError(t, cfg.ValidateEnv(envOf(env)))
				d := startDaemon(t, cfg, Options{LookupEnv: envOf(env)})
				d.waitReady(t)

				_, js := natstest.Connect(t, ns, tc.client...)
				for _, s := range []string{"ROLLOUT_EVENTS", "ROLLOUT_VERDICTS", "ROLLOUT_DEADLETTER"} {
					_, err := js.Stream(context.Background(), s)
					require.NoError(t, err, "stream %s created by the daemon", s)
				}
				r := firstVerdict(t, js)
				require.Equal(t, rollout.Pause, r.Verdict.Verdict)
				require.Equal(t, uint64(1), r.Verdict.Sequence)

				require.NoError(t, d.stop(t))
				requireNoSecret(t, d.logs.Bytes(), tc.secrets...)
			})

			t.Run("wrong secret", func(t *testing.T) {
				cfg, env := externalConfig(t, ns.ClientURL()), map[string]string{}
				tc.configure(t, &cfg.NATS.Auth, env, false)
				require.NoError(t, cfg.ValidateEnv(envOf(env)), "a wrong secret is a valid configuration")
				d := startDaemon(t, cfg, Options{LookupEnv: envOf(env)})
				err := d.waitFailed(t)
				t.Log(err)
				require.ErrorIs(t, err, errNATSClosed)
				require.ErrorIs(t, err, nats.ErrAuthorization)
				require.ErrorContains(t, err, "Authorization Violation")
				require.ErrorContains(t, err, tc.field)
				requireNoSecret(t, []byte(err.Error()), tc.secrets...)
				requireNoSecret(t, d.logs.Bytes(), tc.secrets...)
			})
		})
	}
}

// TestNATSAuthFilesUnusable: a secret file the daemon cannot use fails the start at once,
// naming the file's config key and never what it holds.
func TestNATSAuthFilesUnusable(t *testing.T) {
	const content = "SUAM-NOT-A-SEED-7f3e"
	garbage := writeSecret(t, "garbage", content)
	empty := writeSecret(t, "empty", "\n")
	for _, tc := range []struct {
		name      string
		configure func(a *config.NATSAuth, tl *config.NATSTLS)
		want      string
	}{
		{"password file empty", func(a *config.NATSAuth, _ *config.NATSTLS) { a.User, a.PasswordFile = "u", empty }, "nats.auth.passwordFile: " + empty + " is empty"},
		{"token file missing", func(a *config.NATSAuth, _ *config.NATSTLS) { a.TokenFile = garbage + ".missing" }, "nats.auth.tokenFile: open "},
		{"nkey seed file without a seed", func(a *config.NATSAuth, _ *config.NATSTLS) { a.NKeySeedFile = garbage }, "nats.auth.nkeySeedFile: "},
		{"credentials file without a JWT", func(a *config.NATSAuth, _ *config.NATSTLS) { a.CredentialsFile = garbage }, "nats.auth.credentialsFile: "},
		{"ca file without a certificate", func(_ *config.NATSAuth, tl *config.NATSTLS) { tl.CAFile = garbage }, "nats.tls.caFile: no PEM certificate in " + garbage},
		{"client key not a key", func(_ *config.NATSAuth, tl *config.NATSTLS) { tl.CertFile, tl.KeyFile = garbage, garbage }, "nats.tls.certFile and nats.tls.keyFile: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			cfg := externalConfig(t, "nats://127.0.0.1:1") // never reached
			tc.configure(&cfg.NATS.Auth, &cfg.NATS.TLS)
			err := startDaemon(t, cfg, Options{LookupEnv: envOf(nil)}).waitFailed(t)
			t.Log(err)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), content)
		})
	}
}

// TestNATSTLSWithClientCertificate: against a server that requires TLS and verifies client
// certificates, the daemon connects with nats.tls (the CA, its client certificate, and a
// serverName that is not the URL's host) and publishes a verdict. A key that does not match
// the certificate fails the start naming the keys. A certificate the server does not trust,
// or a server certificate that does not name the server, are retried as a server that is
// down would be: the daemon does not become ready, and its log says why.
func TestNATSTLSWithClientCertificate(t *testing.T) {
	noLeaks(t)
	ca := newCA(t, "analyzerd test CA")
	serverCert, err := tls.LoadX509KeyPair(ca.issue(t, "nats.test", x509.ExtKeyUsageServerAuth))
	require.NoError(t, err)
	clientCert, clientKey := ca.issue(t, "analyzerd", x509.ExtKeyUsageClientAuth)
	ns := natstest.Start(t, natstest.WithTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: ca.pool, MinVersion: tls.VersionTLS12,
	}))
	tlsConfig := func(cfg *config.Config) {
		cfg.NATS.TLS = config.NATSTLS{CAFile: ca.file, CertFile: clientCert, KeyFile: clientKey, ServerName: "nats.test"}
	}

	t.Run("trusted client certificate", func(t *testing.T) {
		cfg := externalConfig(t, ns.ClientURL())
		tlsConfig(&cfg)
		require.NoError(t, cfg.ValidateEnv(envOf(nil)))
		d := startDaemon(t, cfg, Options{LookupEnv: envOf(nil)})
		d.waitReady(t)
		_, js := natstest.Connect(t, ns)
		require.Equal(t, rollout.Pause, firstVerdict(t, js).Verdict.Verdict)
		require.NoError(t, d.stop(t))
	})

	t.Run("key not matching the certificate", func(t *testing.T) {
		_, otherKey := ca.issue(t, "other", x509.ExtKeyUsageClientAuth)
		cfg := externalConfig(t, ns.ClientURL())
		tlsConfig(&cfg)
		cfg.NATS.TLS.KeyFile = otherKey
		err := startDaemon(t, cfg, Options{LookupEnv: envOf(nil)}).waitFailed(t)
		require.ErrorContains(t, err, "nats.tls.certFile and nats.tls.keyFile: tls: private key does not match public key")
		requireNoSecret(t, []byte(err.Error()), pemBody(t, otherKey), pemBody(t, clientKey))
	})

	t.Run("client certificate of another CA", func(t *testing.T) {
		stranger := newCA(t, "stranger CA")
		cert, key := stranger.issue(t, "analyzerd", x509.ExtKeyUsageClientAuth)
		cfg := externalConfig(t, ns.ClientURL())
		tlsConfig(&cfg)
		cfg.NATS.TLS.CertFile, cfg.NATS.TLS.KeyFile = cert, key
		d := startDaemon(t, cfg, Options{LookupEnv: envOf(nil)})
		// The server's refusal reaches the client as a TLS alert ("certificate required"),
		// or, with TLS 1.3, sometimes as a closed connection.
		require.Eventually(t, func() bool {
			return bytes.Contains(d.logs.Bytes(), []byte("nats connection attempt failed; retrying"))
		}, 30*time.Second, 20*time.Millisecond, "the log says the daemon cannot connect")
		select {
		case <-d.ready:
			t.Fatal("ready with a certificate the server does not trust")
		default:
		}
		require.ErrorIs(t, d.stop(t), context.Canceled)
		requireNoSecret(t, d.logs.Bytes(), pemBody(t, key))
	})

	t.Run("server name not in the server's certificate", func(t *testing.T) {
		cfg := externalConfig(t, ns.ClientURL())
		tlsConfig(&cfg)
		cfg.NATS.TLS.ServerName = "" // the URL's host, 127.0.0.1, which the certificate does not name
		d := startDaemon(t, cfg, Options{LookupEnv: envOf(nil)})
		require.Eventually(t, func() bool {
			return bytes.Contains(d.logs.Bytes(), []byte("x509: cannot validate certificate for 127.0.0.1"))
		}, 30*time.Second, 20*time.Millisecond, "the log says why the daemon cannot connect")
		require.ErrorIs(t, d.stop(t), context.Canceled)
	})
}

// operator is a NATS operator with one account that may use JetStream, for decentralized
// (JWT) authentication: the server trusts the operator and resolves accounts from memory.
type operator struct {
	key     nkeys.KeyPair
	account nkeys.KeyPair
	option  natstest.Option
}

func newOperator(t *testing.T) *operator {
	t.Helper()
	opKey, err := nkeys.CreateOperator()
	require.NoError(t, err)
	opPub, err := opKey.PublicKey()
	require.NoError(t, err)
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(opKey)
	require.NoError(t, err)
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	require.NoError(t, err)

	resolver := &server.MemAccResolver{}
	account := func(jetStream bool) (nkeys.KeyPair, string) {
		key, err := nkeys.CreateAccount()
		require.NoError(t, err)
		pub, err := key.PublicKey()
		require.NoError(t, err)
		claims := jwt.NewAccountClaims(pub)
		if jetStream {
			claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		accJWT, err := claims.Encode(opKey)
		require.NoError(t, err)
		require.NoError(t, resolver.Store(pub, accJWT))
		return key, pub
	}
	_, systemPub := account(false)
	appKey, _ := account(true)
	return &operator{key: opKey, account: appKey, option: func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
		o.AccountResolver = resolver
		o.SystemAccount = systemPub
	}}
}

// userCreds writes a .creds file for a new user of account, and returns it and the seed.
func (op *operator) userCreds(t *testing.T, account nkeys.KeyPair) (string, string) {
	t.Helper()
	userKey, err := nkeys.CreateUser()
	require.NoError(t, err)
	userPub, err := userKey.PublicKey()
	require.NoError(t, err)
	seed, err := userKey.Seed()
	require.NoError(t, err)
	userJWT, err := jwt.NewUserClaims(userPub).Encode(account)
	require.NoError(t, err)
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	require.NoError(t, err)
	return writeSecret(t, "user.creds", string(creds)), string(seed)
}

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	file string // its certificate, PEM
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	file := writeSecret(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return &testCA{cert: cert, key: key, pool: pool, file: file}
}

// issue writes a certificate for name (also its only DNS name) and its key, and returns
// their files.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile = writeSecret(t, name+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeSecret(t, name+"-key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

// pemBody returns the base64 body of the PEM file at path: the secret part of a key file.
func pemBody(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(bytes.Split(b, []byte("\n"))[1]) // the body's first line: 64 characters of the key
}
