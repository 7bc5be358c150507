package bench

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/config"
)

// daemonQueries are the queries the daemon sends for the shipped template's checks, rendered
// by compare's own renderer: each side's own query (a rollout's first read and its baseline)
// with a range as compare appends it, and each one's grouped form as a feed's refresh writes it
// (compare's groupShape.render: every = of a placeholder made =~, the values QuoteMeta'd,
// joined with | and quoted with strconv.QuoteToASCII).
func daemonQueries(t *testing.T) []string {
	t.Helper()
	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	tmpl, ok := cfg.Template(benchTemplate)
	require.True(t, ok)
	var out []string
	seen := map[string]bool{}
	for _, c := range tmpl.Checks {
		for _, text := range []string{c.Errors, c.Total, c.Buckets} {
			if text == "" || seen[text] {
				continue
			}
			seen[text] = true
			q, err := compare.Compile(text, tmpl.Args, tmpl.Variables)
			require.NoError(t, err)
			for _, side := range []string{"v1", "v2"} {
				own, err := q.Render(compare.Values{Args: map[string]string{"service": "svc-17"}, Vars: map[string]string{"version": side}})
				require.NoError(t, err)
				out = append(out, own+"["+compare.FormatDuration(5*time.Minute+10*time.Second)+"]")
				out = append(out, own+"["+compare.FormatDuration(tmpl.BaselineWindow+5*time.Minute)+"]")
			}
			grouped := regexp.MustCompile(`(service|version)=`).ReplaceAllString(text, "$1=~")
			grouped = strings.NewReplacer(
				`{{ arg "service" }}`, strconv.QuoteToASCII(regexp.QuoteMeta("svc-0")+"|"+regexp.QuoteMeta("svc-1")+"|"+regexp.QuoteMeta("svc-17")),
				`{{ var "version" }}`, strconv.QuoteToASCII("v1|v2"),
			).Replace(grouped)
			require.NotContains(t, grouped, "{{", "the template's placeholders are the ones this test knows")
			out = append(out, grouped+"[21s]")
		}
	}
	require.Len(t, out, 3*5, "three selectors (errors, total, buckets), five queries each")
	return out
}

func TestParseQueryAcceptsTheDaemonsQueries(t *testing.T) {
	for _, q := range daemonQueries(t) {
		parsed, err := parseQuery(q)
		require.NoError(t, err, q)
		require.False(t, parsed.ping)
		require.Positive(t, parsed.rng, q)
		require.Equal(t, "__name__", parsed.matchers[0].label)
	}

	q, err := parseQuery(`http_requests_total{service=~"svc-0|svc-1|svc-17", version=~"v1|v2", code=~"5.."}[21s]`)
	require.NoError(t, err)
	require.Equal(t, 21*time.Second, q.rng)
	require.Equal(t, []string{"__name__", "service", "version", "code"}, []string{q.matchers[0].label, q.matchers[1].label, q.matchers[2].label, q.matchers[3].label})
	require.Equal(t, map[string]bool{"svc-0": true, "svc-1": true, "svc-17": true}, q.matchers[1].set, "an alternation of literals is matched as their set")
	require.Nil(t, q.matchers[3].set, `5.. is a regex`)
	require.True(t, q.matchers[3].matches("500"))
	require.False(t, q.matchers[3].matches("5000"), "anchored at both ends")
	require.False(t, q.matchers[3].matches("200"))

	q, err = parseQuery("vector(1)")
	require.NoError(t, err)
	require.True(t, q.ping, "the daemon's readiness probe")
}

