package compare

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// --- a small PromQL lexer for string literals, to check what a rendered query selects ---

// token is a run of query text outside string literals, or one string literal.
type token struct {
	str bool   // a string literal
	raw string // the text as written
	val string // a string literal's unquoted value
}

// scanState is where the text left the lexer.
type scanState int

const (
	inCode       scanState = iota // outside literals and comments
	inComment                     // inside a # line comment
	inOpenString                  // inside a string literal that the text does not close
	invalid                       // Prometheus would reject the text (bad escape, newline or bad UTF-8 in a literal)
)

// lex splits PromQL text into string literals and the text between them as Prometheus's lexer
// does: "..." and '...' with Go escapes, `...` raw, # comments to the end of the line (which
// it drops: they select nothing). A literal holding utf8.RuneError is invalid, as
// Prometheus's lexer rejects it.
func lex(s string) ([]token, scanState) { return lexFrom(s, false) }

// lexFrom lexes s starting inside a comment when inComment is set.
func lexFrom(s string, startInComment bool) ([]token, scanState) {
	if startInComment {
		j := strings.IndexAny(s, "\r\n")
		if j < 0 {
			return nil, inComment
		}
		s = s[j:]
	}
	var toks []token
	var code strings.Builder
	flush := func() {
		if code.Len() > 0 {
			toks = append(toks, token{raw: code.String()})
			code.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case '#':
			j := strings.IndexAny(s[i:], "\r\n")
			if j < 0 {
				flush()
				return toks, inComment
			}
			i += j
		case '"', '\'', '`':
			j, closed := i+1, false
		scan:
			for j < len(s) {
				switch d := s[j]; {
				case c != '`' && d == '\\':
					j += 2
				case c != '`' && d == '\n':
					return nil, invalid
				case d == c:
					closed = true
					j++
					break scan
				default:
					j++
				}
			}
			if !closed {
				return nil, inOpenString
			}
			lit := s[i:j]
			if !utf8.ValidString(lit) || strings.ContainsRune(lit, utf8.RuneError) {
				return nil, invalid
			}
			val, err := unquote(lit)
			if err != nil {
				return nil, invalid
			}
			flush()
			toks = append(toks, token{str: true, raw: lit, val: val})
			i = j
		default:
			code.WriteByte(c)
			i++
		}
	}
	flush()
	return toks, inCode
}

