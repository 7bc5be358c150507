package rollout

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Template is an analysis template: which queries measure a canary against its stable side
// and its baseline, and the guards that judge the numbers. Templates come from the daemon's
// configuration; rollout.started events name one.
type Template struct {
	Name string `yaml:"name"`
	// Interval is how often every rollout using the template is evaluated.
	Interval time.Duration `yaml:"interval"`
	// BaselineWindow is the stretch of the stable side's history, ending at the
	// rollout.started event's time, that the baseline is captured over.
	BaselineWindow time.Duration `yaml:"baselineWindow"`
	// Args are the template arguments every rollout.started event must give (args).
	Args []string `yaml:"args"`
	// Variables are the names every rollout.started event must give for each side
	// (canary and stable) to select that side's series.
	Variables []string `yaml:"variables"`
	// MinStepDuration is how long a step must have lasted before it can proceed.
	MinStepDuration time.Duration `yaml:"minStepDuration"`
	// Alpha bounds the chance that the template's sequential tests roll back a canary that
	// is no worse than their margins, however often it is evaluated. It is split equally
	// across the tests (one per check and reference).
	Alpha  float64 `yaml:"alpha"`
	Checks []Check `yaml:"checks"`
}

// CheckKind says how a check's queries are read.
type CheckKind string

// The kinds of check.
const (
	// KindRatio divides an error count by a request count (both as increases over the window).
	KindRatio CheckKind = "ratio"
	// KindHistogram estimates a quantile from cumulative histogram buckets (series by le).
	KindHistogram CheckKind = "histogram"
	// KindValue reads one number (a gauge, a counter's rate, any business metric).
	KindValue CheckKind = "value"
)

// Check is one metric an analysis measures on each side.
type Check struct {
	Name string    `yaml:"name"`
	Kind CheckKind `yaml:"kind"`
	// Errors and Total are the ratio check's queries.
	Errors string `yaml:"errors,omitempty"`
	Total  string `yaml:"total,omitempty"`
	// Buckets is the histogram check's query: one series per le bucket. Quantile is the
	// quantile estimated from it, in (0, 1).
	Buckets  string  `yaml:"buckets,omitempty"`
	Quantile float64 `yaml:"quantile,omitempty"`
	// Query is the value check's query: one series.
	Query string `yaml:"query,omitempty"`
	// MinSamples is how many canary samples (requests) a ratio or histogram check must
	// have in the step before its guards are judged; until then it is inconclusive.
	MinSamples int64 `yaml:"minSamples"`
	// FailureLimit is how many failed evaluations of the check are tolerated: the verdict is
	// rollback when its failures exceed it (0, the default, rolls back on the first failure).
	// A critical guard that fails rolls back at once whatever the limit.
	FailureLimit int `yaml:"failureLimit"`
	// ConsecutiveErrorLimit is how many evaluations in a row may end in error (the metrics
	// source failing) before OnErrorLimit applies. Nil means the default.
	ConsecutiveErrorLimit *int `yaml:"consecutiveErrorLimit,omitempty"`
	// OnErrorLimit is what happens once the errors in a row exceed ConsecutiveErrorLimit.
	OnErrorLimit Escalation `yaml:"onErrorLimit,omitempty"`
	// InconclusiveLimit is how many inconclusive evaluations a step may have before
	// OnInconclusiveLimit applies; 0 sets no limit.
	InconclusiveLimit int `yaml:"inconclusiveLimit,omitempty"`
	// OnInconclusiveLimit is what happens once the step's inconclusive evaluations exceed
	// InconclusiveLimit.
	OnInconclusiveLimit Escalation `yaml:"onInconclusiveLimit,omitempty"`
	// NoData is what an evaluation without canary data counts as.
	NoData NoDataPolicy `yaml:"noData,omitempty"`
	// Sequential configures the anytime-valid sequential test of ratio and histogram checks.
	// Nil runs none (configuration loading sets the default: on).
	Sequential *Sequential `yaml:"sequential,omitempty"`
	// MannWhitney adds a Kayenta-compatible Mann-Whitney U judgement of the canary's
	// per-evaluation values against the stable side's. Nil runs none.
	MannWhitney *MannWhitney `yaml:"mannWhitney,omitempty"`
	Guards      []Guard      `yaml:"guards"`
}

// Escalation is what a limit that was exceeded leads to.
type Escalation string

