package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/replay"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/ui"
)

// The exit statuses of `analyzerd backtest`: the final verdict (0, 1, 2), or why there is
// none (sysexits.h's EX_USAGE and EX_UNAVAILABLE, apart from the verdicts').
const (
	exitProceed     = 0
	exitRollback    = 1
	exitUndecided   = 2
	exitUsage       = 64 // bad flags, configuration, template or steps
	exitUnavailable = 69 // Prometheus could not be queried
	exitCantCreate  = 73 // --report could not be written
	exitInterrupted = 130
)

// kvFlag is a repeatable k=v flag.
type kvFlag struct {
	name string
	m    map[string]string
}

func (f *kvFlag) String() string { return "" }

func (f *kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	if _, dup := f.m[k]; dup {
		return fmt.Errorf("%s given twice", k)
	}
	f.m[k] = v
	return nil
}

// backtestFlags are the backtest's flags, as given.
type backtestFlags struct {
	configPath, template, templateFile, prometheus string
	from, to, steps, stepsFile, rollout, revision  string
	report                                         string
	args, canary, stable                           kvFlag
	changes                                        bool
	configGiven                                    bool
}

// backtestCmd runs a template against Prometheus history: see backtestUsage.
func backtestCmd(args []string, stdout, stderr io.Writer) int {
	f := backtestFlags{
		args:   kvFlag{name: "arg", m: map[string]string{}},
		canary: kvFlag{name: "canary", m: map[string]string{}},
		stable: kvFlag{name: "stable", m: map[string]string{}},
	}
	fs := flag.NewFlagSet("analyzerd backtest", flag.ContinueOnError)
	fs.StringVar(&f.configPath, "config", "configs/analyzerd.yaml", "configuration file: its templates, and its prometheus source (URL, timeout, auth, TLS)")
	fs.StringVar(&f.template, "template", "", "the analysis template to run (default: --template-file's, or the configuration's only one)")
	fs.StringVar(&f.templateFile, "template-file", "", "a file holding one template (the keys of one item of the configuration's templates), to try one not in the configuration; it replaces the configuration's template of the same name")
	fs.StringVar(&f.prometheus, "prometheus", "", "the Prometheus URL (default: the configuration's prometheus.url); the configuration's credentials and TLS apply")
	fs.StringVar(&f.from, "from", "", "when the rollout started (RFC 3339, e.g. 2026-11-25T14:00:00Z): the baseline is the template's baselineWindow before it (required)")
	fs.StringVar(&f.to, "to", "", "when the analysis ends (RFC 3339; required)")
	fs.Var(&f.args, "arg", "a template argument, key=value (repeatable), as the rollout.started event's args")
	fs.Var(&f.canary, "canary", "a variable selecting the canary's series, key=value (repeatable), as the event's canary")
	fs.Var(&f.stable, "stable", "a variable selecting the stable side's series, key=value (repeatable), as the event's stable")
	fs.StringVar(&f.steps, "steps", "", "the steps, weight@time separated by commas, e.g. 10@14:00,25@14:10,50@14:20: times as HH:MM[:SS] on --from's day in UTC, or RFC 3339; the first is the start, at --from (its @time may be left out)")
	fs.StringVar(&f.stepsFile, "steps-file", "", "a file holding the steps as --steps does, separated by commas or new lines (# starts a comment)")
	fs.StringVar(&f.rollout, "rollout", "backtest/rollout", "namespace/name the verdicts are about")
	fs.StringVar(&f.revision, "revision", "", "the revision the verdicts are about (default: the canary's variables)")
	fs.StringVar(&f.report, "report", "", "also write the verdicts as the daemon's rollout page (HTML: the timeline, each check's charts of values and e-value) to this file")
	fs.BoolVar(&f.changes, "changes", false, "print only the evaluations whose step or verdict differs from the one before, and the last")
	if code, ok := parseCommand(fs, backtestUsage, args, stdout, stderr); !ok {
		if code != 0 {
			code = exitUsage
		}
		return code
	}
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "config" {
			f.configGiven = true
		}
	})
	usageErr := func(err error) int {
		fmt.Fprintln(stderr, "analyzerd backtest:", err)
		fmt.Fprintln(stderr, "run 'analyzerd backtest --help' for the flags")
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	bt, err := f.build()
	if err != nil {
		var ps *problems
		if errors.As(err, &ps) && len(config.Errors(ps.err)) > 1 {
			printProblems(stderr, "analyzerd backtest: "+ps.what+":", ps.err)
			return exitUsage
		}
		return usageErr(err)
	}

	var report *os.File
	if f.report != "" {
		// Created first, so that a path it cannot be written to fails before the work.
		if report, err = os.Create(f.report); err != nil {
			return usageErr(fmt.Errorf("--report: %w", err))
		}
		defer report.Close()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	evals, err := replay.Run(ctx, compare.NewPerRollout(bt.source), bt.rollout)
	if err != nil {
		if len(evals) > 0 {
			writeTimeline(stdout, bt.rollout, evals, f.changes)
		}
		fmt.Fprintln(stderr, "analyzerd backtest:", err)
		if report != nil {
			_ = writeReport(report, bt.rollout, evals, fmt.Sprintf("stopped: %v", err))
		}
		if errors.Is(err, replay.ErrUnavailable) {
			return exitUnavailable
		}
		return exitInterrupted
	}
	writeTimeline(stdout, bt.rollout, evals, f.changes)
	final := replay.Final(evals)
	writeSummary(stdout, bt.rollout, evals, final)
	if report != nil {
		if err := writeReport(report, bt.rollout, evals, fmt.Sprintf("final verdict %s", final)); err != nil {
			fmt.Fprintln(stderr, "analyzerd backtest: --report:", err)
			return exitCantCreate
		}
		fmt.Fprintf(stdout, "the rollout page: %s\n", f.report)
	}
	return exitFor(final)
}

// writeReport writes the verdicts as the daemon's rollout page, its status saying that
// they come from a backtest, and how it ended.
func writeReport(w *os.File, r replay.Rollout, evals []replay.Evaluation, ending string) error {
	verdicts := make([]rollout.Verdict, len(evals))
	for i, e := range evals {
		verdicts[i] = e.Verdict
	}
	h := ui.NewHistory(r.Ref, verdicts)
	h.Status = fmt.Sprintf("Backtest of template %s on Prometheus history from %s to %s UTC (steps at %s): %s.",
		r.Template.Name, r.Steps[0].At.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339), stepsText(r.Steps), ending)
	if err := ui.RenderRollout(w, h, ui.Options{}); err != nil {
		return err
	}
	return w.Close()
}

