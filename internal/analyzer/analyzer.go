// Package analyzer runs the analyses: it holds one state per live rollout, applies rollout
// events to it, and every interval of the rollout's template runs the pipeline
// compare -> decide -> publish on it. All state is owned by one goroutine (the loop); queries
// run on a bounded pool of workers and hand their measurements back to the loop.
package analyzer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/replay"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/state"
)

// Measurer measures rollouts; *compare.Comparer is the implementation.
type Measurer interface {
	Measure(ctx context.Context, t compare.Target) []rollout.Measurement
	CaptureBaseline(ctx context.Context, t *compare.Template, args, stable map[string]string, at time.Time) (map[string]rollout.Reading, error)
}

// Sink takes verdicts to publish, in order, without blocking; *publish.Publisher is one.
type Sink interface {
	Enqueue(v rollout.Verdict, traceParent, traceState string)
	// Revoke drops the queued verdicts of a rollout's revision that another replica now
	// publishes.
	Revoke(ref rollout.Ref, revision string) int
}

// Store keeps the analyses; *state.Store is the implementation.
type Store interface {
	Get(ctx context.Context, key string) (state.Entry, error)
	Put(ctx context.Context, key string, r state.Record, revision uint64) (uint64, error)
	PutEnded(ctx context.Context, r state.Record) error
	Delete(ctx context.Context, key string, revision uint64) error
	Live(ctx context.Context) ([]state.Entry, error)
	// WatchOthers follows the live records others write (this replica's own puts are not
	// echoed back).
	WatchOthers(ctx context.Context) (<-chan state.Update, error)
}

// Published says which verdict of a rollout the verdict stream holds last: its revision and
// sequence (ok false when there is none). It lets a replica that resumes an analysis publish
// the stored verdicts that were not published yet, and only those.
type Published func(ctx context.Context, ref rollout.Ref) (revision string, sequence uint64, ok bool, err error)

// ErrStopped is returned by Handle when the analyzer is not running; the event is retried.
var ErrStopped = errors.New("analyzer is not running")

