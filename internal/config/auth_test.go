package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// envOf looks variables up in m, so that no test changes the process's environment.
func envOf(m map[string]string) Env {
	return func(key string) (string, bool) { v, ok := m[key]; return v, ok }
}

func TestNATSAuthAndTLSFromYAML(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o600))
		return p
	}
	cfg, err := Decode(strings.NewReader(`
nats:
  url: tls://nats.example.com:4222
  auth:
    user: analyzerd
    passwordFile: ` + file("password") + `
  tls:
    caFile: ` + file("ca.pem") + `
    certFile: ` + file("cert.pem") + `
    keyFile: ` + file("key.pem") + `
    serverName: nats.internal
templates:
  - name: t
    checks:
      - name: up
        kind: value
        query: up
        guards:
          - min: 1
`))
	require.NoError(t, err)
	require.NoError(t, cfg.ValidateEnv(envOf(nil)))
	require.Equal(t, NATSAuth{User: "analyzerd", PasswordFile: filepath.Join(dir, "password")}, cfg.NATS.Auth)
	require.Equal(t, NATSTLS{
		CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"),
		ServerName: "nats.internal",
	}, cfg.NATS.TLS)
	require.Equal(t, NATSAuth{}, Default().NATS.Auth, "no authentication by default")
	require.Equal(t, NATSTLS{}, Default().NATS.TLS, "no TLS by default")

	for _, key := range []string{"tokenFile", "nkeySeedFile", "credentialsFile"} {
		_, err := Decode(strings.NewReader("nats:\n  auth:\n    " + key + ": /x\n"))
		require.NoError(t, err, "a known key: %s", key)
	}
	_, err = Decode(strings.NewReader("nats:\n  tls:\n    insecureSkipVerify: true\n"))
	require.ErrorContains(t, err, `unknown key "insecureSkipVerify" in nats.tls`, "NATS has no way to skip verification")
}

// TestSecretsInClearAreRefused: the configuration has no key for a secret in clear; strict
// decoding refuses one with its line, says where the secret goes, and never echoes it.
func TestSecretsInClearAreRefused(t *testing.T) {
	const secret = "s3cr3t-in-clear"
	for _, tc := range []struct {
		yaml, want string
	}{
		{"nats:\n  auth:\n    user: u\n    password: " + secret + "\n",
			`line 4: unknown key "password" in nats.auth; secrets are never written in the configuration: use nats.auth.passwordFile or the environment variable ANALYZERD_NATS_PASSWORD`},
		{"nats:\n  auth:\n    token: " + secret + "\n",
			`line 3: unknown key "token" in nats.auth; secrets are never written in the configuration: use nats.auth.tokenFile or the environment variable ANALYZERD_NATS_TOKEN`},
		{"nats:\n  auth:\n    nkeySeed: " + secret + "\n", "use nats.auth.nkeySeedFile"},
		{"nats:\n  auth:\n    credentials: " + secret + "\n", "use nats.auth.credentialsFile"},
		{"prometheus:\n  bearerToken: " + secret + "\n",
			`line 2: unknown key "bearerToken" in prometheus; secrets are never written in the configuration: use prometheus.bearerTokenFile or the environment variable ANALYZERD_PROMETHEUS_BEARER_TOKEN`},
		{"prometheus:\n  basicAuth:\n    username: u\n    password: " + secret + "\n",
			"use prometheus.basicAuth.passwordFile or the environment variable ANALYZERD_PROMETHEUS_PASSWORD"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tc.yaml))
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), secret)
		})
	}
	// Other unknown keys get no hint.
	_, err := Decode(strings.NewReader("nats:\n  auth:\n    usr: u\n"))
	require.ErrorContains(t, err, `unknown key "usr" in nats.auth`)
	require.NotContains(t, err.Error(), "secrets are never")
}

