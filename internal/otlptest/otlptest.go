// Package otlptest starts OTLP trace receivers for tests, as net/http/httptest does for HTTP:
// a stand-in for an OpenTelemetry collector that decodes what exporters send, over HTTP
// (protobuf, POST /v1/traces) or gRPC, and keeps the spans for the test to read.
package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Span is a received span, with the resource it came with.
type Span struct {
	Name         string
	TraceID      string // lower-case hex
	SpanID       string
	ParentSpanID string // empty for a root span
	// Kind is the span's kind as OTLP names it: SPAN_KIND_INTERNAL, SPAN_KIND_PRODUCER...
	Kind string
	// StartUnixNano and EndUnixNano are the span's start and end times.
	StartUnixNano, EndUnixNano uint64
	// Links are the trace ids of the span's links; LinkedSpans their span ids.
	Links       []string
	LinkedSpans []string
	Attributes  map[string]string
	// Resource holds the resource's attributes, as strings.
	Resource map[string]string
}

// Receiver collects the spans sent to it.
type Receiver struct {
	// URL is where exporters send to: http://127.0.0.1:port (for gRPC too).
	URL string

	mu      sync.Mutex
	spans   []Span
	headers []map[string][]string // of each export request, lower-case keys
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Headers returns the values of the header (or gRPC metadata) name, lower case, across every
// export request received so far.
func (r *Receiver) Headers(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, h := range r.headers {
		out = append(out, h[name]...)
	}
	return out
}

func (r *Receiver) add(req *coltracepb.ExportTraceServiceRequest, headers map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.headers = append(r.headers, headers)
	for _, rs := range req.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{
					Name:       s.GetName(),
					TraceID:    hex.EncodeToString(s.GetTraceId()),
					SpanID:     hex.EncodeToString(s.GetSpanId()),
					Attributes: attrs(s.GetAttributes()),
					Resource:   res,
					Kind:       s.GetKind().String(),

					StartUnixNano: s.GetStartTimeUnixNano(),
					EndUnixNano:   s.GetEndTimeUnixNano(),
				}
				if len(s.GetParentSpanId()) > 0 {
					sp.ParentSpanID = hex.EncodeToString(s.GetParentSpanId())
				}
				for _, l := range s.GetLinks() {
					sp.Links = append(sp.Links, hex.EncodeToString(l.GetTraceId()))
					sp.LinkedSpans = append(sp.LinkedSpans, hex.EncodeToString(l.GetSpanId()))
				}
				r.spans = append(r.spans, sp)
			}
		}
	}
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			out[kv.GetKey()] = strconv.FormatInt(x.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			out[kv.GetKey()] = strconv.FormatBool(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			out[kv.GetKey()] = strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
		default:
			out[kv.GetKey()] = v.String()
		}
	}
	return out
}

// StartHTTP starts a receiver of OTLP/HTTP protobuf on POST /v1/traces (any path ending in
// /traces), stopped when the test ends.
func StartHTTP(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			defer zr.Close()
			body = zr
		}
		data, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var msg coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(data, &msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		headers := map[string][]string{"path": {req.URL.Path}}
		for k, v := range req.Header {
			headers[strings.ToLower(k)] = v
		}
		r.add(&msg, headers)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = io.Copy(w, bytes.NewReader(out))
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// StartGRPC starts a receiver of OTLP/gRPC (plaintext), stopped when the test ends.
func StartGRPC(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, grpcService{r: r})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() { srv.Stop(); <-done })
	r.URL = "http://" + ln.Addr().String()
	return r
}

type grpcService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (s grpcService) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.r.add(req, md)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}
