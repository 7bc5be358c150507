package bench

import (
	"compress/gzip"
	"errors"
	"hash/fnv"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/analyzerd/analyzerd/internal/promproc"
)

// synthetic is the bench's cheaper metrics source (Options.Source "synthetic"): an HTTP server
// that speaks the part of the Prometheus HTTP API the daemon uses (POST or GET /api/v1/query)
// and answers from the exporter's model as if a Prometheus had scraped each of its targets
// (shards) every interval since the server started, each target at a fixed offset of its own
// (a hash of its job and address, as Prometheus offsets its scrapes), exactly the series
// Prometheus would hold: the exporter's, with the target's instance and job labels, their
// values what the exporter would have exposed at each scrape's time (exporter.value). It
// holds nothing: every answer is computed. What it cannot answer as Prometheus would (any
// query but a range selector or vector(1), see promql.go) it refuses with bad_data.
type synthetic struct {
	exp      *exporter
	interval int64 // ms
	started  int64 // ms: a target's first scrape is its first at or after it
	now      func() time.Time
	targets  []synthTarget // by shard
	services []synthService
	byName   map[string]int
	series   []seriesJSON // by index in exported
	logf     func(format string, args ...any)

	queries, refused atomic.Int64
	busy             atomic.Int64 // nanoseconds spent answering
	bufs             sync.Pool    // *[]byte
	zips             sync.Pool    // *gzip.Writer

	srv *http.Server
	url string
}

type synthTarget struct {
	job, instance string
	labels        []byte // `,"instance":"…","job":"…"`
	phase         int64  // ms: its scrapes are at the times ≡ phase (mod interval)
}

type synthService struct {
	name   string
	shard  int
	labels [len(versions)][]byte // `,"service":"…","version":"…"},"values":[` by version
}

// seriesJSON is an exported series' labels in JSON, before and after its target's: Prometheus
// writes a series' labels sorted by name (__name__, code, instance, job, le, service, version).
type seriesJSON struct {
	before, after []byte
}

// newSynthetic answers for exp's shards scraped as targets (targets[i] is shard i's job and
// address), every interval from now on.
func newSynthetic(exp *exporter, targets []promproc.Target, interval time.Duration) *synthetic {
	s := &synthetic{exp: exp, interval: max(interval.Milliseconds(), 1), now: time.Now, byName: map[string]int{},
		logf: func(string, ...any) {}}
	s.started = s.now().UnixMilli()
	for i, t := range targets {
		h := fnv.New64a()
		_, _ = h.Write([]byte(t.Job + "\xff" + t.Address))
		tg := synthTarget{job: t.Job, instance: t.Address, phase: int64(h.Sum64() % uint64(s.interval))}
		tg.labels = appendLabel(appendLabel(tg.labels, "instance", t.Address), "job", t.Job)
		s.targets = append(s.targets, tg)
		for _, name := range exp.shards[i] {
			sv := synthService{name: name, shard: i}
			for k, v := range versions {
				sv.labels[k] = append(appendLabel(appendLabel(nil, "service", name), "version", v), `},"values":[`...)
			}
			s.byName[name] = len(s.services)
			s.services = append(s.services, sv)
		}
	}
	for _, e := range exported {
		var j seriesJSON
		j.before = strconv.AppendQuote(append(j.before, `{"metric":{"__name__":`...), e.name)
		switch {
		case e.label == "":
		case e.label < "instance":
			j.before = appendLabel(j.before, e.label, e.value)
		case e.label > "job" && e.label < "service":
			j.after = appendLabel(j.after, e.label, e.value)
		default:
			panic("bench: the synthetic source does not sort label " + e.label)
		}
		s.series = append(s.series, j)
	}
	return s
}

// appendLabel appends `,"name":"value"`. The exporter's names and values, and the targets'
// addresses, are printable ASCII without quotes or backslashes: Go's quoting is JSON's.
func appendLabel(b []byte, name, value string) []byte {
	b = strconv.AppendQuote(append(b, ','), name)
	return strconv.AppendQuote(append(b, ':'), value)
}