// stepsText writes steps as --steps takes them.
func stepsText(steps []replay.Step) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = strconv.Itoa(s.Weight) + "@" + s.At.UTC().Format("15:04:05")
	}
	return strings.Join(parts, ", ")
}

// exitFor is the exit status that says a final verdict.
func exitFor(final rollout.Decision) int {
	switch final {
	case rollout.Proceed:
		return exitProceed
	case rollout.Rollback:
		return exitRollback
	}
	return exitUndecided
}

// problems are what is wrong with something (a configuration, the rollout), listed one a
// line when there are several.
type problems struct {
	what string
	err  error
}

func (p *problems) Error() string { return p.what + ": " + p.err.Error() }
func (p *problems) Unwrap() error { return p.err }

// backtest is a backtest ready to run.
type backtest struct {
	rollout replay.Rollout
	source  compare.Source
}

// backtest checks the flags and builds what they describe.
func (f backtestFlags) build() (backtest, error) {
	if f.from == "" || f.to == "" {
		return backtest{}, errors.New("--from and --to are required (RFC 3339, e.g. 2026-11-25T14:00:00Z)")
	}
	from, err := time.Parse(time.RFC3339, f.from)
	if err != nil {
		return backtest{}, fmt.Errorf("--from: %w", err)
	}
	to, err := time.Parse(time.RFC3339, f.to)
	if err != nil {
		return backtest{}, fmt.Errorf("--to: %w", err)
	}
	stepsText := f.steps
	switch {
	case f.steps != "" && f.stepsFile != "":
		return backtest{}, errors.New("--steps and --steps-file: give one")
	case f.stepsFile != "":
		data, err := os.ReadFile(f.stepsFile)
		if err != nil {
			return backtest{}, fmt.Errorf("--steps-file: %w", err)
		}
		stepsText = string(data)
	case f.steps == "":
		return backtest{}, errors.New("--steps or --steps-file is required, e.g. --steps 10@14:00,25@14:10,50@14:20")
	}
	steps, err := parseSteps(stepsText, from)
	if err != nil {
		return backtest{}, err
	}
	ref, err := parseRef(f.rollout)
	if err != nil {
		return backtest{}, fmt.Errorf("--rollout: %w", err)
	}

	cfg, name, err := f.load()
	if err != nil {
		return backtest{}, err
	}
	t, ok := cfg.Template(name)
	if !ok {
		return backtest{}, fmt.Errorf("%s has no template named %q (it has %s)", f.configPath, name, templateNames(cfg))
	}
	tm, err := compare.CompileTemplate(t)
	if err != nil {
		return backtest{}, err // validated already: not expected
	}
	source, err := compare.NewPrometheus(compare.PrometheusOptions{
		URL:                   cfg.Prometheus.URL,
		Timeout:               cfg.Prometheus.Timeout,
		BearerTokenFile:       cfg.Prometheus.BearerTokenFile,
		BasicAuthUsername:     cfg.Prometheus.BasicAuth.Username,
		BasicAuthPasswordFile: cfg.Prometheus.BasicAuth.PasswordFile,
		BearerToken:           config.Env(nil).Value(config.EnvPrometheusBearerToken),
		BasicAuthPassword:     config.Env(nil).Value(config.EnvPrometheusPassword),
		TLS: compare.TLSOptions{
			CAFile: cfg.Prometheus.TLS.CAFile, CertFile: cfg.Prometheus.TLS.CertFile, KeyFile: cfg.Prometheus.TLS.KeyFile,
			ServerName: cfg.Prometheus.TLS.ServerName, InsecureSkipVerify: cfg.Prometheus.TLS.InsecureSkipVerify,
		},
		Concurrency: cfg.Prometheus.Concurrency,
	})
	if err != nil {
		return backtest{}, err
	}
	revision := f.revision
	if revision == "" {
		revision = joinVars(f.canary.m)
	}
	r := replay.Rollout{
		Ref: ref, Revision: revision, Template: tm,
		Args: f.args.m, Canary: f.canary.m, Stable: f.stable.m,
		Steps: steps, To: to,
	}
	if err := r.Validate(); err != nil {
		return backtest{}, &problems{what: "the rollout is not valid", err: err}
	}
	return backtest{rollout: r, source: source}, nil
}

