package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
	"github.com/analyzerd/analyzerd/internal/state"
	"github.com/analyzerd/analyzerd/internal/workload"
)

// TestFailoverThreeReplicas runs three replicas on one NATS server and one Prometheus, with a
// short lease, starts six rollouts (each owned by the replica that took its rollout.started
// from the shared durable consumer), and SIGKILLs the replica that owns the most. Its
// rollouts must go on at the others within a lease and an interval (the failover time is
// measured, per rollout, from the kill to the first verdict its new owner decided), with one
// owner at a time, and no sequence number published twice or skipped for any rollout.
func TestFailoverThreeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	began := time.Now()
	const lease = 4 * time.Second
	// The bound: the lease runs out (at most a lease after the victim's last write), a
	// survivor's next scan claims it (every second), and evaluates at once; an interval and
	// three seconds of slack cover the scan, the evaluation and a loaded machine.
	bound := lease + fastInterval + 3*time.Second

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ns := natstest.Start(t)
	healthy := workload.Profile{Rate: fastRate, ErrorRate: 0.005, LatencyMedian: 50 * time.Millisecond}
	promURL, _ := startPrometheus(t, ctx, []string{"shop"}, healthy)

	ids := []string{"replica-a", "replica-b", "replica-c"}
	replicas := map[string]*replica{}
	for _, id := range ids {
		replicas[id] = newReplica(t, id, ns.ClientURL(), promURL, lease)
		replicas[id].start()
	}
	nc, js := natstest.Connect(t, ns)
	feed := watchVerdictFeed(t, ctx, js)
	published := recordWire(t, nc)
	stored := watchState(t, ctx, js)
	kv, err := js.KeyValue(ctx, state.DefaultBucket)
	require.NoError(t, err)
	pub := rolloutclient.Publisher{JS: js, Prefix: prefix}

	names := []string{"f1", "f2", "f3", "f4", "f5", "f6"}
	ref := func(name string) rollout.Ref { return rollout.Ref{Namespace: "e2e", Name: name} }
	for _, name := range names {
		require.NoError(t, pub.Publish(ctx, ref(name), "fo-"+name+"-start", rollout.EventStarted, time.Now(), rolloutclient.Started{
			Rollout: ref(name), Revision: "v2", Analysis: "http-golden-signals",
			Args: map[string]string{"service": "shop"}, Canary: map[string]string{"version": "v2"},
			Stable: map[string]string{"version": "v1"}, Step: 0, Weight: 10,
		}))
	}
	// Every rollout is under analysis (two verdicts each: its baseline is stored).
	require.Eventually(t, func() bool {
		for _, name := range names {
			if len(feed.of(name)) < 2 {
				return false
			}
		}
		return true
	}, 60*time.Second, 100*time.Millisecond, "every rollout has verdicts")

	owner := func(name string) string {
		e, err := kv.Get(ctx, state.LiveKey(ref(name)))
		require.NoError(t, err, name)
		var rec state.Record
		require.NoError(t, jsonUnmarshal(e.Value(), &rec))
		return rec.Owner
	}
	owners := map[string]string{}
	owned := map[string][]string{}
	for _, name := range names {
		owners[name] = owner(name)
		require.Contains(t, ids, owners[name], "%s is owned by a replica", name)
		owned[owners[name]] = append(owned[owners[name]], name)
	}
	victim := ids[0]
	for _, id := range ids {
		if len(owned[id]) > len(owned[victim]) {
			victim = id
		}
	}
	t.Logf("ownership before the kill: %s=%v %s=%v %s=%v; killing %s",
		ids[0], owned[ids[0]], ids[1], owned[ids[1]], ids[2], owned[ids[2]], victim)
	moved := owned[victim]
	var survivors []*replica
	for _, id := range ids {
		if id != victim {
			survivors = append(survivors, replicas[id])
		}
	}

	killedAt := replicas[victim].kill()

	// takeover finds the first write of a rollout's record after the kill that names another
	// owner: the claim. Its sequence is the last the victim gave out.
	takeover := func(name string) (stateWrite, bool) {
		for _, w := range stored.live(name) {
			if w.record != nil && w.seen.After(killedAt) && w.record.Owner != victim {
				return w, true
			}
		}
		return stateWrite{}, false
	}
	require.Eventually(t, func() bool {
		for _, name := range moved {
			w, ok := takeover(name)
			if !ok {
				return false
			}
			fresh := false
			for _, r := range feed.of(name) {
				if r.Verdict.Sequence > w.record.Sequence {
					fresh = true
				}
			}
			if !fresh {
				return false
			}
		}
		return true
	}, 3*bound, 50*time.Millisecond, "the victim's rollouts go on at the survivors")

	// The rollouts go on through events too: a step for each, then completion, consumed by
	// the survivors (an event the victim had fetched comes again after its ack wait).
	for _, name := range names {
		require.NoError(t, pub.Publish(ctx, ref(name), "fo-"+name+"-step-1", rollout.EventStep, time.Now(), rolloutclient.Step{
			Rollout: ref(name), Revision: "v2", Step: 1, Weight: 50,
		}))
	}
	require.Eventually(t, func() bool {
		for _, name := range names {
			rs := feed.of(name)
			if len(rs) == 0 || rs[len(rs)-1].Verdict.Cause != "fo-"+name+"-step-1" {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "every rollout is analysed at its new step")
	for _, name := range names {
		require.NoError(t, pub.Publish(ctx, ref(name), "fo-"+name+"-completed", rollout.EventCompleted, time.Now(), rolloutclient.Ended{
			Rollout: ref(name), Revision: "v2",
		}))
	}
	for _, r := range survivors {
		for _, name := range names {
			require.Eventually(t, func() bool { return r.status(name) == http.StatusNotFound }, 15*time.Second, 100*time.Millisecond,
				"GET /v1/rollouts/e2e/%s on %s answers 404 once it completed", name, r.id)
		}
	}
	requireConsumerDrained(t, ctx, js)
	settled := feed.len()
	require.Never(t, func() bool { return feed.len() > settled }, 2*fastInterval+time.Second, 100*time.Millisecond,
		"no verdict follows completion")
	ran := time.Since(began)

	// The whole stream.
	all := readVerdictStream(t, ctx, js)
	require.Len(t, all, settled)
	duplicates, gaps := sequenceReport(t, all)
	requireStoredMatchesStream(t, stored, all)
	sameAgain, conflicting := published.duplicates()
	require.Empty(t, conflicting, "a Nats-Msg-Id (a sequence number) was published for two different verdicts")
	analyses := byAnalysis(all)
	require.Len(t, analyses, len(names))

	// Failover times, and one owner at a time: the victim decided every sequence up to the
	// claim, the new owner every one after.
	decidedBy := stored.pending()
	var failovers []time.Duration
	var report []string
	for _, name := range moved {
		w, ok := takeover(name)
		require.True(t, ok)
		claimed := w.seen.Sub(killedAt)
		var first *streamVerdict
		for i, v := range analyses["e2e/"+name+"@v2"] {
			if v.Verdict.Sequence > w.record.Sequence {
				first = &analyses["e2e/"+name+"@v2"][i]
				break
			}
		}
		require.NotNil(t, first, name)
		failover := first.time.Sub(killedAt)
		failovers = append(failovers, failover)
		report = append(report, fmt.Sprintf("%s -> %s: claimed after %s at sequence %d, verdict %d after %s",
			name, w.record.Owner, claimed.Round(10*time.Millisecond), w.record.Sequence, first.Verdict.Sequence, failover.Round(10*time.Millisecond)))
		require.LessOrEqual(t, failover, bound, "%s: failover within the lease (%s) + an interval (%s) + 3s", name, lease, fastInterval)
		for seq, list := range decidedBy["e2e/"+name+"@v2"] {
			want := victim
			if seq > w.record.Sequence {
				want = w.record.Owner
			}
			for _, s := range list {
				require.Equal(t, want, s.owner, "%s: sequence %d decided by %s", name, seq, s.owner)
			}
		}
	}
	// A survivor's rollouts never changed owner; the victim's changed once.
	for _, name := range names {
		var chain []string
		for _, w := range stored.live(name) {
			if w.record != nil && (len(chain) == 0 || chain[len(chain)-1] != w.record.Owner) {
				chain = append(chain, w.record.Owner)
			}
		}
		if owners[name] == victim {
			require.Len(t, chain, 2, "%s: owners %v: one takeover", name, chain)
			require.NotEqual(t, victim, chain[1])
		} else {
			require.Equal(t, []string{owners[name]}, chain, "%s: owners", name)
		}
	}
	for _, name := range names {
		requireBaselineOnce(t, name, stored, analyses["e2e/"+name+"@v2"])
	}

	sorted := append([]time.Duration(nil), failovers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	median := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		median = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	t.Logf("failover of %d rollouts (lease %s, interval %s, bound %s): max %s, median %s; %s",
		len(moved), lease, fastInterval, bound, sorted[len(sorted)-1].Round(10*time.Millisecond), median.Round(10*time.Millisecond),
		strings.Join(report, "; "))
	t.Logf("%d verdicts in the stream, %d duplicate sequences, %d gaps; %d verdict messages on the wire, %d published again with the same content, %d sequence numbers reused; run %s",
		len(all), duplicates, gaps, published.count(), sameAgain, len(conflicting), ran.Round(time.Second))
	for _, r := range survivors {
		logs := r.logs.String()
		t.Logf("%s: %d takeovers logged, %d errors", r.id, logLines(logs, "took over a rollout"), logLines(logs, `"level":"error"`))
	}
}