// Options configure an Analyzer. Templates, Measurer, Sink and Store are required.
type Options struct {
	Templates map[string]*compare.Template
	Measurer  Measurer
	Sink      Sink
	Store     Store
	// Published finds the last published verdict of a rollout; nil republishes every stored
	// pending verdict on resume (JetStream drops those it holds within its duplicate window).
	Published Published
	// ReplicaID names this replica as the owner of the rollouts it evaluates. Two processes
	// must not share one; the same process restarted should keep it, to resume at once.
	ReplicaID string
	// Lease is how long a replica owns a rollout without renewing it: when a replica dies,
	// its rollouts move to the others within a lease (default 15s).
	Lease time.Duration
	// Workers bounds the evaluations in flight (default 256). Most of an evaluation's time is
	// spent waiting for a feed's shared refresh, not querying (the source bounds its own
	// queries: PrometheusOptions.Concurrency): with 16, at 1,000 rollouts a step's evaluation
	// waited up to a quarter of a second for a worker while every one waited on a refresh.
	Workers int
	// Resolution is how often the loop looks for analyses that are due (default 1s).
	Resolution time.Duration
	// DrainTimeout bounds how long a stop waits for evaluations in flight (default 10s).
	DrainTimeout time.Duration
	// IdleExpiry ends, as aborted with reason "idle", an analysis whose latest start or step
	// event is older than it; 0 never does.
	IdleExpiry time.Duration
	// Now is the scheduler's clock; evaluations take their time from it (time.Now when nil).
	Now        func() time.Time
	Tracer     trace.Tracer
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 256
	}
	if o.Resolution <= 0 {
		o.Resolution = time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Second
	}
	if o.Lease <= 0 {
		o.Lease = 15 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("analyzerd")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Analyzer owns the live analyses of this replica.
type Analyzer struct {
	opts     Options
	requests chan eventRequest
	results  chan result
	done     chan struct{}
	metrics  *metrics
	// loaded is set once the stored analyses are loaded (Loaded).
	loaded atomic.Bool

	// Owned by the loop.
	live  map[rollout.Ref]*analysis
	sched schedule
	// others are the live records other replicas own, as last seen: taken over when their
	// lease expires.
	others map[rollout.Ref]state.Entry
	// peers are the replicas seen alive at the last scan (this one first): new rollouts are
	// placed on them (place), and a dead one's are spread over them. Written by the loop
	// under mu.
	peers []string
	seen  *recent[struct{}] // ids of applied events
	gen   uint64
	// ops are, per rollout, the events being applied and claims made off the loop, and
	// those waiting (ops.go); applied takes them back to the loop, applying counts those in
	// flight. Owned by the loop.
	ops      map[rollout.Ref]*opQueue
	applied  chan application
	applying int

	// latest and positions are what the read API serves; written by the loop, read by HTTP
	// handlers.
	mu        sync.RWMutex
	latest    map[rollout.Ref]rollout.Verdict
	positions map[rollout.Ref]rollout.Position

	// storeRetryAt and storeBackoff space out writes while the store fails. Owned by the loop.
	storeRetryAt time.Time
	storeBackoff time.Duration

	// acked is the highest sequence of each analysis that JetStream acknowledged; written
	// by the publisher (Acknowledged), read by the loop.
	ackMu sync.Mutex
	acked map[rollout.Key]uint64
	// awaiting is, per analysis, the first verdict decided after an event that asked for one
	// (a start, a step), until JetStream acknowledges it: for the overhead metric.
	awaiting map[rollout.Key]awaited

	// written takes the answers of the record writes in flight (store) back to the loop;
	// writes counts those not taken back yet. Owned by the loop.
	written chan write
	writes  int
	// writeSlots bounds the record writes in flight (maxWrites): the others wait for a slot
	// off the loop, their timeout not yet running.
	writeSlots chan struct{}
}

// maxWrites is how many record writes may be in flight at once. Unbounded, the ten thousand
// first verdicts of a start at 10,000 rollouts were written at once, JetStream took longer
// than a write's timeout to answer them, and every one failed (holding every write for a
// backoff): a thousand in flight keep the store busy without queueing in it. A write the
// an event waits for (apply) does not wait for a slot.
const maxWrites = 1024

// maxUnacknowledged is how many verdicts of a rollout may wait for JetStream's
// acknowledgement: past it, the rollout is not evaluated until they are published, so that
// the verdicts the store keeps to publish again stay few (and none is dropped for want of
// room).
const maxUnacknowledged = 8

// Acknowledged records that JetStream stored v (publish.Options.OnPublished). Safe for
// concurrent use.
func (a *Analyzer) Acknowledged(v rollout.Verdict) {
	a.ackMu.Lock()
	defer a.ackMu.Unlock()
	a.acked[v.Key()] = max(a.acked[v.Key()], v.Sequence)
	if w, ok := a.awaiting[v.Key()]; ok && v.Sequence >= w.sequence {
		delete(a.awaiting, v.Key())
		a.metrics.eventOverhead.Observe(max(0, time.Since(w.received)-w.evaluation).Seconds())
	}
}

// Dropped records that the sink dropped v, never to publish it (publish.Options.OnDropped:
// its queue was full, or v could not be encoded): the rollout's verdicts up to v count as
// settled, so that its evaluations do not wait for acknowledgements that can never come
// (eight dropped in a row held the rollout unevaluated until a restart). Safe for concurrent
// use.
func (a *Analyzer) Dropped(v rollout.Verdict) { a.acknowledge(v.Key(), v.Sequence) }

// acknowledge records that JetStream holds k's verdicts up to sequence.
func (a *Analyzer) acknowledge(k rollout.Key, sequence uint64) {
	a.ackMu.Lock()
	defer a.ackMu.Unlock()
	a.acked[k] = max(a.acked[k], sequence)
}

// awaited is a verdict an event asked for: its number, when the event was received, and
// how long the evaluation that decided it took (all by the real clock).
type awaited struct {
	sequence   uint64
	received   time.Time
	evaluation time.Duration
}

// awaitVerdict marks, after an event applied, that the analysis's next verdict answers it
// (when the event started the analysis or changed its step here): the overhead metric
// measures the time from the event to that verdict's publication, the evaluation's own
// excepted.
func (a *Analyzer) awaitVerdict(req eventRequest) {
	ev := req.ev
	if ev.Type != rollout.EventStarted && ev.Type != rollout.EventStep {
		return
	}
	if an := a.live[ev.Rollout]; an != nil && an.rec.Revision == ev.Revision && an.rec.Cause == ev.ID {
		an.awaited = req.received
	}
}

// pruneAcked forgets the acknowledgements of analyses this replica no longer owns (an
// acknowledgement can come after its analysis ended). It runs on the loop.
func (a *Analyzer) pruneAcked() {
	a.ackMu.Lock()
	for k := range a.acked {
		if an := a.live[k.Ref]; an == nil || an.key() != k {
			delete(a.acked, k)
		}
	}
	for k := range a.awaiting {
		if an := a.live[k.Ref]; an == nil || an.key() != k {
			delete(a.awaiting, k)
		}
	}
	a.ackMu.Unlock()
}

func (a *Analyzer) ackedOf(k rollout.Key) uint64 {
	a.ackMu.Lock()
	defer a.ackMu.Unlock()
	return a.acked[k]
}

// opTimeout bounds one store operation, so that the loop never waits long on a store that
// is away.
func (a *Analyzer) opTimeout() time.Duration { return min(2*time.Second, a.opts.Lease/5) }

// New builds an Analyzer; Run starts it.
func New(opts Options) (*Analyzer, error) {
	opts.defaults()
	if opts.Measurer == nil || opts.Sink == nil || opts.Store == nil || len(opts.Templates) == 0 {
		return nil, errors.New("analyzer: Templates, Measurer, Sink and Store are required")
	}
	if opts.ReplicaID == "" {
		return nil, errors.New("analyzer: ReplicaID is required")
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Analyzer{
		opts:       opts,
		requests:   make(chan eventRequest),
		results:    make(chan result, opts.Workers),
		ops:        map[rollout.Ref]*opQueue{},
		applied:    make(chan application, 64),
		done:       make(chan struct{}),
		metrics:    m,
		live:       map[rollout.Ref]*analysis{},
		others:     map[rollout.Ref]state.Entry{},
		seen:       newRecent[struct{}](1 << 16),
		latest:     map[rollout.Ref]rollout.Verdict{},
		positions:  map[rollout.Ref]rollout.Position{},
		acked:      map[rollout.Key]uint64{},
		awaiting:   map[rollout.Key]awaited{},
		written:    make(chan write, 64),
		writeSlots: make(chan struct{}, maxWrites),
	}, nil
}

type eventRequest struct {
	ctx      context.Context
	ev       rollout.Event
	reply    chan error // nil for an event of the loop's own (expire)
	received time.Time  // by the real clock, for the overhead metric (awaitVerdict)
}

// Handle applies one event. It is safe for concurrent use: events of different rollouts are
// applied at once, those of one rollout in the order Handle was called. It returns nil once
// the event's effect is stored, an error
// wrapping rollout.ErrInvalid for an event that can never apply, ErrStopped when the analyzer
// is stopping, and another error when the store could not be written (the event is then
// retried).
func (a *Analyzer) Handle(ctx context.Context, ev rollout.Event) error {
	req := eventRequest{ctx: ctx, ev: ev, reply: make(chan error, 1), received: time.Now()}
	select {
	case a.requests <- req:
	case <-a.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Loaded reports whether the stored analyses have been loaded: until then the read API
// would answer about none of them, and the replica is not ready.
func (a *Analyzer) Loaded() bool { return a.loaded.Load() }

// Latest returns the latest verdict of a live rollout.
func (a *Analyzer) Latest(ref rollout.Ref) (rollout.Verdict, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	v, ok := a.latest[ref]
	return v, ok
}

// Position returns where the live analysis of a rollout stands, whether or not it has a
// verdict yet: any replica answers for every rollout.
func (a *Analyzer) Position(ref rollout.Ref) (rollout.Position, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	p, ok := a.positions[ref]
	return p, ok
}

// List returns the latest verdict of every live rollout that has one, sorted by rollout.
func (a *Analyzer) List() []rollout.Verdict {
	a.mu.RLock()
	out := make([]rollout.Verdict, 0, len(a.latest))
	for _, v := range a.latest {
		out = append(out, v)
	}
	a.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Rollout.String() < out[j].Rollout.String() })
	return out
}

// Run is the loop. It loads the stored analyses (resuming those this replica owns), follows
// the store's changes, and returns when ctx is done, after the evaluations in flight have
// finished (within DrainTimeout) and their verdicts were stored and handed to the sink.
func (a *Analyzer) Run(ctx context.Context) error {
	defer close(a.done)
	// Evaluations in flight, and the store writes that follow them, get their own context
	// so that a stop lets them finish.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	updates, err := a.opts.Store.WatchOthers(watchCtx)
	if err == nil {
		err = a.load(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("analyzer: %w", err)
	}
	a.loaded.Store(true)
	var workers sync.WaitGroup
	slots := make(chan struct{}, a.opts.Workers)

	ticker := time.NewTicker(a.opts.Resolution)
	defer ticker.Stop()
	a.dispatch(workCtx, &workers, slots)
	for {
		select {
		case <-ctx.Done():
			return a.drain(workCtx, &workers, cancelWork)
		case req := <-a.requests:
			a.apply(workCtx, req)
		case d := <-a.applied:
			a.finish(workCtx, d)
			a.dispatch(workCtx, &workers, slots)
		case res := <-a.results:
			<-slots
			a.complete(workCtx, res)
			a.dispatch(workCtx, &workers, slots) // a worker is free: the next due starts now
		case w := <-a.written:
			a.stored(workCtx, w)
			a.dispatch(workCtx, &workers, slots)
		case u, ok := <-updates:
			if !ok {
				updates = nil // the watch ended: watched again at the next tick
				continue
			}
			a.observe(u)
		case <-ticker.C:
			if updates == nil {
				updates = a.rewatch(watchCtx)
			}
			a.scan(workCtx)
			a.dispatch(workCtx, &workers, slots)
			a.measureBacklog()
		}
	}
}

// load reads every live record at start: this replica's own are resumed at once (a crash
// and restart loses nothing: the baseline, the evidence and the sequence are stored), the
// others are followed until their lease expires.
func (a *Analyzer) load(ctx context.Context) error {
	entries, err := a.opts.Store.Live(ctx)
	if err != nil {
		return err
	}
	var resumed []*analysis
	for _, e := range entries {
		if e.Record.Owner == a.opts.ReplicaID {
			a.adopt(e.Record, e.Revision, true)
			if an := a.live[e.Record.Rollout]; an != nil {
				resumed = append(resumed, an)
			}
			continue
		}
		a.remember(e.Record)
		a.others[e.Record.Rollout] = e
	}
	for i, last := range a.askAllPublished(ctx, resumed) {
		a.republishFrom(resumed[i], last)
	}
	if len(entries) > 0 {
		a.opts.Logger.Info("stored analyses loaded", zap.Int("live", len(entries)), zap.Int("resumed", len(resumed)))
	}
	return nil
}

// rewatch follows the store again after its watch ended (the connection was lost), and
// reads every live record to catch up with what changed meanwhile. It returns nil when the
// store is still away.
func (a *Analyzer) rewatch(ctx context.Context) <-chan state.Update {
	updates, err := a.opts.Store.WatchOthers(ctx)
	if err != nil {
		return nil
	}
	entries, err := a.opts.Store.Live(ctx)
	if err != nil {
		return updates // the watch is back; the records are read at the next loss, or as they change
	}
	seen := map[rollout.Ref]bool{}
	for _, e := range entries {
		seen[e.Record.Rollout] = true
		a.observe(state.Update{Key: state.LiveKey(e.Record.Rollout), Revision: e.Revision, Record: &e.Record})
	}
	for ref := range a.others {
		if !seen[ref] {
			delete(a.others, ref)
			a.unremember(ref)
		}
	}
	a.opts.Logger.Info("following the state bucket again", zap.Int("live", len(entries)))
	return updates
}

// observe follows a change of the store made by another replica (or an echo of this one's).
func (a *Analyzer) observe(u state.Update) {
	if u.Record == nil {
		ref, ok := state.LiveRef(u.Key)
		if !ok {
			return // not a live record's key
		}
		if an := a.live[ref]; an != nil && u.Revision > an.rev {
			a.forget(ref)
			a.unremember(ref)
		}
		if _, ok := a.others[ref]; ok {
			delete(a.others, ref)
			a.unremember(ref)
		}
		return
	}
	rec := *u.Record
	if an := a.live[rec.Rollout]; an != nil {
		if u.Revision <= an.rev {
			return // this replica's own write, or older
		}
		if an.writing && rec.Owner == a.opts.ReplicaID && rec.Key() == an.key() {
			// Its write is in flight: this is its echo, or a write that makes it conflict
			// (the write went over the newest revision this replica knew). Either way stored
			// sees to it; adopting this record would drop what was decided since the write
			// began.
			return
		}
	}
	if rec.Owner == a.opts.ReplicaID {
		delete(a.others, rec.Rollout)
		before := a.live[rec.Rollout]
		a.adopt(rec, u.Revision, false)
		if an := a.live[rec.Rollout]; an != nil && an != before {
			an.republish = true // owned now, not by this replica's own doing: publish what it lacks at the next scan
		}
		return
	}
	if an := a.live[rec.Rollout]; an != nil {
		a.opts.Logger.Info("rollout taken over by another replica", zap.String("rollout", rec.Rollout.String()),
			zap.String("owner", rec.Owner))
	}
	a.forget(rec.Rollout)
	a.remember(rec)
	a.others[rec.Rollout] = state.Entry{Record: rec, Revision: u.Revision}
}

// scan renews this replica's leases, stores what could not be stored, and takes over the
// rollouts whose owner's lease has expired.
func (a *Analyzer) scan(ctx context.Context) {
	now := a.opts.Now()
	a.pruneAcked()
	for _, an := range a.live {
		if a.busy(an.rec.Rollout) {
			continue // an event of it is being applied: it goes on after it (resume)
		}
		if a.opts.IdleExpiry > 0 && now.Sub(an.rec.StepStarted) >= a.opts.IdleExpiry {
			a.expire(ctx, an, now)
			continue
		}
		if an.republish {
			a.republish(ctx, an)
		}
		switch {
		case now.Before(an.retryAt):
		case len(an.unstored) > 0:
			a.store(ctx, an)
		case an.rec.LeaseUntil.Sub(now) < a.opts.Lease/3 && !a.renewedSoon(an, now):
			a.store(ctx, an) // renews the lease (evaluations renew it too)
		}
	}
	alive := a.alive(now)
	a.mu.Lock()
	a.peers = alive
	a.mu.Unlock()
	for ref, e := range a.others {
		if now.Before(e.Record.LeaseUntil) {
			continue
		}
		// A dead replica's rollouts are spread over the survivors: each goes to its heir
		// among the replicas seen alive, and to whoever notices if its heir has not taken it
		// within half a lease (the heir may be stopping, or see other replicas).
		if now.Before(e.Record.LeaseUntil.Add(a.opts.Lease/2)) && heir(ref, alive) != a.opts.ReplicaID {
			continue
		}
		if _, ok := a.opts.Templates[e.Record.Template]; !ok {
			continue // this replica cannot evaluate it (another configuration): one that can takes it
		}
		if a.busy(ref) {
			continue // an event of it is being applied here: what it stores says who owns it
		}
		a.claim(ctx, ref, e)
	}
}

// renewedSoon reports whether an's lease, short, is renewed by its next evaluation's write
// in time: the evaluation is in flight or is to start a quarter of a lease before the lease
// ends. At a 10 s interval and a 15 s lease, a renewal of its own at a third of the lease
// left came between most evaluations, doubling the writes (a whole record each) just when
// evaluations ran late. A quarter of a lease before its end it is renewed whatever comes.
func (a *Analyzer) renewedSoon(an *analysis, now time.Time) bool {
	margin := a.opts.Lease / 4
	if margin < 2*a.opts.Resolution || an.rec.LeaseUntil.Sub(now) <= margin {
		return false // too short to wait for the scan after this one
	}
	return an.inFlight || (an.scheduled && !an.rec.Final && an.deadline.Before(an.rec.LeaseUntil.Add(-margin)))
}

// place is the replica a new rollout is analysed by: its rendezvous heir among the replicas
// seen alive, so that replicas share the rollouts evenly whichever of them the events reach
// (JetStream hands them to whichever pulls first). The owner takes it up from the watch; if it
// died meanwhile, its lease expires and the rollout is taken over as any other.
func (a *Analyzer) place(ref rollout.Ref) string {
	if len(a.peers) == 0 { // read on the loop, which alone writes it
		return a.opts.ReplicaID // before the first scan: alone, as far as it knows
	}
	return heir(ref, a.peers)
}

// peersSeen is peers, for tests.
func (a *Analyzer) peersSeen() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return slices.Clone(a.peers)
}

// alive is this replica and every replica that holds live leases and none expired, as this
// replica sees the records: those a takeover is shared among. A replica renews each of its
// leases well before it ends, so one expired lease says its owner died, although its other
// leases, renewed later, still run. A replica that owns no rollout is not seen; it takes
// rollouts over only after their heir's half a lease.
func (a *Analyzer) alive(now time.Time) []string {
	live := map[string]bool{a.opts.ReplicaID: true}
	dead := map[string]bool{}
	for _, e := range a.others {
		if o := e.Record.Owner; now.Before(e.Record.LeaseUntil) {
			live[o] = true
		} else {
			dead[o] = true
		}
	}
	out := []string{a.opts.ReplicaID}
	for o := range live {
		if o != a.opts.ReplicaID && !dead[o] {
			out = append(out, o)
		}
	}
	slices.Sort(out[1:])
	return out
}

// heir picks the replica a rollout whose owner died goes to, by rendezvous hashing: the same
// among replicas that see the same ones alive, spread evenly over them, and moving only the
// rollouts of the replica that died.
func heir(ref rollout.Ref, replicas []string) string {
	var best string
	var bestScore uint64
	for _, r := range replicas {
		h := fnv.New64a()
		h.Write([]byte(r))
		h.Write([]byte{0})
		h.Write([]byte(ref.Namespace))
		h.Write([]byte{0})
		h.Write([]byte(ref.Name))
		if score := mix64(h.Sum64()); best == "" || score > bestScore || (score == bestScore && r < best) {
			best, bestScore = r, score
		}
	}
	return best
}

// mix64 is splitmix64's finalizer: FNV-1a alone mixes its last bytes poorly, and replica ids
// that differ in one character (analyzerd-0, analyzerd-1) won 70% of the rollouts against
// 30% without it.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// expire ends an analysis no event has touched for IdleExpiry, as a rollout.aborted event with
// reason "idle" would: a controller that forgot it (or never says it is done) does not keep
// it for ever. A later start of the revision resumes its sequence and evidence. When the
// store cannot be written it is tried again at the next scan.
func (a *Analyzer) expire(ctx context.Context, an *analysis, now time.Time) {
	r := an.rec
	ev := rollout.Event{
		ID:     fmt.Sprintf("idle/%s/%d/%d", r.Key(), r.Started.UnixNano(), r.StepGen),
		Source: "analyzerd", Type: rollout.EventAborted, Time: now,
		Rollout: r.Rollout, Revision: r.Revision, Reason: "idle",
	}
	a.apply(ctx, eventRequest{ctx: ctx, ev: ev, received: time.Now()}) // answer logs what became of it
}

// republish hands the sink the stored verdicts the verdict stream does not hold yet: those
// the previous owner (or this replica before a crash) stored but did not publish. When the
// stream cannot be asked, it tries again at the next scan rather than publish blindly.
func (a *Analyzer) republish(ctx context.Context, an *analysis) {
	a.republishFrom(an, a.askPublished(ctx, an.rec))
}

// lastPublished is what the verdict stream holds last of a rollout (Options.Published).
type lastPublished struct {
	revision string
	sequence uint64
	ok       bool
	err      error
}

// asks reports whether republishing rec needs the verdict stream's answer: it has pending
// verdicts, and the stream can be asked.
func (a *Analyzer) asks(rec state.Record) bool {
	return len(rec.Pending) > 0 && a.opts.Published != nil
}

// askPublished asks the verdict stream what it holds last of rec's rollout, when rec has
// pending verdicts to check against it (nil when it has none). It reads nothing of the loop.
func (a *Analyzer) askPublished(ctx context.Context, rec state.Record) *lastPublished {
	if !a.asks(rec) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.opTimeout())
	defer cancel()
	var l lastPublished
	l.revision, l.sequence, l.ok, l.err = a.opts.Published(ctx, rec.Rollout)
	return &l
}

// askAllPublished is askPublished for each analysis, many at once: at a restart with
// thousands of rollouts, one round trip after another held the replica unready for seconds.
// The goroutines read copies of the records, taken here.
func (a *Analyzer) askAllPublished(ctx context.Context, ans []*analysis) []*lastPublished {
	out := make([]*lastPublished, len(ans))
	var wg sync.WaitGroup
	slots := make(chan struct{}, 64)
	for i, an := range ans {
		rec := an.rec
		if !a.asks(rec) {
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			out[i] = a.askPublished(ctx, rec)
		})
	}
	wg.Wait()
	return out
}

