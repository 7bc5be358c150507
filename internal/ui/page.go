package ui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

//go:embed templates/*.html
var templateFiles embed.FS

// timeLayout is how the pages write times: UTC, to the millisecond, as verdicts carry them.
const timeLayout = "2006-01-02 15:04:05.000Z"

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"time":   func(t time.Time) string { return t.UTC().Format(timeLayout) },
	"number": formatOptional,
	"limits": formatLimits,
	"add":    func(d, f float64) float64 { return f + d },
}).ParseFS(templateFiles, "templates/*.html"))

// RolloutPath is the address of a rollout's page on the daemon's HTTP server.
func RolloutPath(ref rollout.Ref) string {
	return "/ui/rollouts/" + url.PathEscape(ref.Namespace) + "/" + url.PathEscape(ref.Name)
}

// rolloutPage is what the rollout page's template reads.
type rolloutPage struct {
	Rollout  rollout.Ref
	Status   string
	Live     bool
	LeftOut  int
	Latest   *rollout.Verdict
	Analyses []analysisView
	Traces   bool
}

type analysisView struct {
	ID        string
	Revision  string
	Count     int
	From, To  time.Time
	Final     rollout.Verdict
	Steps     []Mark
	Decisions []Mark
	Rows      []timelineRow
	Checks    []checkView
}

type timelineRow struct {
	rollout.Verdict
	TraceURL  string
	StepStart bool
}

type checkView struct {
	ID       string
	Metric   string
	Values   chart
	Evidence *chart
	Rows     []checkRow
}

type checkRow struct {
	At       time.Time
	Sequence uint64
	Step     int
	Weight   int
	Result   *rollout.CheckResult
}

// RenderRollout writes the page of one rollout's history to w: for each analysis, newest
// first, its timeline of verdicts and a chart of each check's values and evidence, with a
// table of the numbers behind each chart.
func RenderRollout(w io.Writer, h History, o Options) error {
	p := rolloutPage{Rollout: h.Rollout, Status: h.Status, Live: h.Live, LeftOut: h.LeftOut, Traces: o.TraceURL != ""}
	if v, ok := h.Latest(); ok {
		p.Latest = &v
	}
	for i := len(h.Analyses) - 1; i >= 0; i-- {
		if a := h.Analyses[i]; len(a.Verdicts) > 0 {
			p.Analyses = append(p.Analyses, viewOf(a, i, o))
		}
	}
	return render(w, "rollout.html", p)
}

func viewOf(a Analysis, i int, o Options) analysisView {
	id := "analysis-" + strconv.Itoa(i+1)
	av := analysisView{
		ID: id, Revision: a.Revision, Count: len(a.Verdicts),
		From: a.Verdicts[0].DecidedAt, To: a.Verdicts[len(a.Verdicts)-1].DecidedAt, Final: a.Verdicts[len(a.Verdicts)-1],
		Steps: a.steps(), Decisions: a.decisions(),
	}
	starts := map[int]bool{}
	for _, m := range av.Steps {
		starts[m.index] = true
	}
	for k, v := range a.Verdicts {
		av.Rows = append(av.Rows, timelineRow{Verdict: v, TraceURL: o.traceLink(v.TraceID), StepStart: starts[k]})
	}
	for k, metric := range a.checks() {
		cid := fmt.Sprintf("%s-check-%d", id, k+1)
		cv := valuesOf(a, metric)
		view := checkView{ID: cid, Metric: metric, Values: valuesChart(cid+"-values", metric, a, cv)}
		if cv.hasEValue() {
			e := evidenceChart(cid+"-evidence", metric, a, cv)
			view.Evidence = &e
		}
		for n, v := range a.Verdicts {
			view.Rows = append(view.Rows, checkRow{At: v.DecidedAt, Sequence: v.Sequence, Step: v.Step, Weight: v.Weight, Result: cv.results[n]})
		}
		av.Checks = append(av.Checks, view)
	}
	return av
}

// List is what the list page shows: rollouts and their latest verdicts.
type List struct {
	Rollouts []Summary
	// Now is when the list was read; Since how far back ended rollouts are shown.
	Now   time.Time
	Since time.Duration
	// Truncated says more rollouts were found than the list holds.
	Truncated bool
}

// Summary is one rollout of the list.
type Summary struct {
	Latest rollout.Verdict
	// Live says the rollout is under analysis now.
	Live bool
}

type listPage struct {
	List
	Rows   []listRow
	Traces bool
}

type listRow struct {
	Summary
	Path     string
	Age      string
	TraceURL string
}

// RenderList writes the list of rollouts to w: live ones first, then by their latest
// verdict's time, newest first.
func RenderList(w io.Writer, l List, o Options) error {
	rows := make([]listRow, 0, len(l.Rollouts))
	for _, s := range l.Rollouts {
		rows = append(rows, listRow{
			Summary: s, Path: RolloutPath(s.Latest.Rollout),
			Age: age(l.Now.Sub(s.Latest.DecidedAt)), TraceURL: o.traceLink(s.Latest.TraceID),
		})
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Live != rows[j].Live {
			return rows[i].Live
		}
		if !rows[i].Latest.DecidedAt.Equal(rows[j].Latest.DecidedAt) {
			return rows[i].Latest.DecidedAt.After(rows[j].Latest.DecidedAt)
		}
		return rows[i].Latest.Rollout.String() < rows[j].Latest.Rollout.String()
	})
	return render(w, "list.html", listPage{List: l, Rows: rows, Traces: o.TraceURL != ""})
}

// NotFound writes the page of a rollout with no verdict to show.
func NotFound(w io.Writer, ref rollout.Ref) error {
	return render(w, "message.html", message{Title: "Rollout " + ref.String() + " not found",
		Text: "The verdict stream holds no verdict of rollout " + ref.String() + " and it is not under analysis."})
}

// Unavailable writes the page of a history that could not be read, saying why.
func Unavailable(w io.Writer, why string) error {
	return render(w, "message.html", message{Title: "Verdict history unavailable",
		Text: "The verdict stream cannot be read now: " + why + ". The page shows again once it can; nothing about the rollouts changed."})
}

type message struct{ Title, Text string }

func render(w io.Writer, name string, data any) error {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		return fmt.Errorf("rendering %s: %w", name, err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Truncate(time.Second).String()
	case d < time.Hour:
		return d.Truncate(time.Second).String()
	case d < 48*time.Hour:
		return d.Truncate(time.Minute).String()
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

func formatOptional(f *float64) string {
	if f == nil {
		return "–"
	}
	return strconv.FormatFloat(*f, 'g', 4, 64)
}

func formatLimits(ls []rollout.Limit) string {
	var b bytes.Buffer
	for i, l := range ls {
		if i > 0 {
			b.WriteString("; ")
		}
		switch {
		case l.Min != nil && l.Max != nil:
			fmt.Fprintf(&b, "%s < canary < %s", formatOptional(l.Min), formatOptional(l.Max))
		case l.Max != nil:
			fmt.Fprintf(&b, "canary < %s", formatOptional(l.Max))
		case l.Min != nil:
			fmt.Fprintf(&b, "canary > %s", formatOptional(l.Min))
		default:
			fmt.Fprintf(&b, "%s: not known yet", l.Guard)
		}
	}
	return b.String()
}
