package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/analyzerd/analyzerd/internal/ingest"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Content types of the two CloudEvents HTTP content modes.
const (
	structuredContentType = "application/cloudevents+json"
	jsonContentType       = "application/json"
)

// events answers POST /v1/events: one of the contract's four events, in CloudEvents'
// structured mode (Content-Type application/cloudevents+json, the body is the event) or binary
// mode (ce-specversion, ce-id, ce-source, ce-type and optional ce-time headers, the body is the
// data as application/json). It is validated as an event from NATS is, and stored on the
// ROLLOUT_EVENTS stream with Nats-Msg-Id set to its id: 202 once stored; 400 (413 when too
// large) with the reason a dead letter would carry; 415 for another content type; 401/403
// without the token; 503 when it cannot be stored.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r, "") {
		return
	}
	// One byte more than the limit, so that Decode reports a body over it as too large.
	raw, err := io.ReadAll(io.LimitReader(r.Body, int64(s.opts.MaxEventBytes)+1))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "reading the body: " + err.Error()})
		return
	}
	header := nats.Header{}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := r.Header.Get(k); v != "" {
			header.Set(k, v)
		}
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case mt == structuredContentType:
		header.Set("Content-Type", structuredContentType)
	case r.Header.Get("ce-specversion") != "":
		if mt != jsonContentType {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "binary-mode CloudEvents: the data must be " + jsonContentType})
			return
		}
		if raw, err = structured(r.Header, raw); err != nil {
			writeInvalid(w, err)
			return
		}
	default:
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "Content-Type must be " + structuredContentType +
			" (structured mode) or, with ce-* headers, " + jsonContentType + " (binary mode)"})
		return
	}
	ev, err := ingest.Decode(raw, header, s.opts.Now(), s.opts.MaxEventBytes)
	if err == nil {
		err = s.checkTemplate(ev)
	}
	if err != nil {
		writeInvalid(w, err)
		return
	}
	if !s.publish(w, r, ev) {
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": ev.ID, "type": ev.Type, "rollout": ev.Rollout, "revision": ev.Revision})
}

// structured turns a binary-mode event (attributes in ce-* headers, data in the body) into
// the structured-mode event it stands for.
func structured(h http.Header, data []byte) ([]byte, error) {
	if !json.Valid(data) {
		return nil, rollout.Invalidf("data: not valid JSON")
	}
	env := map[string]any{"datacontenttype": jsonContentType, "data": json.RawMessage(data)}
	for k, v := range h {
		name, ok := strings.CutPrefix(strings.ToLower(k), "ce-")
		if !ok || len(v) == 0 || name == "" {
			continue
		}
		env[name] = v[0]
	}
	out, err := json.Marshal(env)
	if err != nil {
		return nil, errors.Join(rollout.ErrInvalid, err)
	}
	return out, nil
}