// republishFrom is republish with the stream's answer (nil: not asked, publish every pending
// verdict). It runs on the loop.
func (a *Analyzer) republishFrom(an *analysis, last *lastPublished) {
	an.republish = false
	if last == nil {
		a.enqueuePending(an)
		return
	}
	if last.err != nil {
		an.republish = true
		a.opts.Logger.Warn("could not read the last published verdict; trying again", zap.String("rollout", an.rec.Rollout.String()), zap.Error(last.err))
		return
	}
	if last.ok && last.revision == an.rec.Revision && last.sequence <= an.rec.Sequence {
		// The stream holds every verdict up to its sequence (the sink publishes a rollout's
		// in order): they are acknowledged, whoever published them. Counted as such, and not
		// only left out of the republication: a crash between their publication and the
		// write of their acknowledgement left maxUnacknowledged of them pending,
		// acknowledged by nobody now, and the rollout was never evaluated again. A number
		// above the record's is an earlier analysis's of the revision (its ended record
		// expired, and numbering began again): nothing of this one.
		an.enqueued = max(an.enqueued, last.sequence)
		a.acknowledge(an.key(), last.sequence)
	}
	a.enqueuePending(an)
}

// enqueuePending hands the sink the stored pending verdicts it has not been handed yet.
func (a *Analyzer) enqueuePending(an *analysis) {
	for _, p := range an.rec.Pending {
		if p.Verdict.Sequence > an.enqueued {
			a.opts.Sink.Enqueue(p.Verdict, p.TraceParent, p.TraceState)
			an.enqueued = p.Verdict.Sequence
		}
	}
}

