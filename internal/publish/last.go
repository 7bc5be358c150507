package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

// LastPublished reads the last verdict the verdict stream holds for a rollout: its revision
// and sequence, ok false when the stream holds none.
func LastPublished(ctx context.Context, js jetstream.JetStream, prefix string, ref rollout.Ref) (revision string, sequence uint64, ok bool, err error) {
	s, err := js.Stream(ctx, streams.VerdictsStream)
	if err != nil {
		return "", 0, false, fmt.Errorf("verdict stream: %w", err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, rollout.VerdictsSubject(prefix, ref))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, fmt.Errorf("last verdict of %s: %w", ref, err)
	}
	var env struct {
		Data struct {
			Rollout  rollout.Ref `json:"rollout"`
			Revision string      `json:"revision"`
			Sequence uint64      `json:"sequence"`
		} `json:"data"`
	}
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		return "", 0, false, fmt.Errorf("last verdict of %s: %w", ref, err)
	}
	if env.Data.Rollout != ref {
		// Another rollout whose subject token is the same (tokens replace characters):
		// nothing is known of this one.
		return "", 0, false, nil
	}
	return env.Data.Revision, env.Data.Sequence, true, nil
}