// The escalations.
const (
	// EscalatePause keeps the canary paused, the verdict's reason saying the limit was
	// exceeded: a person decides.
	EscalatePause Escalation = "pause"
	// EscalateRollback rolls the canary back.
	EscalateRollback Escalation = "rollback"
)

// NoDataPolicy is what an evaluation without canary data counts as.
type NoDataPolicy string

// The no-data policies. Neither ever lets a canary proceed.
const (
	// NoDataPause: the check's outcome is nodata and the verdict pauses.
	NoDataPause NoDataPolicy = "pause"
	// NoDataFail: the check fails (counted against failureLimit), as Flagger treats a
	// query that found no values.
	NoDataFail NoDataPolicy = "fail"
)

// Sequential configures a check's anytime-valid sequential test: from counts (errors and
// requests; requests slower than a bucket's bound and all requests), it tests "the canary's
// rate is at most (1 + margin) times the reference's" and rolls back when the evidence against
// it reaches 1/alpha. It stays valid however often it is evaluated.
type Sequential struct {
	// Enabled turns the test on or off (on when the section is present or defaulted).
	Enabled *bool `yaml:"enabled,omitempty"`
	// Against lists what the canary is tested against: stable (the same window), baseline
	// (the stable side before the canary, for stable sides with little traffic), or both.
	Against []Reference `yaml:"against,omitempty"`
	// Margin is the relative worsening tolerated: the canary's rate may be up to
	// (1 + margin) times the reference's before the test rejects.
	Margin *float64 `yaml:"margin,omitempty"`
	// Tolerance is added to the margin for a ratio check to pass: it passes once a
	// confidence sequence shows its rate below (1 + margin) x reference + tolerance. An
	// absolute rate (0.01 is one percentage point): rare events cannot be shown within a
	// relative margin quickly.
	Tolerance *float64 `yaml:"tolerance,omitempty"`
	// PriorScale is the prior's spread over how much worse a bad canary is, as the standard
	// deviation of the natural logarithm of the rate ratio (1: mostly within e times the
	// margin). Smaller finds small regressions sooner and large ones a little later.
	PriorScale float64 `yaml:"priorScale,omitempty"`
}

// On reports whether the test runs.
func (s *Sequential) On() bool { return s != nil && (s.Enabled == nil || *s.Enabled) }

// MannWhitney configures a Kayenta-compatible Mann-Whitney U judgement (Kayenta's
// NetflixACAJudge with its MannWhitneyClassifier). Zero values mean the defaults.
type MannWhitney struct {
	// Direction is which way is worse: increase, decrease or either (default either).
	Direction string `yaml:"direction,omitempty"`
	// Confidence is the confidence level of the shift's interval (default 0.98, Kayenta's).
	Confidence float64 `yaml:"confidence,omitempty"`
	// AllowedIncrease and AllowedDecrease are the effect sizes (canary mean / stable mean)
	// tolerated before a significant difference fails the check (default 1).
	AllowedIncrease float64 `yaml:"allowedIncrease,omitempty"`
	AllowedDecrease float64 `yaml:"allowedDecrease,omitempty"`
	// CriticalIncrease and CriticalDecrease are the effect sizes at which a failure rolls
	// back at once (0: none).
	CriticalIncrease float64 `yaml:"criticalIncrease,omitempty"`
	CriticalDecrease float64 `yaml:"criticalDecrease,omitempty"`
	// MinPoints is how many evaluations each side needs in the step before judging
	// (default 10).
	MinPoints int `yaml:"minPoints,omitempty"`
}

// Reference is what a guard compares the canary with.
type Reference string

// The references a guard may compare with.
const (
	// AgainstNone compares the canary's value with the bounds themselves.
	AgainstNone Reference = ""
	// AgainstStable compares the canary with the stable side over the same window.
	AgainstStable Reference = "stable"
	// AgainstBaseline compares the canary with the stable side's baseline, captured
	// before the canary took traffic.
	AgainstBaseline Reference = "baseline"
)

// Measure is how a guard combines the canary with its reference.
type Measure string

// The measures a guard may bound.
const (
	// MeasureValue bounds the canary's own value (only with AgainstNone).
	MeasureValue Measure = "value"
	// MeasureDelta bounds canary - reference.
	MeasureDelta Measure = "delta"
	// MeasureRatio bounds canary / reference.
	MeasureRatio Measure = "ratio"
)

