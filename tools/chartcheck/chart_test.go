package chartcheck

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// renderCase is one way of installing the chart that CI renders and checks.
type renderCase struct {
	name   string
	values []string // values files, relative to the chart (or absolute)
	sets   []string // --set flags
}

// valuesFile writes values (YAML) to a temporary file and returns its path, for what --set
// cannot say (a float, an element of a list).
func valuesFile(t *testing.T, values string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// renderCases are the chart's ci/*-values.yaml files, and variations of the embedded mode
// that no values file covers.
func renderCases(t *testing.T) []renderCase {
	var cases []renderCase
	for _, f := range valuesFiles(t) {
		cases = append(cases, renderCase{name: strings.TrimSuffix(filepath.Base(f), "-values.yaml"), values: []string{f}})
	}
	return append(cases,
		renderCase{name: "embedded-no-persistence", sets: []string{"nats.embedded.persistence.enabled=false"}},
		renderCase{name: "embedded-existing-claim", sets: []string{"nats.embedded.persistence.existingClaim=jetstream-data", "podDisruptionBudget.enabled=false"}},
		renderCase{name: "embedded-no-storage-class", sets: []string{"nats.embedded.persistence.storageClassName=-", "serviceAccount.create=false"}},
		renderCase{name: "prometheus-basic-auth", sets: []string{"prometheus.auth.existingSecret=prom", "prometheus.auth.basicAuth.username=analyzerd", "prometheus.auth.basicAuth.passwordKey=password", "prometheus.tls.existingSecret=prom-tls", "prometheus.tls.certKey=tls.crt", "prometheus.tls.keyKey=tls.key"}},
		renderCase{name: "external-nats-user-password", sets: []string{"nats.mode=external", "nats.url=nats://nats:4222", "nats.auth.user=analyzerd", "nats.auth.existingSecret=nats", "nats.auth.passwordKey=password"}},
		renderCase{name: "external-nats-creds", sets: []string{"nats.mode=external", "nats.url=nats://nats:4222", "nats.auth.existingSecret=nats", "nats.auth.credentialsKey=analyzerd.creds"}},
		renderCase{name: "external-nats-nkey", sets: []string{"nats.mode=external", "nats.url=nats://nats:4222", "nats.auth.existingSecret=nats", "nats.auth.nkeySeedKey=seed", "nats.tls.existingSecret=nats-tls", "nats.tls.caKey=ca.crt"}},
		renderCase{name: "tracing", values: []string{valuesFile(t, `
config:
  tracing:
    endpoint: http://otel-collector.observability.svc:4318
    protocol: http/protobuf
    sampleRatio: 0.25
extraEnv:
  - name: OTEL_EXPORTER_OTLP_HEADERS
    valueFrom:
      secretKeyRef: {name: otlp, key: headers}
`)}},
	)
}

func TestHelmLintStrict(t *testing.T) {
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			out, err := helm("lint", "--strict", "--kube-version", *kubeVersion, "--values", f, ".")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestRenderedManifests renders each case and checks every manifest strictly against the
// Kubernetes API types, the wiring between them, and the daemon's configuration.
func TestRenderedManifests(t *testing.T) {
	for _, rc := range renderCases(t) {
		t.Run(rc.name, func(t *testing.T) {
			t.Parallel()
			ms := render(t, rc.values, rc.sets...)
			objs, err := decodeAll(ms)
			if err != nil {
				t.Fatalf("strict decoding against the Kubernetes API types:\n%v", err)
			}
			t.Logf("renders %s", strings.Join(objs.kindsAndNames(), ", "))
			checkLabelsAndNames(t, ms, objs)
			dep := checkDeployment(t, objs)
			checkReferences(t, objs, dep)
			cfg := checkConfig(t, objs, dep)
			checkMode(t, objs, dep, cfg)
		})
	}
}

// The labels of helm's conventions that every object carries.
var standardLabels = []string{
	"helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
	"app.kubernetes.io/version", "app.kubernetes.io/managed-by",
}

func metaOf(obj any) *metav1.ObjectMeta {
	return obj.(interface{ GetObjectMeta() metav1.Object }).GetObjectMeta().(*metav1.ObjectMeta)
}

func checkLabelsAndNames(t *testing.T, ms []manifest, objs objects) {
	t.Helper()
	for kind, byName := range objs.all {
		for name, obj := range byName {
			m := metaOf(obj)
			for _, problem := range validation.IsDNS1123Subdomain(name) {
				t.Errorf("%s %s: name: %s", kind, name, problem)
			}
			if m.Namespace == "" {
				t.Errorf("%s %s has no namespace", kind, name)
			}
			for _, l := range standardLabels {
				if m.Labels[l] == "" {
					t.Errorf("%s %s lacks the label %s", kind, name, l)
				}
			}
			checkLabelMap(t, kind+" "+name+" labels", m.Labels)
			for k := range m.Annotations {
				for _, problem := range validation.IsQualifiedName(k) {
					t.Errorf("%s %s: annotation %q: %s", kind, name, k, problem)
				}
			}
		}
	}
	// analyzerd needs no Kubernetes API access.
	for _, m := range ms {
		if strings.HasSuffix(m.API, "rbac.authorization.k8s.io/v1") {
			t.Errorf("%s %s: the chart must not grant Kubernetes API access", m.Kind, m.Name)
		}
	}
}

func checkLabelMap(t *testing.T, what string, l map[string]string) {
	t.Helper()
	for k, v := range l {
		for _, problem := range validation.IsQualifiedName(k) {
			t.Errorf("%s: key %q: %s", what, k, problem)
		}
		for _, problem := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: %s=%q: %s", what, k, v, problem)
		}
	}
}

// checkDeployment checks the hardening and the probes the issue asks for, and returns the
// Deployment.
func checkDeployment(t *testing.T, objs objects) *appsv1.Deployment {
	t.Helper()
	deps := get[*appsv1.Deployment](objs, "Deployment")
	if len(deps) != 1 {
		t.Fatalf("want one Deployment, got %d", len(deps))
	}
	d := deps[0]
	pod := d.Spec.Template.Spec
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatalf("Deployment selector: %v", err)
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the Deployment's selector %s does not match its pod template's labels %v", sel, d.Spec.Template.Labels)
	}
	checkLabelMap(t, "pod template labels", d.Spec.Template.Labels)
	if d.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("the pod template has no checksum/config annotation")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod must set automountServiceAccountToken: false")
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("the pod must run as a non-root user")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("the pod's seccomp profile must be RuntimeDefault")
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("want one container, got %d (and %d init containers)", len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("the container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("the container's root file system must be read-only")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("the container must not allow privilege escalation")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Error("the container must drop all capabilities and add none")
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("the container's seccomp profile must be RuntimeDefault")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("the container must request CPU and memory and limit memory")
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		for _, problem := range validation.IsValidPortName(p.Name) {
			t.Errorf("container port %q: %s", p.Name, problem)
		}
		ports[p.Name] = p.ContainerPort
	}
	for name, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("the container has no HTTP %s probe", name)
			continue
		}
		want := map[string]string{"liveness": "/healthz", "startup": "/healthz", "readiness": "/readyz"}[name]
		if probe.HTTPGet.Path != want {
			t.Errorf("the %s probe asks %s, want %s", name, probe.HTTPGet.Path, want)
		}
		if _, ok := ports[probe.HTTPGet.Port.String()]; !ok {
			t.Errorf("the %s probe's port %s is not a container port", name, probe.HTTPGet.Port.String())
		}
	}
	// Every mount has its volume, and the only writable ones are /tmp and the JetStream store.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok {
			t.Errorf("the mount %s names no volume", vm.Name)
			continue
		}
		if (v.Secret != nil || v.ConfigMap != nil) && !vm.ReadOnly {
			t.Errorf("the mount %s of a Secret or ConfigMap must be read-only", vm.Name)
		}
	}
	if !hasMount(c, "/tmp") {
		t.Error("the container has no writable /tmp")
	}
	return d
}

