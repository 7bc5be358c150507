package compare

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// A query template is PromQL with placeholders. The only placeholders are:
//
//	{{ arg "name" }}       the rollout's template argument, as a PromQL string literal
//	{{ var "name" }}       the side's selecting variable (canary or stable), as a string literal
//	{{ argRegex "name" }}  the argument as a string literal matching exactly that value with =~
//	{{ varRegex "name" }}  the variable, likewise
//	{{ window }}           the range of the evaluation, as a PromQL duration (e.g. 45s)
//
// Values from events are data, never query text: they only ever come out of
// strconv.QuoteToASCII (PromQL string literals use Go's escaping), so no value can change what
// a query selects beyond the label value it names. The literal is plain ASCII, so that no byte
// of a value trips Prometheus's lexer (it rejects U+FFFD in a literal). A placeholder renders
// its own quotes; writing one inside a string literal, or quotes around one, is an error.
//
// A value placeholder only stands as the value of a label matcher: right after =, != (arg,
// var) or =~, !~ (argRegex, varRegex) inside a {...} selector. Anywhere else a value would
// still be a literal but could change what the query selects: an arg after =~ is a regex
// (".*" matches every series), and a literal alone in braces is a metric name. window is
// computed by the daemon, never from events, and may stand anywhere outside a string literal.
// A placeholder in a # comment stays in the comment (a literal holds no newline), which
// Prometheus ignores.

// Query is a compiled query template.
type Query struct {
	text  string
	parts []part
}

type partKind int

const (
	literal partKind = iota
	argument
	variable
	argumentRegex
	variableRegex
	window
)

type part struct {
	kind partKind
	text string // literal text, or the argument/variable name
}

var placeholder = regexp.MustCompile(`^\s*(arg|var|argRegex|varRegex)\s+"([^"]*)"\s*$|^\s*(window)\s*$`)

// Compile parses a query template. args and vars are the names the template declares; a
// placeholder naming anything else is an error.
func Compile(text string, args, vars []string) (Query, error) {
	q := Query{text: text}
	declared := func(names []string, n string) bool {
		for _, d := range names {
			if d == n {
				return true
			}
		}
		return false
	}
	rest := text
	var lexed lexState
	for {
		open := strings.Index(rest, "{{")
		if open < 0 {
			if strings.Contains(rest, "}}") {
				return Query{}, fmt.Errorf("unmatched }} in query %q", text)
			}
			q.parts = appendLiteral(q.parts, rest)
			break
		}
		closing := strings.Index(rest[open:], "}}")
		if closing < 0 {
			return Query{}, fmt.Errorf("unclosed {{ in query %q", text)
		}
		before, inner := rest[:open], rest[open+2:open+closing]
		if strings.Contains(before, "}}") {
			return Query{}, fmt.Errorf("unmatched }} in query %q", text)
		}
		after := rest[open+closing+2:]
		if endsQuoted(before) || startsQuoted(after) {
			return Query{}, fmt.Errorf("placeholder {{%s}} is quoted in query %q: placeholders render their own string literal", inner, text)
		}
		// A placeholder inside a string literal would split it: "pre-{{ arg "a" }}" renders
		// "pre-""value", and a value such as `,b!=` turns into query text.
		if lexed = lexed.scan(before); lexed.quote != 0 {
			return Query{}, fmt.Errorf("placeholder {{%s}} is inside a string literal in query %q: placeholders render their own string literal", inner, text)
		}
		m := placeholder.FindStringSubmatch(inner)
		if m == nil {
			return Query{}, fmt.Errorf("unknown placeholder {{%s}} in query %q (want arg, var, argRegex, varRegex with a quoted name, or window)", inner, text)
		}
		if m[3] == "" && !lexed.comment {
			if err := matcherValue(lexed, before, m[1], inner, text); err != nil {
				return Query{}, err
			}
		}
		q.parts = appendLiteral(q.parts, before)
		switch {
		case m[3] == "window":
			q.parts = append(q.parts, part{kind: window})
		case m[1] == "arg" || m[1] == "argRegex":
			if !declared(args, m[2]) {
				return Query{}, fmt.Errorf("placeholder {{%s}} names argument %q, which the template does not declare in args", strings.TrimSpace(inner), m[2])
			}
			kind := argument
			if m[1] == "argRegex" {
				kind = argumentRegex
			}
			q.parts = append(q.parts, part{kind: kind, text: m[2]})
		default:
			if !declared(vars, m[2]) {
				return Query{}, fmt.Errorf("placeholder {{%s}} names variable %q, which the template does not declare in variables", strings.TrimSpace(inner), m[2])
			}
			kind := variable
			if m[1] == "varRegex" {
				kind = variableRegex
			}
			q.parts = append(q.parts, part{kind: kind, text: m[2]})
		}
		rest = after
	}
	return q, nil
}

