package analyzer

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
)

// Events are applied, and rollouts taken over, off the loop. An event's store round trips
// (read the record, write it back) took the loop for their whole length: at a start of
// 10,000 rollouts, ten thousand of them in a row held every evaluation, write and other event
// behind them, and a takeover of a dead replica's thousands of rollouts did the same. Now the
// loop hands such an operation to a goroutine that does its store I/O, and applies its effect
// on the analyses when the answer comes (finish), going on with everything else meanwhile.
//
// The operations of one rollout run one at a time, in the order they came, and none while the
// rollout's record is being written (store): an event is applied over what the write holds,
// never across it. While one is in flight or waiting, the rollout is neither evaluated nor
// written nor taken over again (busy); it goes on when they are done.

// opQueue is a rollout's operations: one in flight (running), and those waiting.
type opQueue struct {
	running bool
	waiting []op
}

// op is an event to apply, or another replica's record to take over (claim), its lease
// expired.
type op struct {
	req   eventRequest
	claim *state.Entry
}

// application is an operation done off the loop, coming back to it.
type application struct {
	ref rollout.Ref
	// effect changes the analyses as the stored change says; run on the loop.
	effect func()
	// An event's: the event, what became of it, and the error that kept it from the store.
	req     *eventRequest
	outcome string
	err     error
}

// apply queues an event of a rollout, and starts applying it when nothing else of the
// rollout is in flight. It runs on the loop; the event's answer goes to req.reply once its
// effect is stored and applied.
func (a *Analyzer) apply(ctx context.Context, req eventRequest) {
	a.queue(req.ev.Rollout, op{req: req})
	if an := a.live[req.ev.Rollout]; an != nil && an.urgent != nil {
		// Its write waits for a slot: an event waits for it, so it goes now.
		close(an.urgent)
		an.urgent = nil
	}
	a.nextOp(ctx, req.ev.Rollout)
}

// claim takes over a rollout whose owner's lease expired, off the loop.
func (a *Analyzer) claim(ctx context.Context, ref rollout.Ref, e state.Entry) {
	a.queue(ref, op{claim: &e})
	a.nextOp(ctx, ref)
}

func (a *Analyzer) queue(ref rollout.Ref, o op) {
	q := a.ops[ref]
	if q == nil {
		q = &opQueue{}
		a.ops[ref] = q
	}
	q.waiting = append(q.waiting, o)
}

// busy reports whether a rollout has operations in flight or waiting: it is not evaluated,
// written nor claimed until they are done.
func (a *Analyzer) busy(ref rollout.Ref) bool {
	_, ok := a.ops[ref]
	return ok
}

// nextOp starts a rollout's next waiting operation, unless one is in flight or its record is
// being written (stored calls it again then).
func (a *Analyzer) nextOp(ctx context.Context, ref rollout.Ref) {
	q := a.ops[ref]
	if q == nil || q.running {
		return
	}
	if an := a.live[ref]; an != nil && an.writing {
		return
	}
	for len(q.waiting) > 0 {
		o := q.waiting[0]
		q.waiting[0] = op{}
		q.waiting = q.waiting[1:]
		if o.claim != nil {
			q.running = true
			a.launchClaim(ctx, *o.claim)
			return
		}
		if _, dup := a.seen.get(o.req.ev.ID); dup {
			a.metrics.applied.WithLabelValues(string(o.req.ev.Type), "duplicate").Inc()
			a.answer(o.req, nil)
			continue
		}
		q.running = true
		a.launch(ctx, o.req)
		return
	}
	delete(a.ops, ref)
	a.resume(ctx, ref)
}

// resume goes on with a rollout whose operations are all done: what waited for them (its
// evaluation, the write of its verdicts) goes now.
func (a *Analyzer) resume(ctx context.Context, ref rollout.Ref) {
	an := a.live[ref]
	if an == nil {
		return
	}
	if !an.scheduled && !an.inFlight && !an.writing && !an.next.IsZero() {
		a.planBy(an, an.next, an.deadline)
	}
	if len(an.unstored) > 0 && !an.writing {
		a.store(ctx, an)
	}
}

// newer reports whether this replica has seen a record of ref at a store revision above rev
// (by the watch, while an operation was in flight): the operation's effect is then out of
// date, and the newer record stands.
func (a *Analyzer) newer(ref rollout.Ref, rev uint64) bool {
	if an := a.live[ref]; an != nil && an.rev > rev {
		return true
	}
	e, ok := a.others[ref]
	return ok && e.Revision > rev
}

// launch applies an event off the loop. What it needs of the loop's state is taken now:
// the record as this replica last stored it (a step of its own analysis is applied over it
// without reading the store), and the replica a new rollout is placed on.
func (a *Analyzer) launch(ctx context.Context, req eventRequest) {
	ev := req.ev
	var mem *state.Entry
	if an := a.live[ev.Rollout]; ev.Type == rollout.EventStep && an != nil && an.rev != 0 &&
		len(an.unstored) == 0 && an.rec.Revision == ev.Revision {
		// No write in flight (nextOp waits for it) and none waiting: the record in
		// memory is the one stored at an.rev.
		mem = &state.Entry{Record: an.rec, Revision: an.rev}
	}
	owner := a.place(ev.Rollout)
	// The event's own context, ended too when the work of a stop is cancelled (drain).
	octx, cancel := context.WithCancel(req.ctx)
	stop := context.AfterFunc(ctx, cancel)
	a.applying++
	go func() {
		defer cancel()
		defer stop()
		done := application{ref: ev.Rollout, req: &req}
		for attempt := 0; attempt < maxApplyAttempts; attempt++ {
			actx, cancelAttempt := context.WithTimeout(octx, 2*a.opTimeout())
			done.outcome, done.effect, done.err = a.applyStored(actx, ev, mem, owner)
			cancelAttempt()
			if !errors.Is(done.err, state.ErrConflict) {
				break
			}
			mem = nil // another replica wrote it meanwhile: read it
		}
		a.applied <- done
	}()
}

