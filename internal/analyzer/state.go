package analyzer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/replay"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
)

// analysis is a live rollout's analysis that this replica owns: its stored record, the
// revision of the record it last read or wrote, and what only this process needs.
type analysis struct {
	rec state.Record
	rev uint64 // the record's revision in the store
	gen uint64 // distinguishes this analysis from one that replaced it in the map
	// recGen counts the times rec was replaced by another (adopt): an evaluation decided
	// over the record it was started with is stale once it changes.
	recGen   uint64
	template *compare.Template
	received time.Time // when this replica took it on, for the time-to-first-verdict metric

	baselineErr string    // the last failure to capture the baseline, for logging changes only
	next        time.Time // when the next evaluation is due, and by when it must start (see plan)
	deadline    time.Time
	inFlight    bool
	flight      uint64        // counts the evaluations given up in flight (supersede)
	writing     bool          // its record's write is in flight (store)
	urgent      chan struct{} // while writing: closed when the loop waits for the write (settle)
	// token and scheduled are the analysis's place in the schedule (schedule.go).
	token        uint64
	scheduled    bool
	firstVerdict bool
	awaited      time.Time // an event applied that awaits this analysis's next verdict (awaitVerdict)

	// unstored are verdicts decided but not yet stored (the store was unreachable): they are
	// published only once stored, so that no sequence number can be published twice.
	unstored []state.Verdict
	// outage counts the evaluations in a row at which every query failed (the metrics
	// source unreachable): evaluations back off while it lasts.
	outage int
	// idle counts the evaluations in a row that found no new sample (nextAfter).
	idle int
	// enqueued is the highest sequence handed to the sink; republish marks an analysis
	// whose stored pending verdicts must be checked against the stream at the next scan.
	enqueued  uint64
	republish bool
	// storeErr is the last failure to store, for logging changes only.
	storeErr string
	retryAt  time.Time
}

func (an *analysis) key() rollout.Key { return an.rec.Key() }

// job is one evaluation: a snapshot of what the worker needs.
type job struct {
	key          rollout.Key
	gen          uint64
	stepGen      uint64
	recGen       uint64
	flight       uint64 // the analysis's flight when it began: another says it was given up
	now          time.Time
	started      time.Time
	target       compare.Target
	needBaseline bool
	span         trace.Span
	// What the decision is made over, besides the measurements (decide is pure, and runs
	// in the worker, off the loop): the position, the baseline, the evidence (decide
	// copies it: the loop only ever replaces a record's, never changes it in place), and
	// the sequence number the verdict will have.
	position replay.Position
	baseline map[string]rollout.Reading
	evidence decide.Evidence
	sequence uint64
}

type result struct {
	job          job
	took         time.Duration // measuring and deciding, by the real clock
	measurements []rollout.Measurement
	baseline     map[string]rollout.Reading
	baselineErr  error
	decision     decide.Result
}

func (an *analysis) job(now time.Time, tracer trace.Tracer) job {
	r := an.rec
	var opts []trace.SpanStartOption
	if r.TraceParent != "" {
		producer := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{
			"traceparent": r.TraceParent, "tracestate": r.TraceState,
		})
		if sc := trace.SpanContextFromContext(producer); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	opts = append(opts, trace.WithNewRoot(), trace.WithTimestamp(now), trace.WithAttributes(
		attribute.String("rollout.namespace", r.Rollout.Namespace),
		attribute.String("rollout.name", r.Rollout.Name),
		attribute.String("rollout.revision", r.Revision),
		attribute.Int("rollout.step", r.Step),
		attribute.Int("rollout.weight", r.Weight),
		attribute.String("analysis.template", an.template.Name),
	))
	if r.Cause != "" {
		// The event that started the analysis or its step: the controller's CloudEvent id.
		opts = append(opts, trace.WithAttributes(attribute.String("analyzerd.event.id", r.Cause)))
	}
	// One name for every rollout (the rollout is in the attributes), so that the list of
	// operations a trace UI shows stays short.
	_, span := tracer.Start(context.Background(), "evaluate", opts...)
	return job{
		key:      an.key(),
		gen:      an.gen,
		flight:   an.flight,
		stepGen:  r.StepGen,
		recGen:   an.recGen,
		position: replay.Position{Step: r.Step, Weight: r.Weight, StepStarted: r.StepStarted},
		baseline: r.Baseline,
		evidence: r.Evidence,
		sequence: r.Sequence + 1,
		now:      now,
		started:  r.Started,
		target: compare.Target{
			Template: an.template,
			Args:     r.Args,
			Canary:   compare.Side{Vars: r.Canary},
			Stable:   compare.Side{Vars: r.Stable},
			From:     r.StepStarted,
			At:       now,
		},
		needBaseline: r.Baseline == nil,
		span:         span,
	}
}

