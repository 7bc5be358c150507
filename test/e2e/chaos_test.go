package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
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

// chaosRollout is one rollout the chaos test drives as a controller would: it publishes the
// next step when the current one may proceed, completes it after its last step, and aborts
// it when it is rolled back.
type chaosRollout struct {
	name    string
	weights []int // the weight of each step
	faultAt int   // the step from which the canary fails 10% of its requests; -1: never

	step    int       // the last step published
	ids     []string  // the id of the event that started each step
	ended   string    // the id of the event that ended it
	endedOn uint64    // the sequence of the verdict the controller ended it on
	endedAt time.Time // when the event that ended it was published
	faulty  bool      // the fault was injected
}

// The points at which the chaos test kills the daemon.
type killKind string

const (
	// After a few more verdicts: the daemon is between evaluations, or in one of another
	// rollout.
	killAfterVerdicts killKind = "after-verdicts"
	// After a few more verdicts, then at a random moment within an interval: queries,
	// decide, the store write or the publication of some rollout are in flight.
	killMidInterval killKind = "mid-interval"
	// Right after an event was published (0 to 100 ms later): the daemon is fetching it,
	// applying it, storing its effect, or acknowledging it.
	killAfterEvent killKind = "after-event"
	// Between steps: the verdict that lets a rollout proceed was seen; the daemon is killed
	// and the next event published while it is down.
	killBetweenSteps killKind = "between-steps"
	// As soon as a restarted daemon is ready: it is loading and resuming its analyses, and
	// publishing the verdicts stored before the crash.
	killOnResume killKind = "on-resume"
)

type killPoint struct {
	kind     killKind
	verdicts int           // after-verdicts, mid-interval: when the feed holds this many
	delay    time.Duration // mid-interval, after-event
	armed    bool          // mid-interval: the delay runs
}

type kill struct {
	kind     killKind
	verdicts int
	note     string
}

