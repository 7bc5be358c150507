// Package state keeps analyses in a JetStream key-value bucket, so that they survive crashes
// and are shared by replicas: one record per live rollout, written with compare-and-swap on
// its revision, and one per ended revision, for when that revision starts again.
package state

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// DefaultBucket is the key-value bucket analyzerd keeps its state in.
const DefaultBucket = "ANALYZERD_STATE"

// Sentinel errors.
var (
	// ErrNotFound: no record under that key.
	ErrNotFound = errors.New("no such record")
	// ErrConflict: the record changed since it was read (or exists, for a create).
	ErrConflict = errors.New("record changed concurrently")
)

// Record is everything one analysis needs to go on where it stopped, on any replica.
type Record struct {
	Rollout  rollout.Ref `json:"rollout"`
	Revision string      `json:"revision"`
	// Template names the analysis template (the daemon's configuration holds it).
	Template string            `json:"template"`
	Args     map[string]string `json:"args,omitempty"`
	Canary   map[string]string `json:"canary,omitempty"`
	Stable   map[string]string `json:"stable,omitempty"`
	// Started is the rollout.started event's time: the baseline window ends there.
	Started time.Time `json:"started"`

	Step        int       `json:"step"`
	Weight      int       `json:"weight"`
	StepStarted time.Time `json:"stepStarted"`
	// StepGen grows with every step change.
	StepGen     uint64 `json:"stepGen"`
	Cause       string `json:"cause"`
	TraceParent string `json:"traceParent,omitempty"`
	TraceState  string `json:"traceState,omitempty"`

	// Baseline is nil until captured; once captured it is never captured again, and the
	// map is never changed in place (the copies of a record share it; Store.Put encodes it
	// once).
	Baseline map[string]rollout.Reading `json:"baseline,omitempty"`
	Evidence decide.Evidence            `json:"evidence"`
	// Sequence is the last verdict sequence number given out. Pending are the verdicts last
	// handed to the publisher, stored before they are published: a replica that takes over,
	// or the same one after a crash, publishes those the verdict stream does not hold yet,
	// so that no sequence number is skipped, and none is published twice.
	Sequence uint64    `json:"sequence"`
	Pending  []Verdict `json:"pending,omitempty"`
	// Published is the highest sequence JetStream acknowledged, as known when the record
	// was written: Pending holds the verdicts above it.
	Published uint64 `json:"published,omitempty"`
	// Final is set by a rollback: no more evaluations.
	Final bool `json:"final,omitempty"`

	// Owner is the replica that evaluates the rollout until LeaseUntil; another may take it
	// over once the lease has expired.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil"`

	// Ended is the time of the event that ended the analysis (completed, aborted or
	// superseded): set on the records of ended revisions.
	Ended *time.Time `json:"ended,omitempty"`
}

// Verdict is a verdict with the trace context it is published with.
type Verdict struct {
	Verdict     rollout.Verdict `json:"verdict"`
	TraceParent string          `json:"traceParent,omitempty"`
	TraceState  string          `json:"traceState,omitempty"`
}

// Last is the latest verdict decided and stored, if any.
func (r Record) Last() (rollout.Verdict, bool) {
	if len(r.Pending) == 0 {
		return rollout.Verdict{}, false
	}
	return r.Pending[len(r.Pending)-1].Verdict, true
}

// Key is the analysis a record is about.
func (r Record) Key() rollout.Key { return rollout.Key{Ref: r.Rollout, Revision: r.Revision} }

// Entry is a record with the revision it was read at.
type Entry struct {
	Record   Record
	Revision uint64
}

// Options configure a Store.
type Options struct {
	// Bucket is the key-value bucket (DefaultBucket when empty); it is created when missing.
	Bucket string
	// Replicas of the bucket (3 on a cluster).
	Replicas int
	// EndedTTL is how long the records of ended revisions are kept.
	EndedTTL time.Duration
}

// Store reads and writes records.
type Store struct {
	kv       jetstream.KeyValue
	endedTTL time.Duration

	// own holds, per live key, the hashes of the two latest values this Store put there
	// (newest first), so that WatchOthers knows its own puts, echoed back, by their bytes
	// without decoding them, whenever the echo comes (often before the put's answer).
	ownMu sync.Mutex
	own   map[string][2]uint64
	seed  maphash.Seed

	// baselines holds, per live key this Store puts, the encoding of the baseline it put
	// last: a baseline never changes once captured, and encoding it again was half the cost
	// of every write.
	baseMu    sync.Mutex
	baselines map[string]encodedBaseline
}

// encodedBaseline is a baseline's encoding, with the map it encodes: held, so that no other
// map can be allocated at its address while the encoding is kept.
type encodedBaseline struct {
	of   map[string]rollout.Reading
	json []byte
}