// unquote reads a PromQL string literal: Go's rules, plus single-quoted strings of any length.
func unquote(lit string) (string, error) {
	if lit[0] != '\'' {
		return strconv.Unquote(lit)
	}
	var b strings.Builder
	b.WriteByte('"')
	inner := lit[1 : len(lit)-1]
	for i := 0; i < len(inner); i++ {
		switch c := inner[i]; {
		case c == '\\' && i+1 < len(inner) && inner[i+1] == '\'':
			b.WriteByte('\'')
			i++
		case c == '\\' && i+1 < len(inner):
			b.WriteString(inner[i : i+2])
			i++
		case c == '"':
			b.WriteString(`\"`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return strconv.Unquote(b.String())
}

// short quotes s for a failure message, cut to a readable length.
func short(s string) string {
	if len(s) > 200 {
		return strconv.Quote(s[:200]) + "..."
	}
	return strconv.Quote(s)
}

// merge joins adjacent runs of code.
func merge(toks []token) []token {
	var out []token
	for _, t := range toks {
		if n := len(out); n > 0 && !t.str && !out[n-1].str {
			out[n-1].raw += t.raw
			continue
		}
		out = append(out, t)
	}
	return out
}

var placeholderText = regexp.MustCompile(`\{\{.*?\}\}`)

// expectTokens is what a template rendered with v must lex to: the template's own text,
// lexed piece by piece between placeholders, with each value placeholder as exactly one
// string literal holding the value (escaped for regex placeholders) and window as its text.
func expectTokens(t *testing.T, template string, v Values) []token {
	t.Helper()
	var toks []token
	rest := template
	state := inCode
	for {
		loc := placeholderText.FindStringIndex(rest)
		lit := rest
		if loc != nil {
			lit = rest[:loc[0]]
		}
		var litToks []token
		litToks, state = lexFrom(lit, state == inComment)
		require.Contains(t, []scanState{inCode, inComment}, state, "template text %s must leave the lexer in code or a comment", lit)
		toks = append(toks, litToks...)
		if loc == nil {
			break
		}
		if state == inComment {
			rest = rest[loc[1]:] // the placeholder renders inside the comment
			continue
		}
		ph := strings.TrimSpace(rest[loc[0]+2 : loc[1]-2])
		fields := strings.Fields(ph)
		name := ""
		if len(fields) == 2 {
			name = strings.Trim(fields[1], `"`)
		}
		switch fields[0] {
		case "window":
			toks = append(toks, token{raw: FormatDuration(v.Window)})
		case "arg":
			toks = append(toks, token{str: true, val: v.Args[name]})
		case "var":
			toks = append(toks, token{str: true, val: v.Vars[name]})
		case "argRegex":
			toks = append(toks, token{str: true, val: regexp.QuoteMeta(v.Args[name])})
		case "varRegex":
			toks = append(toks, token{str: true, val: regexp.QuoteMeta(v.Vars[name])})
		default:
			t.Fatalf("unknown placeholder %q", ph)
		}
		rest = rest[loc[1]:]
	}
	return merge(toks)
}

// requireStructure renders template with v and proves that the values did not change the
// query's structure: it lexes to exactly the template's text plus one literal per placeholder
// whose value is the input value; regex literals match exactly the value.
func requireStructure(t *testing.T, template string, args, vars []string, v Values) string {
	t.Helper()
	q, err := Compile(template, args, vars)
	require.NoError(t, err)
	out, err := q.Render(v)
	require.NoError(t, err)

	got, state := lex(out)
	require.Contains(t, []scanState{inCode, inComment}, state, "rendered query %s", short(out))
	want := expectTokens(t, template, v)
	require.Len(t, merge(got), len(want), "rendered query %s", short(out))
	for i, w := range merge(got) {
		require.Equal(t, want[i].str, w.str, "token %d of %s", i, short(out))
		if !w.str {
			require.Equal(t, want[i].raw, w.raw, "token %d of %s", i, short(out))
			continue
		}
		require.Equal(t, want[i].val, w.val, "token %d of %s", i, short(out))
	}
	// Every literal a placeholder rendered is plain ASCII, so that no byte of a value can
	// trip Prometheus's lexer (it rejects U+FFFD and invalid UTF-8 in literals).
	for _, w := range merge(got) {
		if w.str && w.raw[0] == '"' {
			for i := 0; i < len(w.raw); i++ {
				require.True(t, w.raw[i] >= 0x20 && w.raw[i] < 0x7f, "literal %s holds byte %#x", short(w.raw), w.raw[i])
			}
		}
	}
	return out
}

// requireRegexExact checks that a regex literal made from value matches exactly value, as
// Prometheus anchors it.
func requireRegexExact(t *testing.T, value string) {
	t.Helper()
	re, err := regexp.Compile("^(?:" + regexp.QuoteMeta(value) + ")$")
	if !utf8.ValidString(value) {
		// Go's regexp (and so Prometheus) rejects a pattern that is not UTF-8: the query
		// fails as a bad query, it cannot select other series. Label values are UTF-8.
		require.Error(t, err)
		return
	}
	require.NoError(t, err)
	require.True(t, re.MatchString(value), "regex for %s must match it", short(value))
	require.False(t, re.MatchString(value+"x"), "regex for %s must not match more", short(value))
	require.False(t, re.MatchString("x"+value), "regex for %s must not match more", short(value))
	if value != "" {
		require.False(t, re.MatchString(""), "regex for %s must not match the empty value", short(value))
	}
}

// hostileTemplate uses every placeholder: after each matcher operator, in two selectors (one
// a function argument), in a comment and in a range.
const hostileTemplate = `sum by (le) (increase(http_requests_total{service={{ arg "service" }}, version={{ var "version" }}, path=~{{ argRegex "service" }}, pod!~{{ varRegex "version" }}, code=~"5..", x="a\"b#c"}[{{ window }}])) # {{ arg "service" }}
or label_replace(up{svc != {{ arg "service" }}}, "svc", "x", "", "")`

var hostileValues = map[string]string{
	"plain":                 "checkout",
	"empty":                 "",
	"double quote":          `a"b`,
	"single quote":          `a'b`,
	"backtick":              "a`b",
	"backslash":             `a\b`,
	"trailing backslash":    `a\`,
	"escaped quote":         `a\"b`,
	"closing selector":      `"} or vector(1)`,
	"closing call":          `"}) or vector(1) #`,
	"closing all":           `"}[5m])) or vector(1) # `,
	"comment":               `# or vector(1)`,
	"newline":               "a\nb\"} or vector(1)",
	"carriage return":       "a\rb",
	"crlf injection":        "a\r\n} or vector(1) #",
	"nul":                   "a\x00b",
	"control bytes":         "\x01\x07\x08\x0b\x0c\x1b\x7f",
	"tab":                   "a\tb",
	"invalid utf-8":         "a\xffb\xc3",
	"lone continuation":     "\x80\xbf",
	"replacement character": "a\uFFFDb",
	"unicode":               "ünïcödé-日本語-🚀",
	"rtl and zero width":    "a\u202eb\u200bc\u2028d",
	"regex metacharacters":  `.*|()[]{}^$+?\`,
	"regex alternation":     `x|.*`,
	"regex flags":           `(?i)CHECKOUT`,
	"braces":                `{{ arg "service" }}`,
	"percent verbs":         `%s%v%!`,
	"unicode escapes":       `\u0022\x22\042`,
	"very long":             strings.Repeat(`"}) or vector(1) # \`, 20000),
	"long unicode":          strings.Repeat("日\xff", 5000),
}

func TestRenderHostileValues(t *testing.T) {
	for name, value := range hostileValues {
		t.Run(name, func(t *testing.T) {
			v := Values{
				Args:   map[string]string{"service": value},
				Vars:   map[string]string{"version": value},
				Window: 45 * time.Second,
			}
			requireStructure(t, hostileTemplate, []string{"service"}, []string{"version"}, v)
			requireRegexExact(t, value)
		})
	}
}

func TestRenderExact(t *testing.T) {
	q, err := Compile(`sum(rate(x{service={{ arg "service" }}, version=~{{ varRegex "version" }}}[{{window}}]))`, []string{"service"}, []string{"version"})
	require.NoError(t, err)
	out, err := q.Render(Values{
		Args:   map[string]string{"service": `check"out`},
		Vars:   map[string]string{"version": "v2.3.0"},
		Window: 90 * time.Second,
	})
	require.NoError(t, err)
	require.Equal(t, `sum(rate(x{service="check\"out", version=~"v2\\.3\\.0"}[90s]))`, out)
	require.Equal(t, `sum(rate(x{service={{ arg "service" }}, version=~{{ varRegex "version" }}}[{{window}}]))`, q.Text())
}

func TestRenderMissingValue(t *testing.T) {
	for _, tc := range []struct {
		template string
		values   Values
		want     string
	}{
		{`x{a={{ arg "a" }}}`, Values{}, `argument "a" is not set`},
		{`x{a=~{{ argRegex "a" }}}`, Values{Args: map[string]string{"b": "1"}}, `argument "a" is not set`},
		{`x{v={{ var "v" }}}`, Values{Args: map[string]string{"v": "1"}}, `variable "v" is not set`},
		{`x{v=~{{ varRegex "v" }}}`, Values{Vars: map[string]string{}}, `variable "v" is not set`},
	} {
		t.Run(tc.template, func(t *testing.T) {
			q, err := Compile(tc.template, []string{"a"}, []string{"v"})
			require.NoError(t, err)
			out, err := q.Render(tc.values)
			require.EqualError(t, err, tc.want)
			require.Empty(t, out)
		})
	}
	// An empty value is a value: it is set.
	q, err := Compile(`x{a={{ arg "a" }}}`, []string{"a"}, nil)
	require.NoError(t, err)
	out, err := q.Render(Values{Args: map[string]string{"a": ""}})
	require.NoError(t, err)
	require.Equal(t, `x{a=""}`, out)
}

func TestCompileErrors(t *testing.T) {
	args, vars := []string{"service"}, []string{"version"}
	for _, tc := range []struct {
		name     string
		template string
		want     string // substring of the error
	}{
		{"unknown placeholder", `x{a={{ service }}}`, "unknown placeholder"},
		{"unknown function", `x{a={{ env "HOME" }}}`, "unknown placeholder"},
		{"go template syntax", `x{a={{ .Args.service }}}`, "unknown placeholder"},
		{"unquoted name", `x{a={{ arg service }}}`, "unknown placeholder"},
		{"single-quoted name", `x{a={{ arg 'service' }}}`, "unknown placeholder"},
		{"extra argument", `x{a={{ arg "service" "x" }}}`, "unknown placeholder"},
		{"window with argument", `x[{{ window "5m" }}]`, "unknown placeholder"},
		{"empty placeholder", `x{a={{}}}`, "unknown placeholder"},
		{"pipeline", `x{a={{ arg "service" | printf "%s" }}}`, "unknown placeholder"},
		{"double-quoted placeholder", `x{a="{{ arg "service" }}"}`, "quoted"},
		{"single-quoted placeholder", `x{a='{{ var "version" }}'}`, "quoted"},
		{"backquoted placeholder", "x{a=`{{ argRegex \"service\" }}`}", "quoted"},
		{"quoted with spaces", `x{a=" {{ arg "service" }} "}`, "quoted"},
		{"quote after placeholder", `x{a={{ arg "service" }}"suffix"}`, "quoted"},
		{"placeholder inside a string with a prefix", `x{a="pre-{{ arg "service" }}-post"}`, "string literal"},
		{"placeholder inside a string with a prefix and an escaped quote", `x{a="pre\"-{{ arg "service" }}-post"}`, "string literal"},
		{"placeholder inside a regex string", `x{a=~"pre.*{{ argRegex "service" }}.*"}`, "string literal"},
		{"placeholder inside a single-quoted string", `x{a='pre{{ var "version" }}post'}`, "string literal"},
		{"placeholder inside a raw string", "x{a=`pre{{ var \"version\" }}post`}", "string literal"},
		{"window inside a string", `label_replace(x, "a", "pre{{ window }}post", "", "")`, "string literal"},
		{"undeclared argument", `x{a={{ arg "team" }}}`, `argument "team"`},
		{"undeclared regex argument", `x{a=~{{ argRegex "team" }}}`, `argument "team"`},
		{"variable used as argument", `x{a={{ arg "version" }}}`, `argument "version"`},
		{"undeclared variable", `x{a={{ var "pod" }}}`, `variable "pod"`},
		{"undeclared regex variable", `x{a=~{{ varRegex "pod" }}}`, `variable "pod"`},
		{"argument used as variable", `x{a={{ var "service" }}}`, `variable "service"`},
		{"unclosed braces", `x{a={{ arg "service" }`, "unclosed {{"},
		{"unclosed braces at the end", `x{a={{ arg "service" }}}[{{ window`, "unclosed {{"},
		{"unmatched closing braces", `x{a="b"}}`, "unmatched }}"},
		{"unmatched closing braces before a placeholder", `x}} {{ window }}`, "unmatched }}"},

		// A value placeholder stands only as a label matcher's value, of its own kind.
		{"arg after =~", `x{a=~{{ arg "service" }}}`, "after =~ and !~ use argRegex or varRegex, which match the value exactly"},
		{"var after !~", `x{a !~ {{ var "version" }}}`, "after =~ and !~ use argRegex or varRegex"},
		{"argRegex after =", `x{a={{ argRegex "service" }}}`, "argRegex and varRegex are for =~ and !~"},
		{"varRegex after !=", `x{a!=	{{ varRegex "version" }}}`, "argRegex and varRegex are for =~ and !~"},
		{"outside braces", `x + a={{ arg "service" }}`, "outside a {...} selector"},
		{"after a closed selector", `x{a="b"}, c={{ arg "service" }}`, "outside a {...} selector"},
		{"brace in a string opens no selector", `x{a="{"}, c={{ arg "service" }}`, "outside a {...} selector"},
		{"brace in a comment opens no selector", "x # {\n, c={{ arg \"service\" }}", "outside a {...} selector"},
		{"regex placeholder outside braces", `x, c=~{{ argRegex "service" }}`, "outside a {...} selector"},
		{"after ==", `x == {{ arg "service" }}`, "not a label matcher operator"},
		{"after == in braces", `x{a=={{ arg "service" }}}`, "not a label matcher operator"},
		{"after >=", `x >= {{ var "version" }}`, "not a label matcher operator"},
		{"after <= in braces", `x{a<={{ var "version" }}}`, "not a label matcher operator"},
		{"after ==~", `x{a==~{{ argRegex "service" }}}`, "not a label matcher operator"},
		{"after !=~", `x{a!=~{{ argRegex "service" }}}`, "not a label matcher operator"},
		{"after =-", `x{a=-{{ arg "service" }}}`, "not a label matcher operator"},
		{"after a lone ~", `x{a~{{ argRegex "service" }}}`, "not a label matcher operator"},
		{"first in braces", `x{ {{ arg "service" }} }`, "not the value of a label matcher"},
		{"alone in braces", `{{{ arg "service" }}}`, "unknown placeholder"},
		{"alone in braces with spaces", `{ {{ arg "service" }} }`, "not the value of a label matcher"},
		{"after a comma in braces", `x{a="b", {{ var "version" }}}`, "not the value of a label matcher"},
		{"as a label name", `x{{{ arg "service" }}="b"}`, "unknown placeholder"},
		{"as a label name after a comma", `x{a="b",{{ arg "service" }}="c"}`, "not the value of a label matcher"},
		{"function argument", `sum({{ arg "service" }})`, "not the value of a label matcher"},
		{"function argument after a comma", `label_replace(vector(0), "svc", {{ arg "service" }}, "", "")`, "not the value of a label matcher"},
		{"regex function argument", `label_replace(x, "a", "$1", "b", {{ argRegex "service" }})`, "not the value of a label matcher"},
		{"in a range", `x[{{ arg "service" }}]`, "not the value of a label matcher"},
		{"at the start", `{{ arg "service" }}`, "not the value of a label matcher"},
		// Only spaces and tabs may stand between the operator and the placeholder: a newline
		// could hide the operator in a comment, leaving the literal a metric name.
		{"operator in a comment", "x{ # a=\n{{ arg \"service\" }} }", "not the value of a label matcher"},
		{"operator in a comment, then spaces", "x{ # a=\n  {{ arg \"service\" }} }", "not the value of a label matcher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.template, args, vars)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestCompilePositionErrorNamesPlaceholderAndQuery(t *testing.T) {
	_, err := Compile(`x{a=~{{ arg "service" }}}`, []string{"service"}, nil)
	require.EqualError(t, err, `placeholder {{ arg "service" }} follows =~ in query "x{a=~{{ arg \"service\" }}}": after =~ and !~ use argRegex or varRegex, which match the value exactly (arg would let a value such as ".*" match every series)`)
	_, err = Compile(`sum({{ var "version" }})`, nil, []string{"version"})
	require.EqualError(t, err, `placeholder {{ var "version" }} is not the value of a label matcher in query "sum({{ var \"version\" }})": arg and var stand right after = or !=, argRegex and varRegex right after =~ or !~, inside a {...} selector`)
}

func TestCompileAccepts(t *testing.T) {
	for _, template := range []string{
		`up`,
		`x{a={{arg "service"}},b={{var "version"}}}[{{window}}]`,
		`x{a=  {{   arg   "service"   }}  }`,
		`x{a={{ arg "service" }}, b="{}"}`,
		`x{a={{ arg "service" }}, b="it's"} # a comment's quote`,
		`x{a={{ arg "service" }}, b="a\"b"} and y{c={{ var "version" }}}`,
		"x{a=`raw\\` , b={{ arg \"service\" }}}",
		// A placeholder in a comment stays in the comment: its literal has no newline.
		"x # {{ arg \"service\" }}\n+ y{a={{ var \"version\" }}}",
		// ... wherever it stands in the comment.
		"x # sum({{ arg \"service\" }}) =~ {{ var \"version\" }}\n+ y",

		// Each matcher operator with its kind of placeholder, with or without spaces and tabs.
		`x{a={{ arg "service" }}}`,
		`x{a != {{ var "version" }}}`,
		`x{a=~{{ argRegex "service" }}}`,
		`x{a!~ {{ varRegex "version" }}}`,
		"x{a\t=~\t{{ argRegex \"service\" }}\t}",
		"x{\n\ta!= {{ var \"version\" }}\n}",
		// Matchers after commas, and a trailing comma.
		`x{a="b", c={{ arg "service" }}, d!~{{ varRegex "version" }}, e=~"f"}`,
		`x{a={{ arg "service" }},b=~{{ argRegex "service" }},}`,
		// Several selectors in one query, one inside a function call.
		`sum(rate(x{a={{ arg "service" }}}[5m])) / sum(rate(y{b=~{{ argRegex "service" }}, c!={{ var "version" }}}[5m]))`,
		`label_replace(x{a={{ arg "service" }}}, "b", "$1", "c", "(.*)") or y{d={{ var "version" }}}`,
		// Prometheus 3 quoted metric and label names.
		`{"http.requests", "service.name"={{ arg "service" }}}`,
		// window anywhere outside a string: a range, a subquery, an offset.
		`rate(x{a={{ arg "service" }}}[{{ window }}])`,
		`max_over_time(rate(x{a!={{ var "version" }}}[1m])[{{ window }}:])`,
		`x{a={{ arg "service" }}} offset {{ window }}`,
		`{{ window }}`,
	} {
		t.Run(template, func(t *testing.T) {
			_, err := Compile(template, []string{"service"}, []string{"version"})
			require.NoError(t, err)
			requireStructure(t, template, []string{"service"}, []string{"version"}, Values{
				Args:   map[string]string{"service": "\"} or vector(1) #\n"},
				Vars:   map[string]string{"version": `\`},
				Window: time.Minute,
			})
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Minute, "1s"},
		{0, "1s"},
		{time.Nanosecond, "1s"},
		{999 * time.Millisecond, "1s"},
		{time.Second, "1s"},
		{1999 * time.Millisecond, "1s"},
		{45 * time.Second, "45s"},
		{90 * time.Second, "90s"},
		{10 * time.Minute, "600s"},
		{24 * time.Hour, "86400s"},
	} {
		require.Equal(t, tc.want, FormatDuration(tc.d), tc.d.String())
	}
	q, err := Compile(`rate(x[{{ window }}])`, nil, nil)
	require.NoError(t, err)
	out, err := q.Render(Values{Window: 1500 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, `rate(x[1s])`, out)
}

// matcherOperator is what the PromQL text prefix ends with, found with the test lexer: the
// label-matcher operator (=, !=, =~ or !~) when prefix ends with one in code inside a
// {...} selector, only spaces and tabs after it; "" otherwise.
func matcherOperator(prefix string) string {
	toks, state := lex(prefix)
	if state != inCode || len(toks) == 0 || toks[len(toks)-1].str {
		return ""
	}
	depth := 0
	for _, t := range toks {
		if !t.str {
			depth += strings.Count(t.raw, "{") - strings.Count(t.raw, "}")
		}
	}
	m := trailingMatcher.FindStringSubmatch(toks[len(toks)-1].raw)
	if depth <= 0 || m == nil {
		return ""
	}
	return m[1]
}

var trailingMatcher = regexp.MustCompile(`(?:^|[^=!~<>+\-*/%^])(=|!=|=~|!~)[ \t]*$`)

// FuzzRender renders hostile values, and hostile template text around a placeholder, and
// checks that no value changes the query's structure and that a value placeholder compiles
// only as a label matcher's value. Under plain `go test` it runs its seeds.
func FuzzRender(f *testing.F) {
	for _, v := range hostileValues {
		if len(v) < 1000 {
			f.Add(v, `x{a=`, `}`)
		}
	}
	f.Add(`,b!=`, `x{a="pre`, `post"}`)
	f.Add(`,b!=`, `x{a='pre`, `post'}`)
	f.Add(`,b!=`, "x{a=`pre", "post`}")
	f.Add(`"} or vector(1) #`, `x{a="\"`, `"}`)
	f.Add(`x`, `x{a="\\", b=`, `}`)
	f.Add("a\nb", `# comment `, "\nup")
	f.Add("a", `x{a="it's`, `"}`)
	f.Add("a", "x{a=\"line\n", `"}`)
	f.Add("a", `x{a=`, `"}`)
	f.Add("\uFFFD", `x{a=`, `}`)
	// Positions a value placeholder must not take, and matchers it may follow.
	f.Add(`.*`, `x{a=~`, `}`)
	f.Add(`.*`, `x{a!~ `, `}`)
	f.Add(`x`, `x{a != `, `, b="c"}`)
	f.Add(`x`, `x{a="b"} / y{c=`, `}`)
	f.Add(`x`, `x{a="{"}, b=`, `}`)
	f.Add(`x`, "x{ # a=\n", ` }`)
	f.Add(`x`, `x{ `, ` }`)
	f.Add(`x`, `x{a="b", `, `}`)
	f.Add(`x`, `x == `, ``)
	f.Add(`x`, `x{a>=`, `}`)
	f.Add(`x`, `sum(`, `)`)
	f.Add(`x`, `label_replace(vector(0), "a", `, `, "", "")`)
	f.Fuzz(func(t *testing.T, value, prefix, suffix string) {
		v := Values{
			Args:   map[string]string{"service": value},
			Vars:   map[string]string{"version": value},
			Window: 30 * time.Second,
		}
		requireStructure(t, hostileTemplate, []string{"service"}, []string{"version"}, v)
		requireRegexExact(t, value)

		template := prefix + `{{ arg "service" }}` + suffix
		q, err := Compile(template, []string{"service"}, []string{"version"})
		prefixToks, prefixState := lex(prefix)
		if prefixState == inOpenString {
			require.Error(t, err, "a placeholder inside a string literal must not compile: %s", short(template))
		}
		// Placeholders in the fuzzed text itself render too: the checks below read the
		// template as one placeholder between literal text.
		if strings.Contains(prefix, "{{") || strings.Contains(prefix, "}}") ||
			strings.Contains(suffix, "{{") || strings.Contains(suffix, "}}") {
			return
		}
		if prefixState == inCode {
			// In code, a value placeholder compiles exactly where it is a label matcher's
			// value of its kind (and is not quoted).
			op := matcherOperator(prefix)
			regexTemplate := prefix + `{{ argRegex "service" }}` + suffix
			_, regexErr := Compile(regexTemplate, []string{"service"}, []string{"version"})
			after := strings.TrimLeft(suffix, " \t")
			quoted := after != "" && strings.IndexByte("\"'`", after[0]) >= 0
			if err == nil {
				require.Contains(t, []string{"=", "!="}, op, "arg must follow = or != in a selector: %s", short(template))
			} else if (op == "=" || op == "!=") && !quoted {
				require.NoError(t, err, "arg after %s in a selector must compile: %s", op, short(template))
			}
			if regexErr == nil {
				require.Contains(t, []string{"=~", "!~"}, op, "argRegex must follow =~ or !~ in a selector: %s", short(regexTemplate))
			} else if (op == "=~" || op == "!~") && !quoted {
				require.NoError(t, regexErr, "argRegex after %s in a selector must compile: %s", op, short(regexTemplate))
			}
		}
		if err != nil {
			return
		}
		out, err := q.Render(v)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(out, prefix) && strings.HasSuffix(out, suffix))
		lit := out[len(prefix) : len(out)-len(suffix)]
		switch prefixState {
		case invalid:
			return // Prometheus rejects the query before the value.
		case inComment:
			require.NotContains(t, lit, "\n", "a literal in a comment must not end it")
			require.NotContains(t, lit, "\r", "a literal in a comment must not end it")
			return
		}
		litToks, litState := lex(lit)
		require.Equal(t, inCode, litState, "literal %s", short(lit))
		require.Len(t, litToks, 1)
		require.True(t, litToks[0].str)
		require.Equal(t, value, litToks[0].val)

		suffixToks, suffixState := lex(suffix)
		gotToks, gotState := lex(out)
		require.Equal(t, suffixState, gotState, "rendered %s", short(out))
		if suffixState != inCode && suffixState != inComment {
			return
		}
		want := merge(append(append(prefixToks, litToks...), suffixToks...))
		require.Equal(t, want, merge(gotToks), "rendered %s", short(out))
	})
}