// applyStored reads the rollout's record, changes it as the event says and writes it back
// with compare-and-swap; it returns the change to make on the loop once it is stored.
// state.ErrConflict means another replica wrote it meanwhile: read and apply again. With
// mem, a step of a revision this replica analyses is applied over the record as this replica
// last stored it, without reading it: one round trip, not three, at every step (should
// another replica have written it since, the write conflicts, and the next attempt reads).
// New rollouts are placed on owner. It runs off the loop (launch), and reads nothing of it.
func (a *Analyzer) applyStored(ctx context.Context, ev rollout.Event, mem *state.Entry, owner string) (outcome string, effect func(), err error) {
	log := a.opts.Logger.With(zap.String("rollout", ev.Rollout.String()), zap.String("revision", ev.Revision),
		zap.String("event", string(ev.Type)), zap.String("eventId", ev.ID))
	liveKey := state.LiveKey(ev.Rollout)
	now := a.opts.Now()
	if mem != nil && ev.Type == rollout.EventStep {
		return a.applyStep(ctx, ev, *mem, log, now)
	}
	// The live record and the revision's ended one, read at once.
	var (
		ended    state.Entry
		endedErr error
		read     sync.WaitGroup
	)
	read.Go(func() { ended, endedErr = a.opts.Store.Get(ctx, state.EndedKey(ev.Key())) })
	cur, err := a.opts.Store.Get(ctx, liveKey)
	read.Wait()
	exists := err == nil
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return "", nil, err
	}
	sameRevision := exists && cur.Record.Revision == ev.Revision
	wasEnded := endedErr == nil && ended.Record.Ended != nil
	if endedErr != nil && !errors.Is(endedErr, state.ErrNotFound) {
		return "", nil, endedErr
	}

	switch ev.Type {
	case rollout.EventStarted:
		if sameRevision {
			return "duplicate", nil, nil // the same (rollout, revision) again (CONTRACT.md section 3)
		}
		if wasEnded && !ev.Time.After(*ended.Record.Ended) {
			return "duplicate", nil, nil // a start from before that analysis ended, delivered again
		}
		t, ok := a.opts.Templates[ev.Analysis]
		if !ok {
			return "", nil, rollout.ErrUnknownTemplate(ev.Analysis)
		}
		if err := t.CheckStart(ev); err != nil {
			return "", nil, err
		}
		if exists && ev.Time.Before(cur.Record.Started) {
			return "stale", nil, nil // an older revision's start, delivered late
		}
		rec := state.Record{
			Rollout: ev.Rollout, Revision: ev.Revision, Template: t.Name,
			Args: ev.Args, Canary: ev.Canary, Stable: ev.Stable,
			Started: ev.Time, Step: ev.Step, Weight: ev.Weight, StepStarted: ev.Time,
			Cause: ev.ID, TraceParent: ev.TraceParent, TraceState: ev.TraceState,
			Owner: owner, LeaseUntil: now.Add(a.opts.Lease),
		}
		if wasEnded {
			// The revision started again after its analysis ended (a retry, a revert): its
			// sequence goes on, so that no number is published twice, and its evidence
			// carries over. A rolled-back revision is answered rollback again at once.
			// Its verdicts count as published: those the ended analysis did not publish never
			// will be (its queue was revoked), and unacknowledged ones would hold the new
			// analysis's evaluations for good (maxUnacknowledged).
			rec.Sequence, rec.Published, rec.Evidence = ended.Record.Sequence, ended.Record.Sequence, ended.Record.Evidence
			log.Info("revision started again after its analysis ended", zap.Uint64("sequence", rec.Sequence),
				zap.Bool("rolledBack", rec.Evidence.RolledBack))
		}
		if exists {
			// A new revision supersedes the analysis of the previous one.
			if err := a.endRecord(ctx, cur.Record, ev.Time); err != nil {
				return "", nil, err
			}
			log.Info("new revision supersedes the analysis of the previous one", zap.String("previous", cur.Record.Revision))
		}
		rev, err := a.opts.Store.Put(ctx, liveKey, rec, cur.Revision)
		if err != nil {
			return "", nil, err
		}
		log.Info("analysis started", zap.String("template", t.Name), zap.Int("step", ev.Step), zap.Int("weight", ev.Weight), zap.String("owner", rec.Owner))
		return "applied", func() {
			if !a.newer(ev.Rollout, rev) {
				a.adopt(rec, rev, true)
			}
		}, nil

	case rollout.EventStep:
		if !sameRevision && wasEnded {
			return "ignored", nil, nil // the analysis of that revision has ended
		}
		if !sameRevision {
			// Its start may not be stored yet: events of one rollout can be handled out of
			// order (replicas handle them at once; a start that failed is delivered again
			// after what followed it). Retried, and dead-lettered only after
			// ingest.maxDeliver deliveries.
			return "", nil, fmt.Errorf("no live analysis of rollout %s revision %q (yet)", ev.Rollout, ev.Revision)
		}
		return a.applyStep(ctx, ev, cur, log, now)

	case rollout.EventCompleted, rollout.EventAborted:
		if !sameRevision {
			if !wasEnded {
				// Ended before its start was stored (events out of order): remember the end,
				// so that the start, when it comes, is known as older and not analysed.
				marker := state.Record{Rollout: ev.Rollout, Revision: ev.Revision, Ended: &ev.Time}
				if err := a.opts.Store.PutEnded(ctx, marker); err != nil {
					return "", nil, err
				}
			}
			return "ignored", nil, nil // already retired, or about a revision no longer analysed
		}
		if ev.Time.Before(cur.Record.Started) {
			return "stale", nil, nil // the end of an earlier analysis of the revision, delivered late
		}
		if err := a.endRecord(ctx, cur.Record, ev.Time); err != nil {
			return "", nil, err
		}
		if err := a.opts.Store.Delete(ctx, liveKey, cur.Revision); err != nil {
			return "", nil, err
		}
		log.Info("analysis ended", zap.String("reason", ev.Reason))
		return "applied", func() {
			if !a.newer(ev.Rollout, cur.Revision) {
				a.forget(ev.Rollout)
				a.unremember(ev.Rollout)
			}
		}, nil
	}
	return "", nil, rollout.Invalidf("type: unknown event type %q", ev.Type)
}

