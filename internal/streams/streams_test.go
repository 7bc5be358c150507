package streams

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/natstest"
)

func startServer(t *testing.T) *server.Server { return natstest.Start(t) }

func connect(t *testing.T, ns *server.Server) jetstream.JetStream {
	_, js := natstest.Connect(t, ns)
	return js
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEnsureCreatesMissingStreams(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := testContext(t)

	require.NoError(t, Ensure(ctx, js, Options{Prefix: "ro"}))

	want := map[string]struct {
		subject    string
		maxAge     time.Duration
		perSubject int64
	}{
		EventsStream:     {"ro.events.>", DefaultMaxAge, -1},
		VerdictsStream:   {"ro.verdicts.>", DefaultMaxAge, DefaultVerdictsMaxPerSubject},
		DeadLetterStream: {"ro.deadletter.events", DefaultMaxAge, -1},
	}
	for name, w := range want {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err, name)
		cfg := s.CachedInfo().Config
		require.Equal(t, []string{w.subject}, cfg.Subjects, name)
		require.Equal(t, jetstream.FileStorage, cfg.Storage, name)
		require.Equal(t, w.maxAge, cfg.MaxAge, name)
		require.Equal(t, w.perSubject, cfg.MaxMsgsPerSubject, name)
		require.Equal(t, DefaultDuplicateWindow, cfg.Duplicates, name)
		require.Equal(t, 1, cfg.Replicas, name)
	}

	// Idempotent.
	require.NoError(t, Ensure(ctx, js, Options{Prefix: "ro"}))
}

func TestEnsureKeepsOperatorTunedStream(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := testContext(t)

	tuned := jetstream.StreamConfig{
		Name:     EventsStream,
		Subjects: []string{"legacy.events", "rollouts.events.>"},
		Storage:  jetstream.MemoryStorage,
		MaxAge:   time.Hour,
	}
	_, err := js.CreateStream(ctx, tuned)
	require.NoError(t, err)

	require.NoError(t, Ensure(ctx, js, Options{MaxAge: 48 * time.Hour}))

	s, err := js.Stream(ctx, EventsStream)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	require.Equal(t, jetstream.MemoryStorage, cfg.Storage)
	require.Equal(t, time.Hour, cfg.MaxAge)
	require.Equal(t, tuned.Subjects, cfg.Subjects)
	require.ElementsMatch(t, []string{EventsStream, VerdictsStream, DeadLetterStream}, streamNames(ctx, t, js))
}

func TestEnsureRejectsStreamWithoutOurSubjects(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := testContext(t)

	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: VerdictsStream, Subjects: []string{"other.verdicts.>"}})
	require.NoError(t, err)

	err = Ensure(ctx, js, Options{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "stream ROLLOUT_VERDICTS exists but its subjects")
	require.Contains(t, err.Error(), `"rollouts.verdicts.>"`)

	// The stream was left alone.
	s, err := js.Stream(ctx, VerdictsStream)
	require.NoError(t, err)
	require.Equal(t, []string{"other.verdicts.>"}, s.CachedInfo().Config.Subjects)
}

func TestEnsureConcurrentReplicas(t *testing.T) {
	ns := startServer(t)
	ctx := testContext(t)

	const replicas = 8
	clients := make([]jetstream.JetStream, replicas)
	for i := range clients {
		clients[i] = connect(t, ns)
	}
	errs := make([]error, replicas)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, js := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Replicas configured slightly differently race to create the same streams:
			// everyone must succeed, whoever wins.
			errs[i] = Ensure(ctx, js, Options{MaxAge: time.Duration(i+1) * time.Hour, DuplicateWindow: time.Minute})
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "replica %d", i)
	}

	require.ElementsMatch(t, []string{EventsStream, VerdictsStream, DeadLetterStream}, streamNames(ctx, t, clients[0]))
}

func TestEnsureInvalidOptions(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := testContext(t)
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Prefix: "a.*"}, "prefix"},
		{Options{Prefix: "a..b"}, "empty token"},
		{Options{Replicas: 7}, "replicas"},
		{Options{VerdictsMaxPerSubject: -1}, "verdictsMaxPerSubject"},
		{Options{DuplicateWindow: -time.Second}, "duplicateWindow"},
		{Options{MaxAge: time.Minute}, "duplicateWindow: must not exceed"},
	} {
		err := Ensure(ctx, js, tc.opts)
		require.ErrorContains(t, err, tc.want, "%+v", tc.opts)
	}
	require.Empty(t, streamNames(ctx, t, js), "invalid options must create nothing")
}

func streamNames(ctx context.Context, t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	var names []string
	lister := js.StreamNames(ctx)
	for n := range lister.Name() {
		names = append(names, n)
	}
	require.NoError(t, lister.Err())
	return names
}

func TestSubsetMatch(t *testing.T) {
	for _, tc := range []struct {
		sub, super string
		want       bool
	}{
		{"rollouts.events.>", "rollouts.events.>", true},
		{"rollouts.events.>", "rollouts.>", true},
		{"rollouts.events.>", ">", true},
		{"rollouts.events.>", "*.events.>", true},
		{"rollouts.events.>", "rollouts.events.*", false},
		{"rollouts.events.>", "rollouts.events.*.*", false},
		{"rollouts.events.>", "rollouts.verdicts.>", false},
		{"rollouts.events.>", "rollouts.events", false},
		{"rollouts.deadletter.events", "rollouts.deadletter.events", true},
		{"rollouts.deadletter.events", "rollouts.deadletter.*", true},
		{"rollouts.deadletter.events", "rollouts.*.events", true},
		{"rollouts.deadletter.events", "rollouts.deadletter.events.>", false},
		{"rollouts.deadletter.events", "rollouts.deadletter", false},
	} {
		require.Equal(t, tc.want, subsetMatch(tc.sub, tc.super), "%s within %s", tc.sub, tc.super)
	}
}