// load reads the configuration (and --template-file's template into it), applies --prometheus,
// and validates the result as the daemon would; it returns the name of the template to run.
func (f backtestFlags) load() (config.Config, string, error) {
	cfg, err := config.ReadFile(f.configPath)
	if err != nil {
		if !(f.templateFile != "" && !f.configGiven && errors.Is(err, os.ErrNotExist)) {
			return config.Config{}, "", err
		}
		// No configuration where the default says, and a template of its own: the
		// defaults will do.
		cfg = config.Default()
	}
	name := f.template
	if f.templateFile != "" {
		t, err := config.ReadTemplate(f.templateFile)
		if err != nil {
			return config.Config{}, "", err
		}
		if name == "" {
			name = t.Name
		}
		if name != t.Name {
			return config.Config{}, "", fmt.Errorf("--template %q: --template-file %s holds template %q", name, f.templateFile, t.Name)
		}
		cfg.Templates = slices.DeleteFunc(cfg.Templates, func(c rollout.Template) bool { return c.Name == t.Name })
		cfg.Templates = append(cfg.Templates, t)
	}
	if f.prometheus != "" {
		cfg.Prometheus.URL = f.prometheus
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, "", &problems{what: "config " + f.configPath + " is not valid", err: err}
	}
	if name == "" {
		if len(cfg.Templates) != 1 {
			return config.Config{}, "", fmt.Errorf("--template NAME is required: %s has %s", f.configPath, templateNames(cfg))
		}
		name = cfg.Templates[0].Name
	}
	return cfg, name, nil
}