// applyStep applies a step event to cur, the live record of the event's revision.
func (a *Analyzer) applyStep(ctx context.Context, ev rollout.Event, cur state.Entry, log *zap.Logger, now time.Time) (string, func(), error) {
	rec := cur.Record
	if ev.Time.Before(rec.StepStarted) {
		return "stale", nil, nil
	}
	if ev.Step == rec.Step && ev.Weight == rec.Weight {
		return "duplicate", nil, nil
	}
	rec.Step, rec.Weight = ev.Step, ev.Weight
	rec.StepStarted, rec.StepGen, rec.Cause = ev.Time, rec.StepGen+1, ev.ID
	rec.TraceParent, rec.TraceState = ev.TraceParent, ev.TraceState
	rev, err := a.opts.Store.Put(ctx, state.LiveKey(ev.Rollout), rec, cur.Revision)
	if err != nil {
		return "", nil, err
	}
	log.Info("step changed", zap.Int("step", ev.Step), zap.Int("weight", ev.Weight))
	return "applied", func() {
		if a.newer(ev.Rollout, rev) {
			return
		}
		a.adopt(rec, rev, false)
		if an := a.live[ev.Rollout]; an != nil {
			a.supersede(an)
			a.plan(an, a.opts.Now()) // evaluate the new step at once
		}
	}, nil
}

// endRecord stores what a later start of the revision needs of its ended analysis: the
// stored record, whose sequence was published or is about to be (verdicts not stored yet are
// never published, so their numbers may be given again).
func (a *Analyzer) endRecord(ctx context.Context, rec state.Record, at time.Time) error {
	rec.Ended = &at
	return a.opts.Store.PutEnded(ctx, rec)
}