// supersede gives up on an's evaluation in flight, if any, once its step changed: what it
// measured is the old step's window. Waiting for it to end, and then evaluating the new step,
// held the new step's first verdict for the rest of a stale evaluation (hundreds of
// milliseconds when it waited for a refresh). Its result is dropped when it ends (complete),
// and the new step's evaluation starts as soon as a worker is free.
func (a *Analyzer) supersede(an *analysis) {
	if an.inFlight {
		an.inFlight = false
		an.flight++
	}
}

// plan makes an analysis's next evaluation due at t, to start then (an event's, a retry's).
func (a *Analyzer) plan(an *analysis, t time.Time) { a.planBy(an, t, t) }

// planBy makes an analysis's next evaluation due at due, to start by deadline (see
// schedule). An evaluation in flight plans the next at its end; a final analysis is never
// evaluated again.
func (a *Analyzer) planBy(an *analysis, due, deadline time.Time) {
	if an.inFlight || an.rec.Final {
		an.next, an.deadline = due, deadline
		return
	}
	a.sched.set(an, due, deadline)
}

// dispatch starts the due evaluations, earliest deadline first, as far as workers are free. It
// runs at every tick, after every event applied and whenever an evaluation ends, so that a
// free worker never waits for the next tick.
func (a *Analyzer) dispatch(workCtx context.Context, workers *sync.WaitGroup, slots chan struct{}) {
	now := a.opts.Now()
	for {
		an, ok := a.sched.first(now)
		if !ok {
			return
		}
		if a.live[an.rec.Rollout] != an || an.rec.Final {
			a.sched.unset(an) // replaced, or rolled back since it was planned
			continue
		}
		if an.writing || a.busy(an.rec.Rollout) {
			// Its record is being written, or an event of it applied: the evaluation waits
			// for the answer (stored or resume plans it again, still due), so that writes of
			// one analysis never cross, and an event's change is evaluated, not the record
			// before it.
			a.sched.unset(an)
			continue
		}
		if an.rec.Sequence-max(an.rec.Published, a.ackedOf(an.key())) >= maxUnacknowledged {
			// Its verdicts wait to be published: no new number until they are.
			a.sched.set(an, now.Add(a.opts.Resolution), an.deadline)
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			a.metrics.saturated.Inc()
			return // every worker is busy: the next to end starts the next due
		}
		a.sched.unset(an)
		a.metrics.startDelay.Observe(now.Sub(an.next).Seconds())
		j := an.job(now, a.opts.Tracer)
		an.inFlight = true
		workers.Add(1)
		go func() {
			defer workers.Done()
			a.results <- a.evaluate(workCtx, j)
		}()
	}
}

