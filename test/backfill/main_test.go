package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 2, run([]string{"--no-such-flag"}, &out, &errOut))
	require.Contains(t, errOut.String(), "no-such-flag")
	errOut.Reset()
	require.Equal(t, 2, run([]string{"extra"}, &out, &errOut))
	require.Contains(t, errOut.String(), `unexpected argument "extra"`)
}
