package bench

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProcReaders(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here")
	}
	cpu, err := cpuSeconds(os.Getpid())
	require.NoError(t, err)
	// Burn a little CPU and see it counted.
	x := 0
	for i := range 200_000_000 {
		x += i % 7
	}
	after, err := cpuSeconds(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, after, cpu, "work done shows as CPU time (%d)", x)

	rss, err := rssBytes(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, rss, int64(1<<20), "a Go test binary holds more than 1 MiB")

	busy, err := machineBusy()
	require.NoError(t, err)
	require.Greater(t, busy, 0.0)
}
