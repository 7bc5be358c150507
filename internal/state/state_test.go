package state

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T) *Store {
	t.Helper()
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	s, err := Open(context.Background(), js, Options{EndedTTL: time.Hour})
	require.NoError(t, err)
	return s
}

func record(ns, name, rev string) Record {
	return Record{Rollout: rollout.Ref{Namespace: ns, Name: name}, Revision: rev, Template: "t", Sequence: 3,
		Started: time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC), Owner: "r1"}
}

func TestCompareAndSwap(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	rec := record("prod", "checkout", "v2")
	key := LiveKey(rec.Rollout)
	rev, err := s.Put(ctx, key, rec, 0)
	require.NoError(t, err)
	_, err = s.Put(ctx, key, rec, 0)
	require.ErrorIs(t, err, ErrConflict, "a create over an existing record")

	rec.Sequence = 4
	rev2, err := s.Put(ctx, key, rec, rev)
	require.NoError(t, err)
	rec.Sequence = 5
	_, err = s.Put(ctx, key, rec, rev)
	require.ErrorIs(t, err, ErrConflict, "an update from a stale revision")

	got, err := s.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, rev2, got.Revision)
	require.Equal(t, uint64(4), got.Record.Sequence)

	require.ErrorIs(t, s.Delete(ctx, key, rev), ErrConflict)
	require.NoError(t, s.Delete(ctx, key, rev2))
	_, err = s.Get(ctx, key)
	require.ErrorIs(t, err, ErrNotFound)
}

// TestKeysNeverCollide: names that subject tokens would map alike get distinct keys.
func TestKeysNeverCollide(t *testing.T) {
	a := LiveKey(rollout.Ref{Namespace: "a.b", Name: "c"})
	b := LiveKey(rollout.Ref{Namespace: "a", Name: "b.c"})
	c := LiveKey(rollout.Ref{Namespace: "a_b", Name: "c"})
	require.NotEqual(t, a, b)
	require.NotEqual(t, a, c)
	require.NotEqual(t, EndedKey(rollout.Key{Ref: rollout.Ref{Namespace: "x", Name: "y"}, Revision: "v1/2"}),
		EndedKey(rollout.Key{Ref: rollout.Ref{Namespace: "x", Name: "y"}, Revision: "v1_2"}))
	s := open(t)
	for _, ref := range []rollout.Ref{{Namespace: "a.b", Name: "c"}, {Namespace: "ü*>", Name: "name with spaces"}} {
		_, err := s.Put(context.Background(), LiveKey(ref), record(ref.Namespace, ref.Name, "v"), 0)
		require.NoError(t, err, "a key for %v", ref)
	}
	live, err := s.Live(context.Background())
	require.NoError(t, err)
	require.Len(t, live, 2)
}

func TestEndedRecordsAreReplaced(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	rec := record("prod", "checkout", "v2")
	at := rec.Started.Add(time.Hour)
	rec.Ended = &at
	require.NoError(t, s.PutEnded(ctx, rec))
	rec.Sequence = 9
	require.NoError(t, s.PutEnded(ctx, rec), "a revision may end again")
	got, err := s.Get(ctx, EndedKey(rec.Key()))
	require.NoError(t, err)
	require.Equal(t, uint64(9), got.Record.Sequence)
	require.True(t, got.Record.Ended.Equal(at))
	live, err := s.Live(ctx)
	require.NoError(t, err)
	require.Empty(t, live, "ended records are not live")
}

func TestWatchSeesPutsAndDeletes(t *testing.T) {
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates, err := s.Watch(ctx)
	require.NoError(t, err)
	rec := record("prod", "checkout", "v2")
	key := LiveKey(rec.Rollout)
	rev, err := s.Put(context.Background(), key, rec, 0)
	require.NoError(t, err)
	u := next(t, updates)
	require.Equal(t, key, u.Key)
	require.Equal(t, rev, u.Revision)
	require.NotNil(t, u.Record)
	require.Equal(t, rec.Revision, u.Record.Revision)
	require.NoError(t, s.Delete(context.Background(), key, rev))
	u = next(t, updates)
	require.Nil(t, u.Record)
	cancel()
	require.Eventually(t, func() bool {
		select {
		case _, ok := <-updates:
			return !ok
		default:
			return false
		}
	}, 5*time.Second, time.Millisecond, "the channel closes when the context ends")
}

