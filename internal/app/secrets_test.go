package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

// secretForms are the ways a secret could be written out: as such, escaped for a URL or
// JSON, and inside any base64 text (HTTP basic auth, a JWT, a binary field), whatever its
// offset there.
func secretForms(secret string) []string {
	quoted, _ := json.Marshal(secret)
	forms := []string{secret, url.QueryEscape(secret), string(quoted[1 : len(quoted)-1])}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for k := 0; k < 3; k++ {
			// After k other bytes, only the characters made of the secret's bits alone.
			s := enc.EncodeToString(append(make([]byte, k), secret...))
			forms = append(forms, s[(8*k+5)/6:8*(k+len(secret))/6])
		}
	}
	slices.Sort(forms)
	return slices.Compact(forms)
}

// leaks returns the forms of secrets found in out.
func leaks(out []byte, secrets ...string) []string {
	var found []string
	for _, s := range secrets {
		for _, f := range secretForms(s) {
			if bytes.Contains(out, []byte(f)) {
				found = append(found, f)
			}
		}
	}
	return found
}

// requireNoSecret fails the test when out holds a secret in any of its forms, showing where.
func requireNoSecret(t *testing.T, out []byte, secrets ...string) {
	t.Helper()
	for _, f := range leaks(out, secrets...) {
		i := bytes.Index(out, []byte(f))
		from, to := max(0, i-200), min(len(out), i+len(f)+200)
		t.Errorf("secret form %q found: ...%s...", f, out[from:to])
	}
}