func templateNames(cfg config.Config) string {
	names := make([]string, len(cfg.Templates))
	for i, t := range cfg.Templates {
		names[i] = strconv.Quote(t.Name)
	}
	return strings.Join(names, ", ")
}

func joinVars(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = m[k]
	}
	return strings.Join(parts, ",")
}

func parseRef(s string) (rollout.Ref, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return rollout.Ref{}, fmt.Errorf("want namespace/name, got %q", s)
	}
	return rollout.Ref{Namespace: ns, Name: name}, nil
}

var clockTime = regexp.MustCompile(`^(\d{1,2}):(\d{2})(?::(\d{2}))?$`)

// parseSteps reads steps as weight@time, separated by commas or white space, # starting a
// comment to the end of its line. Times are HH:MM[:SS] on from's day in UTC, or RFC 3339; the
// first step is the start, at from, and may leave its time out.
func parseSteps(text string, from time.Time) ([]replay.Step, error) {
	var items []string
	for _, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		items = append(items, strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' })...)
	}
	if len(items) == 0 {
		return nil, errors.New("steps: none given")
	}
	day := from.UTC().Truncate(24 * time.Hour)
	steps := make([]replay.Step, 0, len(items))
	for i, item := range items {
		w, at, hasTime := strings.Cut(item, "@")
		weight, err := strconv.Atoi(w)
		if err != nil || weight < 0 || weight > 100 {
			return nil, fmt.Errorf("steps: %q: the weight must be a whole percent within 0..100", item)
		}
		var t time.Time
		switch {
		case !hasTime && i == 0:
			t = from
		case !hasTime:
			return nil, fmt.Errorf("steps: %q: want weight@time (only the first step, at --from, may leave its time out)", item)
		case clockTime.MatchString(at):
			m := clockTime.FindStringSubmatch(at)
			h, _ := strconv.Atoi(m[1])
			mi, _ := strconv.Atoi(m[2])
			s := 0
			if m[3] != "" {
				s, _ = strconv.Atoi(m[3])
			}
			if h > 23 || mi > 59 || s > 59 {
				return nil, fmt.Errorf("steps: %q: not a time of day", item)
			}
			t = day.Add(time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(s)*time.Second)
		default:
			if t, err = time.Parse(time.RFC3339, at); err != nil {
				return nil, fmt.Errorf("steps: %q: the time must be HH:MM[:SS] (on --from's day, UTC) or RFC 3339", item)
			}
		}
		if i == 0 && !t.Equal(from) {
			return nil, fmt.Errorf("steps: the first step is the rollout's start, at --from (%s); %q is not", from.UTC().Format(time.RFC3339), item)
		}
		steps = append(steps, replay.Step{Weight: weight, At: t})
	}
	return steps, nil
}

