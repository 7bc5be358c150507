// Package chartcheck holds the checks of analyzerd's Helm chart (deploy/helm/analyzerd) and
// Dockerfile, as tests. It is a module of its own so that helm and the Kubernetes API types
// stay out of the daemon's module.
//
//	cd tools/chartcheck && go test ./...
//
// The tests build helm (helm.sh/helm/v3/cmd/helm, the version in go.mod) and analyzerd (with
// the Dockerfile's build command), then:
//   - run `helm lint --strict` and `helm template` with every values file of the chart's ci/
//     folder (and a few variations), for one Kubernetes version (-kube-version);
//   - decode every rendered manifest strictly into the k8s.io/api type of its kind (unknown
//     fields are errors), and the Prometheus Operator's kinds into minimal structs the same
//     way, and check how the objects refer to each other;
//   - run `analyzerd validate` on the configuration each ConfigMap carries;
//   - check that values.schema.json refuses what the chart cannot run (embedded NATS with
//     more than one replica, among others);
//   - run promtool on the PrometheusRule's alerts (check and unit tests) and on the
//     dashboard's queries, which may name only metrics the daemon exports;
//   - check that the binary the Dockerfile builds is statically linked and carries its version;
//   - check that the chart's README lists every value (go test -run TestChartREADME -update
//     rewrites the table from values.schema.json and values.yaml).
//
// Environment: HELM names a helm binary to use instead of building one.
package chartcheck
