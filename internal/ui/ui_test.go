package ui

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"image"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/chromiumtest"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const traceURL = "https://jaeger.example/trace/{traceId}"

func renderRollout(t *testing.T, h History, o Options) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, RenderRollout(&b, h, o))
	return b.String()
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	require.Equal(t, string(want), string(got), "%s differs: run go test ./internal/ui -update and review the diff", path)
}

func TestGoldenPages(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rollback bool
	}{{"rollback", true}, {"healthy", false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := demoHistory(tc.rollback)
			golden(t, tc.name+".golden.html", []byte(renderRollout(t, h, Options{TraceURL: traceURL})))

			a := h.Analyses[0]
			cv := valuesOf(a, "error-rate")
			var b bytes.Buffer
			require.NoError(t, pages.ExecuteTemplate(&b, "chart", evidenceChart("evidence", "error-rate", a, cv)))
			golden(t, tc.name+"-evidence.golden.svg", b.Bytes())
			b.Reset()
			require.NoError(t, pages.ExecuteTemplate(&b, "chart", valuesChart("values", "error-rate", a, cv)))
			golden(t, tc.name+"-values.golden.svg", b.Bytes())
		})
	}
}

func TestRolloutPageContent(t *testing.T) {
	page := renderRollout(t, demoHistory(true), Options{TraceURL: traceURL})
	// Landmarks, headings, one timeline row per verdict, captions, SVG titles.
	for _, want := range []string{
		`<title>Rollout demo/checkout · analyzerd</title>`,
		`<header role="banner">`, `<main id="main">`, `<footer role="contentinfo">`, `<nav aria-label="Breadcrumb">`,
		`<h1>Rollout demo/checkout</h1>`, `<h2 id="analysis-1">Revision v2</h2>`, `<h4 id="analysis-1-check-1">error-rate</h4>`,
		`<caption>Verdicts of revision v2, oldest first`,
		`<caption>error-rate at each verdict of revision v2</caption>`,
		`<title id="analysis-1-check-1-evidence-title">error-rate: the sequential test&#39;s e-value against 1/alpha, log scale</title>`,
		`It reached 1/alpha (300) at 2026-11-25 14:00:22.000Z.`,
		`Decision: <span class="verdict-proceed">proceed</span> at step 0 (10%), sequence 8`,
		`Decision: <span class="verdict-rollback">rollback</span> at step 1 (50%), sequence 12`,
		`<a href="https://jaeger.example/trace/0000000000000000000000000000000c" aria-label="trace of verdict 12">`,
		`>step 1 (50%)</text>`, `>rollback</text>`,
	} {
		require.Contains(t, page, want)
	}
	require.Equal(t, 12, strings.Count(page, `aria-label="trace of verdict `), "one trace link per verdict")
	require.Equal(t, 2, strings.Count(page, `<tr class="step-start">`), "two steps")
	// cpu runs no sequential test: a values chart, no e-value chart.
	require.Contains(t, page, `id="analysis-1-check-2-values"`)
	require.NotContains(t, page, `id="analysis-1-check-2-evidence"`)
	require.NotContains(t, page, "<script", "no JavaScript")
	require.NotRegexp(t, regexp.MustCompile(`(src|href)="(https?:)?//[^j]`), page, "no external asset")

	// A backtest says where its verdicts come from.
	h := demoHistory(true)
	h.Status = "Backtest of http-golden-signals <from> 14:00 to 14:01 UTC"
	require.Contains(t, renderRollout(t, h, Options{}), `<p class="status">Backtest of http-golden-signals &lt;from&gt; 14:00 to 14:01 UTC`)

	// Without a trace UI, no trace column.
	page = renderRollout(t, demoHistory(true), Options{})
	require.NotContains(t, page, "trace of verdict")
	require.NotContains(t, page, `<th scope="col">Trace</th>`)
}

func TestHealthyPageStaysBelowOneOverAlpha(t *testing.T) {
	page := renderRollout(t, demoHistory(false), Options{})
	require.Contains(t, page, "It stayed below 1/alpha (300).")
	require.NotContains(t, page, "It reached 1/alpha")
	require.NotContains(t, page, `class="verdict-rollback"`)
}

