package compare

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPrometheusSecretsGivenAsSuch: a token or a password given as such (from the
// environment) is sent as a file's would be, and cut out of errors just the same.
func TestPrometheusSecretsGivenAsSuch(t *testing.T) {
	srv := newPromServer(t, http.StatusOK, vectorJSON)
	require.NoError(t, queryOne(newProm(t, PrometheusOptions{URL: srv.URL, BearerToken: secretToken}), "x").Err)
	require.NoError(t, queryOne(newProm(t, PrometheusOptions{URL: srv.URL, BasicAuthUsername: "analyzerd", BasicAuthPassword: password}), "x").Err)
	reqs := srv.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, "Bearer "+secretToken, reqs[0].header.Get("Authorization"))
	user, pass, ok := (&http.Request{Header: reqs[1].header}).BasicAuth()
	require.True(t, ok)
	require.Equal(t, "analyzerd", user)
	require.Equal(t, password, pass)

	// A file wins over the secret given as such.
	file := writeFile(t, "token", "from-the-file")
	require.NoError(t, queryOne(newProm(t, PrometheusOptions{URL: srv.URL, BearerTokenFile: file, BearerToken: secretToken}), "x").Err)
	require.Equal(t, "Bearer from-the-file", srv.requests()[2].header.Get("Authorization"))

	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"invalid credentials %s"}`, r.Header.Get("Authorization"))
	}))
	t.Cleanup(echo.Close)
	for _, opts := range []PrometheusOptions{
		{URL: echo.URL, BearerToken: secretToken},
		{URL: echo.URL, BasicAuthUsername: "analyzerd", BasicAuthPassword: password},
	} {
		resp := queryOne(newProm(t, opts), "x")
		require.ErrorIs(t, resp.Err, ErrBadQuery)
		require.Contains(t, resp.Err.Error(), "<redacted>")
		for _, s := range []string{secretToken, password, base64.StdEncoding.EncodeToString([]byte("analyzerd:" + password))} {
			require.NotContains(t, resp.Err.Error(), s)
		}
	}
}