// measureBacklog sets the backlog gauges: the analyses due and not started, and how late the
// oldest of them is.
func (a *Analyzer) measureBacklog() {
	n, oldest := a.sched.overdue(a.opts.Now())
	a.metrics.overdue.Set(float64(n))
	a.metrics.overdueFor.Set(oldest.Seconds())
}

// drain waits for the evaluations in flight and completes them, then cancels the rest.
func (a *Analyzer) drain(workCtx context.Context, workers *sync.WaitGroup, cancelWork context.CancelFunc) error {
	finished := make(chan struct{})
	go func() { workers.Wait(); close(finished) }()
	timer := time.NewTimer(a.opts.DrainTimeout)
	defer timer.Stop()
	deadline := timer.C // nil once the workers were cancelled: they finish promptly then
	evaluated := false
	a.refuseWaiting()
	for {
		if evaluated && len(a.results) == 0 && a.writes == 0 && a.applying == 0 {
			a.refuseWaiting()
			return nil // every evaluation decided, every record write and event answered
		}
		select {
		case res := <-a.results:
			a.complete(workCtx, res)
		case w := <-a.written:
			a.stored(workCtx, w)
		case d := <-a.applied:
			a.finish(workCtx, d)
		case <-finished:
			evaluated, finished = true, nil
		case <-deadline:
			a.opts.Logger.Warn("evaluations still in flight at the end of the drain timeout; cancelling them",
				zap.Duration("drainTimeout", a.opts.DrainTimeout))
			cancelWork()
			deadline = nil
		}
	}
}