// TestChaosKillAndRestart runs three rollouts through one daemon that is SIGKILLed and
// started again (same state.replicaID, external NATS) at random points all along: a healthy
// canary through four steps to completion, a second healthy one started midway through two
// steps, and one that starts failing at its second step and must be rolled back. The seed of
// the kill points is logged; ANALYZERD_CHAOS_SEED replays one.
//
// At the end it reads the whole verdict stream and checks the guarantees of DESIGN.md
// ("State, restarts and replicas"): sequences 1, 2, 3, ... for each rollout with no
// duplicate and no gap, no event lost, the right final verdicts, and the baseline captured
// once.
func TestChaosKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	began := time.Now()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ANALYZERD_CHAOS_SEED"); s != "" {
		var err error
		seed, err = strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "ANALYZERD_CHAOS_SEED")
	}
	t.Logf("chaos seed %d (ANALYZERD_CHAOS_SEED=%d replays these kill points)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ns := natstest.Start(t) // external to the daemon: the state survives it
	healthy := workload.Profile{Rate: fastRate, ErrorRate: 0.005, LatencyMedian: 50 * time.Millisecond}
	promURL, canaries := startPrometheus(t, ctx, []string{"alpha", "beta", "gamma"}, healthy)

	d := newReplica(t, "chaos-1", ns.ClientURL(), promURL, 15*time.Second)
	d.start()

	nc, js := natstest.Connect(t, ns)
	feed := watchVerdictFeed(t, ctx, js)
	published := recordWire(t, nc)
	stored := watchState(t, ctx, js)
	pub := rolloutclient.Publisher{JS: js, Prefix: prefix}

	rollouts := []*chaosRollout{
		{name: "alpha", weights: []int{10, 25, 50, 100}, faultAt: -1},
		{name: "beta", weights: []int{10, 50, 100}, faultAt: 1},
		{name: "gamma", weights: []int{20, 60}, faultAt: -1},
	}
	byName := map[string]*chaosRollout{}
	for _, ro := range rollouts {
		byName[ro.name] = ro
	}

	var kills []kill
	// restarts are the incarnations after a kill: when each was started, the rollouts under
	// analysis then (started, neither ended nor rolled back), and when it was killed.
	type restart struct {
		started, killed time.Time
		live            []string
	}
	var restarts []restart
	var next killPoint
	analysed := func() []string {
		var out []string
		for _, ro := range rollouts {
			rs := feed.of(ro.name)
			if len(ro.ids) > 0 && ro.ended == "" && len(rs) > 0 && rs[len(rs)-1].Verdict.Verdict != rollout.Rollback {
				out = append(out, ro.name)
			}
		}
		return out
	}
	plan := func(after killKind) {
		kinds := []killKind{killAfterVerdicts, killMidInterval, killAfterEvent, killBetweenSteps, killOnResume}
		if after == killOnResume || after == "" {
			kinds = kinds[:4] // not twice in a row, and not before the first start
		}
		next = killPoint{kind: kinds[rng.IntN(len(kinds))]}
		switch next.kind {
		case killAfterVerdicts, killMidInterval:
			next.verdicts = feed.len() + 1 + rng.IntN(6)
			next.delay = time.Duration(rng.Int64N(int64(fastInterval)))
		case killAfterEvent:
			next.delay = []time.Duration{0, 0, 2 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 100 * time.Millisecond}[rng.IntN(6)]
		}
	}
	// crash kills the daemon, runs whileDown, and starts it again; then it plans the next
	// kill, which may be at once.
	crash := func(note string, whileDown func()) {
		t.Helper()
		for {
			kind := next.kind
			killed := d.kill()
			if len(restarts) > 0 {
				restarts[len(restarts)-1].killed = killed
			}
			kills = append(kills, kill{kind: kind, verdicts: feed.len(), note: note})
			if whileDown != nil {
				whileDown()
				whileDown = nil
			}
			live := analysed()
			d.start()
			restarts = append(restarts, restart{started: d.started, live: live})
			plan(kind)
			if next.kind != killOnResume {
				return
			}
			note = "resumed"
		}
	}

	events := 0
	publish := func(ro *chaosRollout, id string, typ rollout.EventType, data any) {
		t.Helper()
		send := func() {
			require.NoError(t, pub.Publish(ctx, rollout.Ref{Namespace: "e2e", Name: ro.name}, id, typ, time.Now(), data))
			events++
		}
		switch next.kind {
		case killBetweenSteps:
			crash(id+" published while down", send)
		case killAfterEvent:
			send()
			if next.delay > 0 {
				// Not a synchronisation: the random point after the publication at which the
				// daemon dies.
				<-time.After(next.delay)
			}
			crash(fmt.Sprintf("%s +%s", id, next.delay), nil)
		default:
			send()
		}
	}
	start := func(ro *chaosRollout) {
		id := "chaos-" + ro.name + "-start"
		ro.ids = []string{id}
		publish(ro, id, rollout.EventStarted, rolloutclient.Started{
			Rollout: rollout.Ref{Namespace: "e2e", Name: ro.name}, Revision: "v2", Analysis: "http-golden-signals",
			Args: map[string]string{"service": ro.name}, Canary: map[string]string{"version": "v2"},
			Stable: map[string]string{"version": "v1"}, Step: 0, Weight: ro.weights[0],
		})
	}
	end := func(ro *chaosRollout, typ rollout.EventType) {
		ro.ended, ro.endedAt = fmt.Sprintf("chaos-%s-%s", ro.name, strings.TrimPrefix(string(typ), "rollout.")), time.Now()
		publish(ro, ro.ended, typ, rolloutclient.Ended{Rollout: rollout.Ref{Namespace: "e2e", Name: ro.name}, Revision: "v2"})
	}
	// react is the controller: it acts on the verdicts about a rollout's current step.
	react := func(r rolloutclient.Received) {
		t.Helper()
		v := r.Verdict
		ro := byName[v.Rollout.Name]
		if ro == nil || ro.ended != "" {
			return
		}
		if v.Verdict == rollout.Rollback {
			require.GreaterOrEqual(t, ro.faultAt, 0, "healthy %s rolled back at sequence %d: %s", ro.name, v.Sequence, v.Reason)
			ro.endedOn = v.Sequence
			end(ro, rollout.EventAborted)
			return
		}
		if v.Step != ro.step || v.Cause != ro.ids[ro.step] {
			return // about an earlier step: the daemon has not applied the last event yet
		}
		if ro.step == ro.faultAt && !ro.faulty {
			// The daemon analyses the step at which the fault begins: the canary starts
			// failing now (not earlier, so that it cannot be blamed on the step before).
			ro.faulty = true
			p := canaries[ro.name].Profile()
			p.ErrorRate = 0.10
			require.NoError(t, canaries[ro.name].SetProfile(p))
		}
		switch v.Verdict {
		case rollout.Proceed:
			if ro.step == len(ro.weights)-1 {
				require.Negative(t, ro.faultAt, "faulty %s proceeded at its last step (sequence %d): the fault was not seen", ro.name, v.Sequence)
				ro.endedOn = v.Sequence
				end(ro, rollout.EventCompleted)
				return
			}
			ro.step++
			id := fmt.Sprintf("chaos-%s-step-%d", ro.name, ro.step)
			ro.ids = append(ro.ids, id)
			publish(ro, id, rollout.EventStep, rolloutclient.Step{
				Rollout: rollout.Ref{Namespace: "e2e", Name: ro.name}, Revision: "v2", Step: ro.step, Weight: ro.weights[ro.step],
			})
			if ro.name == "alpha" && ro.step == 1 {
				start(byName["gamma"]) // a rollout that starts while the others run
			}
		}
	}
	allEnded := func() bool {
		for _, ro := range rollouts {
			if ro.ended == "" {
				return false
			}
		}
		return true
	}
	progress := func() string {
		var b strings.Builder
		for _, ro := range rollouts {
			rs := feed.of(ro.name)
			last := "none"
			if len(rs) > 0 {
				v := rs[len(rs)-1].Verdict
				last = fmt.Sprintf("seq %d step %d %s (%s)", v.Sequence, v.Step, v.Verdict, v.Reason)
			}
			fmt.Fprintf(&b, "\n  %s: step %d of %d, ended %q, %d verdicts, last %s", ro.name, ro.step, len(ro.weights)-1, ro.ended, len(rs), last)
			// The last writes of its record: what a resumed daemon goes on from.
			writes := stored.live(ro.name)
			for _, w := range writes[max(0, len(writes)-4):] {
				if w.record == nil {
					fmt.Fprintf(&b, "\n    revision %d: deleted", w.revision)
					continue
				}
				var seqs []uint64
				for _, p := range w.record.Pending {
					seqs = append(seqs, p.Verdict.Sequence)
				}
				fmt.Fprintf(&b, "\n    revision %d at %s: owner %s, step %d (gen %d), sequence %d, published %d, pending %v",
					w.revision, w.seen.Format("15:04:05.000"), w.record.Owner, w.record.Step, w.record.StepGen, w.record.Sequence, w.record.Published, seqs)
			}
		}
		return b.String()
	}

	plan("")
	start(byName["alpha"])
	start(byName["beta"])

	deadline := time.NewTimer(150 * time.Second)
	defer deadline.Stop()
	var midInterval <-chan time.Time
	processed := 0
	for !allEnded() {
		select {
		case <-feed.notify:
		case <-midInterval:
			midInterval = nil
			crash(fmt.Sprintf("%d verdicts +%s", next.verdicts, next.delay.Truncate(time.Millisecond)), nil)
		case err := <-d.exited():
			t.Fatalf("the daemon exited by itself (%v); progress:%s", err, progress())
		case <-deadline.C:
			t.Fatalf("the rollouts did not end within 150s (%d kills); progress:%s", len(kills), progress())
		}
		for processed < feed.len() && !allEnded() {
			react(feed.at(processed))
			processed++
			switch {
			case next.kind == killAfterVerdicts && feed.len() >= next.verdicts:
				crash(fmt.Sprintf("%d verdicts", next.verdicts), nil)
			case next.kind == killMidInterval && !next.armed && feed.len() >= next.verdicts:
				next.armed = true
				midInterval = time.After(next.delay)
			}
		}
	}
	ran := time.Since(began)

	// Completion and abort retire the rollouts: the read API forgets them, the store holds
	// no live record, every event was acknowledged and none dead-lettered, and no verdict
	// follows.
	for _, ro := range rollouts {
		require.Eventually(t, func() bool { return d.status(ro.name) == http.StatusNotFound }, 15*time.Second, 100*time.Millisecond,
			"GET /v1/rollouts/e2e/%s answers 404 once the rollout ended", ro.name)
	}
	requireConsumerDrained(t, ctx, js)
	require.Eventually(t, func() bool {
		kv, err := js.KeyValue(ctx, state.DefaultBucket)
		if err != nil {
			return false
		}
		lister, err := kv.ListKeysFiltered(ctx, "live.>")
		if err != nil {
			return false
		}
		n := 0
		for range lister.Keys() {
			n++
		}
		return n == 0
	}, 10*time.Second, 100*time.Millisecond, "no live record is left")
	settled := feed.len()
	require.Never(t, func() bool { return feed.len() > settled }, 2*fastInterval+time.Second, 100*time.Millisecond,
		"no verdict follows the end of every rollout")

	// The whole stream, in stream order.
	all := readVerdictStream(t, ctx, js)
	require.Len(t, all, settled, "the ordered consumer saw every message of the stream")
	duplicates, gaps := sequenceReport(t, all)
	requireStoredMatchesStream(t, stored, all)
	sameAgain, conflicting := published.duplicates()
	require.Empty(t, conflicting, "a Nats-Msg-Id (a sequence number) was published for two different verdicts")

	analyses := byAnalysis(all)
	require.Len(t, analyses, len(rollouts), "only revision v2 of each rollout was analysed")
	lost := 0
	for _, ro := range rollouts {
		vs := analyses["e2e/"+ro.name+"@v2"]
		require.NotEmpty(t, vs, ro.name)
		// No event lost: every published step shows in the verdicts, in order, with its
		// weight and its event as the cause; a step never goes back.
		steps := map[int]bool{}
		for i, v := range vs {
			if i > 0 {
				require.GreaterOrEqual(t, v.Verdict.Step, vs[i-1].Verdict.Step, "%s: sequence %d went back from step %d to %d", ro.name, v.Verdict.Sequence, vs[i-1].Verdict.Step, v.Verdict.Step)
			}
			require.Less(t, v.Verdict.Step, len(ro.ids), "%s: sequence %d is at a step never published", ro.name, v.Verdict.Sequence)
			require.Equal(t, ro.weights[v.Verdict.Step], v.Verdict.Weight, "%s: sequence %d", ro.name, v.Verdict.Sequence)
			require.Equal(t, ro.ids[v.Verdict.Step], v.Verdict.Cause, "%s: sequence %d", ro.name, v.Verdict.Sequence)
			steps[v.Verdict.Step] = true
		}
		for s := range ro.ids {
			if !steps[s] {
				lost++
				t.Errorf("%s: event %s (step %d) has no verdict: lost", ro.name, ro.ids[s], s)
			}
		}
		// The final verdicts. A rollback is the last verdict; a proceed at the last step is
		// the one the controller completed the rollout on, and the analysis goes on until the
		// completion is applied: the looks in between judge the same step (a pass is not held
		// across looks, so one may pause), never roll back (asserted below).
		final := vs[len(vs)-1].Verdict
		after, found := 0, false
		for i, v := range vs {
			if v.Verdict.Sequence == ro.endedOn {
				final, after, found = v.Verdict, len(vs)-1-i, true
			}
		}
		require.True(t, found, "%s: the verdict the controller ended it on (sequence %d) is in the stream", ro.name, ro.endedOn)
		if after > 0 {
			t.Logf("%s: %d verdicts after the proceed it was completed on, before the completion applied; the last: %s %s",
				ro.name, after, vs[len(vs)-1].Verdict.Verdict, vs[len(vs)-1].Verdict.Reason)
		}
		if ro.faultAt < 0 {
			require.Equal(t, rollout.Proceed, final.Verdict, "%s ends on proceed: %s", ro.name, final.Reason)
			require.Equal(t, len(ro.weights)-1, final.Step, "%s proceeds at its last step", ro.name)
			require.Equal(t, fmt.Sprintf("chaos-%s-completed", ro.name), ro.ended)
			for _, v := range vs {
				require.NotEqual(t, rollout.Rollback, v.Verdict.Verdict, "%s: sequence %d: %s", ro.name, v.Verdict.Sequence, v.Verdict.Reason)
			}
		} else {
			require.Equal(t, rollout.Rollback, final.Verdict, "%s ends on rollback", ro.name)
			require.Zero(t, after, "%s: no verdict follows its rollback", ro.name)
			require.Equal(t, ro.faultAt, final.Step, "%s is rolled back at the step the fault began", ro.name)
			require.Equal(t, rollout.Fail, check(final, "error-rate").Outcome, "%s: the error-rate check fails: %s", ro.name, final.Reason)
			require.Contains(t, final.Reason, "error-rate")
			rollbacks := 0
			for _, v := range vs {
				if v.Verdict.Verdict == rollout.Rollback {
					rollbacks++
				}
			}
			require.Equal(t, 1, rollbacks, "%s: rollback is final: one rollback verdict", ro.name)
			require.Equal(t, fmt.Sprintf("chaos-%s-aborted", ro.name), ro.ended)
		}
		held := requireBaselineOnce(t, ro.name, stored, vs)
		t.Logf("%s: %d verdicts over %d steps, final %s at step %d; the baseline was stored once and held by %d record writes",
			ro.name, len(vs), len(ro.ids), final.Verdict, final.Step, held)
	}
	require.Zero(t, lost, "events lost")

	// A restarted daemon resumes its analyses at once (same replica id), not after its
	// lease: had it waited for the lease (15s, renewed at least every interval) to run out,
	// the first verdict would come 13s or more after the kill. Measured from the start of
	// the process to the first verdict the stream stored from it (a sequence above those
	// stored before); the bound leaves room for a loaded machine.
	resumeBound := 2*fastInterval + 3*time.Second
	var resumes []time.Duration
	for _, r := range restarts {
		until := r.killed
		if until.IsZero() {
			until = time.Now()
		}
		for _, name := range r.live {
			var before uint64
			var at time.Time
			for _, v := range analyses["e2e/"+name+"@v2"] {
				switch {
				case !v.time.After(r.started):
					before = max(before, v.Verdict.Sequence)
				case at.IsZero() && v.Verdict.Sequence > before && v.time.Before(until):
					at = v.time
				}
			}
			if at.IsZero() && has(feed.of(name), rollout.Rollback) {
				continue // rolled back just before the kill: final, no verdict follows
			}
			if ro := byName[name]; at.IsZero() && ro.ended != "" && ro.endedAt.After(r.started) && ro.endedAt.Before(r.started.Add(resumeBound)) {
				// Ended by the controller early in this incarnation, on a verdict of the one
				// before (a run saw one 47ms in): no verdict follows.
				continue
			}
			if at.IsZero() {
				require.Less(t, until.Sub(r.started), resumeBound, "%s: no verdict in the %s the incarnation started at %s lived", name, until.Sub(r.started), r.started)
				continue // killed again before it could
			}
			resumes = append(resumes, at.Sub(r.started))
			require.LessOrEqual(t, at.Sub(r.started), resumeBound, "%s resumed at once after a restart", name)
		}
	}
	sort.Slice(resumes, func(i, j int) bool { return resumes[i] < resumes[j] })
	require.GreaterOrEqual(t, len(kills), 5, "the daemon was killed at least 5 times (seed %d)", seed)

	byKind := map[killKind]int{}
	var points []string
	for _, k := range kills {
		byKind[k.kind]++
		points = append(points, fmt.Sprintf("%s@%d(%s)", k.kind, k.verdicts, k.note))
	}
	kinds := make([]string, 0, len(byKind))
	for k, n := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	logs := d.logs.String()
	t.Logf("seed %d: %d kills survived (%s), %d events published, %d lost; %d verdicts in the stream, %d duplicate sequences, %d gaps; "+
		"%d verdict messages on the wire, %d of them published again with the same content (dropped by JetStream), %d sequence numbers reused; run %s",
		seed, len(kills), strings.Join(kinds, " "), events, lost, len(all), duplicates, gaps,
		published.count(), sameAgain, len(conflicting), ran.Round(time.Second))
	t.Logf("kill points: %s", strings.Join(points, ", "))
	if len(resumes) > 0 {
		loads := loadDelays(d.logs.String())
		t.Logf("first verdict of each analysis after a restart, from the start of the process (%d measured): median %s, max %s; state loaded %s after start (median), %s (max)", len(resumes),
			resumes[len(resumes)/2].Round(time.Millisecond), resumes[len(resumes)-1].Round(time.Millisecond),
			loads[len(loads)/2].Round(time.Millisecond), loads[len(loads)-1].Round(time.Millisecond))
	}
	t.Logf("daemon logs: %d incarnations, %d 'stored analyses loaded', %d 'baseline not captured', %d 'baseline captured after all', %d 'verdict was already stored', %d warnings, %d errors",
		d.incarnation, logLines(logs, "stored analyses loaded"), logLines(logs, "baseline not captured"), logLines(logs, "baseline captured after all"),
		logLines(logs, "verdict was already stored"), logLines(logs, `"level":"warn"`), logLines(logs, `"level":"error"`))
}