// start listens on a loopback port.
func (s *synthetic) start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.url = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return nil
}

// URL is the address to give the daemon as its Prometheus.
func (s *synthetic) URL() string { return s.url }

func (s *synthetic) Close() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Close()
}

// busySeconds is the time spent answering, in all.
func (s *synthetic) busySeconds() float64 { return float64(s.busy.Load()) / 1e9 }

func (s *synthetic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	defer func() { s.busy.Add(int64(time.Since(began))) }()
	if r.URL.Path != "/api/v1/query" {
		s.refuse(w, http.StatusNotFound, "not_found", r.Method+" "+r.URL.Path+": the synthetic source serves only /api/v1/query")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		s.refuse(w, http.StatusMethodNotAllowed, "bad_data", r.Method+" "+r.URL.Path)
		return
	}
	if err := r.ParseForm(); err != nil {
		s.refuse(w, http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	s.queries.Add(1)
	at := s.now()
	if v := r.Form.Get("time"); v != "" {
		var err error
		if at, err = parseTime(v); err != nil {
			s.refuse(w, http.StatusBadRequest, "bad_data", err.Error())
			return
		}
	}
	q, err := parseQuery(r.Form.Get("query"))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer s.bufs.Put(bp)
	*bp = s.answer((*bp)[:0], q, at.UnixMilli())
	w.Header().Set("Content-Type", "application/json")
	if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		_, _ = w.Write(*bp)
		return
	}
	// Prometheus compresses its answers when asked (Go's client asks): the daemon's share of
	// the cost is its decompressing them, so it gets them compressed here too.
	w.Header().Set("Content-Encoding", "gzip")
	zw, _ := s.zips.Get().(*gzip.Writer)
	if zw == nil {
		zw, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
	} else {
		zw.Reset(w)
	}
	_, _ = zw.Write(*bp)
	_ = zw.Close()
	s.zips.Put(zw)
}

// refuse answers an error as Prometheus's API writes one, and says so (the first few times).
func (s *synthetic) refuse(w http.ResponseWriter, code int, kind, msg string) {
	if n := s.refused.Add(1); n <= 5 {
		s.logf("synthetic source refused a request (%d so far): %s", n, msg)
	}
	b := append([]byte(`{"status":"error","errorType":`), strconv.Quote(kind)...)
	b = append(append(b, `,"error":`...), strconv.Quote(msg)...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '}'))
}

// parseTime reads the time parameter as Prometheus does: Unix seconds (to the millisecond),
// or RFC 3339.
func parseTime(v string) (time.Time, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		sec, frac := math.Modf(f)
		frac = math.Round(frac*1000) / 1000
		return time.Unix(int64(sec), int64(frac*float64(time.Second))), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errors.New("cannot parse " + strconv.Quote(v) + " to a valid timestamp")
	}
	return t, nil
}

// scrapes appends a target's scrape times (ms) in (at - rng, at], the ones that have happened
// since the source started.
func (s *synthetic) scrapes(times []int64, target int, at int64, rng time.Duration) []int64 {
	lo := max(at-rng.Milliseconds()+1, s.started)
	hi := min(at, s.now().UnixMilli())
	phase := s.targets[target].phase
	k := max((lo-phase+s.interval-1)/s.interval, 0) // the first scrape at or after lo
	for t := phase + k*s.interval; t <= hi; t += s.interval {
		times = append(times, t)
	}
	return times
}