func TestHostileValuesAreEscaped(t *testing.T) {
	const evil = `<script>alert(1)</script>"'><img src=x onerror=alert(2)>`
	ref := rollout.Ref{Namespace: "ns" + evil, Name: "n" + evil}
	v := rollout.Verdict{
		Rollout: ref, Revision: "r" + evil, Step: 0, Weight: 10, Verdict: rollout.Rollback, Reason: "reason" + evil, Sequence: 1,
		DecidedAt: t0, TraceID: `x"><script>alert(3)</script>`,
		Checks: []rollout.CheckResult{{Metric: "m" + evil, Outcome: rollout.Fail, Canary: f(1), Stable: f(0.5), Threshold: "t" + evil,
			Message: "msg" + evil, EValue: f(500), EValueThreshold: f(100), Limits: []rollout.Limit{{Guard: "g" + evil, Max: f(0.7)}}}},
	}
	h := NewHistory(ref, []rollout.Verdict{v, func() rollout.Verdict { w := v; w.Sequence = 2; w.DecidedAt = t0.Add(time.Second); return w }()})
	for name, page := range map[string]string{
		"trace UI":            renderRollout(t, h, Options{TraceURL: traceURL}),
		"javascript trace UI": renderRollout(t, h, Options{TraceURL: "javascript:alert('{traceId}')"}),
	} {
		t.Run(name, func(t *testing.T) {
			require.NotContains(t, page, "<script")
			require.NotContains(t, page, "<img")
			require.NotContains(t, page, `href="javascript:`)
			require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
			// In the SVG's title and desc too.
			require.Contains(t, page, `<title id="analysis-1-check-1-values-title">m&lt;script&gt;`)
		})
	}
	var b bytes.Buffer
	require.NoError(t, RenderList(&b, List{Rollouts: []Summary{{Latest: v, Live: true}}, Now: t0}, Options{TraceURL: traceURL}))
	require.NotContains(t, b.String(), "<script")
	require.NotContains(t, b.String(), "<img")
	// The link to the hostile rollout's page is one path, escaped.
	require.Contains(t, b.String(), `href="/ui/rollouts/ns%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27%3E%3Cimg%20src=x%20onerror=alert%282%29%3E/`)
	b.Reset()
	require.NoError(t, NotFound(&b, ref))
	require.NotContains(t, b.String(), "<script")
}

func TestJSONHasThePagesContent(t *testing.T) {
	body, err := JSON(demoHistory(true), Options{TraceURL: traceURL})
	require.NoError(t, err)
	var got struct {
		Rollout  rollout.Ref `json:"rollout"`
		Live     bool        `json:"live"`
		Analyses []struct {
			Revision  string `json:"revision"`
			Steps     []Mark `json:"steps"`
			Decisions []Mark `json:"decisions"`
			Timeline  []struct {
				Verdict   rollout.Verdict `json:"verdict"`
				TraceURL  string          `json:"traceUrl"`
				StepStart bool            `json:"stepStart"`
			} `json:"timeline"`
		} `json:"analyses"`
	}
	require.NoError(t, json.Unmarshal(body, &got))
	require.Equal(t, rollout.Ref{Namespace: "demo", Name: "checkout"}, got.Rollout)
	require.Len(t, got.Analyses, 1)
	a := got.Analyses[0]
	require.Equal(t, "v2", a.Revision)
	require.Len(t, a.Timeline, 12)
	require.Len(t, a.Steps, 2)
	require.Equal(t, 1, a.Steps[1].Step)
	require.Equal(t, uint64(9), a.Steps[1].Sequence)
	require.Len(t, a.Decisions, 2)
	require.Equal(t, rollout.Rollback, a.Decisions[1].Verdict)
	require.True(t, a.Timeline[8].StepStart)
	require.False(t, a.Timeline[9].StepStart)
	last := a.Timeline[11]
	require.Equal(t, "https://jaeger.example/trace/0000000000000000000000000000000c", last.TraceURL)
	require.Equal(t, rollout.Rollback, last.Verdict.Verdict)
	require.InDelta(t, 2.68e10, *last.Verdict.Checks[0].EValue, 1)
	require.InDelta(t, 300, *last.Verdict.Checks[0].EValueThreshold, 0)
	require.Contains(t, string(body), `"decidedAt":"2026-11-25T14:00:22.000Z"`, "verdicts as the wire has them")
}

