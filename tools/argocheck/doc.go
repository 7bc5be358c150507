// Package argocheck tests analyzerd with Argo Rollouts' own code (v1.8.5), as tests. It is a
// module of its own so that Argo's Kubernetes dependencies stay out of the daemon's module (and
// out of tools/flaggercheck's, whose Kubernetes version differs).
//
//	cd tools/argocheck && go test ./...
//
// The tests parse the README's Argo YAML (the code blocks after `<!-- yaml: argo-... -->`)
// strictly into Argo's types, build analyzerd and test/workload from the repository, start a
// real prometheus binary scraping stable and canary workloads and analyzerd with embedded NATS,
// and run Argo's analysis controller (github.com/argoproj/argo-rollouts/analysis) on fake
// clientsets with its real provider factory, so that every measurement is taken by the web
// metric provider and judged by Argo's condition evaluation and limits. The AnalysisRuns are
// made from the README's AnalysisTemplate and the README Rollout's analysis steps the way
// Argo's rollout controller makes them (analysisutil.BuildArgumentsForRolloutAnalysisRun and
// NewAnalysisRunFromTemplates). Each scenario logs the measurements as Argo recorded them.
package argocheck