// evaluate runs on a worker: it measures, and captures the baseline while there is none.
func (a *Analyzer) evaluate(ctx context.Context, j job) result {
	ctx = trace.ContextWithSpan(ctx, j.span)
	res := result{job: j}
	began := time.Now()
	if j.needBaseline {
		res.baseline, res.baselineErr = a.opts.Measurer.CaptureBaseline(ctx, j.target.Template, j.target.Args, j.target.Stable.Vars, j.started)
	}
	res.measurements = a.opts.Measurer.Measure(ctx, j.target)
	baseline := j.baseline
	if j.needBaseline && res.baselineErr == nil {
		baseline = res.baseline
	}
	_, decideSpan := a.opts.Tracer.Start(trace.ContextWithSpan(context.Background(), j.span), "decide")
	// The same decision as `analyzerd backtest` makes on history (replay.Decide).
	res.decision = replay.Decide(j.target.Template, j.position, baseline, j.evidence, j.now, res.measurements)
	explain(decideSpan, res.decision, j.sequence)
	decideSpan.End()
	res.took = time.Since(began)
	return res
}

// complete runs decide on an evaluation's measurements, stores the result, and hands the
// verdict to the sink once it is stored.
func (a *Analyzer) complete(ctx context.Context, res result) {
	j := res.job
	defer j.span.End()
	an, ok := a.live[j.key.Ref]
	if !ok || an.gen != j.gen {
		return // retired, superseded or taken over while the evaluation ran
	}
	if j.flight != an.flight {
		j.span.SetAttributes(attribute.Bool("analyzerd.superseded", true))
		return // given up when its step changed: the new step's evaluation is planned or in flight
	}
	if a.busy(j.key.Ref) {
		// An event of it is being applied over the record this evaluation began from (a
		// step, an end): what it decided would be lost under the event's change, a rollback
		// with it. Given up; evaluated again once the event is applied (resume).
		an.inFlight = false
		j.span.SetAttributes(attribute.Bool("analyzerd.superseded", true))
		return
	}
	an.inFlight = false
	if unreachable(res) {
		a.plan(an, j.now.Add(an.backoff()))
	} else {
		an.outage = 0
		// Due when new samples can have come, and to start within the interval: under
		// load, the early evaluations are the ones given up (see schedule).
		a.planBy(an, an.nextAfter(j, res), j.now.Add(an.template.Interval))
		if an.idle > 0 {
			a.metrics.idle.Inc()
		}
	}
	if j.needBaseline && an.rec.Baseline == nil {
		if res.baselineErr != nil {
			// Logged when the error changes, not at every evaluation of an outage.
			if msg := res.baselineErr.Error(); msg != an.baselineErr {
				an.baselineErr = msg
				a.opts.Logger.Warn("baseline not captured; trying again at every evaluation",
					zap.Stringer("rollout", j.key), zap.Error(res.baselineErr))
			}
		} else {
			if an.baselineErr != "" {
				a.opts.Logger.Info("baseline captured after all", zap.Stringer("rollout", j.key))
			}
			an.rec.Baseline, an.baselineErr = res.baseline, ""
		}
	}
	if j.stepGen != an.rec.StepGen || j.recGen != an.recGen {
		// The step changed while the evaluation ran (its window is stale), or the record
		// (what it decided over): evaluate again now.
		a.plan(an, a.opts.Now())
		return
	}
	r := an.rec
	d := res.decision
	an.rec.Evidence = d.Evidence
	an.rec.Sequence++
	j.span.SetAttributes(attribute.String("analyzerd.verdict", string(d.Decision)), attribute.Int64("analyzerd.verdict.sequence", int64(an.rec.Sequence)))
	v := rollout.Verdict{
		Rollout:   r.Rollout,
		Revision:  r.Revision,
		Step:      r.Step,
		Weight:    r.Weight,
		Verdict:   d.Decision,
		Reason:    d.Reason,
		Sequence:  an.rec.Sequence,
		Checks:    d.Checks,
		DecidedAt: j.now.UTC().Truncate(time.Millisecond), // the precision of the wire format
		Cause:     r.Cause,
		TraceID:   j.span.SpanContext().TraceID().String(),
	}
	if v.Verdict == rollout.Rollback {
		an.rec.Final = true // rollback is final for a revision: no more evaluations
		a.sched.unset(an)
	}
	traceParent, traceState := a.verdictContext(an, j.span, v)
	an.unstored = append(an.unstored, state.Verdict{Verdict: v, TraceParent: traceParent, TraceState: traceState})
	a.metrics.evaluations.Inc()
	a.metrics.verdicts.WithLabelValues(string(v.Verdict)).Inc()
	if an.firstVerdict {
		an.firstVerdict = false
		a.metrics.firstVerdict.Observe(j.now.Sub(an.received).Seconds())
	}
	if !an.awaited.IsZero() {
		a.ackMu.Lock()
		a.awaiting[an.key()] = awaited{sequence: v.Sequence, received: an.awaited, evaluation: res.took}
		a.ackMu.Unlock()
		an.awaited = time.Time{}
	}

	previous, had := a.Latest(r.Rollout)
	if !had || previous.Verdict != v.Verdict || previous.Revision != v.Revision {
		a.opts.Logger.Info("verdict",
			zap.String("rollout", r.Rollout.String()),
			zap.String("revision", r.Revision),
			zap.String("verdict", string(v.Verdict)),
			zap.String("reason", v.Reason),
			zap.Uint64("sequence", v.Sequence),
			zap.String("traceId", v.TraceID))
	}
	a.store(ctx, an)
}