func next(t *testing.T, ch <-chan Update) Update {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no update within 5s")
		return Update{}
	}
}

// TestWatchOthersSkipsItsOwnPuts: a Store's own puts, echoed back, are dropped, whenever
// the echo comes, before another Store's put on the same key and after it; the other's puts,
// and every delete, come through.
func TestWatchOthersSkipsItsOwnPuts(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mine, err := Open(ctx, js, Options{EndedTTL: time.Hour})
	require.NoError(t, err)
	theirs, err := Open(ctx, js, Options{EndedTTL: time.Hour})
	require.NoError(t, err)
	updates, err := mine.WatchOthers(ctx)
	require.NoError(t, err)

	rec := record("prod", "checkout", "v2")
	key := LiveKey(rec.Rollout)
	rev, err := mine.Put(ctx, key, rec, 0)
	require.NoError(t, err)
	rec.Sequence++
	rev, err = mine.Put(ctx, key, rec, rev)
	require.NoError(t, err)
	rec.Owner, rec.Sequence = "r2", rec.Sequence+1
	theirRev, err := theirs.Put(ctx, key, rec, rev)
	require.NoError(t, err)
	u := next(t, updates)
	require.Equal(t, theirRev, u.Revision, "this Store's two puts did not come; the other's did")
	require.Equal(t, "r2", u.Record.Owner)

	rec.Owner, rec.Sequence = "r1", rec.Sequence+1
	rev, err = mine.Put(ctx, key, rec, theirRev)
	require.NoError(t, err)
	require.NoError(t, mine.Delete(ctx, key, rev))
	u = next(t, updates)
	require.Equal(t, key, u.Key)
	require.Nil(t, u.Record, "the delete came, and the put before it (its own, after another's) did not")

	// The other Store's watch sees every put of this one's.
	all, err := theirs.WatchOthers(ctx)
	require.NoError(t, err)
	rev, err = mine.Put(ctx, key, rec, 0)
	require.NoError(t, err)
	u = next(t, all)
	require.Equal(t, rev, u.Revision)
	require.NotNil(t, u.Record)
}

func TestLiveRefIsLiveKeysInverse(t *testing.T) {
	for _, ref := range []rollout.Ref{{Namespace: "prod", Name: "checkout"}, {Namespace: "", Name: "a.b"}, {Namespace: "ns/x", Name: "é ☃"}} {
		got, ok := LiveRef(LiveKey(ref))
		require.True(t, ok)
		require.Equal(t, ref, got)
	}
	for _, key := range []string{"ended.cHJvZA.Y2hlY2tvdXQ.djI", "live.cHJvZA", "live.!!.Y2hlY2tvdXQ", "other"} {
		_, ok := LiveRef(key)
		require.False(t, ok, key)
	}
}

// TestWatchOthersSeesAForeignPutOfBytesItFailedToPut: a put that conflicts is not stored,
// so another Store's put of the very same bytes is not taken for its echo.
func TestWatchOthersSeesAForeignPutOfBytesItFailedToPut(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mine, err := Open(ctx, js, Options{EndedTTL: time.Hour})
	require.NoError(t, err)
	theirs, err := Open(ctx, js, Options{EndedTTL: time.Hour})
	require.NoError(t, err)
	rec := record("prod", "checkout", "v2")
	key := LiveKey(rec.Rollout)
	rev, err := theirs.Put(ctx, key, rec, 0)
	require.NoError(t, err)
	updates, err := mine.WatchOthers(ctx)
	require.NoError(t, err)

	rec.Sequence++ // both apply the same event to the same record: the same bytes
	_, err = mine.Put(ctx, key, rec, rev+7)
	require.ErrorIs(t, err, ErrConflict)
	theirRev, err := theirs.Put(ctx, key, rec, rev)
	require.NoError(t, err)
	u := next(t, updates)
	require.Equal(t, theirRev, u.Revision, "the other's put came through")
	require.NotNil(t, u.Record)
}

