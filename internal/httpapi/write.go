package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/ingest"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// EventPublisher stores a rollout event durably (on the ROLLOUT_EVENTS stream) and returns
// once it is stored; *ingest.Publisher is the implementation.
type EventPublisher interface {
	Publish(ctx context.Context, ev rollout.Event) error
}

// Positions says where each live analysis stands, judged or not; *analyzer.Analyzer is one.
type Positions interface {
	Position(ref rollout.Ref) (rollout.Position, bool)
}

// ErrNotConnected is what an EventPublisher returns before it can reach NATS: the write
// endpoints then answer 503.
var ErrNotConnected = errors.New("not connected to NATS yet")

// publishTimeout bounds storing the events of one call.
const publishTimeout = 10 * time.Second

// authorize answers the request itself, and returns false, unless it may write events: it
// carries the configured token (Authorization: Bearer, or alt for callers that cannot set
// headers), or no token is configured and unauthenticated writes are allowed. Tokens are
// compared in constant time, over their hashes so that not even their length leaks.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, alt string) bool {
	if s.opts.WriteToken == "" {
		if s.opts.AllowUnauthenticatedWrites {
			return true
		}
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "writing events over HTTP is disabled: " +
			"configure a token (http.writeTokenFile or ANALYZERD_HTTP_WRITE_TOKEN), or set http.allowUnauthenticatedWrites"})
		return false
	}
	got := alt
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, _ := strings.Cut(h, " ")
		if strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(token)
		}
	}
	want := sha256.Sum256([]byte(s.opts.WriteToken))
	have := sha256.Sum256([]byte(got))
	if got == "" || subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="analyzerd"`)
		msg := "a bearer token is required: Authorization: Bearer <token>"
		if got != "" {
			msg = "the bearer token is not the configured one"
		}
		s.opts.Logger.Info("write refused: bad or missing token", zap.String("path", r.URL.Path), zap.Bool("tokenGiven", got != ""))
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": msg})
		return false
	}
	return true
}

// publish stores events in order, answering the request itself and returning false when one
// could not be stored.
func (s *Server) publish(w http.ResponseWriter, r *http.Request, evs ...rollout.Event) bool {
	if s.opts.Events == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "this server does not store events"})
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), publishTimeout)
	defer cancel()
	for _, ev := range evs {
		if err := s.opts.Events.Publish(ctx, ev); err != nil {
			s.opts.Logger.Warn("event not stored", zap.String("rollout", ev.Rollout.String()), zap.String("event", string(ev.Type)),
				zap.String("eventId", ev.ID), zap.Error(err))
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the event could not be stored; try again: " + err.Error()})
			return false
		}
		s.opts.Logger.Info("event stored", zap.String("rollout", ev.Rollout.String()), zap.String("revision", ev.Revision),
			zap.String("event", string(ev.Type)), zap.String("eventId", ev.ID), zap.Int("step", ev.Step), zap.Int("weight", ev.Weight))
	}
	return true
}

// derivedID is the CloudEvents id, and so the Nats-Msg-Id, of an event a controller's call
// stands for: a hash of what the event says, so that a retried call publishes the same id
// and is dropped as a duplicate.
func derivedID(via string, ref rollout.Ref, revision string, typ rollout.EventType, step, weight int) string {
	h := sha256.New()
	for _, part := range []string{via, ref.Namespace, ref.Name, revision, string(typ), strconv.Itoa(step), strconv.Itoa(weight)} {
		_, _ = io.WriteString(h, part)
		_, _ = h.Write([]byte{0})
	}
	return via + "-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// decodeStart validates the data of a rollout.started event exactly as an event from NATS is
// validated (ingest.Decode), and checks it against the named template as the analyzer does.
func (s *Server) decodeStart(source string, data map[string]json.RawMessage) (rollout.Event, error) {
	env, err := json.Marshal(map[string]any{
		"specversion": "1.0", "id": "pending", "source": source, "type": rollout.EventStarted,
		"time": s.opts.Now().UTC().Format(time.RFC3339Nano), "data": data,
	})
	if err != nil {
		return rollout.Event{}, fmt.Errorf("encode: %w", err)
	}
	ev, err := ingest.Decode(env, nats.Header{}, s.opts.Now(), s.opts.MaxEventBytes)
	if err != nil {
		return rollout.Event{}, err
	}
	return ev, s.checkTemplate(ev)
}

// checkTemplate refuses a start naming no template, or lacking what its template needs.
func (s *Server) checkTemplate(ev rollout.Event) error {
	if ev.Type != rollout.EventStarted {
		return nil
	}
	t, ok := s.opts.Templates[ev.Analysis]
	if !ok {
		return rollout.ErrUnknownTemplate(ev.Analysis)
	}
	return t.CheckStart(ev)
}

// writeInvalid answers an event that can never be stored: 413 when too large, else 400, with
// the reason a dead letter would carry.
func writeInvalid(w http.ResponseWriter, err error) {
	reason, _ := ingest.RejectReason(err)
	if reason == "" {
		reason = "invalid_data"
	}
	status := http.StatusBadRequest
	if reason == "too_large" {
		status = http.StatusRequestEntityTooLarge
	}
	writeJSON(w, status, map[string]string{"error": err.Error(), "reason": reason})
}

// readObject reads a JSON object body of at most limit bytes.
func readObject(w http.ResponseWriter, r *http.Request, limit int64, what string) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit)).Decode(&m); err != nil || m == nil {
		msg := "null"
		if err != nil {
			msg = decodeError(err)
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the body is not " + what + ": " + msg, "reason": "malformed"})
		return nil, false
	}
	return m, true
}