// TestTheSecretSearchFindsSecrets: the search below would find a secret that was there, in
// each form an output could hold it, and finds nothing where there is none.
func TestTheSecretSearchFindsSecrets(t *testing.T) {
	const secret = "s3cret-Pa55+word"
	other := []byte(`{"level":"info","msg":"analyzerd started","nats":"nats://127.0.0.1:4222"}`)
	require.Empty(t, leaks(other, secret))
	quoted, err := json.Marshal(map[string]string{"error": `bad "` + secret + `"`})
	require.NoError(t, err)
	for _, out := range []string{
		"password=" + secret + "\n",
		"https://example.com/?token=" + url.QueryEscape(secret),
		string(quoted),
		"Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("analyzerd:"+secret)),
		"Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+secret)),
		"Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("us:"+secret)),
		"jwt." + base64.RawURLEncoding.EncodeToString([]byte(`{"seed":"`+secret+`"}`)) + ".sig",
	} {
		require.NotEmpty(t, leaks([]byte(out), secret), out)
		require.NotEmpty(t, leaks(append(append(bytes.Clone(other), out...), other...), secret), "within other output: %s", out)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// echoingPrometheus answers the query API only with the bearer token, and answers the error
// count queries with an error that echoes the credentials it got, as some servers and
// proxies do.
func echoingPrometheus(t *testing.T, token string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var authorized atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		auth := r.Header.Get("Authorization")
		if auth != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = fmt.Fprintf(w, `{"status":"error","errorType":"unauthorized","error":"bad credentials %q"}`, auth)
			return
		}
		authorized.Add(1)
		_ = r.ParseForm()
		q, now := r.Form.Get("query"), time.Now().Unix()
		switch {
		case strings.Contains(q, `code=~"5.."`):
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"no errors for you, %s"}`, auth)
		case strings.Contains(q, "_bucket"):
			_, _ = fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"le":"0.1"},"value":[%d,"900"]},{"metric":{"le":"0.5"},"value":[%d,"990"]},
				{"metric":{"le":"+Inf"},"value":[%d,"1000"]}]}}`, now, now, now)
		default:
			_, _ = fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[%d,"1000"]}]}}`, now)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &authorized
}

// TestSecretsReachNoOutput runs the daemon with a NATS password and a Prometheus bearer
// token, from files and from the environment, with every log line down to debug captured
// and every span recorded. It takes a rollout through it (a start, verdicts, the end) and
// an event that is dead-lettered, while Prometheus echoes the token in errors. Then it
// searches every output for both secrets: the log, the published verdicts and dead letters
// (bodies and headers, as stored in their streams), the spans, the HTTP API's answers
// (/metrics, /v1/rollouts, health) and what app.Run returned.
func TestSecretsReachNoOutput(t *testing.T) {
	for _, fromEnv := range []bool{false, true} {
		t.Run(pick(fromEnv, "from the environment", "from files"), func(t *testing.T) {
			noLeaks(t)
			natsPassword, promToken := "natspw-"+randomHex(t, 8), "promtok-"+randomHex(t, 8)
			secrets := []string{natsPassword, promToken}

			ns := natstest.Start(t, natstest.WithUser("analyzerd", natsPassword))
			prom, authorized := echoingPrometheus(t, promToken)
			cfg := externalConfig(t, ns.ClientURL())
			cfg.Prometheus.URL = prom.URL
			cfg.Log.Level = "debug"
			cfg.NATS.Auth.User = "analyzerd"
			env := map[string]string{}
			if fromEnv {
				env[config.EnvNATSPassword], env[config.EnvPrometheusBearerToken] = natsPassword, promToken
			} else {
				cfg.NATS.Auth.PasswordFile = writeSecret(t, "nats-password", natsPassword+"\n")
				cfg.Prometheus.BearerTokenFile = writeSecret(t, "prom-token", promToken+"\n")
			}
			require.NoError(t, cfg.ValidateEnv(envOf(env)))

			spans := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(spans))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			d := startDaemon(t, cfg, Options{LookupEnv: envOf(env), TracerProvider: tp})
			info := d.waitReady(t)
			base := "http://" + info.HTTPAddr

			ctx := context.Background()
			_, js := natstest.Connect(t, ns, nats.UserInfo("analyzerd", natsPassword))
			pub := rolloutclient.Publisher{JS: js, Prefix: "rollouts"}
			require.NoError(t, pub.Publish(ctx, checkout, "evt-1", rollout.EventStarted, time.Now(), started("v2")))
			unknown := started("v9")
			unknown.Rollout, unknown.Analysis = rollout.Ref{Namespace: "prod", Name: "other"}, "no-such-template"
			require.NoError(t, pub.Publish(ctx, unknown.Rollout, "evt-2", rollout.EventStarted, time.Now(), unknown))
			require.Eventually(t, func() bool {
				return streamCount(ctx, js, "ROLLOUT_VERDICTS") >= 3 && streamCount(ctx, js, "ROLLOUT_DEADLETTER") >= 1
			}, 30*time.Second, 20*time.Millisecond, "verdicts and a dead letter")

			var out bytes.Buffer
			for _, path := range []string{"/metrics", "/v1/rollouts", "/v1/rollouts/prod/checkout", "/readyz", "/healthz"} {
				out.Write(get(t, base+path, http.StatusOK))
			}
			require.NoError(t, pub.Publish(ctx, checkout, "evt-3", rollout.EventCompleted, time.Now(),
				rolloutclient.Ended{Rollout: checkout, Revision: "v2"}))
			require.Eventually(t, func() bool {
				resp, err := http.Get(base + "/v1/rollouts/prod/checkout")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				return resp.StatusCode == http.StatusNotFound
			}, 30*time.Second, 20*time.Millisecond, "the completed rollout is no longer under analysis")
			out.Write(get(t, base+"/v1/rollouts/prod/checkout", http.StatusNotFound))
			out.Write(get(t, base+"/metrics", http.StatusOK))

			runErr := d.stop(t)
			require.NoError(t, runErr)
			fmt.Fprintf(&out, "\nrun error: %v\n", runErr)
			verdicts, deadLetters := streamDump(t, js, "ROLLOUT_VERDICTS"), streamDump(t, js, "ROLLOUT_DEADLETTER")
			recorded := spanDump(t, spans)
			logs := d.logs.Bytes()

			// The outputs hold what they should, so that searching them means something.
			require.Positive(t, authorized.Load(), "Prometheus got the token")
			require.Contains(t, string(logs), `"level":"debug"`)
			require.Contains(t, string(logs), "analyzerd started")
			require.Contains(t, string(verdicts), `"rollout.verdict"`)
			require.Contains(t, string(verdicts), "no errors for you", "the error in which Prometheus echoes the token reached the verdicts")
			require.Contains(t, string(deadLetters), "Analyzerd-Error")
			require.Contains(t, string(recorded), "traceID", "spans were recorded")
			require.Contains(t, out.String(), "analyzerd_")
			require.Contains(t, out.String(), `"checkout"`)

			for name, o := range map[string][]byte{
				"log": logs, "verdicts": verdicts, "dead letters": deadLetters, "spans": recorded,
				"http and errors": out.Bytes(),
			} {
				t.Run(name, func(t *testing.T) { requireNoSecret(t, o, secrets...) })
			}
			require.Contains(t, string(verdicts), "no errors for you, Bearer <redacted>", "the token cut out of the check's message")
		})
	}
}

func streamCount(ctx context.Context, js jetstream.JetStream, name string) uint64 {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// streamDump writes every message of the stream, subject, headers and body, as stored.
func streamDump(t *testing.T, js jetstream.JetStream, name string) []byte {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var b bytes.Buffer
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		fmt.Fprintf(&b, "subject: %s\n", m.Subject)
		keys := make([]string, 0, len(m.Header))
		for k := range m.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(m.Header[k], ", "))
		}
		b.Write(m.Data)
		b.WriteString("\n\n")
	}
	return b.Bytes()
}

// spanDump writes every span recorded, ended or not, as JSON and as Go values.
func spanDump(t *testing.T, rec *tracetest.SpanRecorder) []byte {
	t.Helper()
	var all []sdktrace.ReadOnlySpan
	for _, s := range rec.Started() {
		all = append(all, s)
	}
	for _, s := range rec.Ended() {
		all = append(all, s)
	}
	stubs := tracetest.SpanStubsFromReadOnlySpans(all)
	b, err := json.Marshal(stubs)
	require.NoError(t, err)
	return append(b, fmt.Sprintf("\n%+v\n", stubs)...)
}

func get(t *testing.T, url string, status int) []byte {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, status, resp.StatusCode, "%s: %s", url, body)
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s: %d\n", url, resp.StatusCode)
	require.NoError(t, resp.Header.Write(&b))
	b.Write(body)
	b.WriteString("\n")
	return b.Bytes()
}