// Open opens the bucket, creating it when missing.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		opts.Bucket = DefaultBucket
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.EndedTTL <= 0 {
		opts.EndedTTL = 7 * 24 * time.Hour
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket,
		Description: "analyzerd: the state of every live analysis, and of ended revisions",
		History:     1,
		Replicas:    opts.Replicas,
		// Ended records are written with a TTL of their own.
		LimitMarkerTTL: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("state bucket %s: %w", opts.Bucket, err)
	}
	return &Store{kv: kv, endedTTL: opts.EndedTTL, own: map[string][2]uint64{}, seed: maphash.MakeSeed(),
		baselines: map[string]encodedBaseline{}}, nil
}

// LiveKey is the key of a rollout's live analysis. Namespaces and names are encoded in
// base64url, so that no two rollouts share a key whatever their characters.
func LiveKey(ref rollout.Ref) string {
	return "live." + enc(ref.Namespace) + "." + enc(ref.Name)
}

// LiveRef is the rollout whose live key key is (LiveKey's inverse), if it is one.
func LiveRef(key string) (rollout.Ref, bool) {
	parts := strings.Split(key, ".")
	if len(parts) != 3 || parts[0] != "live" {
		return rollout.Ref{}, false
	}
	ns, err1 := base64.RawURLEncoding.DecodeString(parts[1])
	name, err2 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil {
		return rollout.Ref{}, false
	}
	return rollout.Ref{Namespace: string(ns), Name: string(name)}, true
}

// EndedKey is the key of an ended revision's record.
func EndedKey(k rollout.Key) string {
	return "ended." + enc(k.Namespace) + "." + enc(k.Name) + "." + enc(k.Revision)
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// Get reads the record under key.
func (s *Store) Get(ctx context.Context, key string) (Entry, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("read %s: %w", key, err)
	}
	return decodeEntry(e)
}

func decodeEntry(e jetstream.KeyValueEntry) (Entry, error) {
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Entry{}, fmt.Errorf("decode %s: %w", e.Key(), err)
	}
	return Entry{Record: r, Revision: e.Revision()}, nil
}

// Put writes r under key: created when revision is 0, else updated only if the record is
// still at revision. It returns the new revision, or ErrConflict.
func (s *Store) Put(ctx context.Context, key string, r Record, revision uint64) (uint64, error) {
	data, err := s.encode(key, r)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	h := s.putting(key, data)
	var rev uint64
	if revision == 0 {
		rev, err = s.kv.Create(ctx, key, data)
	} else {
		rev, err = s.kv.Update(ctx, key, data, revision)
	}
	if err != nil {
		// Not stored (or not known to be): no echo of it is to be skipped, and another
		// writer's put of the same bytes must come through.
		s.notPut(key, h)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), isWrongLastSequence(err):
		return 0, fmt.Errorf("write %s: %w", key, ErrConflict)
	case err != nil:
		return 0, fmt.Errorf("write %s: %w", key, err)
	}
	return rev, nil
}

// encode is json.Marshal of r, with its baseline's encoding reused from the last put under
// key when it is the same map.
func (s *Store) encode(key string, r Record) ([]byte, error) {
	if r.Baseline == nil {
		return json.Marshal(r)
	}
	base, err := s.encodeBaseline(key, r.Baseline)
	if err != nil {
		return nil, err
	}
	r.Baseline = nil
	data, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	// data is an object with fields (the rollout's at least): the baseline joins them.
	out := make([]byte, 0, len(data)+len(`,"baseline":`)+len(base))
	out = append(out, data[:len(data)-1]...)
	out = append(out, `,"baseline":`...)
	out = append(out, base...)
	return append(out, '}'), nil
}

func (s *Store) encodeBaseline(key string, b map[string]rollout.Reading) ([]byte, error) {
	s.baseMu.Lock()
	defer s.baseMu.Unlock()
	if e, ok := s.baselines[key]; ok && reflect.ValueOf(e.of).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() {
		return e.json, nil
	}
	data, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	s.baselines[key] = encodedBaseline{of: b, json: data}
	return data, nil
}

// forgetBaseline drops the baseline encoded for key: the key is deleted, or written by
// another replica.
func (s *Store) forgetBaseline(key string) {
	s.baseMu.Lock()
	defer s.baseMu.Unlock()
	delete(s.baselines, key)
}