func hasMount(c corev1.Container, dir string) bool {
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == dir {
			return true
		}
	}
	return false
}

// checkReferences checks that the objects refer to each other correctly: selectors select
// the pods, named ports exist, claims, ConfigMaps and ServiceAccounts are rendered.
func checkReferences(t *testing.T, objs objects, d *appsv1.Deployment) {
	t.Helper()
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)
	c := pod.Spec.Containers[0]
	containerPorts := map[string]bool{}
	for _, p := range c.Ports {
		containerPorts[p.Name] = true
	}
	selects := func(what string, s *metav1.LabelSelector) {
		t.Helper()
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			t.Errorf("%s: selector: %v", what, err)
			return
		}
		if sel.Empty() || !sel.Matches(podLabels) {
			t.Errorf("%s: selector %q does not select the pods (%v)", what, sel, pod.Labels)
		}
	}
	// The Service of HTTP (named as the release), and that of the embedded NATS server when
	// it is exposed.
	svcs := objs.all["Service"]
	svc, ok := svcs[d.Name].(*corev1.Service)
	if !ok {
		t.Fatalf("no Service %s", d.Name)
	}
	servicePorts := map[string]bool{}
	for name, obj := range svcs {
		s := obj.(*corev1.Service)
		selects("Service "+name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		for _, p := range s.Spec.Ports {
			if !containerPorts[p.TargetPort.String()] {
				t.Errorf("Service %s port %s targets %s, not a container port", name, p.Name, p.TargetPort.String())
			}
		}
		switch name {
		case d.Name:
			for _, p := range s.Spec.Ports {
				servicePorts[p.Name] = true
			}
		case d.Name + "-nats":
			if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Name != "nats" {
				t.Errorf("Service %s should have the one port nats", name)
			}
			if !s.Spec.PublishNotReadyAddresses || s.Spec.Type != corev1.ServiceTypeClusterIP {
				t.Errorf("Service %s should be a ClusterIP Service that publishes pods not ready", name)
			}
		default:
			t.Errorf("unexpected Service %s", name)
		}
	}
	if !servicePorts["http"] || len(servicePorts) != 1 {
		t.Errorf("the Service %s has ports %v, want http alone", d.Name, servicePorts)
	}
	if (containerPorts["nats"]) != (svcs[d.Name+"-nats"] != nil) {
		t.Errorf("the container has a nats port (%v) but the Service %s-nats is rendered (%v)", containerPorts["nats"], d.Name, svcs[d.Name+"-nats"] != nil)
	}
	for _, pdb := range get[*policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget") {
		selects("PodDisruptionBudget", pdb.Spec.Selector)
		if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
			t.Error("the PodDisruptionBudget needs exactly one of minAvailable and maxUnavailable")
		}
	}
	for _, np := range get[*networkingv1.NetworkPolicy](objs, "NetworkPolicy") {
		selects("NetworkPolicy", &np.Spec.PodSelector)
		for _, in := range np.Spec.Ingress {
			for _, p := range in.Ports {
				if p.Port != nil && !containerPorts[p.Port.String()] {
					t.Errorf("NetworkPolicy ingress port %s is not a container port", p.Port.String())
				}
			}
		}
	}
	for _, sm := range get[*serviceMonitor](objs, "ServiceMonitor") {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		for name, obj := range svcs {
			if got, want := sel.Matches(labels.Set(metaOf(obj).Labels)), name == svc.Name; got != want {
				t.Errorf("the ServiceMonitor's selector %v selects the Service %s: %v, want %v", sm.Spec.Selector, name, got, want)
			}
		}
		if sm.Namespace != svc.Namespace && (sm.Spec.NamespaceSelector == nil || !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace)) {
			t.Errorf("the ServiceMonitor in %s does not look in the Service's namespace %s", sm.Namespace, svc.Namespace)
		}
		if len(sm.Spec.Endpoints) != 1 {
			t.Fatalf("want one ServiceMonitor endpoint, got %d", len(sm.Spec.Endpoints))
		}
		ep := sm.Spec.Endpoints[0]
		if !servicePorts[ep.Port] || ep.Path != "/metrics" {
			t.Errorf("the ServiceMonitor scrapes port %q path %q, want a Service port and /metrics", ep.Port, ep.Path)
		}
		for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
			if !monitoringDuration.MatchString(d) || d == "" {
				t.Errorf("the ServiceMonitor's duration %q is not a Prometheus duration", d)
			}
		}
	}
	for _, pr := range get[*prometheusRule](objs, "PrometheusRule") {
		for _, g := range pr.Spec.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" || r.Expr == "" || !monitoringDuration.MatchString(r.For) || r.Labels["severity"] == "" {
					t.Errorf("alert %q: want a name, an expression, a Prometheus duration in for and a severity", r.Alert)
				}
			}
		}
	}
	// Volumes: the ConfigMap, the claim, the Secrets' keys.
	configMaps := objs.all["ConfigMap"]
	claims := objs.all["PersistentVolumeClaim"]
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			if _, ok := configMaps[v.ConfigMap.Name]; !ok {
				t.Errorf("volume %s: the ConfigMap %s is not rendered", v.Name, v.ConfigMap.Name)
			}
		case v.PersistentVolumeClaim != nil:
			if _, ok := claims[v.PersistentVolumeClaim.ClaimName]; !ok && v.PersistentVolumeClaim.ClaimName != "jetstream-data" {
				t.Errorf("volume %s: the claim %s is neither rendered nor the existing claim given", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		case v.Secret != nil:
			if len(v.Secret.Items) == 0 {
				t.Errorf("volume %s: a Secret volume must project only the keys it needs", v.Name)
			}
		}
	}
	if sas := objs.all["ServiceAccount"]; len(sas) > 0 {
		if _, ok := sas[pod.Spec.ServiceAccountName]; !ok {
			t.Errorf("the pods run as %s, which is not the ServiceAccount rendered", pod.Spec.ServiceAccountName)
		}
		for _, sa := range get[*corev1.ServiceAccount](objs, "ServiceAccount") {
			if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Error("the ServiceAccount must set automountServiceAccountToken: false")
			}
		}
	}
}

