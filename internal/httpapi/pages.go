package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/ui"
)

// History reads verdicts back from the verdict stream, for the rollout pages and
// GET /v1/rollouts/{namespace}/{name}/history. An error means the stream could not be read.
type History interface {
	// Rollout returns ref's verdicts, oldest first, and how many older ones were left out.
	Rollout(ctx context.Context, ref rollout.Ref) ([]rollout.Verdict, int, error)
	// Latest returns the latest verdict of every rollout on the stream, and whether some
	// were left out.
	Latest(ctx context.Context) ([]rollout.Verdict, bool, error)
}

// DefaultRecentWindow is how long an ended rollout stays on the list page.
const DefaultRecentWindow = 24 * time.Hour

// historyTimeout bounds a read of the verdict stream for one request.
const historyTimeout = 10 * time.Second

// pageHeaders are set on every page: HTML that loads nothing and runs nothing.
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (s *Server) writePage(w http.ResponseWriter, status int, render func(*bytes.Buffer) error) {
	var b bytes.Buffer
	if err := render(&b); err != nil {
		s.opts.Logger.Error("render page", zap.Error(err))
		http.Error(w, "cannot render the page", http.StatusInternalServerError)
		return
	}
	pageHeaders(w)
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// readHistory reads ref's history: ok false when the stream holds no verdict of it and it
// is not under analysis.
func (s *Server) readHistory(r *http.Request, ref rollout.Ref) (h ui.History, ok bool, err error) {
	if s.opts.History == nil {
		return ui.History{}, false, fmt.Errorf("no verdict stream to read")
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyTimeout)
	defer cancel()
	verdicts, leftOut, err := s.opts.History.Rollout(ctx, ref)
	if err != nil {
		return ui.History{}, false, err
	}
	_, live := s.opts.Verdicts.Latest(ref)
	if len(verdicts) == 0 && !live {
		return ui.History{}, false, nil
	}
	h = ui.NewHistory(ref, verdicts)
	h.Live, h.LeftOut = live, leftOut
	return h, true, nil
}

// rolloutPage serves /ui/rollouts/{namespace}/{name}: the rollout's history.
func (s *Server) rolloutPage(w http.ResponseWriter, r *http.Request) {
	ref := rollout.Ref{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	h, ok, err := s.readHistory(r, ref)
	switch {
	case err != nil:
		s.opts.Logger.Warn("verdict history unavailable", zap.String("rollout", ref.String()), zap.Error(err))
		s.writePage(w, http.StatusServiceUnavailable, func(b *bytes.Buffer) error { return ui.Unavailable(b, err.Error()) })
	case !ok:
		s.writePage(w, http.StatusNotFound, func(b *bytes.Buffer) error { return ui.NotFound(b, ref) })
	default:
		s.writePage(w, http.StatusOK, func(b *bytes.Buffer) error { return ui.RenderRollout(b, h, s.uiOptions()) })
	}
}

// history serves GET /v1/rollouts/{namespace}/{name}/history: the rollout page as JSON.
func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	ref := rollout.Ref{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	h, ok, err := s.readHistory(r, ref)
	switch {
	case err != nil:
		s.opts.Logger.Warn("verdict history unavailable", zap.String("rollout", ref.String()), zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the verdict history cannot be read now: " + err.Error()})
		return
	case !ok:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no verdict of rollout %s on the verdict stream", ref)})
		return
	}
	body, err := ui.JSON(h, s.uiOptions())
	if err != nil {
		s.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// listPage serves /ui/: the live rollouts and those whose latest verdict is recent.
func (s *Server) listPage(w http.ResponseWriter, r *http.Request) {
	if s.opts.History == nil {
		s.writePage(w, http.StatusServiceUnavailable, func(b *bytes.Buffer) error { return ui.Unavailable(b, "no verdict stream to read") })
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyTimeout)
	defer cancel()
	latest, truncated, err := s.opts.History.Latest(ctx)
	if err != nil {
		s.opts.Logger.Warn("verdict history unavailable", zap.Error(err))
		s.writePage(w, http.StatusServiceUnavailable, func(b *bytes.Buffer) error { return ui.Unavailable(b, err.Error()) })
		return
	}
	now := s.opts.Now()
	l := ui.List{Now: now, Since: s.opts.RecentWindow, Truncated: truncated}
	seen := map[rollout.Ref]bool{}
	for _, v := range latest {
		live, ok := s.opts.Verdicts.Latest(v.Rollout)
		isLive := ok && live.Revision == v.Revision
		if !isLive && now.Sub(v.DecidedAt) > s.opts.RecentWindow {
			continue
		}
		seen[v.Rollout] = true
		l.Rollouts = append(l.Rollouts, ui.Summary{Latest: v, Live: isLive})
	}
	// Live rollouts the stream's read left out, or whose verdict is not published yet.
	for _, v := range s.opts.Verdicts.List() {
		if !seen[v.Rollout] {
			l.Rollouts = append(l.Rollouts, ui.Summary{Latest: v, Live: true})
		}
	}
	s.writePage(w, http.StatusOK, func(b *bytes.Buffer) error { return ui.RenderList(b, l, s.uiOptions()) })
}

func (s *Server) uiOptions() ui.Options { return ui.Options{TraceURL: s.opts.TraceURL} }