// adopt makes a stored record this replica's live analysis when it owns it, and forgets it
// otherwise. fresh marks a new analysis (a new revision), evaluated at once.
func (a *Analyzer) adopt(rec state.Record, rev uint64, fresh bool) {
	a.remember(rec)
	if rec.Owner != a.opts.ReplicaID {
		a.forget(rec.Rollout)
		a.others[rec.Rollout] = state.Entry{Record: rec, Revision: rev}
		return
	}
	t, ok := a.opts.Templates[rec.Template]
	if !ok {
		// A record written by a replica with another configuration: it cannot be
		// evaluated here; leave it to one that can.
		a.opts.Logger.Warn("stored analysis names a template this replica does not have",
			zap.String("rollout", rec.Rollout.String()), zap.String("template", rec.Template))
		a.forget(rec.Rollout)
		return
	}
	an := a.live[rec.Rollout]
	created := an == nil || an.key() != rec.Key() || fresh
	if created {
		a.gen++
		if an != nil {
			a.sched.unset(an)
		}
		an = &analysis{gen: a.gen, template: t, received: a.opts.Now(), firstVerdict: true}
		a.live[rec.Rollout] = an
	}
	if rev < an.rev {
		return // an older write seen late
	}
	// A new analysis is evaluated at once, and so is a step changed by an event another
	// replica applied.
	due := created || rec.StepGen != an.rec.StepGen
	// Verdicts decided but not stored yet stay ahead of the stored sequence.
	seq := an.rec.Sequence
	an.rec, an.rev, an.template = rec, rev, t
	an.recGen++
	if len(an.unstored) > 0 && seq > an.rec.Sequence {
		an.rec.Sequence = seq
	}
	if due {
		if !created {
			a.supersede(an) // its step changed
		}
		a.plan(an, a.opts.Now())
	}
	a.metrics.live.Set(float64(len(a.live)))
}

// forget drops a rollout's live analysis from this replica, and its verdicts still queued:
// another replica publishes them from now on (or the analysis ended).
func (a *Analyzer) forget(ref rollout.Ref) {
	if an := a.live[ref]; an != nil {
		a.sched.unset(an)
		if n := a.opts.Sink.Revoke(ref, an.rec.Revision); n > 0 {
			a.opts.Logger.Info("queued verdicts left to the rollout's new owner", zap.String("rollout", ref.String()), zap.Int("verdicts", n))
		}
	}
	delete(a.live, ref)
	a.metrics.live.Set(float64(len(a.live)))
}

// remember keeps the latest verdict of every live record, owned here or not, for the read
// API: any replica answers for every rollout.
func (a *Analyzer) remember(rec state.Record) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.positions[rec.Rollout] = rollout.Position{Revision: rec.Revision, Step: rec.Step, Weight: rec.Weight}
	last, ok := rec.Last()
	if !ok {
		return
	}
	if cur, ok := a.latest[rec.Rollout]; !ok || cur.Revision != last.Revision || cur.Sequence <= last.Sequence {
		a.latest[rec.Rollout] = last
	}
}

// unremember drops a rollout from the read API: its analysis ended.
func (a *Analyzer) unremember(ref rollout.Ref) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.latest, ref)
	delete(a.positions, ref)
}

// recent remembers the most recent entries put into it, up to a capacity, forgetting the
// oldest: the ids of applied events, so that a redelivered or republished event (with or
// without Nats-Msg-Id) is applied once without reading the store.
type recent[V any] struct {
	entries map[string]V
	order   []string
	next    int
}

func newRecent[V any](capacity int) *recent[V] {
	return &recent[V]{entries: make(map[string]V, capacity), order: make([]string, capacity)}
}

func (r *recent[V]) get(key string) (V, bool) { v, ok := r.entries[key]; return v, ok }

func (r *recent[V]) put(key string, v V) {
	if _, ok := r.entries[key]; !ok {
		if old := r.order[r.next]; old != "" {
			delete(r.entries, old)
		}
		r.order[r.next] = key
		r.next = (r.next + 1) % len(r.order)
	}
	r.entries[key] = v
}