// daemonConfig is the part of the rendered configuration the chart's wiring depends on.
type daemonConfig struct {
	NATS struct {
		URL      string `json:"url"`
		Replicas int    `json:"replicas"`
		Embedded struct {
			Host     string `json:"host"`
			Port     int    `json:"port"`
			StoreDir string `json:"storeDir"`
		} `json:"embedded"`
	} `json:"nats"`
	HTTP struct {
		Addr string `json:"addr"`
	} `json:"http"`
}

// checkConfig checks the configuration file of the ConfigMap against the pod (every *File
// path is a file of a mounted Secret, the HTTP port is the container's) and runs `analyzerd
// validate` on it. It returns the configuration.
func checkConfig(t *testing.T, objs objects, d *appsv1.Deployment) daemonConfig {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	if len(c.Args) != 2 || c.Args[0] != "--config" {
		t.Fatalf("the container's args are %q, want --config FILE", c.Args)
	}
	configPath := c.Args[1]
	// The ConfigMap mounted where --config points.
	var data string
	for _, vm := range c.VolumeMounts {
		if !strings.HasPrefix(configPath, vm.MountPath+"/") {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				cm := objs.all["ConfigMap"][v.ConfigMap.Name].(*corev1.ConfigMap)
				data = cm.Data[strings.TrimPrefix(configPath, vm.MountPath+"/")]
			}
		}
	}
	if data == "" {
		t.Fatalf("no ConfigMap key is mounted at %s", configPath)
	}

	var generic map[string]any
	if err := yaml.Unmarshal([]byte(data), &generic); err != nil {
		t.Fatalf("the configuration is not YAML: %v", err)
	}
	// Each *File key names a file that a mounted Secret projects. For analyzerd validate, which
	// checks that the files exist, the same files are made under a temporary root.
	secretFiles := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				for _, it := range v.Secret.Items {
					secretFiles[path.Join(vm.MountPath, it.Path)] = true
				}
			}
		}
	}
	root := t.TempDir()
	used := map[string]bool{}
	walkFiles(generic, "", func(key string, value string) string {
		if !secretFiles[value] {
			t.Errorf("configuration %s: %s is not a file of a mounted Secret", key, value)
		}
		used[value] = true
		local := filepath.Join(root, filepath.FromSlash(value))
		if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(local, []byte("placeholder\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return local
	})
	for f := range secretFiles {
		if !used[f] {
			t.Errorf("the Secret file %s is mounted but no configuration key names it", f)
		}
	}
	localConfig, err := yaml.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "config.yaml")
	if err := os.WriteFile(file, localConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	validateConfig(t, file)

	var cfg daemonConfig
	if err := yaml.Unmarshal([]byte(data), &cfg); err != nil {
		t.Fatal(err)
	}
	_, port, err := splitPort(cfg.HTTP.Addr)
	if err != nil {
		t.Fatalf("http.addr %q: %v", cfg.HTTP.Addr, err)
	}
	if containerPort(c, "http") != port {
		t.Errorf("http.addr is %q, but the container's http port is %d", cfg.HTTP.Addr, containerPort(c, "http"))
	}
	return cfg
}

// walkFiles calls f for every string value of a key ending in "File" and sets the value to
// what f returns.
func walkFiles(node any, at string, f func(key, value string) string) {
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			key := strings.TrimPrefix(at+"."+k, ".")
			if s, ok := v.(string); ok && strings.HasSuffix(k, "File") && s != "" {
				n[k] = f(key, s)
				continue
			}
			walkFiles(v, key, f)
		}
	case []any:
		for i, v := range n {
			walkFiles(v, fmt.Sprintf("%s[%d]", at, i), f)
		}
	}
}