// Guard is one threshold a check's numbers must keep. It passes when its measure is strictly
// inside its bounds.
type Guard struct {
	Against Reference `yaml:"against,omitempty"`
	Measure Measure   `yaml:"measure,omitempty"`
	Max     *float64  `yaml:"max,omitempty"`
	Min     *float64  `yaml:"min,omitempty"`
	// Critical guards roll the canary back at once when they fail.
	Critical bool `yaml:"critical,omitempty"`
	// FromWeight and FromStep make the guard apply only once the canary's weight, or the
	// rollout's step, has reached them.
	FromWeight int `yaml:"fromWeight,omitempty"`
	FromStep   int `yaml:"fromStep,omitempty"`
}

// Active reports whether the guard applies at the given step and weight.
func (g Guard) Active(step, weight int) bool {
	return step >= g.FromStep && weight >= g.FromWeight
}

// Expression renders the guard's pass condition for people, for example
// "canary - stable < 0.01" or "0.9 < canary / baseline < 1.1".
func (g Guard) Expression() string {
	term := "canary"
	switch g.Measure {
	case MeasureDelta:
		term = "canary - " + string(g.Against)
	case MeasureRatio:
		term = "canary / " + string(g.Against)
	}
	switch {
	case g.Min != nil && g.Max != nil:
		return formatNumber(*g.Min) + " < " + term + " < " + formatNumber(*g.Max)
	case g.Max != nil:
		return term + " < " + formatNumber(*g.Max)
	case g.Min != nil:
		return term + " > " + formatNumber(*g.Min)
	}
	return term
}

func formatNumber(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// Validate reports every problem with the template, each naming the field at fault.
func (t Template) Validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if t.Name == "" {
		add("name", "must not be empty")
	}
	if t.Interval <= 0 {
		add("interval", "must be positive, got %s", t.Interval)
	}
	if t.BaselineWindow <= 0 {
		add("baselineWindow", "must be positive, got %s", t.BaselineWindow)
	}
	if t.MinStepDuration < 0 {
		add("minStepDuration", "must not be negative, got %s", t.MinStepDuration)
	}
	if !(t.Alpha > 0 && t.Alpha < 1) {
		add("alpha", "must be between 0 and 1 exclusive, got %g", t.Alpha)
	}
	checkNames(&errs, "args", t.Args)
	checkNames(&errs, "variables", t.Variables)
	if len(t.Checks) == 0 {
		add("checks", "at least one check is needed")
	}
	seen := map[string]bool{}
	for i, c := range t.Checks {
		field := fmt.Sprintf("checks[%d]", i)
		if c.Name != "" {
			field = fmt.Sprintf("checks[%d] (%s)", i, c.Name)
		}
		if c.Name == "" {
			add(field+".name", "must not be empty")
		} else if seen[c.Name] {
			add(field+".name", "duplicate check name %q", c.Name)
		}
		seen[c.Name] = true
		for _, err := range c.validate() {
			errs = append(errs, fmt.Errorf("%s.%w", field, err))
		}
	}
	return errs
}

func checkNames(errs *[]error, field string, names []string) {
	seen := map[string]bool{}
	for i, n := range names {
		if !IsIdentifier(n) {
			*errs = append(*errs, fmt.Errorf("%s[%d]: %q is not a name of letters, digits and underscores", field, i, n))
		}
		if seen[n] {
			*errs = append(*errs, fmt.Errorf("%s[%d]: duplicate %q", field, i, n))
		}
		seen[n] = true
	}
}