// nextAfter is when an analysis's next evaluation is due after the one of j (replay.Next),
// counting the evaluations in a row that found no new sample. An evaluation whose step
// changed while it ran is not one of them.
func (an *analysis) nextAfter(j job, res result) time.Time {
	if j.stepGen != an.rec.StepGen {
		an.idle = 0
		return compare.NextEvaluation(j.now, an.template.Template, res.measurements)
	}
	var next time.Time
	next, an.idle = replay.Next(an.template, j.now, res.measurements, an.rec.Evidence, an.rec.StepStarted, an.idle)
	return next
}

// maxBackoff bounds how far evaluations back off while the metrics source is unreachable.
const maxBackoff = time.Minute

// backoff is the wait before the next evaluation while the metrics source cannot be reached:
// the template's interval, doubled at each evaluation in a row at which it could not be
// (up to maxBackoff, or the interval when it is longer), so that an outage is not met with a
// query storm. The verdicts meanwhile are pause; the first evaluation that reaches the
// source again goes back to the data's pace.
func (an *analysis) backoff() time.Duration {
	an.outage++
	d := an.template.Interval
	for i := 1; i < an.outage && d < maxBackoff; i++ {
		d *= 2
	}
	return max(an.template.Interval, min(d, maxBackoff))
}

// unreachable reports whether every query of an evaluation failed because the metrics
// source could not be reached.
func unreachable(res result) bool { return replay.Unreachable(res.measurements) }

// store writes an analysis's record with compare-and-swap, renewing its lease, and then hands
// the sink the verdicts it holds: a verdict is published only once its sequence number is
// stored, so that a crash can never make a number be published twice. The write runs off the
// loop (the loop goes on with other rollouts while JetStream stores it; stored takes its
// answer back), one at a time per analysis: the analysis is not evaluated meanwhile. When the
// store cannot be written the verdicts wait (and are retried at the next scan); when another
// replica wrote the record meanwhile, this replica reads it again: it has taken the rollout
// over (the unstored verdicts, never published, are dropped), or it changed it for an event
// (the analysis goes on from what is stored, at once).
func (a *Analyzer) store(ctx context.Context, an *analysis) {
	if an.writing {
		return // the next scan writes what this write did not hold
	}
	if a.busy(an.rec.Rollout) {
		return // an event of it is being applied: written after it (resume)
	}
	now := a.opts.Now()
	if now.Before(a.storeRetryAt) {
		// The store failed lately: one probe per backoff, not one write per rollout per
		// tick, each holding the loop for a timeout.
		an.retryAt = a.storeRetryAt
		return
	}
	rec := an.rec
	rec.LeaseUntil = now.Add(a.opts.Lease)
	// Pending keeps every verdict not acknowledged yet, stored or not: whoever resumes the
	// rollout publishes those the stream lacks.
	rec.Published = max(rec.Published, a.ackedOf(rec.Key()))
	var pending []state.Verdict
	for _, p := range append(append([]state.Verdict(nil), rec.Pending...), an.unstored...) {
		if p.Verdict.Sequence > rec.Published {
			pending = append(pending, p)
		}
	}
	rec.Pending = pending
	w := write{an: an, rec: rec, base: an.rev, unstored: len(an.unstored), at: now}
	urgent := make(chan struct{})
	an.writing, an.urgent = true, urgent
	a.writes++
	go func() {
		defer func() { a.written <- w }()
		select {
		case a.writeSlots <- struct{}{}:
			defer func() { <-a.writeSlots }()
		case <-urgent: // an event waits for this write (apply): it goes now, slot or not
		case <-ctx.Done():
			w.err = ctx.Err()
			return
		}
		octx, cancel := context.WithTimeout(ctx, a.opTimeout())
		defer cancel()
		key := state.LiveKey(w.rec.Rollout)
		w.rev, w.err = a.opts.Store.Put(octx, key, w.rec, w.base)
	}()
}

// write is one record write in flight, and its answer.
type write struct {
	an       *analysis
	rec      state.Record
	base     uint64 // the revision it was written over
	unstored int    // how many of an.unstored it holds
	at       time.Time
	rev      uint64
	err      error
}

