// Package flaggercheck tests analyzerd with Flagger's own code (v1.44.0), as tests. It is a
// module of its own so that Flagger's Kubernetes dependencies stay out of the daemon's module
// (and out of tools/argocheck's, whose Kubernetes version differs).
//
//	cd tools/flaggercheck && go test ./...
//
// The tests parse the README's Canary (the code block after `<!-- yaml: flagger-canary -->`)
// strictly into Flagger's flaggerv1beta1.Canary, build analyzerd and test/workload from the
// repository, start a real prometheus binary scraping the canary and primary workloads and
// analyzerd with embedded NATS, and call the Canary's webhooks with Flagger's CallWebhook in the
// order Flagger's scheduler (pkg/controller/scheduler.go, advanceCanary) calls them: the
// rollback check, pre-rollout at 0%, confirm-traffic-increase at the current weight before each
// increase, confirm-promotion at the top weight, post-rollout at the end. Each scenario logs
// every hook call with the weight it was made at and analyzerd's answer.
package flaggercheck