// matcherValue checks that a value placeholder (kind is arg, var, argRegex or varRegex),
// written in code right after before, stands as the value of a label matcher of the kind it
// renders: after = or != for arg and var, after =~ or !~ for argRegex and varRegex, and inside
// a {...} selector. lexed is the state at the end of before.
func matcherValue(lexed lexState, before, kind, inner, text string) error {
	const rule = "arg and var stand right after = or !=, argRegex and varRegex right after =~ or !~, inside a {...} selector"
	op := trailingOperator(before)
	switch op {
	case "=", "!=", "=~", "!~":
	case "":
		return fmt.Errorf("placeholder {{%s}} is not the value of a label matcher in query %q: %s", inner, text, rule)
	default:
		return fmt.Errorf("placeholder {{%s}} follows %s in query %q, which is not a label matcher operator: %s", inner, op, text, rule)
	}
	if lexed.depth <= 0 {
		return fmt.Errorf("placeholder {{%s}} follows %s outside a {...} selector in query %q: %s", inner, op, text, rule)
	}
	regexOp := op == "=~" || op == "!~"
	regexKind := kind == "argRegex" || kind == "varRegex"
	switch {
	case regexOp && !regexKind:
		return fmt.Errorf("placeholder {{%s}} follows %s in query %q: after =~ and !~ use argRegex or varRegex, which match the value exactly (%s would let a value such as \".*\" match every series)", inner, op, text, kind)
	case !regexOp && regexKind:
		return fmt.Errorf("placeholder {{%s}} follows %s in query %q: argRegex and varRegex are for =~ and !~; after = and != use arg or var", inner, op, text)
	}
	return nil
}

// trailingOperator is the run of PromQL operator characters that code ends with, ignoring
// spaces and tabs: "=", "!=", "=~", "!~" for a label matcher, "==", ">=", "<=" or any other
// run for something else, "" when code ends with no operator.
func trailingOperator(code string) string {
	code = strings.TrimRight(code, " \t")
	i := len(code)
	for i > 0 && strings.IndexByte("=!~<>+-*/%^", code[i-1]) >= 0 {
		i--
	}
	return code[i:]
}

// lexState is where PromQL text leaves Prometheus's lexer: in a string literal opened with
// quote, in a # line comment, or (both zero) in code, and how many {...} selectors the code
// has open. A rendered placeholder is one whole token, so it leaves the state as it was.
type lexState struct {
	quote   byte
	escaped bool
	comment bool
	depth   int // { minus } in code; at most 1 in valid PromQL, negative after a stray }
}

// scan moves the state over text. Inside "..." and '...' a backslash escapes the next byte;
// `...` has no escapes. A newline does not close a quoted string here (Prometheus rejects it),
// so that a placeholder after one is still refused. Braces count only in code.
func (s lexState) scan(text string) lexState {
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case s.comment:
			s.comment = c != '\n' && c != '\r'
		case s.escaped:
			s.escaped = false
		case s.quote != 0:
			if c == '\\' && s.quote != '`' {
				s.escaped = true
			} else if c == s.quote {
				s.quote = 0
			}
		case c == '#':
			s.comment = true
		case c == '"' || c == '\'' || c == '`':
			s.quote = c
		case c == '{':
			s.depth++
		case c == '}':
			s.depth--
		}
	}
	return s
}

func appendLiteral(parts []part, s string) []part {
	if s == "" {
		return parts
	}
	return append(parts, part{kind: literal, text: s})
}

func endsQuoted(s string) bool {
	s = strings.TrimRight(s, " \t")
	return strings.HasSuffix(s, `"`) || strings.HasSuffix(s, "'") || strings.HasSuffix(s, "`")
}

func startsQuoted(s string) bool {
	s = strings.TrimLeft(s, " \t")
	return strings.HasPrefix(s, `"`) || strings.HasPrefix(s, "'") || strings.HasPrefix(s, "`")
}

// Text is the template as written.
func (q Query) Text() string { return q.text }

// Values are what a query is rendered with.
type Values struct {
	Args   map[string]string
	Vars   map[string]string
	Window time.Duration
}