func TestNewHistoryGroupsByRevision(t *testing.T) {
	ref := rollout.Ref{Namespace: "a", Name: "b"}
	v := func(rev string, seq uint64, at int) rollout.Verdict {
		return rollout.Verdict{Rollout: ref, Revision: rev, Sequence: seq, DecidedAt: t0.Add(time.Duration(at) * time.Second), Verdict: rollout.Pause}
	}
	h := NewHistory(ref, []rollout.Verdict{v("r2", 2, 11), v("r1", 2, 2), v("r2", 1, 10), v("r1", 1, 1)})
	require.Len(t, h.Analyses, 2)
	require.Equal(t, "r1", h.Analyses[0].Revision)
	require.Equal(t, []uint64{1, 2}, []uint64{h.Analyses[0].Verdicts[0].Sequence, h.Analyses[0].Verdicts[1].Sequence})
	latest, ok := h.Latest()
	require.True(t, ok)
	require.Equal(t, "r2", latest.Revision)
	require.Equal(t, uint64(2), latest.Sequence)
	page := renderRollout(t, h, Options{})
	require.Less(t, strings.Index(page, "Revision r2"), strings.Index(page, "Revision r1"), "newest analysis first")
}

func TestListPage(t *testing.T) {
	now := t0.Add(time.Hour)
	live := demoHistory(true).Analyses[0].Verdicts[11]
	ended := live
	ended.Rollout = rollout.Ref{Namespace: "prod", Name: "cart"}
	ended.Verdict, ended.DecidedAt = rollout.Proceed, t0.Add(50*time.Minute)
	var b bytes.Buffer
	require.NoError(t, RenderList(&b, List{Rollouts: []Summary{{Latest: ended}, {Latest: live, Live: true}}, Now: now, Since: 24 * time.Hour}, Options{}))
	page := b.String()
	require.Contains(t, page, `<caption>Rollouts and their latest verdicts, live ones first</caption>`)
	require.Contains(t, page, `<a href="/ui/rollouts/demo/checkout">demo/checkout</a></td><td>live</td>`)
	require.Contains(t, page, `<a href="/ui/rollouts/prod/cart">prod/cart</a></td><td>ended</td>`)
	require.Less(t, strings.Index(page, "demo/checkout"), strings.Index(page, "prod/cart"), "live first")
	require.Contains(t, page, "<td>10m0s</td>")
}

// evidenceInScreenshot reads an e-value chart off a screenshot: the 1/alpha line is the row
// holding the most pixels of its colour; it returns how many pixels of the e-value's colour
// lie above that row, within the line's horizontal extent, and how many there are in all.
func evidenceInScreenshot(t *testing.T, img image.Image) (above, all int) {
	t.Helper()
	threshold := chromiumtest.Pixels(img, chromiumtest.Hex(colourThreshold), 8)
	require.NotEmpty(t, threshold, "no 1/alpha line in the screenshot")
	rows := map[int]int{}
	for _, p := range threshold {
		rows[p.Y]++
	}
	row, n := 0, 0
	for y, c := range rows {
		if c > n {
			row, n = y, c
		}
	}
	require.Greater(t, n, 300, "the 1/alpha line spans the plot")
	minX, maxX := img.Bounds().Max.X, 0
	for _, p := range threshold {
		if p.Y == row {
			minX, maxX = min(minX, p.X), max(maxX, p.X)
		}
	}
	evalue := chromiumtest.Pixels(img, chromiumtest.Hex(colourEValue), 24)
	for _, p := range evalue {
		if p.X >= minX && p.X <= maxX && p.Y < row-2 && p.Y > row-200 {
			above++
		}
	}
	return above, len(evalue)
}