// pendingKeys are configuration keys the chart writes that other changes of the daemon are
// adding (NATS credentials and TLS, tracing). Until the daemon knows them, `analyzerd validate` reports
// them as unknown; they are tolerated then, and everything else in the file must be valid.
var pendingKeys = regexp.MustCompile(`unknown key "(auth|tls)" in nats$|unknown key "tracing" at the top level$`)

// validateConfig runs analyzerd validate --config file, and fails the test when the daemon
// refuses the file.
func validateConfig(t *testing.T, file string) {
	t.Helper()
	out, pending, err := runValidate(file)
	if err != nil {
		t.Errorf("analyzerd validate refuses the rendered configuration: %v\n%s", err, out)
		return
	}
	if len(pending) > 0 {
		t.Logf("analyzerd does not know these keys yet (other changes are adding them); the rest is valid:\n%s", strings.Join(pending, "\n"))
	}
}

// runValidate runs analyzerd validate --config file. It returns the output, the problems it
// tolerates (pendingKeys), and an error when the file is refused for anything else.
func runValidate(file string) (string, []string, error) {
	out, err := exec.Command(analyzerdBin, "validate", "--config", file).CombinedOutput()
	if err == nil {
		return string(out), nil, nil
	}
	var problems, pending []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "- ") {
			continue
		}
		if pendingKeys.MatchString(line) {
			pending = append(pending, line)
		} else {
			problems = append(problems, line)
		}
	}
	if len(problems) > 0 || len(pending) == 0 {
		return string(out), pending, err
	}
	return string(out), pending, nil
}

