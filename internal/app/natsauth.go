package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/analyzerd/analyzerd/internal/config"
)

// errNATSClosed: nats.go closed the connection for good on its own, which it does when the
// server refuses the credentials twice in a row. Retrying would not help, so the daemon stops.
var errNATSClosed = errors.New("the connection to nats was closed for good")

// natsSecurity returns the options that authenticate and secure the connection to an
// external server as cfg says, and names the credentials used, for errors (their names,
// never their content).
//
// Password and token files are read here, once: a rotated one is picked up at the next
// start. nats.go reads the NKey seed, the credentials file and the TLS files at each
// connection; they are read here too, so that a file it cannot use fails the start naming
// its field, rather than every connection attempt in silence.
func natsSecurity(cfg config.NATS, env config.Env) ([]nats.Option, string, error) {
	var opts []nats.Option
	var method string
	a := cfg.Auth
	switch {
	case a.User != "":
		password, from, err := secret(env, "nats.auth.passwordFile", a.PasswordFile, config.EnvNATSPassword)
		if err != nil {
			return nil, "", err
		}
		opts = append(opts, nats.UserInfo(a.User, password))
		method = "nats.auth.user and the password of " + from
	case a.TokenFile != "" || env.Value(config.EnvNATSToken) != "":
		token, from, err := secret(env, "nats.auth.tokenFile", a.TokenFile, config.EnvNATSToken)
		if err != nil {
			return nil, "", err
		}
		opts = append(opts, nats.Token(token))
		method = "the token of " + from
	case a.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			return nil, "", fmt.Errorf("nats.auth.nkeySeedFile: no user NKey seed in %s: %w", a.NKeySeedFile, err)
		}
		opts = append(opts, opt)
		method = "the NKey of nats.auth.nkeySeedFile"
	case a.CredentialsFile != "":
		if err := checkCredentials(a.CredentialsFile); err != nil {
			return nil, "", fmt.Errorf("nats.auth.credentialsFile: %w", err)
		}
		opts = append(opts, nats.UserCredentials(a.CredentialsFile))
		method = "the user JWT of nats.auth.credentialsFile"
	case cfg.TLS.CertFile != "":
		method = "the client certificate of nats.tls.certFile"
	default:
		method = "no credentials, as nats.auth is empty"
	}
	return append(opts, natsTLS(cfg.TLS)...), method, nil
}

// secret reads a secret from file, or else from the environment variable key, and names
// where it came from: field or key.
func secret(env config.Env, field, file, key string) (value, from string, err error) {
	if file == "" {
		if v := env.Value(key); v != "" {
			return v, key, nil
		}
		return "", "", fmt.Errorf("%s: no file, and %s is not set", field, key)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", field, err) // names the path, never the content
	}
	if v := strings.TrimSpace(string(b)); v != "" {
		return v, field, nil
	}
	return "", "", fmt.Errorf("%s: %s is empty", field, file)
}

// checkCredentials reads a .creds file as nats.go does at each connection.
func checkCredentials(file string) error {
	var o nats.Options
	if err := nats.UserCredentials(file)(&o); err != nil {
		return err
	}
	jwt, err := o.UserJWT()
	if err != nil {
		return err
	}
	// Without its markers, nats.go would send the whole file, seed included, as the JWT.
	if strings.Count(jwt, ".") != 2 || strings.ContainsAny(jwt, " \t\r\n") {
		return fmt.Errorf("%s holds no user JWT between -----BEGIN NATS USER JWT----- markers", file)
	}
	if _, err := o.SignatureCB([]byte("analyzerd")); err != nil {
		return err
	}
	return nil
}

// natsTLS returns the options for TLS as cfg says; none when it is empty (a tls:// URL
// still gets TLS with the system's roots). The CA file and the client certificate are read
// at each connection, so that rotated ones are picked up.
func natsTLS(cfg config.NATSTLS) []nats.Option {
	if cfg == (config.NATSTLS{}) {
		return nil
	}
	opts := []nats.Option{nats.Secure(&tls.Config{ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12})}
	var roots nats.RootCAsHandler
	if cfg.CAFile != "" {
		roots = func() (*x509.CertPool, error) {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("nats.tls.caFile: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("nats.tls.caFile: no PEM certificate in %s", cfg.CAFile)
			}
			return pool, nil
		}
	}
	var cert nats.TLSCertHandler
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		cert = func() (tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return tls.Certificate{}, fmt.Errorf("nats.tls.certFile and nats.tls.keyFile: %w", err)
			}
			return c, nil
		}
	}
	if roots != nil || cert != nil {
		// Reads the files at once too, failing the start when they cannot be used.
		opts = append(opts, nats.ClientTLSConfig(cert, roots))
	}
	return opts
}

// closedError says why nats.go closed the connection, and with which credentials.
func closedError(nc *nats.Conn, method string) error {
	if err := nc.LastError(); err != nil {
		return fmt.Errorf("%w: %w (analyzerd authenticated with %s)", errNATSClosed, err, method)
	}
	return errNATSClosed
}