// writeTimeline prints the evaluations as a table: one row each (or, with changes, those
// whose step or verdict changed, and the last), one column per check with its short figures.
func writeTimeline(w io.Writer, r replay.Rollout, evals []replay.Evaluation, changes bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{"TIME", "STEP", "WEIGHT", "VERDICT"}
	kinds := map[string]rollout.CheckKind{}
	for _, c := range r.Template.Checks {
		header = append(header, strings.ToUpper(c.Name))
		kinds[c.Name] = c.Kind
	}
	header = append(header, "REASON")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	layout := "15:04:05"
	if !sameDay(r.Steps[0].At, r.To) {
		layout = "2006-01-02 15:04:05"
	}
	for i, e := range evals {
		v := e.Verdict
		if changes && i > 0 && i < len(evals)-1 {
			prev := evals[i-1].Verdict
			if prev.Step == v.Step && prev.Verdict == v.Verdict {
				continue
			}
		}
		row := []string{v.DecidedAt.UTC().Format(layout), strconv.Itoa(v.Step), strconv.Itoa(v.Weight) + "%", string(v.Verdict)}
		for _, c := range r.Template.Checks {
			row = append(row, figures(v.Checks, c.Name, kinds[c.Name]))
		}
		row = append(row, v.Reason)
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	_ = tw.Flush()
}

func sameDay(a, b time.Time) bool {
	return a.UTC().Truncate(24 * time.Hour).Equal(b.UTC().Truncate(24 * time.Hour))
}

// figures is one check's short figures: its outcome, canary / stable, and its e-value.
func figures(checks []rollout.CheckResult, name string, kind rollout.CheckKind) string {
	for _, c := range checks {
		if c.Metric != name {
			continue
		}
		s := string(c.Outcome)
		if c.Canary != nil || c.Stable != nil {
			s += " " + short(kind, c.Canary) + "/" + short(kind, c.Stable)
		}
		if c.EValue != nil {
			s += " e" + strconv.FormatFloat(*c.EValue, 'g', 3, 64)
		}
		return s
	}
	return "-"
}

func short(kind rollout.CheckKind, v *float64) string {
	if v == nil {
		return "-"
	}
	switch kind {
	case rollout.KindRatio:
		return strconv.FormatFloat(*v*100, 'f', 2, 64) + "%"
	case rollout.KindHistogram:
		return strconv.FormatFloat(*v*1000, 'f', 0, 64) + "ms"
	}
	return strconv.FormatFloat(*v, 'g', 4, 64)
}

// writeSummary says how each step went and what the final verdict is.
func writeSummary(w io.Writer, r replay.Rollout, evals []replay.Evaluation, final rollout.Decision) {
	fmt.Fprintln(w)
	for i, s := range r.Steps {
		var n int
		var first, last *rollout.Verdict
		var firstProceed *time.Time
		for k := range evals {
			v := &evals[k].Verdict
			if v.Step != i {
				continue
			}
			n++
			if first == nil {
				first = v
			}
			last = v
			if v.Verdict == rollout.Proceed && firstProceed == nil {
				at := v.DecidedAt
				firstProceed = &at
			}
		}
		line := fmt.Sprintf("step %d (%d%%, from %s): ", i, s.Weight, s.At.UTC().Format(time.RFC3339))
		switch {
		case n == 0:
			line += "not evaluated"
		default:
			line += fmt.Sprintf("%d evaluations", n)
			if firstProceed != nil {
				line += fmt.Sprintf(", first proceed after %s", firstProceed.Sub(s.At).Truncate(time.Second))
			}
			line += fmt.Sprintf(", last verdict %s at %s", last.Verdict, last.DecidedAt.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "final verdict: %s (exit status %d)\n", final, exitFor(final))
}

const backtestUsage = `Usage: analyzerd backtest --from TIME --to TIME --steps W@T,... [--template NAME | --template-file FILE]
                          [--arg k=v ...] [--canary k=v ...] [--stable k=v ...] [flags]

Runs an analysis template against Prometheus history for a past deployment, evaluating as
the daemon would have: the baseline over the template's baselineWindow before --from, an
evaluation at the start, at the data's pace (each next scrape the counts wait for) and at
once at each step, the same measurement and the same decision, the evidence carried from
one to the next. Prints the verdicts as a table and each step's outcome.

The exit status is the final verdict: 0 proceed, 1 rollback, 2 never decided (the last step
below weight 100 ended on pause; a step at 100 is full promotion and, with no stable traffic
to compare with, decides nothing, unless it is the only one); 64 for bad flags, configuration,
template or steps; 69 when Prometheus could not be queried; 73 when --report could not be
written. --report FILE.html writes the daemon's rollout page of the verdicts as well.

Example:
  analyzerd backtest --config configs/analyzerd.yaml --template http-golden-signals \
    --prometheus http://localhost:9090 --from 2026-11-25T14:00:00Z --to 2026-11-25T14:40:00Z \
    --arg service=checkout --canary version=v2 --stable version=v1 \
    --steps 10@14:00,25@14:10,50@14:20,100@14:30

Flags:
`
