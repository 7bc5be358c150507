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
	Checks          []Check       `yaml:"checks"`
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
	FailureLimit int     `yaml:"failureLimit"`
	Guards       []Guard `yaml:"guards"`
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
	if len(c.Guards) == 0 {
		add("guards", "at least one guard is needed")
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
