// Package history reads verdicts back from the verdict stream (ROLLOUT_VERDICTS), on request:
// one rollout's verdicts in the order they were published, and the latest verdict of every
// rollout. It stores nothing and keeps no consumer: each read is an ordered consumer that
// reads up to the stream's last message for its subjects and is forgotten, so every replica
// answers the same from the same stream.
package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

// Defaults of Options.
const (
	DefaultMaxVerdicts = 2000
	DefaultMaxRollouts = 1000
)

// ErrUnavailable is wrapped by every error of a read: the verdict stream could not be read
// (NATS not connected, the stream missing or not answering).
var ErrUnavailable = errors.New("verdict stream unavailable")

// Options configure a Reader.
type Options struct {
	// Prefix is the subject prefix P (streams.DefaultPrefix when empty).
	Prefix string
	// MaxVerdicts bounds what Rollout returns: the newest MaxVerdicts verdicts of a rollout
	// (DefaultMaxVerdicts when zero). What a read costs is bounded by the stream's own limit
	// of verdicts per rollout (streams.DefaultVerdictsMaxPerSubject).
	MaxVerdicts int
	// MaxRollouts bounds what Latest returns (DefaultMaxRollouts when zero).
	MaxRollouts int
}

// Reader reads the verdict stream.
type Reader struct {
	js   jetstream.JetStream
	opts Options
}

// New returns a Reader of the verdict stream on js.
func New(js jetstream.JetStream, opts Options) *Reader {
	if opts.Prefix == "" {
		opts.Prefix = streams.DefaultPrefix
	}
	if opts.MaxVerdicts <= 0 {
		opts.MaxVerdicts = DefaultMaxVerdicts
	}
	if opts.MaxRollouts <= 0 {
		opts.MaxRollouts = DefaultMaxRollouts
	}
	return &Reader{js: js, opts: opts}
}

// fetchWait bounds each wait for the next batch of messages; a read as a whole is bounded by
// its context.
const fetchWait = 2 * time.Second

// Rollout returns the verdicts the stream holds for ref, oldest first: the newest
// MaxVerdicts of them, and how many older ones were left out. None (and no error) when the
// stream holds no verdict of ref.
func (r *Reader) Rollout(ctx context.Context, ref rollout.Ref) (verdicts []rollout.Verdict, leftOut int, err error) {
	s, err := r.js.Stream(ctx, streams.VerdictsStream)
	if err != nil {
		return nil, 0, unavailable(err)
	}
	subject := rollout.VerdictsSubject(r.opts.Prefix, ref)
	last, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, unavailable(fmt.Errorf("last verdict of %s: %w", ref, err))
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{subject},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return nil, 0, unavailable(fmt.Errorf("verdict consumer: %w", err))
	}
	max := r.opts.MaxVerdicts
	err = read(ctx, cons, func(m jetstream.Msg, md *jetstream.MsgMetadata) bool {
		// The subject token is a routing hint: another rollout may share it.
		if v, ok := decode(m.Data()); ok && v.Rollout == ref {
			verdicts = append(verdicts, v)
			if len(verdicts) >= 2*max {
				leftOut += len(verdicts) - max
				verdicts = append(verdicts[:0:0], verdicts[len(verdicts)-max:]...)
			}
		}
		return md.Sequence.Stream < last.Sequence && md.NumPending > 0
	})
	if err != nil {
		return nil, 0, err
	}
	if len(verdicts) > max {
		leftOut += len(verdicts) - max
		verdicts = verdicts[len(verdicts)-max:]
	}
	return verdicts, leftOut, nil
}

// Latest returns the latest verdict of each rollout the stream holds verdicts of, in the
// stream's order, at most MaxRollouts of them; truncated says some were left out.
func (r *Reader) Latest(ctx context.Context) (verdicts []rollout.Verdict, truncated bool, err error) {
	s, err := r.js.Stream(ctx, streams.VerdictsStream)
	if err != nil {
		return nil, false, unavailable(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{r.opts.Prefix + ".verdicts.>"},
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return nil, false, unavailable(fmt.Errorf("verdict consumer: %w", err))
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		return nil, false, nil
	}
	err = read(ctx, cons, func(m jetstream.Msg, md *jetstream.MsgMetadata) bool {
		if v, ok := decode(m.Data()); ok {
			if len(verdicts) == r.opts.MaxRollouts {
				truncated = true
				return false
			}
			verdicts = append(verdicts, v)
		}
		return md.NumPending > 0
	})
	return verdicts, truncated, err
}

// read fetches cons's messages in batches and hands each to fn until fn returns false.
func read(ctx context.Context, cons jetstream.Consumer, fn func(jetstream.Msg, *jetstream.MsgMetadata) bool) error {
	for {
		if err := ctx.Err(); err != nil {
			return unavailable(fmt.Errorf("reading verdicts: %w", err))
		}
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return unavailable(fmt.Errorf("reading verdicts: %w", err))
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if !fn(m, md) {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return unavailable(fmt.Errorf("reading verdicts: %w", err))
		}
		if n == 0 {
			// Nothing came within fetchWait: what fn waited for is gone (aged out of the
			// stream since it was looked up).
			return nil
		}
	}
}

// decode reads a verdict event's data; ok is false for a message that is not one.
func decode(data []byte) (rollout.Verdict, bool) {
	var env struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(data, &env); err != nil || env.Type != string(rollout.EventVerdict) {
		return rollout.Verdict{}, false
	}
	var v rollout.Verdict
	if err := json.Unmarshal(env.Data, &v); err != nil {
		return rollout.Verdict{}, false
	}
	return v, true
}

func unavailable(err error) error { return fmt.Errorf("%w: %w", ErrUnavailable, err) }