// TestNATSSecurityRules has one row per rule of nats.auth and nats.tls, each naming its field
// path, with the environment each row gives.
func TestNATSSecurityRules(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(existing, []byte("never-shown"), 0o600))
	external := func(c *Config) { c.NATS.URL = "nats://nats.example.com:4222" }
	pw := map[string]string{EnvNATSPassword: "pw-7e1d-SECRET"}
	tok := map[string]string{EnvNATSToken: "tok-40ac-SECRET"}

	for _, tc := range []struct {
		name   string
		mutate func(c *NATS)
		env    map[string]string
		fields []string // the errors, in order, each given by the field it starts with; none: valid
	}{
		{"user with a password file", func(n *NATS) { n.Auth.User, n.Auth.PasswordFile = "u", existing }, nil, nil},
		{"user with the password in the environment", func(n *NATS) { n.Auth.User = "u" }, pw, nil},
		{"token file", func(n *NATS) { n.Auth.TokenFile = existing }, nil, nil},
		{"token in the environment", func(*NATS) {}, tok, nil},
		{"nkey seed file", func(n *NATS) { n.Auth.NKeySeedFile = existing }, nil, nil},
		{"credentials file", func(n *NATS) { n.Auth.CredentialsFile = existing }, nil, nil},
		{"tls with a client certificate", func(n *NATS) {
			n.TLS = NATSTLS{CAFile: existing, CertFile: existing, KeyFile: existing, ServerName: "nats"}
		}, nil, nil},
		{"tls with a CA only", func(n *NATS) { n.TLS.CAFile = existing }, nil, nil},
		{"an empty variable is not set", func(*NATS) {}, map[string]string{EnvNATSPassword: " ", EnvNATSToken: ""}, nil},

		{"user without a password", func(n *NATS) { n.Auth.User = "u" }, nil, []string{"nats.auth.user: needs a password"}},
		{"password file without a user", func(n *NATS) { n.Auth.PasswordFile = existing }, nil, []string{"nats.auth.user: is required with nats.auth.passwordFile"}},
		{"password in the environment without a user", func(*NATS) {}, pw, []string{"nats.auth.user: is required with ANALYZERD_NATS_PASSWORD"}},
		{"password both in a file and in the environment", func(n *NATS) { n.Auth.User, n.Auth.PasswordFile = "u", existing }, pw,
			[]string{"nats.auth.passwordFile: cannot be used together with ANALYZERD_NATS_PASSWORD"}},
		{"token both in a file and in the environment", func(n *NATS) { n.Auth.TokenFile = existing }, tok,
			[]string{"nats.auth.tokenFile: cannot be used together with ANALYZERD_NATS_TOKEN"}},
		{"user and token file", func(n *NATS) { n.Auth.User, n.Auth.PasswordFile, n.Auth.TokenFile = "u", existing, existing }, nil,
			[]string{"nats.auth: at most one authentication method, got nats.auth.user and nats.auth.tokenFile"}},
		{"user and token in the environment", func(n *NATS) { n.Auth.User = "u" }, map[string]string{EnvNATSPassword: "pw-7e1d-SECRET", EnvNATSToken: "tok-40ac-SECRET"},
			[]string{"nats.auth: at most one authentication method, got nats.auth.user and ANALYZERD_NATS_TOKEN"}},
		{"nkey and credentials", func(n *NATS) { n.Auth.NKeySeedFile, n.Auth.CredentialsFile = existing, existing }, nil,
			[]string{"nats.auth: at most one authentication method, got nats.auth.nkeySeedFile and nats.auth.credentialsFile"}},
		{"cert without key", func(n *NATS) { n.TLS.CertFile = existing }, nil, []string{"nats.tls.certFile: certFile and keyFile go together"}},
		{"key without cert", func(n *NATS) { n.TLS.KeyFile = existing }, nil, []string{"nats.tls.certFile: certFile and keyFile go together"}},
		{"files missing", func(n *NATS) {
			n.Auth.CredentialsFile = filepath.Join(dir, "no.creds")
			n.TLS = NATSTLS{CAFile: filepath.Join(dir, "no-ca.pem"), CertFile: filepath.Join(dir, "no-cert.pem"), KeyFile: filepath.Join(dir, "no-key.pem")}
		}, nil, []string{"nats.auth.credentialsFile: open ", "nats.tls.caFile: open ", "nats.tls.certFile: open ", "nats.tls.keyFile: open "}},
		{"password file missing", func(n *NATS) { n.Auth.User, n.Auth.PasswordFile = "u", filepath.Join(dir, "none") }, nil,
			[]string{"nats.auth.passwordFile: open " + filepath.Join(dir, "none") + ": no such file or directory"}},
		{"token file a directory", func(n *NATS) { n.Auth.TokenFile = dir }, nil, []string{"nats.auth.tokenFile: " + dir + " is a directory"}},
		{"nkey seed file missing", func(n *NATS) { n.Auth.NKeySeedFile = filepath.Join(dir, "none") }, nil, []string{"nats.auth.nkeySeedFile: open "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			external(&c)
			tc.mutate(&c.NATS)
			errs := Errors(c.ValidateEnv(envOf(tc.env)))
			require.Len(t, errs, len(tc.fields), "%v", errs)
			for i, e := range errs {
				require.True(t, strings.HasPrefix(e.Error(), tc.fields[i]), "%q should start with %q", e.Error(), tc.fields[i])
				require.NotContains(t, e.Error(), "never-shown", "a file's content is never read into an error")
				for _, v := range tc.env {
					if strings.TrimSpace(v) != "" {
						require.NotContains(t, e.Error(), v, "a variable's value is never in an error")
					}
				}
			}
		})
	}
}