// stored takes a write's answer back on the loop.
func (a *Analyzer) stored(ctx context.Context, w write) {
	an := w.an
	an.writing, an.urgent = false, nil
	a.writes--
	defer a.nextOp(ctx, w.rec.Rollout) // an event that waited for this write goes now
	if a.live[w.rec.Rollout] != an {
		return // forgotten or replaced meanwhile: the store and the watch say what became of it
	}
	if !an.scheduled && !an.inFlight && !a.busy(an.rec.Rollout) {
		defer func() { a.planBy(an, an.next, an.deadline) }() // its evaluation waited for this answer (dispatch)
	}
	rec, key := w.rec, state.LiveKey(w.rec.Rollout)
	switch {
	case w.err == nil:
		a.storeBackoff, a.storeRetryAt = 0, time.Time{} // the store answers: no write waits for a backoff
		a.storedAgain(an)
		if an.rev == w.base {
			// The record is what the write held. An evaluation that was in flight when the
			// write began may have ended since: its verdict and evidence are in memory, still
			// to be written, so only what the write itself set is taken.
			an.rev = w.rev
			an.rec.LeaseUntil, an.rec.Published, an.rec.Pending = rec.LeaseUntil, rec.Published, rec.Pending
			a.remember(rec)
		}
		// Otherwise it was seen again since (an event applied on this replica on top of it):
		// what is in memory is at least as new. Either way the verdicts it held are stored:
		// publish them, and write those decided meanwhile.
		an.unstored = an.unstored[w.unstored:]
		a.enqueuePending(an)
		if len(an.unstored) > 0 && !a.busy(an.rec.Rollout) {
			a.store(ctx, an) // an event waiting goes first (resume writes them after it)
		}
	case errors.Is(w.err, state.ErrConflict):
		octx, cancel := context.WithTimeout(ctx, a.opTimeout())
		defer cancel()
		cur, gerr := a.opts.Store.Get(octx, key)
		switch {
		case errors.Is(gerr, state.ErrNotFound):
			a.forget(rec.Rollout) // ended meanwhile
		case gerr != nil:
			a.storeFailed(an, gerr)
		case cur.Record.Owner == a.opts.ReplicaID && cur.Record.Key() != rec.Key():
			// A new revision, placed on this replica by the one that applied its start:
			// this replica analyses it from now on (the old revision's verdicts not stored
			// are dropped, as the supersession ended it).
			an.unstored = nil
			a.adopt(cur.Record, cur.Revision, true)
		case cur.Record.Owner != a.opts.ReplicaID || cur.Record.Key() != rec.Key():
			a.opts.Logger.Info("rollout taken over by another replica", zap.String("rollout", rec.Rollout.String()),
				zap.String("owner", cur.Record.Owner), zap.Int("dropped", len(an.unstored)))
			a.forget(rec.Rollout)
			a.remember(cur.Record)
			a.others[rec.Rollout] = cur
		case cur.Record.StepGen == an.rec.StepGen && cur.Record.Sequence <= an.rec.Sequence:
			// This replica's own write, stored although its answer was lost: what is in
			// memory is newer. Keep it (and the verdicts not in the stored record), on top of
			// the stored revision, and write again at the next scan.
			var keep []state.Verdict
			for _, p := range an.unstored {
				if p.Verdict.Sequence > cur.Record.Sequence {
					keep = append(keep, p)
				}
			}
			an.unstored, an.rev, an.rec.Pending = keep, cur.Revision, cur.Record.Pending
			a.enqueuePending(an)
			an.retryAt = w.at
		default:
			// Changed for an event by another replica: go on from what is stored,
			// publishing what it holds that this replica has not handed the sink yet.
			an.unstored = nil
			a.adopt(cur.Record, cur.Revision, false)
			a.enqueuePending(an)
			a.plan(an, a.opts.Now())
		}
	default:
		a.storeFailed(an, w.err)
	}
}

// storedAgain logs that an analysis's record was stored after writes of it had failed.
func (a *Analyzer) storedAgain(an *analysis) {
	if an.storeErr != "" {
		a.opts.Logger.Info("state stored again", zap.String("rollout", an.rec.Rollout.String()))
		an.storeErr = ""
	}
}

func (a *Analyzer) storeFailed(an *analysis, err error) {
	a.storeBackoff = min(max(2*a.storeBackoff, time.Second), 30*time.Second)
	a.storeRetryAt = a.opts.Now().Add(a.storeBackoff)
	an.retryAt = a.storeRetryAt
	if msg := err.Error(); msg != an.storeErr {
		an.storeErr = msg
		a.opts.Logger.Warn("state not stored; its verdicts wait until it is", zap.String("rollout", an.rec.Rollout.String()),
			zap.Int("waiting", len(an.unstored)), zap.Error(err))
	}
}

// explain writes a decision into its span: the verdict and its reason as attributes, and
// one event per check with every number the check's explanation rests on.
func explain(span trace.Span, d decide.Result, sequence uint64) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(
		attribute.String("analyzerd.verdict", string(d.Decision)),
		attribute.String("analyzerd.reason", d.Reason),
		attribute.Int64("analyzerd.verdict.sequence", int64(sequence)),
	)
	for _, c := range d.Checks {
		attrs := make([]attribute.KeyValue, 0, 14)
		attrs = append(attrs,
			attribute.String("analyzerd.check", c.Metric),
			attribute.String("analyzerd.check.outcome", string(c.Outcome)),
			attribute.String("analyzerd.check.threshold", c.Threshold),
			attribute.Int64("analyzerd.check.samples.canary", c.Samples.Canary),
			attribute.Int64("analyzerd.check.samples.stable", c.Samples.Stable),
		)
		for _, n := range []struct {
			key string
			v   *float64
		}{
			{"analyzerd.check.canary", c.Canary}, {"analyzerd.check.stable", c.Stable},
			{"analyzerd.check.baseline", c.Baseline}, {"analyzerd.check.delta", c.Delta},
			{"analyzerd.check.relative_delta", c.RelativeDelta},
			{"analyzerd.check.baseline_delta", c.BaselineDelta},
			{"analyzerd.check.baseline_relative_delta", c.BaselineRelativeDelta},
			{"analyzerd.check.e_value", c.EValue},
		} {
			if n.v != nil {
				attrs = append(attrs, attribute.Float64(n.key, *n.v))
			}
		}
		if c.Message != "" {
			attrs = append(attrs, attribute.String("analyzerd.check.message", c.Message))
		}
		span.AddEvent("check", trace.WithAttributes(attrs...))
	}
}
