package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
	"github.com/analyzerd/analyzerd/internal/streams"
)

// watchOptions configure `analyzerd watch`.
type watchOptions struct {
	natsURL   string
	prefix    string
	namespace string // empty: every namespace
	since     time.Duration
	plain     bool
	refresh   time.Duration
	now       func() time.Time
}

// watch is `analyzerd watch`: a live view, for the SRE on call, of the rollouts and their
// latest verdicts, read from the verdict stream. It shows the current state at once, then
// follows the stream: redrawn in place on a terminal, appended line by line otherwise.
func watch(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyzerd watch", flag.ContinueOnError)
	o := watchOptions{refresh: time.Second, now: time.Now}
	fs.StringVar(&o.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server with analyzerd's streams")
	fs.StringVar(&o.prefix, "subject-prefix", streams.DefaultPrefix, "the daemon's nats.subjectPrefix")
	fs.StringVar(&o.namespace, "namespace", "", "show only the rollouts of this namespace")
	fs.DurationVar(&o.since, "since", time.Hour, "hide rollouts whose latest verdict is older than this (0: show them all)")
	fs.BoolVar(&o.plain, "plain", false, "append one line per verdict instead of redrawing a table (the default when stdout is not a terminal)")
	if code, ok := parseCommand(fs, watchUsage, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "analyzerd watch: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := streams.ValidatePrefix(o.prefix); err != nil {
		fmt.Fprintln(stderr, "analyzerd watch: --subject-prefix:", err)
		return 2
	}
	o.plain = o.plain || !isTerminal(stdout)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runWatch(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "analyzerd watch:", err)
		return 1
	}
	return 0
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// received is a verdict off the stream, and how many more the consumer had pending after it.
type received struct {
	verdict rollout.Verdict
	pending uint64
}

// runWatch shows the verdict stream on out until ctx is done, then returns nil. It reads the
// latest verdict of each rollout first (an ordered consumer delivering the last message of
// each subject), shows them once it has them all, then follows the stream.
func runWatch(ctx context.Context, o watchOptions, out io.Writer) error {
	nc, err := nats.Connect(o.natsURL, nats.Name("analyzerd watch"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redactURLs(o.natsURL), err)
	}
	defer nc.Close()
	o.natsURL = nc.ConnectedUrlRedacted()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	filter := o.prefix + ".verdicts.>"
	if o.namespace != "" {
		filter = o.prefix + ".verdicts." + rollout.SubjectToken(o.namespace) + ".>"
	}
	cons, err := js.OrderedConsumer(ctx, streams.VerdictsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no stream %s on %s: has analyzerd run against this server?", streams.VerdictsStream, nc.ConnectedUrlRedacted())
	}
	if err != nil {
		return fmt.Errorf("verdict consumer: %w", err)
	}

	in := make(chan received, 256)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		r, err := rolloutclient.DecodeVerdict(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		if err != nil {
			return // not a verdict: nothing to show
		}
		var pending uint64
		if md, err := m.Metadata(); err == nil {
			pending = md.NumPending
		}
		select {
		case in <- received{verdict: r.Verdict, pending: pending}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("verdict consumer: %w", err)
	}
	defer func() { cc.Stop(); <-cc.Closed() }()

	// The consumer was created with this many verdicts to deliver before it is caught up.
	caughtUp := true
	if info := cons.CachedInfo(); info != nil && info.NumPending > 0 {
		caughtUp = false
	}
	v := newView(o, out)
	if caughtUp {
		v.show()
	}
	ticker := time.NewTicker(o.refresh)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-in:
			// The subject token is a routing hint: another namespace may share it.
			if o.namespace == "" || r.verdict.Rollout.Namespace == o.namespace {
				v.add(r.verdict, caughtUp)
			}
			if !caughtUp && r.pending == 0 {
				caughtUp = true
				v.show()
			}
		case <-ticker.C:
			if caughtUp && !o.plain {
				v.show()
			}
		}
	}
}

// view holds the latest verdict of each rollout and writes it out.
type view struct {
	o      watchOptions
	out    io.Writer
	latest map[rollout.Ref]rollout.Verdict
	shown  bool
}

func newView(o watchOptions, out io.Writer) *view {
	return &view{o: o, out: out, latest: map[rollout.Ref]rollout.Verdict{}}
}