// TestNATSSecurityNeedsAnExternalServer: the embedded server has neither authentication nor
// TLS, so asking for them without nats.url is a mistake, whether in the file or in the
// environment.
func TestNATSSecurityNeedsAnExternalServer(t *testing.T) {
	existing := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(existing, []byte("x"), 0o600))

	c := validConfig()
	c.NATS.Auth.NKeySeedFile = existing
	c.NATS.TLS.ServerName = "nats"
	errs := Errors(c.ValidateEnv(envOf(nil)))
	require.Len(t, errs, 2, "%v", errs)
	require.Equal(t, "nats.auth: needs an external server (nats.url): the embedded server has no authentication, got nats.auth.nkeySeedFile", errs[0].Error())
	require.Equal(t, "nats.tls: needs an external server (nats.url): the embedded server has no TLS", errs[1].Error())

	c = validConfig()
	errs = Errors(c.ValidateEnv(envOf(map[string]string{EnvNATSToken: "tok"})))
	require.Len(t, errs, 1, "%v", errs)
	require.Equal(t, "nats.auth: needs an external server (nats.url): the embedded server has no authentication, got ANALYZERD_NATS_TOKEN", errs[0].Error())
}

func TestUnreadableSecretFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	unreadable := filepath.Join(t.TempDir(), "password")
	require.NoError(t, os.WriteFile(unreadable, []byte("never-shown"), 0o000))
	c := validConfig()
	c.NATS.URL = "nats://nats:4222"
	c.NATS.Auth.User, c.NATS.Auth.PasswordFile = "u", unreadable
	c.Prometheus.BearerTokenFile = unreadable
	errs := Errors(c.ValidateEnv(envOf(nil)))
	require.Len(t, errs, 2, "%v", errs)
	for _, e := range errs {
		require.ErrorContains(t, e, "permission denied")
		require.NotContains(t, e.Error(), "never-shown")
	}
}

func TestPrometheusSecretsFromTheEnvironment(t *testing.T) {
	existing := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(existing, []byte("x"), 0o600))
	bearer := map[string]string{EnvPrometheusBearerToken: "tok"}
	pw := map[string]string{EnvPrometheusPassword: "pw"}

	for _, tc := range []struct {
		name   string
		mutate func(p *Prometheus)
		env    map[string]string
		fields []string
	}{
		{"bearer token", func(*Prometheus) {}, bearer, nil},
		{"basic auth password", func(p *Prometheus) { p.BasicAuth.Username = "u" }, pw, nil},
		{"bearer token both in a file and in the environment", func(p *Prometheus) { p.BearerTokenFile = existing }, bearer,
			[]string{"prometheus.bearerTokenFile: cannot be used together with ANALYZERD_PROMETHEUS_BEARER_TOKEN"}},
		{"bearer token and basic auth", func(p *Prometheus) { p.BasicAuth.Username = "u" }, bearer,
			[]string{"prometheus.basicAuth: cannot be used together with a bearer token (ANALYZERD_PROMETHEUS_BEARER_TOKEN)"}},
		{"password both in a file and in the environment", func(p *Prometheus) { p.BasicAuth = BasicAuth{Username: "u", PasswordFile: existing} }, pw,
			[]string{"prometheus.basicAuth.passwordFile: cannot be used together with ANALYZERD_PROMETHEUS_PASSWORD"}},
		{"password without a username", func(*Prometheus) {}, pw,
			[]string{"prometheus.basicAuth.username: is required with ANALYZERD_PROMETHEUS_PASSWORD"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c.Prometheus)
			errs := Errors(c.ValidateEnv(envOf(tc.env)))
			require.Len(t, errs, len(tc.fields), "%v", errs)
			for i, e := range errs {
				require.True(t, strings.HasPrefix(e.Error(), tc.fields[i]), "%q should start with %q", e.Error(), tc.fields[i])
			}
		})
	}
}

func TestEnvValue(t *testing.T) {
	env := envOf(map[string]string{"A": " padded\n", "EMPTY": ""})
	require.Equal(t, "padded", env.Value("A"), "trimmed as a secret read from a file is")
	require.Equal(t, "", env.Value("EMPTY"))
	require.Equal(t, "", env.Value("UNSET"))

	t.Setenv("ANALYZERD_TEST_ENV_VALUE", "from-the-process")
	require.Equal(t, "from-the-process", Env(nil).Value("ANALYZERD_TEST_ENV_VALUE"), "nil reads the process's environment")
}
