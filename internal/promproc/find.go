package promproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// EnvBinary names the environment variable that points at the prometheus binary to use.
const EnvBinary = "PROMETHEUS_BINARY"

// fallbackBinary is where Debian's package installs the binary, tried when it is not in PATH.
const fallbackBinary = "/usr/bin/prometheus"

// ErrNotFound is returned (wrapped) by Find when there is no prometheus binary.
var ErrNotFound = errors.New("prometheus binary not found")

// Find returns the path of the prometheus binary: $PROMETHEUS_BINARY when set, else
// "prometheus" from PATH, else /usr/bin/prometheus. The error wraps ErrNotFound and says how
// to install it.
func Find() (string, error) {
	return find(os.Getenv(EnvBinary), exec.LookPath)
}

func find(env string, lookPath func(string) (string, error)) (string, error) {
	if env != "" {
		// A path with a slash is checked as is: it must exist and be executable.
		path, err := lookPath(env)
		if err != nil {
			return "", fmt.Errorf("%w: $%s=%q is not an executable: %v", ErrNotFound, EnvBinary, env, err)
		}
		return path, nil
	}
	if path, err := lookPath("prometheus"); err == nil {
		return path, nil
	}
	if path, err := lookPath(fallbackBinary); err == nil {
		return path, nil
	}
	return "", fmt.Errorf("%w in $%s, PATH or %s: install it with `apt-get install -y prometheus` "+
		"(Debian, Ubuntu) or set $%s to its path", ErrNotFound, EnvBinary, fallbackBinary, EnvBinary)
}

// Install returns Find's answer when there is a prometheus binary. When there is none, it runs
// `apt-get install -y --no-install-recommends prometheus` (as root, else through sudo when
// present; after `apt-get update` when the first attempt fails, as it does on a machine with
// no package lists yet), writing apt's output to out (nil: discarded), and then returns
// Find's answer.
func Install(ctx context.Context, out io.Writer) (string, error) {
	return installer{
		find:     Find,
		lookPath: exec.LookPath,
		euid:     os.Geteuid,
		run: func(ctx context.Context, out io.Writer, name string, args ...string) error {
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Stdout, cmd.Stderr = out, out
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			return cmd.Run()
		},
	}.install(ctx, out)
}

// installer holds Install's dependencies, so that a test can replace them.
type installer struct {
	find     func() (string, error)
	lookPath func(string) (string, error)
	euid     func() int
	run      func(ctx context.Context, out io.Writer, name string, args ...string) error
}

func (in installer) install(ctx context.Context, out io.Writer) (string, error) {
	path, err := in.find()
	if err == nil || !errors.Is(err, ErrNotFound) {
		return path, err
	}
	if out == nil {
		out = io.Discard
	}
	aptGet, err := in.lookPath("apt-get")
	if err != nil {
		return "", fmt.Errorf("installing prometheus: apt-get not found (not Debian or Ubuntu?): "+
			"install Prometheus by other means and set $%s to its path", EnvBinary)
	}
	command := func(args ...string) (string, []string, error) {
		if in.euid() == 0 {
			return aptGet, args, nil
		}
		sudo, err := in.lookPath("sudo")
		if err != nil {
			return "", nil, errors.New("installing prometheus: not root and sudo not found: " +
				"run `apt-get install -y prometheus` as root")
		}
		return sudo, append([]string{aptGet}, args...), nil
	}
	// Without recommends: they would add node-exporter and a system Prometheus service.
	name, args, err := command("install", "-y", "--no-install-recommends", "prometheus")
	if err != nil {
		return "", err
	}
	if err := in.run(ctx, out, name, args...); err != nil {
		// A fresh machine has no package lists yet: update them once and try again.
		updName, updArgs, _ := command("update")
		if updErr := in.run(ctx, out, updName, updArgs...); updErr != nil {
			return "", fmt.Errorf("installing prometheus: %s %v: %w", updName, updArgs, updErr)
		}
		if err := in.run(ctx, out, name, args...); err != nil {
			return "", fmt.Errorf("installing prometheus: %s %v: %w", name, args, err)
		}
	}
	path, err = in.find()
	if err != nil {
		return "", fmt.Errorf("installing prometheus: apt-get succeeded but: %w", err)
	}
	return path, nil
}