// maxApplyAttempts bounds the retries of an event whose record other replicas keep changing.
const maxApplyAttempts = 8

// launchClaim takes over another replica's rollout off the loop: it writes the record as
// this replica's, and asks the verdict stream what it holds of it (republish). It waits for
// a write slot: a dead replica's thousands of rollouts are claimed at once.
func (a *Analyzer) launchClaim(ctx context.Context, e state.Entry) {
	ref, rec := e.Record.Rollout, e.Record
	from := rec.Owner
	rec.Owner, rec.LeaseUntil = a.opts.ReplicaID, a.opts.Now().Add(a.opts.Lease)
	a.applying++
	go func() {
		done := application{ref: ref}
		defer func() { a.applied <- done }()
		select {
		case a.writeSlots <- struct{}{}:
			defer func() { <-a.writeSlots }()
		case <-ctx.Done():
			return
		}
		octx, cancel := context.WithTimeout(ctx, a.opTimeout())
		defer cancel()
		key := state.LiveKey(ref)
		rev, err := a.opts.Store.Put(octx, key, rec, e.Revision)
		if err != nil {
			// Another replica was quicker, or the record changed: the watch tells what
			// became of it. Read it again so that a stale lease is not tried for ever.
			cur, gerr := a.opts.Store.Get(octx, key)
			done.effect = func() {
				seen, ok := a.others[ref]
				switch {
				case gerr == nil && (!ok || seen.Revision <= cur.Revision) && a.live[ref] == nil:
					a.others[ref] = cur
				case errors.Is(gerr, state.ErrNotFound) && ok && seen.Revision <= e.Revision:
					delete(a.others, ref)
				}
			}
			return
		}
		last := a.askPublished(ctx, rec)
		done.effect = func() {
			if seen, ok := a.others[ref]; ok && seen.Revision > rev {
				return // written again since, by whoever took it from this replica
			}
			delete(a.others, ref)
			a.adopt(rec, rev, true)
			a.opts.Logger.Info("took over a rollout whose owner's lease expired", zap.String("rollout", ref.String()),
				zap.String("from", from), zap.Uint64("sequence", rec.Sequence))
			if an := a.live[ref]; an != nil {
				a.republishFrom(an, last)
			}
		}
	}()
}

// finish takes an operation back on the loop: it applies its effect, answers the event, and
// goes on with the rollout (its next operation, or its evaluation and writes).
func (a *Analyzer) finish(ctx context.Context, d application) {
	a.applying--
	if d.req == nil {
		if d.effect != nil {
			d.effect()
		}
	} else {
		a.finishEvent(d)
	}
	if q := a.ops[d.ref]; q != nil {
		q.running = false
	}
	a.nextOp(ctx, d.ref) // the next operation, or, when none waits, what waited for this one
}

// finishEvent applies an event's effect once it is stored, and answers it.
func (a *Analyzer) finishEvent(d application) {
	ev := d.req.ev
	err := d.err
	switch {
	case errors.Is(err, rollout.ErrInvalid):
		a.metrics.applied.WithLabelValues(string(ev.Type), "rejected").Inc()
	case err != nil:
		// The store could not be written: the event is not acknowledged, and comes again.
		err = fmt.Errorf("store the effect of event %s: %w", ev.ID, err)
	default:
		if d.effect != nil {
			d.effect()
		}
		a.seen.put(ev.ID, struct{}{})
		a.metrics.applied.WithLabelValues(string(ev.Type), d.outcome).Inc()
	}
	a.answer(*d.req, err)
	if err == nil {
		a.awaitVerdict(*d.req)
	}
}

// answer tells an event's sender what became of it: the caller of Handle, or, for an event
// of the loop's own (an idle analysis's end), the log.
func (a *Analyzer) answer(req eventRequest, err error) {
	if req.reply != nil {
		req.reply <- err
		return
	}
	ev := req.ev
	if err != nil {
		a.opts.Logger.Warn("could not end an idle analysis; trying again", zap.String("rollout", ev.Rollout.String()),
			zap.String("revision", ev.Revision), zap.Error(err))
		return
	}
	a.opts.Logger.Info("idle analysis ended as aborted", zap.String("rollout", ev.Rollout.String()),
		zap.String("revision", ev.Revision), zap.Duration("idleExpiry", a.opts.IdleExpiry))
}

// refuseWaiting answers every event not started yet that the analyzer is stopping (they are
// delivered again, to this replica restarted or another), and drops the claims not started.
func (a *Analyzer) refuseWaiting() {
	for ref, q := range a.ops {
		for _, o := range q.waiting {
			if o.claim == nil && o.req.reply != nil {
				o.req.reply <- ErrStopped
			}
		}
		q.waiting = nil
		if !q.running {
			delete(a.ops, ref)
		}
	}
}
