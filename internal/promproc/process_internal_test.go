package promproc

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func binaryOrSkip(t *testing.T) string {
	t.Helper()
	bin, err := Find()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("skipping the test with a real Prometheus: %v (with $CI set this fails)", err)
		}
		t.Fatalf("$CI is set but: %v", err)
	}
	return bin
}

// When another process holds the port, launch says so, so that Start tries another port.
func TestLaunchReportsPortInUse(t *testing.T) {
	t.Parallel()
	bin := binaryOrSkip(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	cfg, err := renderConfig(Options{})
	require.NoError(t, err)
	p, err := newProcess(Options{Dir: t.TempDir(), Log: discard{}}, bin, cfg)
	require.NoError(t, err)
	require.NoError(t, p.setAddr(ln.Addr().(*net.TCPAddr).Port))

	ctx, cancel := withStartDeadline(t.Context())
	defer cancel()
	err = p.launch(ctx)
	require.ErrorIs(t, err, errPortInUse)
	require.NoError(t, p.Stop(), "a failed launch is not a crash")
}

// A crash is reported by the next Stop, once, with the end of Prometheus's output.
func TestStopReportsCrash(t *testing.T) {
	t.Parallel()
	bin := binaryOrSkip(t)
	ctx, cancel := withStartDeadline(t.Context())
	defer cancel()
	p, err := Start(ctx, Options{Binary: bin, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })

	require.NoError(t, p.cur.cmd.Process.Kill()) // behind promproc's back
	require.Eventually(t, func() bool {
		select {
		case <-p.cur.exited:
			return true
		default:
			return false
		}
	}, 10*time.Second, 10*time.Millisecond)
	err = p.Stop()
	require.ErrorContains(t, err, "prometheus had exited unexpectedly (signal: killed)")
	require.ErrorContains(t, err, "Server is ready to receive web requests")
	require.NoError(t, p.Stop())

	// Restart after a crash is the point of an outage test: no error.
	require.NoError(t, p.Restart(ctx))
	require.NoError(t, p.cur.cmd.Process.Kill())
	<-p.cur.exited
	require.NoError(t, p.Restart(ctx))
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