// Render fills the placeholders. A missing argument or variable is an error: rendering it
// as an empty string would silently select other series.
func (q Query) Render(v Values) (string, error) {
	var b strings.Builder
	b.Grow(len(q.text) + 32)
	for _, p := range q.parts {
		switch p.kind {
		case literal:
			b.WriteString(p.text)
		case window:
			b.WriteString(FormatDuration(v.Window))
		case argument, argumentRegex:
			val, ok := v.Args[p.text]
			if !ok {
				return "", fmt.Errorf("argument %q is not set", p.text)
			}
			b.WriteString(quote(val, p.kind == argumentRegex))
		case variable, variableRegex:
			val, ok := v.Vars[p.text]
			if !ok {
				return "", fmt.Errorf("variable %q is not set", p.text)
			}
			b.WriteString(quote(val, p.kind == variableRegex))
		}
	}
	return b.String(), nil
}

func quote(v string, asRegex bool) string {
	if asRegex {
		v = regexp.QuoteMeta(v)
	}
	return strconv.QuoteToASCII(v)
}

// FormatDuration renders d as a PromQL duration in whole seconds, at least 1s.
func FormatDuration(d time.Duration) string {
	s := int64(d / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10) + "s"
}

// selectorShape is a PromQL series selector with its placeholders blanked: an optional
// metric name, then optional matchers in braces (string literals may hold anything).
var selectorShape = regexp.MustCompile(`^\s*(?:[a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(?:\{(?:[^{}"'` + "`" + `]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\})?\s*$`)

// IsSelector reports whether the query is a plain series selector (a metric name and label
// matchers, nothing else): what a counter check reads raw samples of.
func (q Query) IsSelector() bool {
	var b strings.Builder
	for _, p := range q.parts {
		switch p.kind {
		case literal:
			b.WriteString(p.text)
		case window:
			return false
		default:
			b.WriteString(`""`)
		}
	}
	s := strings.TrimSpace(b.String())
	return s != "" && selectorShape.MatchString(s) && strings.ContainsAny(s, "{abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
}

// groupShape is how one query serves many rollouts at once (see feed.go): each value
// placeholder stands as the value of an = or =~ matcher on a plain label name, so that the
// query can select every rollout's series with one =~ matcher per placeholder, and each
// series returned says by its labels which rollout (and side) it is of.
type groupShape struct {
	labels []string // the label of each value placeholder, in order
	parts  []part   // the query, with the = before each value placeholder made =~
}

// labelNameAtEnd matches a plain label name and a matcher operator at the end of code.
var labelNameAtEnd = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|=)\s*$`)

// grouping returns the query's group shape; ok is false when it cannot be grouped: it has
// no value placeholder, a window, or a placeholder after != or !~ (a union of exclusions
// does not exclude), or after a quoted label name.
func (q Query) grouping() (groupShape, bool) {
	var g groupShape
	for i, p := range q.parts {
		switch p.kind {
		case literal:
			g.parts = append(g.parts, p)
			continue
		case window:
			return groupShape{}, false
		}
		if i == 0 || q.parts[i-1].kind != literal {
			return groupShape{}, false
		}
		before := g.parts[len(g.parts)-1].text
		m := labelNameAtEnd.FindStringSubmatchIndex(before)
		if m == nil {
			return groupShape{}, false
		}
		// The operator is =~ from now on: for arg and var the value becomes a regex of
		// escaped literals; argRegex and varRegex are escaped literals already.
		g.parts[len(g.parts)-1] = part{kind: literal, text: before[:m[4]] + "=~" + before[m[5]:]}
		g.labels = append(g.labels, before[m[2]:m[3]])
		g.parts = append(g.parts, p)
	}
	return g, len(g.labels) > 0
}

// values are the value placeholders' values for v, in order.
func (g groupShape) values(v Values) ([]string, error) {
	out := make([]string, 0, len(g.labels))
	for _, p := range g.parts {
		var (
			val string
			ok  bool
		)
		switch p.kind {
		case argument, argumentRegex:
			if val, ok = v.Args[p.text]; !ok {
				return nil, fmt.Errorf("argument %q is not set", p.text)
			}
		case variable, variableRegex:
			if val, ok = v.Vars[p.text]; !ok {
				return nil, fmt.Errorf("variable %q is not set", p.text)
			}
		default:
			continue
		}
		out = append(out, val)
	}
	return out, nil
}

// render writes the query selecting every series whose labels hold one of sets[i] for the
// i-th placeholder: each value escaped with regexp.QuoteMeta, joined with |, and the whole
// regex written as one string literal (strconv.QuoteToASCII), so that no value can change
// the query's structure or match anything but itself.
func (g groupShape) render(sets [][]string) string {
	var b strings.Builder
	k := 0
	for _, p := range g.parts {
		if p.kind == literal {
			b.WriteString(p.text)
			continue
		}
		alt := make([]string, len(sets[k]))
		for i, v := range sets[k] {
			alt[i] = regexp.QuoteMeta(v)
		}
		b.WriteString(strconv.QuoteToASCII(strings.Join(alt, "|")))
		k++
	}
	return b.String()
}
