package bench

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The synthetic source (synthetic.go) understands exactly the PromQL the daemon sends for the
// shipped template: a range-vector selector, a metric name with label matchers and a range,
// http_requests_total{service="svc-1", version=~"v1|v2", code=~"5.."}[70s], and vector(1),
// its readiness probe (compare.Prometheus.Ping). Anything else is refused, so that a query the
// synthetic source would answer wrongly shows in the daemon's logs at once.

// query is a parsed query: a range selector, or (ping) vector(1).
type query struct {
	ping     bool
	matchers []matcher // the metric name's (__name__ =) first
	rng      time.Duration
}

type matchOp int

const (
	opEqual matchOp = iota
	opNotEqual
	opRegex
	opNotRegex
)

// matcher is one label matcher. A regex is fully anchored, as in Prometheus; one that is an
// alternation of literals (what the daemon's grouped queries write: regexp.QuoteMeta'd values
// joined with |) is matched as the set of them.
type matcher struct {
	label string
	op    matchOp
	value string
	re    *regexp.Regexp
	set   map[string]bool // a regex that is an alternation of literals; nil otherwise
}

// matches reports whether a series whose label has value v (or "" without it) is selected.
func (m *matcher) matches(v string) bool {
	switch m.op {
	case opEqual:
		return v == m.value
	case opNotEqual:
		return v != m.value
	}
	var in bool
	if m.set != nil {
		in = m.set[v]
	} else {
		in = m.re.MatchString(v)
	}
	return in == (m.op == opRegex)
}