func splitPort(addr string) (string, int32, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("no port")
	}
	p, err := strconv.ParseInt(addr[i+1:], 10, 32)
	return addr[:i], int32(p), err
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// checkMode checks what differs between embedded and external NATS.
func checkMode(t *testing.T, objs objects, d *appsv1.Deployment, cfg daemonConfig) {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	if cfg.NATS.URL != "" { // external
		if len(objs.all["PersistentVolumeClaim"]) > 0 {
			t.Error("external NATS needs no PersistentVolumeClaim")
		}
		if containerPort(c, "nats") != 0 {
			t.Error("external NATS: the pod exposes no NATS port")
		}
		return
	}
	if replicas > 1 {
		t.Errorf("embedded NATS with %d replicas", replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("embedded NATS: the Deployment's strategy is %s, want Recreate (one pod owns the store)", d.Spec.Strategy.Type)
	}
	if cfg.NATS.Replicas != 1 {
		t.Errorf("embedded NATS: nats.replicas is %d, a single server needs 1", cfg.NATS.Replicas)
	}
	// The store on the data volume.
	var storeVolume string
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == cfg.NATS.Embedded.StoreDir {
			storeVolume = vm.Name
		}
	}
	if storeVolume == "" {
		t.Fatalf("embedded NATS: no volume is mounted at nats.embedded.storeDir %s", cfg.NATS.Embedded.StoreDir)
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == storeVolume && v.PersistentVolumeClaim == nil && v.EmptyDir == nil {
			t.Errorf("embedded NATS: the store's volume %s is neither a claim nor an emptyDir", v.Name)
		}
	}
	exposed := containerPort(c, "nats") != 0
	switch {
	case exposed && (cfg.NATS.Embedded.Host != "0.0.0.0" || int32(cfg.NATS.Embedded.Port) != containerPort(c, "nats")):
		t.Errorf("embedded NATS is exposed on container port %d but listens on %s:%d", containerPort(c, "nats"), cfg.NATS.Embedded.Host, cfg.NATS.Embedded.Port)
	case !exposed && cfg.NATS.Embedded.Host != "127.0.0.1":
		t.Errorf("embedded NATS is not exposed but listens on %s", cfg.NATS.Embedded.Host)
	}
}