// IsIdentifier reports whether s is a non-empty name of ASCII letters, digits and
// underscores that does not start with a digit.
func IsIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func (c Check) validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	need := func(field, value string) {
		if strings.TrimSpace(value) == "" {
			add(field, "is required for a %s check", c.Kind)
		}
	}
	forbid := func(field string, set bool) {
		if set {
			add(field, "does not apply to a %s check", c.Kind)
		}
	}
	switch c.Kind {
	case KindRatio:
		need("errors", c.Errors)
		need("total", c.Total)
		forbid("buckets", c.Buckets != "")
		forbid("quantile", c.Quantile != 0)
		forbid("query", c.Query != "")
	case KindHistogram:
		need("buckets", c.Buckets)
		if !(c.Quantile > 0 && c.Quantile < 1) {
			add("quantile", "must be between 0 and 1 exclusive, got %g", c.Quantile)
		}
		forbid("errors", c.Errors != "")
		forbid("total", c.Total != "")
		forbid("query", c.Query != "")
	case KindValue:
		need("query", c.Query)
		forbid("errors", c.Errors != "")
		forbid("total", c.Total != "")
		forbid("buckets", c.Buckets != "")
		forbid("quantile", c.Quantile != 0)
		forbid("minSamples", c.MinSamples != 0)
	default:
		add("kind", "must be one of ratio, histogram, value; got %q", c.Kind)
	}
	if c.MinSamples < 0 {
		add("minSamples", "must not be negative, got %d", c.MinSamples)
	}
	if c.FailureLimit < 0 {
		add("failureLimit", "must not be negative, got %d", c.FailureLimit)
	}
	if c.ConsecutiveErrorLimit != nil && *c.ConsecutiveErrorLimit < 0 {
		add("consecutiveErrorLimit", "must not be negative, got %d", *c.ConsecutiveErrorLimit)
	}
	if c.InconclusiveLimit < 0 {
		add("inconclusiveLimit", "must not be negative, got %d", c.InconclusiveLimit)
	}
	for _, e := range []struct {
		field string
		value Escalation
	}{{"onErrorLimit", c.OnErrorLimit}, {"onInconclusiveLimit", c.OnInconclusiveLimit}} {
		if e.value != "" && e.value != EscalatePause && e.value != EscalateRollback {
			add(e.field, "must be pause or rollback, got %q", e.value)
		}
	}
	if c.NoData != "" && c.NoData != NoDataPause && c.NoData != NoDataFail {
		add("noData", "must be pause or fail, got %q", c.NoData)
	}
	if s := c.Sequential; s != nil {
		if c.Kind == KindValue && s.On() {
			add("sequential", "does not apply to a value check (it tests counts); set enabled: false or remove it")
		}
		for _, err := range s.validate(c.Kind) {
			errs = append(errs, fmt.Errorf("sequential.%w", err))
		}
	}
	if c.MannWhitney != nil {
		for _, err := range c.MannWhitney.Validate() {
			errs = append(errs, fmt.Errorf("mannWhitney.%w", err))
		}
	}
	if len(c.Guards) == 0 && !c.Sequential.On() && c.MannWhitney == nil {
		add("guards", "at least one guard is needed (or a sequential test, or mannWhitney)")
	}
	for i, g := range c.Guards {
		for _, err := range g.validate() {
			errs = append(errs, fmt.Errorf("guards[%d].%w", i, err))
		}
	}
	return errs
}

func (g Guard) validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch g.Against {
	case AgainstNone:
		if g.Measure != MeasureValue && g.Measure != "" {
			add("measure", "must be value (or empty) when against is empty, got %q", g.Measure)
		}
	case AgainstStable, AgainstBaseline:
		if g.Measure != MeasureDelta && g.Measure != MeasureRatio {
			add("measure", "must be delta or ratio when against is %s, got %q", g.Against, g.Measure)
		}
	default:
		add("against", "must be stable, baseline or empty, got %q", g.Against)
	}
	if g.Min == nil && g.Max == nil {
		add("max", "a guard needs max, min or both")
	}
	// No value is below or above NaN: such a guard would fail at every evaluation.
	if g.Min != nil && math.IsNaN(*g.Min) {
		add("min", "must be a number, got NaN")
	}
	if g.Max != nil && math.IsNaN(*g.Max) {
		add("max", "must be a number, got NaN")
	}
	if g.Min != nil && g.Max != nil && *g.Min >= *g.Max {
		add("min", "must be below max (%g >= %g)", *g.Min, *g.Max)
	}
	if g.FromWeight < 0 || g.FromWeight > 100 {
		add("fromWeight", "must be within 0..100, got %d", g.FromWeight)
	}
	if g.FromStep < 0 {
		add("fromStep", "must not be negative, got %d", g.FromStep)
	}
	return errs
}

