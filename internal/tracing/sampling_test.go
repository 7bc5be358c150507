package tracing

import (
	"context"
	"encoding/binary"
	"runtime/debug"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/analyzerd/analyzerd/internal/otlptest"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestHeadSamplerFromTheEnvironment(t *testing.T) {
	for _, tc := range []struct {
		sampler, arg string
		want         string // the sampler's Description
		from         string
	}{
		{"", "", "ParentBased{root:TraceIDRatioBased{0.25},remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}", "tracing.sampleRatio"},
		{"always_on", "", "AlwaysOnSampler", "OTEL_TRACES_SAMPLER=always_on"},
		{"ALWAYS_OFF", "0.5", "AlwaysOffSampler", "OTEL_TRACES_SAMPLER=always_off"},
		{"traceidratio", "0.5", "TraceIDRatioBased{0.5}", "OTEL_TRACES_SAMPLER=traceidratio 0.5"},
		{"traceidratio", "", "TraceIDRatioBased{1}", "OTEL_TRACES_SAMPLER=traceidratio"},
		{"parentbased_always_on", "", "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}", "OTEL_TRACES_SAMPLER=parentbased_always_on"},
		{"parentbased_always_off", "", "ParentBased{root:AlwaysOffSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}", "OTEL_TRACES_SAMPLER=parentbased_always_off"},
		{" parentbased_traceidratio ", " 0.125 ", "ParentBased{root:TraceIDRatioBased{0.125},remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}", "OTEL_TRACES_SAMPLER=parentbased_traceidratio 0.125"},
	} {
		s, err := headSampler(0.25, env(map[string]string{envSampler: tc.sampler, envSamplerArg: tc.arg}))
		require.NoError(t, err, tc.sampler)
		require.Equal(t, tc.want, s.Sampler.Description(), tc.sampler)
		require.Equal(t, tc.from, s.From, tc.sampler)
	}
	for _, bad := range []map[string]string{
		{envSampler: "jaeger_remote"},
		{envSampler: "xray"},
		{envSampler: "traceidratio", envSamplerArg: "half"},
		{envSampler: "traceidratio", envSamplerArg: "1.5"},
		{envSampler: "parentbased_traceidratio", envSamplerArg: "-0.1"},
		{envSampler: "parentbased_traceidratio", envSamplerArg: "NaN"},
	} {
		_, err := headSampler(1, env(bad))
		require.Error(t, err, "%v", bad)
		require.Contains(t, err.Error(), "OTEL_TRACES_SAMPLER", "the error names the variable")
	}
}

// TestTheEnvironmentsSamplerWinsOverTheFile: OTEL_TRACES_SAMPLER=always_off keeps every
// trace out of the export, tracing.sampleRatio 1 notwithstanding, and New refuses a bad one.
func TestTheEnvironmentsSamplerWinsOverTheFile(t *testing.T) {
	clearEnv(t)
	r := otlptest.StartHTTP(t)
	t.Setenv(envSampler, "always_off")
	sc, export := emit(t, Options{Endpoint: r.URL, SampleRatio: 1, RepeatSampleRatio: 1}, "evaluate")
	require.Equal(t, "OTEL_TRACES_SAMPLER=always_off", export.Sampler)
	require.True(t, sc.TraceID().IsValid(), "verdicts still get a trace id")
	require.False(t, sc.IsSampled())
	require.Empty(t, r.Spans())

	t.Setenv(envSampler, "traceidratio")
	t.Setenv(envSamplerArg, "2")
	_, _, err := New(context.Background(), Options{Endpoint: r.URL, SampleRatio: 1})
	require.ErrorContains(t, err, "OTEL_TRACES_SAMPLER_ARG")
}

// TestTheResourceHasTheVersionWithoutExportToo: the in-process provider's spans carry
// service.name and service.version as the exported ones do.
func TestTheResourceHasTheVersionWithoutExportToo(t *testing.T) {
	clearEnv(t)
	tp, _, err := New(context.Background(), Options{SampleRatio: 1, ServiceVersion: "v1.2.3"})
	require.NoError(t, err)
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	rec := tracetest.NewSpanRecorder()
	tp.RegisterSpanProcessor(rec)
	_, span := tp.Tracer("test").Start(context.Background(), "evaluate")
	span.End()
	require.Len(t, rec.Ended(), 1)
	got := map[string]string{}
	for _, kv := range rec.Ended()[0].Resource().Attributes() {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	require.Equal(t, "v1.2.3", got["service.version"])
	require.Equal(t, ServiceName, got["service.name"])
}

func TestVersionOf(t *testing.T) {
	require.Equal(t, "v0.4.0", Version("v0.4.0"), "a stamped version is used as it is")
	for _, tc := range []struct {
		info debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "b60f0fa0123456789abcdef"}, {Key: "vcs.modified", Value: "false"},
		}}, "dev-b60f0fa01234"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "b60f0fa"}, {Key: "vcs.modified", Value: "true"},
		}}, "dev-b60f0fa-dirty"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
	} {
		require.Equal(t, tc.want, versionOf(&tc.info))
	}
}

