package history

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

var t0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

func publishVerdict(t *testing.T, js jetstream.JetStream, v rollout.Verdict) {
	t.Helper()
	body, err := publish.Encode(v, "test")
	require.NoError(t, err)
	msg := &nats.Msg{Subject: rollout.VerdictsSubject(streams.DefaultPrefix, v.Rollout), Data: body, Header: nats.Header{}}
	msg.Header.Set(nats.MsgIdHdr, publish.MsgID(v))
	_, err = js.PublishMsg(context.Background(), msg)
	require.NoError(t, err)
}

func verdict(ref rollout.Ref, rev string, seq uint64) rollout.Verdict {
	return rollout.Verdict{Rollout: ref, Revision: rev, Step: 0, Weight: 10, Verdict: rollout.Pause, Reason: "r", Sequence: seq,
		DecidedAt: t0.Add(time.Duration(seq) * time.Second), Checks: []rollout.CheckResult{}}
}

func TestRolloutReadsEveryVerdictInOrder(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx := context.Background()
	require.NoError(t, streams.Ensure(ctx, js, streams.Options{}))
	checkout := rollout.Ref{Namespace: "prod", Name: "checkout"}
	// Same subject token (prod.check_out): a routing hint only, never mixed in.
	twin := rollout.Ref{Namespace: "prod", Name: "check.out"}
	cart := rollout.Ref{Namespace: "prod", Name: "cart"}
	for seq := uint64(1); seq <= 7; seq++ {
		publishVerdict(t, js, verdict(checkout, "v2", seq))
		publishVerdict(t, js, verdict(cart, "a", seq))
	}
	publishVerdict(t, js, verdict(rollout.Ref{Namespace: "prod", Name: "check_out"}, "x", 1))
	publishVerdict(t, js, verdict(twin, "y", 1))

	r := New(js, Options{})
	got, left, err := r.Rollout(ctx, checkout)
	require.NoError(t, err)
	require.Zero(t, left)
	require.Len(t, got, 7)
	for i, v := range got {
		require.Equal(t, checkout, v.Rollout)
		require.Equal(t, uint64(i+1), v.Sequence)
	}

	// Bounded: the newest ones, and how many were left out.
	got, left, err = New(js, Options{MaxVerdicts: 3}).Rollout(ctx, checkout)
	require.NoError(t, err)
	require.Equal(t, 4, left)
	require.Equal(t, []uint64{5, 6, 7}, []uint64{got[0].Sequence, got[1].Sequence, got[2].Sequence})

	got, _, err = r.Rollout(ctx, twin)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "y", got[0].Revision)

	got, left, err = r.Rollout(ctx, rollout.Ref{Namespace: "prod", Name: "unknown"})
	require.NoError(t, err)
	require.Empty(t, got)
	require.Zero(t, left)

	latest, truncated, err := r.Latest(ctx)
	require.NoError(t, err)
	require.False(t, truncated)
	byRef := map[rollout.Ref]uint64{}
	for _, v := range latest {
		byRef[v.Rollout] = v.Sequence
	}
	// prod.check_out holds two rollouts: its last message is the twin's.
	require.Equal(t, map[rollout.Ref]uint64{checkout: 7, cart: 7, twin: 1}, byRef)

	latest, truncated, err = New(js, Options{MaxRollouts: 2}).Latest(ctx)
	require.NoError(t, err)
	require.True(t, truncated)
	require.Len(t, latest, 2)
}

func TestEmptyStream(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx := context.Background()
	require.NoError(t, streams.Ensure(ctx, js, streams.Options{}))
	latest, truncated, err := New(js, Options{}).Latest(ctx)
	require.NoError(t, err)
	require.False(t, truncated)
	require.Empty(t, latest)
}

func TestNoStreamIsUnavailable(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx := context.Background()
	_, _, err := New(js, Options{}).Rollout(ctx, rollout.Ref{Namespace: "a", Name: "b"})
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
	_, _, err = New(js, Options{}).Latest(ctx)
	require.ErrorIs(t, err, ErrUnavailable)
}
