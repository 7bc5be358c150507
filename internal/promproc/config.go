package promproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"time"
)

// DefaultScrapeInterval is Options.ScrapeInterval's default.
const DefaultScrapeInterval = time.Second

// Target is one endpoint for Prometheus to scrape (its /metrics path).
type Target struct {
	// Job is the job label. Targets that share a Job share one scrape job.
	Job string
	// Address is host:port.
	Address string
	// Labels are attached to every series scraped from the target.
	Labels map[string]string
}

// Options configure a Prometheus process.
type Options struct {
	// Binary is the prometheus binary; Find() when empty.
	Binary string
	// Dir holds prometheus.yml and the TSDB (Dir/data). When empty, Start creates a temporary
	// directory that Close removes.
	Dir string
	// Targets are scraped from the start.
	Targets []Target
	// ScrapeInterval is the global scrape and rule evaluation interval, a whole number of
	// milliseconds; DefaultScrapeInterval when zero.
	ScrapeInterval time.Duration
	// JobScrapeIntervals overrides ScrapeInterval for the scrape jobs it names (Target.Job),
	// each a whole number of milliseconds: targets of one job share its interval, so a test
	// can scrape some targets every 15 s and others every 30 s or 60 s.
	JobScrapeIntervals map[string]time.Duration
	// Log receives Prometheus's output (stdout and stderr); discarded when nil. Write errors
	// are ignored.
	Log io.Writer
	// Args are extra command-line flags, e.g. "--query.lookback-delta=1m".
	Args []string
	// Addr is the host:port to listen on; empty picks a free loopback port.
	Addr string
}

func (o Options) withDefaults() Options {
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = DefaultScrapeInterval
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

func validInterval(d time.Duration) bool {
	return d >= time.Millisecond && d%time.Millisecond == 0
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Validate reports the first invalid option, defaults applied.
func (o Options) Validate() error {
	o = o.withDefaults()
	if !validInterval(o.ScrapeInterval) {
		return fmt.Errorf("scrape interval must be a positive whole number of milliseconds, got %s", o.ScrapeInterval)
	}
	jobs := map[string]bool{}
	for _, t := range o.Targets {
		jobs[t.Job] = true
	}
	for job, d := range o.JobScrapeIntervals {
		if !jobs[job] {
			return fmt.Errorf("scrape interval of job %q: no target has that job", job)
		}
		if !validInterval(d) {
			return fmt.Errorf("scrape interval of job %q must be a positive whole number of milliseconds, got %s", job, d)
		}
	}
	if o.Addr != "" {
		if _, _, err := net.SplitHostPort(o.Addr); err != nil {
			return fmt.Errorf("addr %q is not host:port: %w", o.Addr, err)
		}
	}
	seen := map[[2]string]bool{}
	for i, t := range o.Targets {
		if t.Job == "" {
			return fmt.Errorf("target %d: job must not be empty", i)
		}
		if _, _, err := net.SplitHostPort(t.Address); err != nil {
			return fmt.Errorf("target %d (job %q): address %q is not host:port: %w", i, t.Job, t.Address, err)
		}
		key := [2]string{t.Job, t.Address}
		if seen[key] {
			return fmt.Errorf("target %d: job %q lists %s twice", i, t.Job, t.Address)
		}
		seen[key] = true
		for name := range t.Labels {
			if !labelName.MatchString(name) || strings.HasPrefix(name, "__") {
				return fmt.Errorf("target %d (job %q): invalid label name %q", i, t.Job, name)
			}
		}
	}
	return nil
}

// The configuration file is written as JSON, which is YAML too: every string is quoted, so no
// label value can be read as anything else.
type promConfig struct {
	Global        globalConfig   `json:"global"`
	ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
}

type globalConfig struct {
	ScrapeInterval     string `json:"scrape_interval"`
	ScrapeTimeout      string `json:"scrape_timeout"`
	EvaluationInterval string `json:"evaluation_interval"`
}

type scrapeConfig struct {
	JobName        string         `json:"job_name"`
	ScrapeInterval string         `json:"scrape_interval,omitempty"`
	ScrapeTimeout  string         `json:"scrape_timeout,omitempty"`
	StaticConfigs  []staticConfig `json:"static_configs"`
}

type staticConfig struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// renderConfig returns prometheus.yml for valid options: one scrape job per distinct Job, in
// the order of first appearance, one static config per target; a job of JobScrapeIntervals
// has its own interval (and a timeout of at most that).
func renderConfig(o Options) ([]byte, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	timeout := func(interval time.Duration) string {
		return promDuration(min(interval, 10*time.Second)) // Prometheus's default, at most the interval
	}
	cfg := promConfig{
		Global: globalConfig{
			ScrapeInterval:     promDuration(o.ScrapeInterval),
			ScrapeTimeout:      timeout(o.ScrapeInterval),
			EvaluationInterval: promDuration(o.ScrapeInterval),
		},
		ScrapeConfigs: []scrapeConfig{},
	}
	jobs := map[string]int{}
	for _, t := range o.Targets {
		i, ok := jobs[t.Job]
		if !ok {
			i = len(cfg.ScrapeConfigs)
			jobs[t.Job] = i
			sc := scrapeConfig{JobName: t.Job}
			if d, ok := o.JobScrapeIntervals[t.Job]; ok {
				sc.ScrapeInterval, sc.ScrapeTimeout = promDuration(d), timeout(d)
			}
			cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, sc)
		}
		cfg.ScrapeConfigs[i].StaticConfigs = append(cfg.ScrapeConfigs[i].StaticConfigs,
			staticConfig{Targets: []string{t.Address}, Labels: t.Labels})
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, errors.New("encoding prometheus.yml: " + err.Error())
	}
	return append(b, '\n'), nil
}

// promDuration formats d in Prometheus's duration syntax, which has no fractions.
func promDuration(d time.Duration) string {
	return fmt.Sprintf("%dms", d.Milliseconds())
}
