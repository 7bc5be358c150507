package telemetry

import (
	"net/textproto"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// HeaderCarrier is a propagation.TextMapCarrier over a NATS message's headers. nats.Header
// is case-sensitive, and W3C Trace Context writes its keys in lower case (traceparent,
// tracestate) while Go's HTTP-style helpers canonicalise them (Traceparent): Get finds a key
// in either form, and Set writes the lower-case form the contract names.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the first value of key, looked up as written, in lower case, and in
// canonical form.
func (c HeaderCarrier) Get(key string) string {
	for _, k := range []string{key, strings.ToLower(key), textproto.CanonicalMIMEHeaderKey(key)} {
		if vs := c[k]; len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

// Set replaces the values of key, written in lower case, removing any other spelling of it.
func (c HeaderCarrier) Set(key, value string) {
	lower := strings.ToLower(key)
	for k := range c {
		if strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[lower] = []string{value}
}

// Keys lists the keys present.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
