// Package streams creates the JetStream streams of CONTRACT.md section 1 when they are
// missing, and checks that existing ones carry analyzerd's subjects.
package streams

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The names of analyzerd's streams.
const (
	EventsStream     = "ROLLOUT_EVENTS"
	VerdictsStream   = "ROLLOUT_VERDICTS"
	DeadLetterStream = "ROLLOUT_DEADLETTER"
)

// Defaults of Options.
const (
	DefaultPrefix                = "rollouts"
	DefaultReplicas              = 1
	DefaultMaxAge                = 7 * 24 * time.Hour
	DefaultVerdictsMaxPerSubject = 1000
	DefaultDuplicateWindow       = 2 * time.Minute
)

// Options configures the streams Ensure creates. They apply only to streams it creates: an
// existing stream is never changed.
type Options struct {
	// Prefix is the subject prefix P (DefaultPrefix when empty).
	Prefix string
	// Replicas is the number of copies of each stream (1 for one server, 3 on a cluster).
	Replicas int
	// MaxAge is how long events and dead letters are kept.
	MaxAge time.Duration
	// VerdictsMaxAge is how long verdicts are kept.
	VerdictsMaxAge time.Duration
	// VerdictsMaxPerSubject is how many verdicts are kept per rollout.
	VerdictsMaxPerSubject int64
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values to drop duplicates.
	DuplicateWindow time.Duration
}

// WithDefaults returns o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Replicas == 0 {
		o.Replicas = DefaultReplicas
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.VerdictsMaxAge == 0 {
		o.VerdictsMaxAge = DefaultMaxAge
	}
	if o.VerdictsMaxPerSubject == 0 {
		o.VerdictsMaxPerSubject = DefaultVerdictsMaxPerSubject
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	return o
}

// Validate reports the first problem with o (after WithDefaults).
func (o Options) Validate() error {
	if err := ValidatePrefix(o.Prefix); err != nil {
		return err
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return fmt.Errorf("replicas: must be within 1-5, got %d", o.Replicas)
	}
	if o.MaxAge < 0 {
		return fmt.Errorf("maxAge: must not be negative, got %s", o.MaxAge)
	}
	if o.VerdictsMaxAge < 0 {
		return fmt.Errorf("verdictsMaxAge: must not be negative, got %s", o.VerdictsMaxAge)
	}
	if o.VerdictsMaxPerSubject < 1 {
		return fmt.Errorf("verdictsMaxPerSubject: must be at least 1, got %d", o.VerdictsMaxPerSubject)
	}
	if o.DuplicateWindow <= 0 {
		return fmt.Errorf("duplicateWindow: must be positive, got %s", o.DuplicateWindow)
	}
	if o.DuplicateWindow > o.MaxAge || o.DuplicateWindow > o.VerdictsMaxAge {
		return fmt.Errorf("duplicateWindow: must not exceed maxAge or verdictsMaxAge, got %s", o.DuplicateWindow)
	}
	return nil
}

// ValidatePrefix reports whether prefix can start analyzerd's subjects: one or more
// dot-separated tokens, none empty, without wildcards or whitespace.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return errors.New("prefix: must not be empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return fmt.Errorf("prefix: %q has an empty token", prefix)
		}
		if strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("prefix: %q must not contain wildcards or whitespace", prefix)
		}
	}
	return nil
}

// Configs returns the configurations Ensure creates missing streams with.
func Configs(opts Options) []jetstream.StreamConfig {
	p := opts.Prefix
	return []jetstream.StreamConfig{
		{
			Name:        EventsStream,
			Description: "analyzerd: rollout events from controllers",
			Subjects:    []string{p + ".events.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      opts.MaxAge,
			Replicas:    opts.Replicas,
			Duplicates:  opts.DuplicateWindow,
		},
		{
			Name:              VerdictsStream,
			Description:       "analyzerd: verdicts for controllers",
			Subjects:          []string{p + ".verdicts.>"},
			Storage:           jetstream.FileStorage,
			Retention:         jetstream.LimitsPolicy,
			Discard:           jetstream.DiscardOld,
			MaxAge:            opts.VerdictsMaxAge,
			MaxMsgsPerSubject: opts.VerdictsMaxPerSubject,
			Replicas:          opts.Replicas,
			Duplicates:        opts.DuplicateWindow,
		},
		{
			Name:        DeadLetterStream,
			Description: "analyzerd: rejected events, with the reason",
			Subjects:    []string{p + ".deadletter.events"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      opts.MaxAge,
			Replicas:    opts.Replicas,
			Duplicates:  opts.DuplicateWindow,
		},
	}
}

// Ensure creates each of analyzerd's streams that is missing. An existing stream is never
// changed, so an operator's tuning stays; but one that does not carry the subjects analyzerd
// uses is an error naming it. Ensure is idempotent and safe to call from several replicas at
// once.
func Ensure(ctx context.Context, js jetstream.JetStream, opts Options) error {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("stream options: %w", err)
	}
	for _, cfg := range Configs(opts) {
		if err := ensure(ctx, js, cfg); err != nil {
			return err
		}
	}
	return nil
}

func ensure(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another replica created it (with its own options) between our look-up and
			// our create: use theirs.
			s, err = js.Stream(ctx, cfg.Name)
		}
		if err != nil {
			return fmt.Errorf("creating stream %s: %w", cfg.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("looking up stream %s: %w", cfg.Name, err)
	}
	have := s.CachedInfo().Config.Subjects
	for _, want := range cfg.Subjects {
		if !covered(want, have) {
			return fmt.Errorf("stream %s exists but its subjects %q do not cover %q: add it or delete the stream so analyzerd recreates it",
				cfg.Name, have, want)
		}
	}
	return nil
}

// covered reports whether every subject matching the filter want matches one of subjects.
func covered(want string, subjects []string) bool {
	for _, s := range subjects {
		if subsetMatch(want, s) {
			return true
		}
	}
	return false
}

// subsetMatch reports whether every subject matching the filter sub also matches the filter
// super.
func subsetMatch(sub, super string) bool {
	st, pt := strings.Split(sub, "."), strings.Split(super, ".")
	for i, p := range pt {
		if i >= len(st) {
			return false
		}
		switch p {
		case ">":
			return true
		case "*":
			if st[i] == ">" {
				return false
			}
		default:
			if st[i] != p {
				return false
			}
		}
	}
	return len(st) == len(pt)
}

// Check reports whether analyzerd's three streams exist and answer: nil when they do, else an
// error naming each one that does not (for /readyz).
func Check(ctx context.Context, js jetstream.JetStream) error {
	var errs []error
	for _, name := range []string{EventsStream, VerdictsStream, DeadLetterStream} {
		if _, err := js.Stream(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
