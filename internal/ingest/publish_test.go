package ingest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// TestEncodeIsReadBackByDecode: what the HTTP endpoints store is read by the consumer as the
// event they meant, and Encode refuses what Decode would dead-letter, with its reason.
func TestEncodeIsReadBackByDecode(t *testing.T) {
	at := time.Date(2026, 11, 25, 14, 0, 0, 123_000_000, time.UTC)
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	for _, ev := range []rollout.Event{
		{ID: "a", Source: "s", Type: rollout.EventStarted, Time: at, Rollout: ref, Revision: "v2", Analysis: "t",
			Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"},
			Stable: map[string]string{"version": "v1"}, StableRevision: "v1", Step: 1, Weight: 10},
		{ID: "b", Source: "s", Type: rollout.EventStep, Time: at, Rollout: ref, Revision: "v2", Step: 0, Weight: 0},
		{ID: "c", Source: "s", Type: rollout.EventCompleted, Time: at, Rollout: ref, Revision: "v2"},
		{ID: "d", Source: "s", Type: rollout.EventAborted, Time: at, Rollout: ref, Revision: "v2", Reason: "idle"},
	} {
		body, err := Encode(ev)
		require.NoError(t, err)
		got, err := Decode(body, nil, time.Time{}, 0)
		require.NoError(t, err)
		require.Equal(t, ev, got, string(body))
	}
	_, err := Encode(rollout.Event{ID: "e", Source: "s", Type: rollout.EventStep, Time: at, Rollout: ref, Revision: "v2", Weight: 101})
	require.ErrorIs(t, err, rollout.ErrInvalid)
	reason, ok := RejectReason(err)
	require.True(t, ok)
	require.Equal(t, "invalid_data", reason)
	require.Contains(t, err.Error(), "data.weight")
}