func TestParseQueryReadsMatchersAndDurationsAsPrometheus(t *testing.T) {
	for text, want := range map[string]time.Duration{
		"5m10s": 5*time.Minute + 10*time.Second, "1h": time.Hour, "250ms": 250 * time.Millisecond,
		"1d": 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1y": 365 * 24 * time.Hour, "1h0m5s100ms": time.Hour + 5*time.Second + 100*time.Millisecond,
	} {
		q, err := parseQuery("x[" + text + "]")
		require.NoError(t, err, text)
		require.Equal(t, want, q.rng, text)
	}

	q, err := parseQuery(" a:b_c { x != \"1\" , y !~ `a|b` , z = \"q\\\"\\u00e9\" , w =~ \"svc\\\\.1|svc\\\\-2\" , } [ 1m ] ")
	require.NoError(t, err)
	require.Equal(t, "a:b_c", q.matchers[0].value)
	x, y, z, w := q.matchers[1], q.matchers[2], q.matchers[3], q.matchers[4]
	require.True(t, x.matches("2"))
	require.True(t, x.matches(""), "a series without the label has it empty")
	require.False(t, x.matches("1"))
	require.False(t, y.matches("a"))
	require.True(t, y.matches("ab"), "anchored: ab is neither a nor b")
	require.Equal(t, "q\"é", z.value, "Go's escapes")
	require.Equal(t, map[string]bool{"svc.1": true, "svc-2": true}, w.set, "escaped metacharacters are literals")
	require.False(t, w.matches("svcx1"))

	for re, want := range map[string]map[string]bool{
		"":        {"": true},
		"a|":      {"a": true, "": true},
		`\(a\)`:   {"(a)": true},
		`a\|b`:    {"a|b": true},
		"a.b":     nil,
		`\d`:      nil,
		"(a|b)":   nil,
		"a|b*":    nil,
		"(?i)abc": nil,
	} {
		got, ok := literals(re)
		require.Equal(t, want != nil, ok, re)
		if ok {
			require.Equal(t, want, got, re)
			// The set is what the anchored regex matches.
			anchored := regexp.MustCompile("^(?:" + re + ")$")
			for v := range got {
				require.True(t, anchored.MatchString(v), "%q matches %q", re, v)
			}
		}
	}
}

func TestParseQueryRefusesOtherPromQL(t *testing.T) {
	for _, q := range []string{
		"",
		"1",
		"vector(2)",
		"vector(1) + 1",
		"http_requests_total",              // an instant vector: the daemon reads ranges
		`http_requests_total{service="a"}`, // likewise
		`sum(http_requests_total[5m])`,     // a function
		`rate(http_requests_total{service="a"}[5m])`,       // a function
		`increase(http_requests_total[5m])`,                // a function
		`http_requests_total[5m] offset 1m`,                // a modifier
		`http_requests_total[5m] @ 100`,                    // a modifier
		`http_requests_total[5m:1m]`,                       // a subquery
		`http_requests_total[5m] > 0`,                      // an operator
		`http_requests_total[5m] # a comment`,              // a comment
		`http_requests_total{service='a'}[5m]`,             // single quotes: the daemon writes Go's
		`http_requests_total{"service"="a"}[5m]`,           // a quoted label name
		`{__name__="http_requests_total"}[5m]`,             // no metric name
		`http_requests_total{service}[5m]`,                 // no operator
		`http_requests_total{service=="a"}[5m]`,            // no such operator
		`http_requests_total{service="a" version="b"}[5m]`, // no comma
		`http_requests_total{service="a"[5m]`,              // unclosed
		`http_requests_total{service="a}[5m]`,              // unterminated string
		`http_requests_total{service=~"("}[5m]`,            // bad regex
		`http_requests_total{service=a}[5m]`,               // not a string
		`http_requests_total[]`, `http_requests_total[5]`,  // no unit
		`http_requests_total[1.5m]`, `http_requests_total[5x]`, // no such duration
		`http_requests_total[5s1m]`, `http_requests_total[0s]`, // out of order, empty
		`http_requests_total[5m`, `http_requests_total[5m]]`,
		`9lives[5m]`,
	} {
		_, err := parseQuery(q)
		require.Error(t, err, q)
	}
}