// TestChecksCatchMistakes makes sure the checks above are not vacuous: the strict decoding
// refuses an unknown field and a field spelt with the wrong case, and analyzerd validate
// refuses a rendered configuration the daemon cannot run.
func TestChecksCatchMistakes(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replica: 1\n",
		"wrong case":    "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: 80\n      targetport: http\n",
		"duplicate key": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n",
		"unknown kind":  "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: x\n",
		"wrong api":     "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: x\n",
		"monitor field": "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: x\nspec:\n  endpoints:\n    - port: http\n      honorLabel: true\n",
	} {
		ms, err := splitManifests("---\n# Source: test\n" + doc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeStrict(ms[0]); err == nil {
			t.Errorf("%s: decoded without error:\n%s", name, doc)
		}
	}

	ms := render(t, []string{valuesFile(t, "extraConfig:\n  ingest:\n    maxEventBytes: 10\n  unknownSection: {}\n")})
	for _, m := range ms {
		if m.Kind != "ConfigMap" || m.Name != releaseName {
			continue
		}
		obj, err := decodeStrict(m)
		if err != nil {
			t.Fatal(err)
		}
		file := valuesFile(t, obj.(*corev1.ConfigMap).Data["config.yaml"])
		out, _, err := runValidate(file)
		if err == nil {
			t.Fatalf("analyzerd validate accepts a configuration with an unknown key and a bad value:\n%s", out)
		}
		for _, want := range []string{"unknownSection", "ingest.maxEventBytes"} {
			if !strings.Contains(out, want) {
				t.Errorf("analyzerd validate does not name %s:\n%s", want, out)
			}
		}
		return
	}
	t.Fatal("no ConfigMap rendered")
}
