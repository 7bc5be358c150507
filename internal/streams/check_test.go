package streams

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckNamesTheMissingStreams(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := testContext(t)

	err := Check(ctx, js)
	require.Error(t, err)
	for _, name := range []string{EventsStream, VerdictsStream, DeadLetterStream} {
		require.ErrorContains(t, err, name)
	}

	require.NoError(t, Ensure(ctx, js, Options{}))
	require.NoError(t, Check(ctx, js))

	require.NoError(t, js.DeleteStream(ctx, VerdictsStream))
	err = Check(ctx, js)
	require.ErrorContains(t, err, VerdictsStream+": ")
	require.NotContains(t, err.Error(), EventsStream)
}