// TestBaselineEncodedOnce: a record's baseline is encoded at its first put and reused while
// the record holds the same map; what is stored reads back as the record, a new baseline
// (another revision's) under the same key is its own, and the encoding is forgotten once
// another replica puts the key, or it is deleted.
func TestBaselineEncodedOnce(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Open(ctx, js, Options{})
	require.NoError(t, err)
	other, err := Open(ctx, js, Options{})
	require.NoError(t, err)
	updates, err := s.WatchOthers(ctx)
	require.NoError(t, err)

	rec := record("prod", "checkout", "v2")
	key := LiveKey(rec.Rollout)
	rec.Baseline = map[string]rollout.Reading{"error-rate": {Status: rollout.StatusOK, Value: 0.004, Samples: 12000, Events: 48, Total: 12000}}
	rev, err := s.Put(ctx, key, rec, 0)
	require.NoError(t, err)
	first, _ := s.encodedBaseline(key)
	require.NotEmpty(t, first)

	rec.Sequence = 4
	rev, err = s.Put(ctx, key, rec, rev)
	require.NoError(t, err)
	again, _ := s.encodedBaseline(key)
	require.Same(t, &first[0], &again[0], "the same baseline map: its encoding reused")
	got, err := s.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, rec, got.Record)

	// A new revision, with a baseline of its own: never the old one's bytes.
	rec.Revision = "v3"
	rec.Baseline = map[string]rollout.Reading{"error-rate": {Status: rollout.StatusOK, Value: 0.02, Samples: 9000, Events: 180, Total: 9000}}
	rev, err = s.Put(ctx, key, rec, rev)
	require.NoError(t, err)
	got, err = s.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, rec, got.Record)

	// Another replica takes the rollout over: once its put is seen, the encoding is gone.
	rec.Owner = "r2"
	rev, err = other.Put(ctx, key, rec, rev)
	require.NoError(t, err)
	for u := range updates {
		if u.Key == key && u.Revision == rev {
			break
		}
	}
	_, held := s.encodedBaseline(key)
	require.False(t, held, "another replica's put forgets the encoding")

	// Put again by this one, then deleted.
	rec.Owner = "r1"
	rev, err = s.Put(ctx, key, rec, rev)
	require.NoError(t, err)
	_, held = s.encodedBaseline(key)
	require.True(t, held)
	require.NoError(t, s.Delete(ctx, key, rev))
	_, held = s.encodedBaseline(key)
	require.False(t, held, "a delete forgets the encoding")
}

// encodedBaseline is the encoding s holds for key's baseline, read under its lock: the
// watch forgets encodings on its own goroutine.
func (s *Store) encodedBaseline(key string) ([]byte, bool) {
	s.baseMu.Lock()
	defer s.baseMu.Unlock()
	e, ok := s.baselines[key]
	return e.json, ok
}

// TestLiveReadsEveryRecordInOrder: many records, decoded on several goroutines, come back
// whole and in the bucket's order; one that does not decode fails the listing by its key.
func TestLiveReadsEveryRecordInOrder(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	var want []Record
	for i := range 300 {
		rec := record("bench", fmt.Sprintf("svc-%d", i), "v1")
		rec.Sequence = uint64(i)
		rec.Baseline = map[string]rollout.Reading{"error-rate": {Status: rollout.StatusOK, Value: float64(i) / 1000}}
		_, err := s.Put(ctx, LiveKey(rec.Rollout), rec, 0)
		require.NoError(t, err)
		want = append(want, rec)
	}
	live, err := s.Live(ctx)
	require.NoError(t, err)
	require.Len(t, live, len(want))
	for i, e := range live {
		require.Equal(t, want[i], e.Record)
		require.Positive(t, e.Revision)
	}

	bad := LiveKey(rollout.Ref{Namespace: "bench", Name: "torn"})
	_, err = s.kv.Put(ctx, bad, []byte(`{"rollout":`))
	require.NoError(t, err)
	_, err = s.Live(ctx)
	require.ErrorContains(t, err, bad)
}
