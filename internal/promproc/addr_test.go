package promproc_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/promproc"
)

// TestStartOnAGivenAddress: Options.Addr is where Prometheus listens (for a command a
// person copies); a bad one is refused before anything starts.
func TestStartOnAGivenAddress(t *testing.T) {
	require.ErrorContains(t, promproc.Options{Addr: "nope"}.Validate(), `addr "nope" is not host:port`)
	bin := requireBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := promproc.Start(ctx, promproc.Options{Binary: bin, Addr: addr})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	require.Equal(t, "http://"+addr, p.URL())
}