// TestKeepRepeatIsTheTraceIDRatioRule pins KeepRepeat to trace ids: the decision rests on the
// id's last 8 bytes, as traceidratio's does, so that it is the same on every run and replica.
func TestKeepRepeatIsTheTraceIDRatioRule(t *testing.T) {
	id := func(low uint64) trace.TraceID {
		var t trace.TraceID
		t[0] = 0xab
		binary.BigEndian.PutUint64(t[8:], low)
		return t
	}
	low, high := id(0), id(^uint64(0))
	require.True(t, KeepRepeat(low, 0.01))
	require.False(t, KeepRepeat(low, 0))
	require.False(t, KeepRepeat(high, 0.99))
	require.True(t, KeepRepeat(high, 1))
	// The middle of the range: kept at a ratio above a half, dropped below.
	mid := id(1 << 63)
	require.True(t, KeepRepeat(mid, 0.51))
	require.False(t, KeepRepeat(mid, 0.49))
}

// sequentialIDs gives trace ids whose last 8 bytes spread evenly over the range, so that a
// ratio's outcome is known in advance.
type sequentialIDs struct {
	mu   sync.Mutex
	n    uint64
	step uint64
}

func (g *sequentialIDs) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[:8], g.n) // unique
	binary.BigEndian.PutUint64(tid[8:], g.n*g.step)
	return tid, g.newSpanID()
}

func (g *sequentialIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.newSpanID()
}

func (g *sequentialIDs) newSpanID() trace.SpanID {
	g.n++
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], g.n)
	return sid
}

// evaluation records what the analyzer and the publisher record for one evaluation: the
// root "evaluate" with a "query" and a "create" child, the root marked with class before it
// ends, then the publication's own trace, linked to the creation context.
func evaluation(tr trace.Tracer, class string) (evaluate, publish trace.TraceID) {
	ctx, root := tr.Start(context.Background(), "evaluate")
	_, q := tr.Start(ctx, "query")
	q.End()
	_, c := tr.Start(ctx, "create")
	c.End()
	if class != "" {
		root.SetAttributes(SamplingKey.String(class))
	}
	root.End()
	_, p := tr.Start(context.Background(), "publish", trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: c.SpanContext()}))
	p.End()
	return root.SpanContext().TraceID(), p.SpanContext().TraceID()
}

func exportedTraces(rec *tracetest.SpanRecorder) map[trace.TraceID][]string {
	out := map[trace.TraceID][]string{}
	for _, s := range rec.Ended() {
		out[s.SpanContext().TraceID()] = append(out[s.SpanContext().TraceID()], s.Name())
	}
	return out
}

// TestRepeatFilterThinsRepeatsAndKeepsEverythingElse runs the filter in a real SDK provider in
// front of a recorder: of a sequence of evaluations, every one marked first, step, change or
// rollback (or not marked) is exported whole with its publication, and the repeats are
// exported whole or not at all, as KeepRepeat says: none at ratio 0, all at ratio 1.
func TestRepeatFilterThinsRepeatsAndKeepsEverythingElse(t *testing.T) {
	classes := []string{SampleFirst}
	for i := 0; i < 40; i++ {
		classes = append(classes, SampleRepeat)
	}
	classes = append(classes, SampleChange, SampleRepeat, SampleRepeat, SampleStep, SampleRepeat, SampleRollback, "")

	for _, ratio := range []float64{0, 0.25, 1} {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithIDGenerator(&sequentialIDs{step: 1 << 57}), // 64 steps over the range, wrapping
			sdktrace.WithSpanProcessor(newRepeatFilter(rec, ratio)),
		)
		tr := tp.Tracer("test")
		type run struct {
			class             string
			evaluate, publish trace.TraceID
		}
		var runs []run
		for _, c := range classes {
			e, p := evaluation(tr, c)
			runs = append(runs, run{c, e, p})
		}
		require.NoError(t, tp.Shutdown(context.Background()))

		got := exportedTraces(rec)
		repeats, keptRepeats := 0, 0
		for _, r := range runs {
			want := r.class != SampleRepeat || KeepRepeat(r.evaluate, ratio)
			if r.class == SampleRepeat {
				repeats++
				if want {
					keptRepeats++
				}
			}
			if want {
				require.ElementsMatch(t, []string{"query", "create", "evaluate"}, got[r.evaluate], "ratio %v, %q: the whole trace", ratio, r.class)
				require.Equal(t, []string{"publish"}, got[r.publish], "ratio %v, %q: its publication", ratio, r.class)
			} else {
				require.Empty(t, got[r.evaluate], "ratio %v: a dropped repeat leaves no span", ratio)
				require.Empty(t, got[r.publish], "ratio %v: nor does its publication", ratio)
			}
		}
		switch ratio {
		case 0:
			require.Zero(t, keptRepeats)
			require.Len(t, got, 2*(len(classes)-repeats), "only the first, the change, the step, the rollback and the unmarked one")
		case 1:
			require.Equal(t, repeats, keptRepeats)
			require.Len(t, got, 2*len(classes))
		default:
			require.Greater(t, keptRepeats, 0)
			require.Less(t, keptRepeats, repeats)
		}
	}
}

