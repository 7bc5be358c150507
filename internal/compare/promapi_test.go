package compare

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// reference decodes a successful answer's data as client_golang's v1 API does (into
// model values), then into Series as analyzerd did before it decoded answers itself.
func reference(t testing.TB, data []byte) ([]Series, error) {
	t.Helper()
	var d struct {
		Type   model.ValueType `json:"resultType"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	var v model.Value
	switch d.Type {
	case model.ValScalar:
		var sv model.Scalar
		if err := json.Unmarshal(d.Result, &sv); err != nil {
			return nil, err
		}
		v = &sv
	case model.ValVector:
		var vv model.Vector
		if err := json.Unmarshal(d.Result, &vv); err != nil {
			return nil, err
		}
		v = vv
	case model.ValMatrix:
		var mv model.Matrix
		if err := json.Unmarshal(d.Result, &mv); err != nil {
			return nil, err
		}
		v = mv
	case model.ValString:
		var sv model.String
		if err := json.Unmarshal(d.Result, &sv); err != nil {
			return nil, err
		}
		v = &sv
	default:
		return nil, fmt.Errorf("unknown type %q", d.Type)
	}
	switch v := v.(type) {
	case model.Vector:
		out := make([]Series, 0, len(v))
		for _, s := range v {
			labels := make(map[string]string, len(s.Metric))
			for k, l := range s.Metric {
				labels[string(k)] = string(l)
			}
			out = append(out, Series{Labels: labels, Value: float64(s.Value)})
		}
		return out, nil
	case model.Matrix:
		out := make([]Series, 0, len(v))
		for _, s := range v {
			labels := make(map[string]string, len(s.Metric))
			for k, l := range s.Metric {
				labels[string(k)] = string(l)
			}
			samples := make([]Sample, 0, len(s.Values))
			for _, p := range s.Values {
				samples = append(samples, Sample{T: int64(p.Timestamp), V: float64(p.Value)})
			}
			out = append(out, Series{Labels: labels, Samples: samples})
		}
		return out, nil
	case *model.Scalar:
		if math.IsNaN(float64(v.Value)) {
			return nil, nil
		}
		return []Series{{Labels: map[string]string{}, Value: float64(v.Value)}}, nil
	}
	return nil, ErrBadQuery
}

// decoded is what readAnswer makes of a 200 answer holding data.
func decoded(data string) ([]Series, error) {
	return readAnswer(http.StatusOK, []byte(`{"status":"success","data":`+data+`,"warnings":["w"]}`))
}

// sameSeries compares two decodings, NaN equal to NaN.
func sameSeries(t testing.TB, want, got []Series, msg string) {
	t.Helper()
	require.Equal(t, len(want), len(got), msg)
	for i := range want {
		require.Equal(t, want[i].Labels, got[i].Labels, msg)
		require.Equal(t, math.Float64bits(want[i].Value), math.Float64bits(got[i].Value), msg)
		require.Equal(t, len(want[i].Samples), len(got[i].Samples), msg)
		for k := range want[i].Samples {
			w, g := want[i].Samples[k], got[i].Samples[k]
			require.Equal(t, w.T, g.T, msg)
			require.Equal(t, math.Float64bits(w.V), math.Float64bits(g.V), msg)
		}
	}
}

var answerCorpus = []string{
	`{"resultType":"matrix","result":[]}`,
	`{"result":[],"resultType":"vector"}`,
	`{"resultType":"scalar","result":[1764079390,"3.5"]}`,
	`{"resultType":"scalar","result":[1764079390.1,"NaN"]}`,
	`{"resultType":"vector","result":[{"metric":{"le":"0.1"},"value":[1764079390.12,"42"]},{"value":[1764079390.123,"+Inf"],"metric":{"le":"+Inf"}}]}`,
	`{"resultType":"vector","result":[{"metric":{},"value":[1764079390,"-Inf"]},{"metric":{"a":"b"},"value":[1,"1e-9"]}]}`,
	"{\"resultType\" : \"matrix\" ,\n \"result\" : [ { \"metric\" : { \"pod\" : \"a\" } , \"values\" : [ [ 1764079375.5 , \"10\" ] , [1764079390,\"12.5\"] ] } ] }",
	`{"resultType":"matrix","result":[{"values":[[1764079375.001,"1"],[1764079375.01,"2"],[1764079375.1,"3"]],"metric":{"service":"a\"b\\c\/d","name":"\u00e9\u2603\ud83d\ude00 x\ty\nz"}}]}`,
	`{"resultType":"matrix","result":[{"metric":{"__name__":"http_requests_total","code":"200","pod":"p-1"},"values":[[1764079375,"0"],[1764079380,"123456789.125"],[1764079385,"1.7976931348623157e308"]]}]}`,
	`{"resultType":"matrix","result":[{"metric":{"h":"native"},"histograms":[[1764079375,{"count":"2","sum":"1","buckets":[[0,"0","1","2"]]}]]},{"metric":{"h":"both"},"values":[[1,"1"]],"histograms":[[2,{"count":"1","sum":"1"}]]}]}`,
	`{"resultType":"vector","result":[{"metric":{"h":"native"},"histogram":[1764079375,{"count":"2","sum":"1"}]}]}`,
	`{"resultType":"matrix","result":null}`,
	`{"result":null,"resultType":"vector"}`,
	`{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"1","extra",{"x":[1]}],[2,"2"]]}]}`,
	`{"resultType":"matrix","extra":{"x":[1,2,{"y":null}],"z":true},"result":[{"metric":{"a":"1"},"values":[[1500000000,"1"]]}]}`,
}

// TestAnswersDecodeAsClientGolangDecodes: for every shape of answer Prometheus and its
// compatibles give (escapes, any member order, native histograms, NaN and infinities,
// timestamps to the millisecond), readAnswer gives what v1's decoding turned into Series.
func TestAnswersDecodeAsClientGolangDecodes(t *testing.T) {
	for _, data := range answerCorpus {
		want, err := reference(t, []byte(data))
		require.NoError(t, err, data)
		got, err := decoded(data)
		require.NoError(t, err, data)
		sameSeries(t, want, got, data)
	}
	_, err := decoded(`{"resultType":"string","result":[1,"x"]}`)
	require.ErrorIs(t, err, ErrBadQuery, "a string result is a template error")
	for _, bad := range []string{
		`{"resultType":"matrix","result":[{"metric":{"a":1},"values":[]}]}`,
		`{"resultType":"matrix","result":[{"metric":{},"values":[[1,2]]}]}`,
		`{"resultType":"matrix","result":[{"metric":{},"values":[[1,"x"]]}]}`,
		`{"resultType":"vector","result":{"metric":{}}}`,
	} {
		_, err := decoded(bad)
		require.Error(t, err, bad)
		require.NotErrorIs(t, err, ErrBadQuery, "a malformed answer is the source's fault: %s", bad)
	}
}

// TestQueriesFallBackToGetWhenPostIsRefused: a proxy that refuses POST (405) gets the query
// in the URL, as v1's GET fallback sent it.
func TestQueriesFallBackToGetWhenPostIsRefused(t *testing.T) {
	var methods []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		methods = append(methods, r.Method)
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		_, _ = fmt.Fprintf(w, `{"status":"success","data":{"resultType":"scalar","result":[1,%q]}}`, r.URL.Query().Get("query"))
	}))
	defer srv.Close()
	p := newProm(t, PrometheusOptions{URL: srv.URL})
	resps := p.Query(context.Background(), []Request{{Expr: "42", Time: time.Unix(1, 0)}})
	require.NoError(t, resps[0].Err)
	require.Equal(t, 42.0, resps[0].Series[0].Value)
	require.Equal(t, []string{http.MethodPost, http.MethodGet}, methods)
}

func TestAnswersWithErrorsReadAsClientGolangReadsThem(t *testing.T) {
	for _, tc := range []struct {
		code      int
		body      string
		wantInErr string
	}{
		{http.StatusBadRequest, `{"status":"error","errorType":"bad_data","error":"parse error"}`, "bad_data: parse error"},
		{http.StatusUnprocessableEntity, `{"status":"error","errorType":"execution","error":"many-to-many"}`, "execution: many-to-many"},
		{http.StatusBadRequest, `{"status":"success","data":{}}`, "inconsistent body"},
		{http.StatusBadRequest, `{"status":"error"}`, "client error: 400"},
		{http.StatusBadRequest, `<html>`, "client error: 400"},
		{http.StatusServiceUnavailable, `{"status":"error","errorType":"unavailable","error":"not ready"}`, "server error: 503"},
		{http.StatusNotFound, `404 page not found`, "client error: 404"},
		{http.StatusOK, `<html>login</html>`, "bad_response"},
		{http.StatusOK, `{"status":"error","errorType":"timeout","error":"slow"}`, "timeout: slow"},
	} {
		_, err := readAnswer(tc.code, []byte(tc.body))
		require.Error(t, err)
		require.True(t, strings.Contains(err.Error(), tc.wantInErr), "%d %s: %v", tc.code, tc.body, err)
	}
}

// FuzzAnswers: readAnswer never panics, and whatever data both it and client_golang's
// decoding accept, they decode to the same Series. (client_golang also accepts shapes no
// Prometheus writes, which readAnswer refuses: a sample [] as 0 at time 0, say; the valid
// shapes are TestAnswersDecodeAsClientGolangDecodes's.)
func FuzzAnswers(f *testing.F) {
	for _, data := range answerCorpus {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data string) {
		got, gotErr := decoded(data)
		want, wantErr := reference(t, []byte(data))
		if gotErr != nil || wantErr != nil {
			return
		}
		sameSeries(t, want, got, data)
	})
}

// TestEnvelopesReadAsEncodingJSONReadsThem: readEnvelope, which reads an answer in one pass,
// reads every envelope as encoding/json unmarshals it: members in any case and order, the last
// of a duplicate winning, nulls, whitespace, and nothing after the object.
func TestEnvelopesReadAsEncodingJSONReadsThem(t *testing.T) {
	const matrix = `{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"2"]]}]}`
	for _, body := range []string{
		`{"status":"success","data":` + matrix + `}`,
		" \n{ \"status\" : \"success\" , \"data\" :" + matrix + " } \n",
		`{"data":` + matrix + `,"status":"success","warnings":["a"],"infos":["b"]}`,
		`{"Status":"success","DATA":` + matrix + `}`,
		`{"status":"error","status":"success","data":{"resultType":"vector","result":[]},"data":` + matrix + `}`,
		`{"status":"success","data":null}`,
		`{"status":"success","data":` + matrix + `,"data":null}`,
		`{"status":null,"error":null,"errorType":null,"data":` + matrix + `}`,
		`{"status":"error","errorType":"timeout","error":"slow","data":{}}`,
		`{"status":"success"}`,
		`{"status":"success","data":{"result":[{"metric":{},"values":[[1,"2"]]}],"resultType":"matrix"}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"values":[[1,"2"]]}],"resultType":"matrix"}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"value":[1,"2"]}],"resultType":"vector"}}`,
		`{"status":"success","data":{"resultType":"matrix","result":null}}`,
		`{"status":"success","data":{"resultType":"string","result":[1,"x"]}}`,
		`{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}`,
		`{"status":"success","data":` + matrix + `} x`,
		`{"status":"success","data":` + matrix,
		`{"status":5,"data":` + matrix + `}`,
		`{"status":"success","data":[]}`,
		`[]`,
		``,
		`{"status":"success","data":` + matrix + `,"extra":{"deep":[1,true,false,null,"\u00e9"]}}`,
	} {
		want := envelope{Data: &resultData{}}
		wantErr := json.Unmarshal([]byte(body), &want)
		got, gotErr := readEnvelope([]byte(body))
		if wantErr != nil {
			require.Error(t, gotErr, body)
			continue
		}
		require.NoError(t, gotErr, body)
		require.Equal(t, want.Status, got.Status, body)
		require.Equal(t, want.ErrorType, got.ErrorType, body)
		require.Equal(t, want.Error, got.Error, body)
		require.Equal(t, want.Data == nil, got.Data == nil, body)
		if want.Data != nil {
			require.Equal(t, want.Data.err, got.Data.err, body)
			sameSeries(t, want.Data.series, got.Data.series, body)
		}
	}
}

// BenchmarkReadAnswerMatrix decodes a grouped refresh's answer: 1,000 series of six labels,
// four samples each.
func BenchmarkReadAnswerMatrix(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[`)
	for i := range 1000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"metric":{"__name__":"http_requests_total","code":"200","instance":"10.0.%d.%d:8080","job":"bench","pod":"svc-%d-canary-%d","service":"svc-%d","version":"canary"},"values":[`, i/250, i%250, i/3, i%3, i/3)
		for j := range 4 {
			if j > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `[%d.%03d,"%d"]`, 1700000000+5*j, i%1000, 1000*i+37*j)
		}
		sb.WriteString(`]}`)
	}
	sb.WriteString(`]}}`)
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		series, err := readAnswer(http.StatusOK, body)
		if err != nil || len(series) != 1000 {
			b.Fatal(err, len(series))
		}
	}
}

// TestAnswersOutliveTheirBuffers: an answer's buffer is lent again once it is read; what was
// read from it stays as it was when the next answers overwrite the buffer.
func TestAnswersOutliveTheirBuffers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		v := r.Form.Get("query")
		_, _ = fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"q":%q,"esc\u00e9":"v\u00e9%s"},"value":[1,"%d"]}]}}`, v, v, len(v))
	}))
	defer srv.Close()
	p := newProm(t, PrometheusOptions{URL: srv.URL})
	first := p.Query(context.Background(), []Request{{Expr: "aaaa", Time: time.Unix(1, 0)}})
	require.NoError(t, first[0].Err)
	for i := range 20 {
		resps := p.Query(context.Background(), []Request{{Expr: strings.Repeat("z", 1+i*100), Time: time.Unix(1, 0)}})
		require.NoError(t, resps[0].Err)
	}
	require.Equal(t, map[string]string{"q": "aaaa", "escé": "véaaaa"}, first[0].Series[0].Labels)
	require.Equal(t, 4.0, first[0].Series[0].Value)
}
