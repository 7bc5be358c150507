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

// lexState is where PromQL text leaves Prometheus's lexer: in a string literal opened with
// quote, in a # line comment, or (both zero) in code. A rendered placeholder is one whole
// token, so it leaves the state as it was.
type lexState struct {
	quote   byte
	escaped bool
	comment bool
}

// scan moves the state over text. Inside "..." and '...' a backslash escapes the next byte;
// `...` has no escapes. A newline does not close a quoted string here (Prometheus rejects it),
// so that a placeholder after one is still refused.
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