// TestRepeatFilterFollowsTheDecisionLate: a span that ends after its trace's root follows the
// trace's decision; a span of a trace whose root is elsewhere (a remote parent) is exported.
func TestRepeatFilterFollowsTheDecisionLate(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(newRepeatFilter(rec, 0)))
	tr := tp.Tracer("test")

	ctx, dropped := tr.Start(context.Background(), "evaluate")
	_, late := tr.Start(ctx, "late")
	dropped.SetAttributes(SamplingKey.String(SampleRepeat))
	dropped.End()
	late.End()

	ctx, kept := tr.Start(context.Background(), "evaluate")
	_, lateKept := tr.Start(ctx, "late")
	kept.SetAttributes(SamplingKey.String(SampleChange))
	kept.End()
	lateKept.End()

	remote := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{9}, SpanID: trace.SpanID{9}, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
	_, child := tr.Start(remote, "child of a remote parent")
	child.End()
	require.NoError(t, tp.Shutdown(context.Background()))

	got := exportedTraces(rec)
	require.Empty(t, got[dropped.SpanContext().TraceID()])
	require.ElementsMatch(t, []string{"evaluate", "late"}, got[kept.SpanContext().TraceID()])
	require.Equal(t, []string{"child of a remote parent"}, got[trace.TraceID{9}])
}

// TestRepeatFilterReleasesHeldSpansAtShutdown: the children of a root still open when the
// provider shuts down are exported, as they would be without the filter.
func TestRepeatFilterReleasesHeldSpansAtShutdown(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(newRepeatFilter(rec, 0)))
	ctx, root := tp.Tracer("test").Start(context.Background(), "evaluate")
	_, child := tp.Tracer("test").Start(ctx, "query")
	child.End()
	require.Empty(t, rec.Ended(), "held while its root is open")
	require.NoError(t, tp.Shutdown(context.Background()))
	require.Len(t, rec.Ended(), 1)
	require.Equal(t, "query", rec.Ended()[0].Name())
	root.End()
}

// TestThePublicationFollowsItsCreation: the root span of a message's sending that links to
// the message's creation context is sampled as that context was, whatever the head sampler
// says of its own trace id; every other root span is the head sampler's.
func TestThePublicationFollowsItsCreation(t *testing.T) {
	clearEnv(t)
	tp, _, err := New(context.Background(), Options{SampleRatio: 0})
	require.NoError(t, err)
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	tr := tp.Tracer("test")
	created := func(flags trace.TraceFlags) trace.Link {
		return trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: flags, Remote: true,
		})}
	}
	send := trace.WithAttributes(semconv.MessagingOperationTypeSend)
	for _, tc := range []struct {
		name    string
		opts    []trace.SpanStartOption
		sampled bool
	}{
		{"a sending linked to a sampled creation", []trace.SpanStartOption{send, trace.WithLinks(created(trace.FlagsSampled))}, true},
		{"a sending linked to a creation not sampled", []trace.SpanStartOption{send, trace.WithLinks(created(0))}, false},
		{"a sending without a link", []trace.SpanStartOption{send}, false},
		{"another span linked to a sampled context", []trace.SpanStartOption{trace.WithLinks(created(trace.FlagsSampled))}, false},
	} {
		_, span := tr.Start(context.Background(), "publish", append(tc.opts, trace.WithNewRoot())...)
		require.Equal(t, tc.sampled, span.SpanContext().IsSampled(), tc.name)
		span.End()
	}
}
