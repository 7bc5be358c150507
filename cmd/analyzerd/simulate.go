package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/simulate"
)

// simulateCmd benchmarks a template: see simulate.Benchmark.
func simulateCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyzerd simulate", flag.ContinueOnError)
	path := fs.String("config", "configs/analyzerd.yaml", "configuration file holding the template")
	name := fs.String("template", "", "analysis template to simulate (default: the file's first)")
	runs := fs.Int("runs", 1000, "runs per row")
	seed := fs.Uint64("seed", 1, "seed of the simulated traffic; the same seed prints the same table")
	scrape := fs.Duration("scrape", simulateScrape, "scrape interval of every pod, in the rows that set none of their own")
	rows := fs.String("rows", "", "run only the rows whose name matches this regular expression (case-insensitive), e.g. '10x|2x'")
	workers := fs.Int("workers", 0, "parallel workers (default: the CPUs); the table does not depend on it")
	if code, ok := parseCommand(fs, simulateUsage, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "analyzerd simulate: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, *path+" is not valid:", err)
		return 1
	}
	t := cfg.Templates[0]
	if *name != "" {
		found := false
		for _, c := range cfg.Templates {
			if c.Name == *name {
				t, found = c, true
			}
		}
		if !found {
			fmt.Fprintf(stderr, "analyzerd simulate: %s has no template named %q\n", *path, *name)
			return 1
		}
	}
	opts := simulate.Options{
		Template: t, Runs: *runs, Seed: *seed, Scrape: *scrape, Workers: *workers,
		Argo: simulate.DefaultArgo, Flagger: simulate.DefaultFlagger,
	}
	scenarios, err := simulate.Select(simulate.Benchmark(), *rows)
	if err != nil {
		fmt.Fprintln(stderr, "analyzerd simulate:", err)
		return 2
	}
	_, leftOut := simulate.Simulated(t)
	results, err := simulate.Run(opts, scenarios)
	if err != nil {
		fmt.Fprintln(stderr, "analyzerd simulate:", err)
		return 1
	}
	simulate.Write(stdout, opts, results, leftOut)
	return 0
}

// simulateScrape is the benchmark's scrape interval: a real Prometheus's common one.
const simulateScrape = 15 * time.Second

const simulateUsage = `Usage: analyzerd simulate [flags]

Simulates canaries as Prometheus sees them (several pods per version, each scraped at its own
interval and offset, counter resets, replaced pods, shared incidents, error bursts, crashes,
whole 10 -> 25 -> 50 -> 75 -> 100% rollouts), deterministically from a seed, measures them as
the daemon does (raw samples through compare into decide, at the analyzer's pace), and prints
how often and how fast the template rolls back or proceeds, next to Argo Rollouts-style and
Flagger-style threshold policies on the same kind of data.

Flags:
`
