package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
	"github.com/analyzerd/analyzerd/internal/state"
	"github.com/analyzerd/analyzerd/internal/workload"
)

// TestChaosKillWhileVerdictsQueue kills the daemon while its publisher is behind: the verdict
// stream refuses new messages for a while (as when its leader is away while the state
// bucket's is not, or when the publisher's queue is long), so that verdicts are stored in the
// state bucket but not yet published.
//
// First outage: killed with three verdicts stored and unpublished; the daemon restarted must
// publish every one of them. (Before commit 7c8441e, (*Analyzer).store replaced the record's
// Pending with the latest write's verdicts only, and this lost sequences 3 and 4 of 5 for
// good: the stream read 1 2 5 6.)
//
// Second outage, longer: the rollout stops being evaluated once a bounded number of verdicts
// wait (no number is given out that could not be published), its lease is still renewed,
// the bound holds across a kill, and when the stream takes messages again every waiting
// verdict goes out, in order. The stream then holds sequences 1, 2, 3, ... without a gap.
func TestChaosKillWhileVerdictsQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := natstest.Start(t)
	healthy := workload.Profile{Rate: fastRate, ErrorRate: 0.005, LatencyMedian: 50 * time.Millisecond}
	promURL, _ := startPrometheus(t, ctx, []string{"queue"}, healthy)
	d := newReplica(t, "queue-1", ns.ClientURL(), promURL, 15*time.Second)
	d.start()
	nc, js := natstest.Connect(t, ns)
	feed := watchVerdictFeed(t, ctx, js)
	published := recordWire(t, nc)
	stored := watchState(t, ctx, js)
	kv, err := js.KeyValue(ctx, state.DefaultBucket)
	require.NoError(t, err)

	ref := rollout.Ref{Namespace: "e2e", Name: "queue"}
	require.NoError(t, rolloutclient.Publisher{JS: js, Prefix: prefix}.Publish(ctx, ref, "queue-start", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
		Args: map[string]string{"service": "queue"}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Step: 0, Weight: 10,
	}))
	require.Eventually(t, func() bool { return len(feed.of("queue")) >= 2 }, 30*time.Second, 50*time.Millisecond)

	record := func() state.Record {
		e, err := kv.Get(ctx, state.LiveKey(ref))
		require.NoError(t, err)
		var rec state.Record
		require.NoError(t, jsonUnmarshal(e.Value(), &rec))
		return rec
	}
	lastInFeed := func() uint64 { rs := feed.of("queue"); return rs[len(rs)-1].Verdict.Sequence }
	// closeStream makes the verdict stream refuse every new message; it returns the
	// configuration that opens it again.
	closeStream := func() jetstream.StreamConfig {
		s, err := js.Stream(ctx, "ROLLOUT_VERDICTS")
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		closed := info.Config
		closed.Discard, closed.MaxMsgs = jetstream.DiscardNew, int64(info.State.Msgs)
		_, err = js.UpdateStream(ctx, closed)
		require.NoError(t, err)
		return info.Config
	}

	// First outage: three verdicts stored and not published, then the kill.
	open := closeStream()
	before := len(feed.of("queue"))
	lastPublished := lastInFeed()
	var storedSeq uint64
	require.Eventually(t, func() bool {
		storedSeq = record().Sequence
		return storedSeq >= lastPublished+3
	}, 30*time.Second, 50*time.Millisecond, "verdicts are stored while the stream refuses them")
	d.kill()
	require.Equal(t, before, len(feed.of("queue")), "nothing was published meanwhile")
	_, err = js.UpdateStream(ctx, open)
	require.NoError(t, err)
	d.start()
	require.Eventually(t, func() bool { return lastInFeed() > storedSeq }, 30*time.Second, 50*time.Millisecond, "the restarted daemon goes on")
	t.Logf("first outage: last published %d, stored when killed %d; pending per write: %v", lastPublished, storedSeq, pendingSeqs(stored.live("queue")))

	// Second outage: the rollout stalls once a bounded number of verdicts wait.
	open = closeStream()
	lastPublished = lastInFeed()
	var stalled state.Record
	unchanged := 0
	require.Eventually(t, func() bool {
		rec := record()
		if rec.Sequence > lastPublished && rec.Sequence == stalled.Sequence {
			unchanged++
			return unchanged == 2 // no new verdict for 4 intervals or more
		}
		stalled, unchanged = rec, 0
		return false
	}, 90*time.Second, 2*fastInterval, "the rollout stops being evaluated while its verdicts cannot be published")
	waiting := stalled.Sequence - lastPublished
	require.LessOrEqual(t, waiting, uint64(32), "a bounded number of verdicts wait")
	require.Len(t, stalled.Pending, int(waiting), "the record keeps every verdict not published")
	for i, p := range stalled.Pending {
		require.Equal(t, lastPublished+uint64(i)+1, p.Verdict.Sequence)
	}
	require.Eventually(t, func() bool { return record().LeaseUntil.After(stalled.LeaseUntil) }, 15*time.Second, 100*time.Millisecond,
		"the lease of a stalled rollout is renewed")
	// The bound holds across a crash.
	d.kill()
	d.start()
	require.Never(t, func() bool { return record().Sequence > stalled.Sequence }, 2*fastInterval+time.Second, 100*time.Millisecond,
		"the restarted daemon does not evaluate a rollout whose verdicts wait")
	_, err = js.UpdateStream(ctx, open)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return lastInFeed() > stalled.Sequence }, 30*time.Second, 50*time.Millisecond,
		"the waiting verdicts are published, and the analysis goes on")
	t.Logf("second outage: last published %d, stalled at %d (%d verdicts waiting)", lastPublished, stalled.Sequence, waiting)

	all := readVerdictStream(t, ctx, js)
	var seqs []uint64
	for _, v := range all {
		seqs = append(seqs, v.Verdict.Sequence)
	}
	t.Logf("the stream: %v", seqs)
	sequenceReport(t, all)
	requireStoredMatchesStream(t, stored, all)
	sameAgain, conflicting := published.duplicates()
	require.Empty(t, conflicting)
	t.Logf("%d verdict messages on the wire, %d of them attempts again with the same content (the publisher retrying while the stream refused them)", published.count(), sameAgain)
}

func pendingSeqs(ws []stateWrite) [][]uint64 {
	var out [][]uint64
	for _, w := range ws {
		if w.record == nil {
			continue
		}
		var seqs []uint64
		for _, p := range w.record.Pending {
			seqs = append(seqs, p.Verdict.Sequence)
		}
		out = append(out, seqs)
	}
	return out
}