// PutEnded writes the record of an ended revision, replacing any earlier one, to be kept
// for the store's EndedTTL.
func (s *Store) PutEnded(ctx context.Context, r Record) error {
	key := EndedKey(r.Key())
	// An earlier end of the revision may hold a larger sequence (two replicas ending it at
	// once, from records read at different times): the numbers it gave out stay given.
	if prev, err := s.Get(ctx, key); err == nil && prev.Record.Sequence > r.Sequence {
		r.Sequence, r.Evidence = prev.Record.Sequence, prev.Record.Evidence
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := s.kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("replace %s: %w", key, err)
	}
	if _, err := s.kv.Create(ctx, key, data, jetstream.KeyTTL(s.endedTTL)); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// putting notes the value about to be put under key, before it is sent: its echo may come
// before the put's answer.
func (s *Store) putting(key string, data []byte) uint64 {
	h := maphash.Bytes(s.seed, data)
	s.ownMu.Lock()
	defer s.ownMu.Unlock()
	s.own[key] = [2]uint64{h, s.own[key][0]}
	return h
}

// notPut takes back putting's note of a put that failed.
func (s *Store) notPut(key string, h uint64) {
	s.ownMu.Lock()
	defer s.ownMu.Unlock()
	if own, ok := s.own[key]; ok && own[0] == h {
		s.own[key] = [2]uint64{own[1], 0}
	}
}

// echo reports whether a put seen by the watch is one of this Store's own latest two under
// key. A put of someone else's, or a delete, means that this Store's earlier puts have all
// been seen (the bucket's order is total): they are forgotten (see forgetOwn).
func (s *Store) echo(key string, data []byte) bool {
	h := maphash.Bytes(s.seed, data)
	s.ownMu.Lock()
	defer s.ownMu.Unlock()
	own, ok := s.own[key]
	if !ok {
		return false
	}
	if own[0] == h || own[1] == h {
		return true
	}
	delete(s.own, key)
	return false
}

func (s *Store) forgetOwn(key string) {
	s.ownMu.Lock()
	defer s.ownMu.Unlock()
	delete(s.own, key)
}

// Delete removes the record under key if it is still at revision.
func (s *Store) Delete(ctx context.Context, key string, revision uint64) error {
	s.forgetBaseline(key)
	err := s.kv.Purge(ctx, key, jetstream.LastRevision(revision))
	switch {
	case isWrongLastSequence(err) || errors.Is(err, jetstream.ErrKeyExists):
		return fmt.Errorf("delete %s: %w", key, ErrConflict)
	case err != nil:
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// Live lists every live record, in one pass over the bucket (a watch of the current values,
// not a read per key: at 10,000 live rollouts the difference is seconds of a restart),
// decoded on every core as they come, in the bucket's order.
func (s *Store) Live(ctx context.Context) ([]Entry, error) {
	w, err := s.kv.Watch(ctx, "live.>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list live records: %w", err)
	}
	defer func() { _ = w.Stop() }()
	type raw struct {
		i int
		e jetstream.KeyValueEntry
	}
	var (
		todo = make(chan raw, 64)
		mu   sync.Mutex
		out  []Entry
		bad  error
		wg   sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for r := range todo {
				entry, err := decodeEntry(r.e)
				mu.Lock()
				if err != nil && bad == nil {
					bad = err
				}
				if r.i >= len(out) {
					out = append(out, make([]Entry, r.i+1-len(out))...)
				}
				out[r.i] = entry
				mu.Unlock()
			}
		})
	}
	n := 0
	err = func() error {
		defer func() { close(todo); wg.Wait() }()
		for {
			select {
			case <-ctx.Done():
				return fmt.Errorf("list live records: %w", ctx.Err())
			case e, ok := <-w.Updates():
				if !ok {
					return errors.New("list live records: the watch ended")
				}
				if e == nil {
					return nil // every current value has been delivered
				}
				todo <- raw{i: n, e: e}
				n++
			}
		}
	}()
	if err != nil {
		return nil, err
	}
	if bad != nil {
		return nil, bad
	}
	return out[:n], nil
}

// Watch follows the live records: every update, and a delete as an entry with a nil record.
// The channel closes when ctx ends.
func (s *Store) Watch(ctx context.Context) (<-chan Update, error) { return s.watch(ctx, false) }

// WatchOthers is Watch without the puts of this Store itself: they are known by their
// bytes and dropped undecoded (at thousands of rollouts, decoding a replica's own writes
// echoed back was the largest part of its work). Deletes all come through.
func (s *Store) WatchOthers(ctx context.Context) (<-chan Update, error) { return s.watch(ctx, true) }

func (s *Store) watch(ctx context.Context, skipOwn bool) (<-chan Update, error) {
	if skipOwn {
		// What was put before is not echoed to this watch: forgotten, so that the puts of
		// keys deleted while no watch ran are not kept for ever.
		s.ownMu.Lock()
		clear(s.own)
		s.ownMu.Unlock()
	}
	w, err := s.kv.Watch(ctx, "live.>", jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watch live records: %w", err)
	}
	out := make(chan Update, 64)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				u := Update{Key: e.Key(), Revision: e.Revision()}
				if e.Operation() == jetstream.KeyValuePut {
					if skipOwn && s.echo(u.Key, e.Value()) {
						continue
					}
					if skipOwn {
						s.forgetBaseline(u.Key) // another replica's: it owns the key now
					}
					entry, err := decodeEntry(e)
					if err != nil {
						continue // not ours to read: a foreign writer
					}
					u.Record = &entry.Record
				} else if skipOwn {
					s.forgetOwn(u.Key)
					s.forgetBaseline(u.Key)
				}
				select {
				case out <- u:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Update is a change of a live record seen by Watch; Record is nil when it was deleted.
type Update struct {
	Key      string
	Revision uint64
	Record   *Record
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