func (s Sequential) validate(kind CheckKind) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	seen := map[Reference]bool{}
	for i, a := range s.Against {
		if a != AgainstStable && a != AgainstBaseline {
			add(fmt.Sprintf("against[%d]", i), "must be stable or baseline, got %q", a)
		}
		if seen[a] {
			add(fmt.Sprintf("against[%d]", i), "duplicate %q", a)
		}
		seen[a] = true
	}
	if s.Margin != nil && !(*s.Margin >= 0 && *s.Margin <= 10) {
		add("margin", "must be within 0..10, got %g", *s.Margin)
	}
	if s.Tolerance != nil {
		if kind != KindRatio {
			add("tolerance", "applies to ratio checks only")
		} else if !(*s.Tolerance >= 0 && *s.Tolerance <= 1) {
			add("tolerance", "must be within 0..1, got %g", *s.Tolerance)
		}
	}
	if s.PriorScale != 0 && !(s.PriorScale >= 0.05 && s.PriorScale <= 10) {
		add("priorScale", "must be within 0.05..10, got %g", s.PriorScale)
	}
	return errs
}

// Validate reports every problem with the judge's configuration, each naming its field.
func (m MannWhitney) Validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch m.Direction {
	case "", "increase", "decrease", "either":
	default:
		add("direction", "must be increase, decrease or either, got %q", m.Direction)
	}
	if m.Confidence != 0 && !(m.Confidence >= 0.5 && m.Confidence < 1) {
		add("confidence", "must be within 0.5..1 (exclusive), got %g", m.Confidence)
	}
	if m.AllowedIncrease != 0 && !(m.AllowedIncrease >= 1 && !math.IsInf(m.AllowedIncrease, 1)) {
		add("allowedIncrease", "must be a finite number of at least 1, got %g", m.AllowedIncrease)
	}
	if m.AllowedDecrease != 0 && !(m.AllowedDecrease > 0 && m.AllowedDecrease <= 1) {
		add("allowedDecrease", "must be within 0..1 (0 exclusive), got %g", m.AllowedDecrease)
	}
	allowedUp, allowedDown := 1.0, 1.0
	if m.AllowedIncrease >= 1 && !math.IsInf(m.AllowedIncrease, 1) {
		allowedUp = m.AllowedIncrease
	}
	if m.AllowedDecrease > 0 && m.AllowedDecrease <= 1 {
		allowedDown = m.AllowedDecrease
	}
	if m.CriticalIncrease != 0 && !(m.CriticalIncrease >= allowedUp && !math.IsInf(m.CriticalIncrease, 1)) {
		add("criticalIncrease", "must be a finite number of at least allowedIncrease (%g), got %g", allowedUp, m.CriticalIncrease)
	}
	if m.CriticalDecrease != 0 && !(m.CriticalDecrease > 0 && m.CriticalDecrease <= allowedDown) {
		add("criticalDecrease", "must be within 0..allowedDecrease (%g; 0 exclusive), got %g", allowedDown, m.CriticalDecrease)
	}
	if m.MinPoints < 0 {
		add("minPoints", "must not be negative, got %d", m.MinPoints)
	} else if m.MinPoints != 0 && m.MinPoints < 3 {
		add("minPoints", "must be at least 3, got %d", m.MinPoints)
	}
	return errs
}

// The defaults of a template's statistical settings. Configuration loading writes them into
// every template; decide falls back to them where a template built in code leaves them unset.
const (
	DefaultAlpha                 = 0.01
	DefaultMargin                = 0.1
	DefaultTolerance             = 0.01
	DefaultPriorScale            = 1.0
	DefaultConsecutiveErrorLimit = 4
)

// CheckStart reports why a rollout.started event cannot start an analysis with t: an argument
// or a variable of either side that t needs and the event does not give. The error wraps
// ErrInvalid and names the field as a dead letter does.
func (t Template) CheckStart(ev Event) error {
	for _, name := range t.Args {
		if _, ok := ev.Args[name]; !ok {
			return Invalidf("data.args.%s: required by analysis template %q", name, t.Name)
		}
	}
	for _, name := range t.Variables {
		if _, ok := ev.Canary[name]; !ok {
			return Invalidf("data.canary.%s: required by analysis template %q", name, t.Name)
		}
		if _, ok := ev.Stable[name]; !ok {
			return Invalidf("data.stable.%s: required by analysis template %q", name, t.Name)
		}
	}
	return nil
}

// ErrUnknownTemplate is the error of a rollout.started event naming no template.
func ErrUnknownTemplate(name string) error {
	return Invalidf("data.analysis: no analysis template named %q", name)
}