// add records a verdict; once the current state was shown, plain output appends its line.
func (v *view) add(r rollout.Verdict, live bool) {
	if old, ok := v.latest[r.Rollout]; ok && old.Revision == r.Revision && old.Sequence >= r.Sequence {
		return // a redelivery, or an older one
	}
	v.latest[r.Rollout] = r
	if live && v.o.plain && v.shown {
		_, _ = io.WriteString(v.out, renderWatchRows([]rollout.Verdict{r}, v.o.now(), false, false))
	}
}

// show writes the whole table: on a terminal, in place of the previous one; in plain output
// once, with its header, before the lines of the verdicts that follow.
func (v *view) show() {
	if v.o.plain && v.shown {
		return
	}
	now := v.o.now()
	var rows []rollout.Verdict
	for _, r := range v.latest {
		if v.o.since > 0 && now.Sub(r.DecidedAt) > v.o.since {
			continue
		}
		rows = append(rows, r)
	}
	if v.o.plain {
		_, _ = io.WriteString(v.out, renderWatchRows(rows, now, true, false))
	} else {
		_, _ = io.WriteString(v.out, watchRedraw(v.title(now, len(rows)), renderWatchRows(rows, now, true, true)))
	}
	v.shown = true
}

func (v *view) title(now time.Time, n int) string {
	scope := "every namespace"
	if v.o.namespace != "" {
		scope = "namespace " + v.o.namespace
	}
	return fmt.Sprintf("analyzerd watch: %d rollout(s) in %s, from %s.verdicts on %s, at %s (Ctrl-C to quit)",
		n, scope, v.o.prefix, v.o.natsURL, now.Format("15:04:05"))
}

// The colors of verdicts on a terminal. Every code has the same length, so that the columns
// that tabwriter aligns by bytes stay aligned on screen.
const (
	colorReset   = "\x1b[0m"
	colorDefault = "\x1b[39m"
	colorGreen   = "\x1b[32m"
	colorYellow  = "\x1b[33m"
	colorRed     = "\x1b[31m"
)

var watchColumns = []string{"ROLLOUT", "REVISION", "STEP", "WEIGHT", "VERDICT", "SEQ", "AGE", "REASON"}

// renderWatchRows renders verdicts as rows of the table, sorted by rollout, with the header when
// asked; with color, the verdicts are colored for a terminal.
func renderWatchRows(rows []rollout.Verdict, now time.Time, header, color bool) string {
	sorted := append([]rollout.Verdict(nil), rows...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Rollout.String() < sorted[j].Rollout.String() })
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if header {
		cells := append([]string(nil), watchColumns...)
		if color {
			cells[4] = colorDefault + cells[4] + colorReset
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	for _, r := range sorted {
		verdict := string(r.Verdict)
		if color {
			verdict = verdictColor(r.Verdict) + verdict + colorReset
		}
		fmt.Fprintln(tw, strings.Join([]string{
			watchCell(r.Rollout.String()), watchCell(r.Revision), fmt.Sprint(r.Step), fmt.Sprintf("%d%%", r.Weight), verdict,
			fmt.Sprint(r.Sequence), watchAge(now.Sub(r.DecidedAt)), watchCell(r.Reason),
		}, "\t"))
	}
	_ = tw.Flush()
	return b.String()
}

func verdictColor(d rollout.Decision) string {
	switch d {
	case rollout.Proceed:
		return colorGreen
	case rollout.Rollback:
		return colorRed
	case rollout.Pause:
		return colorYellow
	}
	return colorDefault
}

// watchRedraw returns what replaces the screen's content with title and table: the cursor goes
// home, each line clears what was left of the previous draw, and the rest of the screen is
// cleared.
func watchRedraw(title, table string) string {
	var b strings.Builder
	b.WriteString("\x1b[H")
	for _, line := range append([]string{title, ""}, strings.Split(strings.TrimRight(table, "\n"), "\n")...) {
		b.WriteString(line)
		b.WriteString("\x1b[K\n")
	}
	b.WriteString("\x1b[J")
	return b.String()
}

// watchAge renders a duration as the AGE column does: 7s, 3m05s, 2h10m, 3d4h.
func watchAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// watchCell keeps a value on its row: control characters (a newline, an escape sequence
// from a controller's free text) become spaces.
func watchCell(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// redactURLs hides the passwords of a comma-separated list of URLs.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

const watchUsage = `Usage: analyzerd watch [flags]

Shows every rollout with its latest verdict (ROLLOUT REVISION STEP WEIGHT VERDICT SEQ AGE
REASON), read from the verdict stream, and follows it until Ctrl-C. On a terminal the table is
redrawn in place; otherwise, or with --plain, the current state is printed and then one line
per verdict as it arrives.

Flags:
`