// literals are the values a regex is an alternation of, exactly those it matches anchored; ok
// is false when it holds anything but literal characters, escaped punctuation and |.
func literals(re string) (set map[string]bool, ok bool) {
	set = map[string]bool{}
	var cur []byte
	for i := 0; i < len(re); i++ {
		switch c := re[i]; {
		case c == '\\':
			// As in RE2, a backslash before an ASCII character that is not a letter or digit
			// is that character; \d, \pL, \Q... are something else.
			if i+1 == len(re) || re[i+1] >= 0x80 || isAlnum(re[i+1]) {
				return nil, false
			}
			i++
			cur = append(cur, re[i])
		case c == '|':
			set[string(cur)] = true
			cur = cur[:0]
		case strings.IndexByte(`.+*?()[]{}^$`, c) >= 0:
			return nil, false
		default:
			cur = append(cur, c)
		}
	}
	set[string(cur)] = true
	return set, true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// promDuration is Prometheus's duration syntax (model.ParseDuration): units from years down
// to milliseconds, each at most once, in that order.
var promDuration = regexp.MustCompile(`^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$`)

var durationUnits = [...]time.Duration{365 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour, time.Hour, time.Minute, time.Second, time.Millisecond}

func parseDuration(s string) (time.Duration, error) {
	m := promDuration.FindStringSubmatch(s)
	if m == nil || s == "" {
		return 0, fmt.Errorf("not a valid duration string: %q", s)
	}
	var d time.Duration
	for i, part := range m[1:] {
		if part == "" {
			continue
		}
		n, err := strconv.ParseInt(part, 10, 64)
		if err != nil || n > int64(100*365*24*time.Hour/durationUnits[i]) {
			return 0, fmt.Errorf("duration out of range: %q", s)
		}
		d += time.Duration(n) * durationUnits[i]
	}
	return d, nil
}

// parser reads a query left to right.
type parser struct {
	s string
	i int
}

func (p *parser) space() {
	for p.i < len(p.s) && strings.IndexByte(" \t\n\r", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("synthetic source: at %d of %q: %s (it understands only a range selector, name{label=\"value\", ...}[range], and vector(1))",
		p.i, p.s, fmt.Sprintf(format, args...))
}

// name reads a metric name (colons allowed) or a label name.
func (p *parser) name(metric bool) string {
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || metric && c == ':' || p.i > start && c >= '0' && c <= '9' {
			p.i++
			continue
		}
		break
	}
	return p.s[start:p.i]
}

// str reads a string literal, double-quoted with Go's escapes or raw in backquotes.
func (p *parser) str() (string, error) {
	if p.i == len(p.s) || (p.s[p.i] != '"' && p.s[p.i] != '`') {
		return "", p.errorf("want a string literal in double quotes or backquotes")
	}
	q := p.s[p.i]
	end := p.i + 1
	for ; end < len(p.s) && p.s[end] != q; end++ {
		if p.s[end] == '\\' && q == '"' {
			end++
		}
	}
	if end >= len(p.s) {
		return "", p.errorf("unterminated string literal")
	}
	v, err := strconv.Unquote(p.s[p.i : end+1])
	if err != nil {
		return "", p.errorf("bad string literal: %v", err)
	}
	p.i = end + 1
	return v, nil
}

// parseQuery parses what the daemon sends.
func parseQuery(s string) (query, error) {
	p := &parser{s: s}
	p.space()
	name := p.name(true)
	if name == "" {
		return query{}, p.errorf("want a metric name")
	}
	p.space()
	if name == "vector" && strings.HasPrefix(p.s[p.i:], "(") {
		p.i++
		p.space()
		if !strings.HasPrefix(p.s[p.i:], "1") {
			return query{}, p.errorf("only vector(1)")
		}
		p.i++
		p.space()
		if !strings.HasPrefix(p.s[p.i:], ")") {
			return query{}, p.errorf("only vector(1)")
		}
		p.i++
		p.space()
		if p.i != len(p.s) {
			return query{}, p.errorf("unexpected text after vector(1)")
		}
		return query{ping: true}, nil
	}
	q := query{matchers: []matcher{{label: "__name__", op: opEqual, value: name}}}
	if p.i < len(p.s) && p.s[p.i] == '{' {
		p.i++
		for {
			p.space()
			if p.i < len(p.s) && p.s[p.i] == '}' {
				p.i++
				break
			}
			m, err := p.matcher()
			if err != nil {
				return query{}, err
			}
			q.matchers = append(q.matchers, m)
			p.space()
			if p.i < len(p.s) && p.s[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.s) && p.s[p.i] == '}' {
				p.i++
				break
			}
			return query{}, p.errorf("want , or } after a label matcher")
		}
		p.space()
	}
	if p.i == len(p.s) || p.s[p.i] != '[' {
		return query{}, p.errorf("want a range, [5m]: the daemon reads counters' raw samples")
	}
	p.i++
	end := strings.IndexByte(p.s[p.i:], ']')
	if end < 0 {
		return query{}, p.errorf("unclosed range")
	}
	d, err := parseDuration(strings.TrimSpace(p.s[p.i : p.i+end]))
	if err != nil {
		return query{}, p.errorf("%v", err)
	}
	if d <= 0 {
		return query{}, p.errorf("a range must be longer than 0")
	}
	q.rng = d
	p.i += end + 1
	p.space()
	if p.i != len(p.s) {
		return query{}, p.errorf("unexpected text after the range")
	}
	return q, nil
}

func (p *parser) matcher() (matcher, error) {
	m := matcher{label: p.name(false)}
	if m.label == "" {
		return m, p.errorf("want a label name")
	}
	p.space()
	switch rest := p.s[p.i:]; {
	case strings.HasPrefix(rest, "=~"):
		m.op, p.i = opRegex, p.i+2
	case strings.HasPrefix(rest, "!~"):
		m.op, p.i = opNotRegex, p.i+2
	case strings.HasPrefix(rest, "!="):
		m.op, p.i = opNotEqual, p.i+2
	case strings.HasPrefix(rest, "="):
		m.op, p.i = opEqual, p.i+1
	default:
		return m, p.errorf("want =, !=, =~ or !~")
	}
	p.space()
	v, err := p.str()
	if err != nil {
		return m, err
	}
	m.value = v
	if m.op == opRegex || m.op == opNotRegex {
		if m.re, err = regexp.Compile("^(?:" + v + ")$"); err != nil {
			return m, p.errorf("bad regex %q: %v", v, err)
		}
		m.set, _ = literals(v)
	}
	return m, nil
}