// answer appends the answer to q at `at` (ms).
func (s *synthetic) answer(b []byte, q query, at int64) []byte {
	b = append(b, `{"status":"success","data":{"resultType":`...)
	if q.ping {
		b = append(b, `"vector","result":[{"metric":{},"value":[`...)
		b = appendTimestamp(b, at)
		return append(b, `,"1"]}]}}`...)
	}
	b = append(b, `"matrix","result":[`...)
	var onService, onVersion, onTarget, onSeries []*matcher
	for i := range q.matchers {
		m := &q.matchers[i]
		switch m.label {
		case "service":
			onService = append(onService, m)
		case "version":
			onVersion = append(onVersion, m)
		case "instance", "job":
			onTarget = append(onTarget, m)
		default:
			onSeries = append(onSeries, m)
		}
	}
	var defs []int
	for i, e := range exported {
		if all(onSeries, func(label string) string {
			switch label {
			case "__name__":
				return e.name
			case e.label:
				return e.value
			}
			return ""
		}) {
			defs = append(defs, i)
		}
	}
	var vers []int
	for k, v := range versions {
		if all(onVersion, func(string) string { return v }) {
			vers = append(vers, k)
		}
	}
	// The services: those a matcher names, or else every one, that every matcher selects.
	var cands []int
	named := false
	for _, m := range onService {
		if m.op == opEqual || m.op == opRegex && m.set != nil {
			named = true
			if m.op == opEqual {
				if i, ok := s.byName[m.value]; ok {
					cands = append(cands, i)
				}
			} else {
				for v := range m.set {
					if i, ok := s.byName[v]; ok {
						cands = append(cands, i)
					}
				}
				slices.Sort(cands)
			}
			break
		}
	}
	if !named {
		cands = make([]int, len(s.services))
		for i := range cands {
			cands[i] = i
		}
	}
	targetOK := make([]int8, len(s.targets)) // 0 not yet known, 1 selected, -1 not
	type picked struct {
		service int
		times   []int64
	}
	var services []picked
	times := map[int][]int64{} // by target
	for _, i := range cands {
		sv := &s.services[i]
		if !all(onService, func(string) string { return sv.name }) {
			continue
		}
		if targetOK[sv.shard] == 0 {
			targetOK[sv.shard] = -1
			if s.targetSelected(onTarget, sv.shard) {
				targetOK[sv.shard] = 1
				times[sv.shard] = s.scrapes(nil, sv.shard, at, q.rng)
			}
		}
		if targetOK[sv.shard] == 1 && len(times[sv.shard]) > 0 {
			services = append(services, picked{i, times[sv.shard]})
		}
	}
	first := true
	for _, d := range defs {
		j := &s.series[d]
		for _, p := range services {
			sv := &s.services[p.service]
			for _, k := range vers {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = append(b, j.before...)
				b = append(b, s.targets[sv.shard].labels...)
				b = append(b, j.after...)
				b = append(b, sv.labels[k]...)
				for n, t := range p.times {
					if n > 0 {
						b = append(b, ',')
					}
					b = append(b, '[')
					b = appendTimestamp(b, t)
					b = append(b, ',', '"')
					b = strconv.AppendFloat(b, s.exp.value(d, time.UnixMilli(t)), 'f', -1, 64)
					b = append(b, '"', ']')
				}
				b = append(b, ']', '}')
			}
		}
	}
	return append(b, "]}}"...)
}

func (s *synthetic) targetSelected(ms []*matcher, target int) bool {
	tg := &s.targets[target]
	return all(ms, func(label string) string {
		if label == "job" {
			return tg.job
		}
		return tg.instance
	})
}

// all reports whether every matcher selects the series whose labels value gives.
func all(ms []*matcher, value func(label string) string) bool {
	for _, m := range ms {
		if !m.matches(value(m.label)) {
			return false
		}
	}
	return true
}

// appendTimestamp writes a time in ms as Prometheus's API does: Unix seconds, with the
// milliseconds as three decimals when there are any.
func appendTimestamp(b []byte, ms int64) []byte {
	if ms < 0 {
		b = append(b, '-')
		ms = -ms
	}
	b = strconv.AppendInt(b, ms/1000, 10)
	if f := ms % 1000; f != 0 {
		b = append(b, '.')
		if f < 100 {
			b = append(b, '0')
		}
		if f < 10 {
			b = append(b, '0')
		}
		b = strconv.AppendInt(b, f, 10)
	}
	return b
}