func TestScreenshotsShowTheEvidence(t *testing.T) {
	dir := t.TempDir()
	shots := map[string]image.Image{}
	for name, rb := range map[string]bool{"rollback": true, "healthy": false} {
		path := filepath.Join(dir, name+".html")
		require.NoError(t, os.WriteFile(path, []byte(renderRollout(t, demoHistory(rb), Options{TraceURL: traceURL})), 0o644))
		shots[name] = chromiumtest.Screenshot(t, "ui-"+name, "file://"+path, 1100, 2600)
	}
	for name, img := range shots {
		// Both charts of error-rate are drawn: the canary's and stable's lines, the limits,
		// the e-value and 1/alpha.
		require.Greater(t, len(chromiumtest.Pixels(img, chromiumtest.Hex(colourCanary), 16)), 500, "%s: the canary's line", name)
		require.Greater(t, len(chromiumtest.Pixels(img, chromiumtest.Hex(colourStable), 16)), 500, "%s: the stable's line", name)
		require.Greater(t, len(chromiumtest.Pixels(img, chromiumtest.Hex(colourDecision), 16)), 100, "%s: the decisions' marks", name)
	}
	above, all := evidenceInScreenshot(t, shots["rollback"])
	t.Logf("rollback: %d of %d e-value pixels above 1/alpha", above, all)
	require.Greater(t, all, 200, "rollback: the e-value line is drawn")
	require.Greater(t, above, 20, "rollback: the e-value line crosses above 1/alpha")
	above, all = evidenceInScreenshot(t, shots["healthy"])
	t.Logf("healthy: %d of %d e-value pixels above 1/alpha", above, all)
	require.Greater(t, all, 200, "healthy: the e-value line is drawn")
	require.Zero(t, above, "healthy: the e-value stays below 1/alpha")
}

func TestMarkLabelsDoNotOverlap(t *testing.T) {
	// As in the demo: a short last step, its start, its proceed and a rollback close together.
	marks := []chartMark{
		{X: 100, Label: "step 0 (10%)", LabelY: plotTop - 20},
		{X: 690, Label: "step 1 (50%)", LabelY: plotTop - 20},
		{X: 686, Label: "proceed", LabelY: plotTop - 6},
		{X: 740, Label: "rollback", LabelY: plotTop - 6},
	}
	placeLabels(marks)
	type box struct{ row, from, to float64 }
	var boxes []box
	for _, m := range marks {
		w := 6.5 * float64(len(m.Label))
		b := box{m.LabelY, m.X + float64(m.DX), m.X + float64(m.DX) + w}
		if m.Anchor == "end" {
			b.from, b.to = m.X+float64(m.DX)-w, m.X+float64(m.DX)
		}
		require.GreaterOrEqual(t, b.from, 0.0, "%s inside the chart", m.Label)
		require.LessOrEqual(t, b.to, float64(chartWidth), "%s inside the chart", m.Label)
		for _, o := range boxes {
			require.False(t, o.row == b.row && b.from < o.to && o.from < b.to, "%s overlaps another label", m.Label)
		}
		boxes = append(boxes, b)
	}
}

// TestGoldenSVGsAreWellFormed: each chart stands alone as an SVG document (XML), with its
// title and description first, as screen readers look for them.
func TestGoldenSVGsAreWellFormed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden.svg"))
	require.NoError(t, err)
	require.Len(t, files, 4)
	for _, path := range files {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		dec := xml.NewDecoder(bytes.NewReader(b))
		var elements []string
		for {
			tok, err := dec.Token()
			if err == io.EOF {
				break
			}
			require.NoError(t, err, path)
			if se, ok := tok.(xml.StartElement); ok {
				elements = append(elements, se.Name.Local)
			}
		}
		require.GreaterOrEqual(t, len(elements), 3, path)
		require.Equal(t, []string{"svg", "title", "desc"}, elements[:3], path)
		require.Contains(t, elements, "polyline", path)
	}
}
