package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSimulatePrintsTheTable: the simulate command runs the rows it is asked for on the
// shipped template and prints the table; the same seed prints the same table.
func TestSimulatePrintsTheTable(t *testing.T) {
	args := []string{"simulate", "--config", "../../configs/analyzerd.yaml", "--runs", "3", "--rows", `10x\) at 100 req/s, 1 s|stops serving`}
	code, out, errOut := runCmd(args...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, `template "http-golden-signals", 3 runs per row, seed 1`)
	require.Contains(t, out, "errors 0.5% -> 5% (10x) at 100 req/s, 1 s scrapes")
	require.Contains(t, out, "time to rollback, median")
	require.Contains(t, out, "proceed while known down")
	require.NotContains(t, out, "healthy rollout")
	_, again, _ := runCmd(args...)
	require.Equal(t, out, again)
}

func TestSimulateRejectsRowsThatMatchNothing(t *testing.T) {
	code, _, errOut := runCmd("simulate", "--config", "../../configs/analyzerd.yaml", "--runs", "1", "--rows", "no such row")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "matches no row")
}
