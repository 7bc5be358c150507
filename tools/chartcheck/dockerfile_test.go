package chartcheck

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// buildCommand is the Dockerfile's `go build` step: its environment and arguments, with
// ${VAR} references left for run to fill in.
type buildCommand struct {
	env  []string // KEY=value before `go`
	args []string // after `go`
	// output is the -o argument (replaced by run), and pkg the package built.
	output string
}

// parseDockerfile finds the RUN instruction that runs `go build` and splits it into words.
func parseDockerfile(path string) (buildCommand, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return buildCommand{}, err
	}
	// Join continuation lines into instructions.
	var instructions []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		instructions = append(instructions, cur.String())
		cur.Reset()
	}
	var found []string
	for _, in := range instructions {
		if strings.HasPrefix(in, "RUN ") && strings.Contains(in, "go build") {
			found = append(found, in)
		}
	}
	if len(found) != 1 {
		return buildCommand{}, fmt.Errorf("want one RUN instruction with go build, found %d", len(found))
	}
	words, err := shellWords(strings.TrimPrefix(found[0], "RUN "))
	if err != nil {
		return buildCommand{}, err
	}
	var bc buildCommand
	i := 0
	for ; i < len(words) && strings.HasPrefix(words[i], "--mount="); i++ {
	}
	for ; i < len(words) && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[i]); i++ {
		bc.env = append(bc.env, words[i])
	}
	if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
		return buildCommand{}, fmt.Errorf("the RUN instruction should be [--mount...] [VAR=value...] go build ...: %q", found[0])
	}
	bc.args = words[i+1:]
	for j, a := range bc.args {
		if a == "-o" && j+1 < len(bc.args) {
			bc.output = bc.args[j+1]
		}
	}
	if bc.output == "" {
		return buildCommand{}, fmt.Errorf("the go build command has no -o: %q", found[0])
	}
	return bc, nil
}

// shellWords splits a command line as sh would for the simple quoting a Dockerfile uses:
// single and double quotes, no escapes inside them.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// run runs the build in dir, writing the binary to output, with VERSION, TARGETOS and
// TARGETARCH as given.
func (bc buildCommand) run(dir, output, version, goos, goarch string) error {
	vars := map[string]string{"VERSION": version, "TARGETOS": goos, "TARGETARCH": goarch}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string { return vars[k] })
	}
	var env []string
	for _, e := range bc.env {
		env = append(env, expand(e))
	}
	args := make([]string, len(bc.args))
	for i, a := range bc.args {
		args[i] = expand(a)
		if i > 0 && bc.args[i-1] == "-o" {
			args[i] = output
		}
	}
	return goCommand(dir, env, args...)
}

func TestDockerfileBuildCommand(t *testing.T) {
	env := strings.Join(dockerBuild.env, " ")
	args := strings.Join(dockerBuild.args, " ")
	for _, want := range []string{"CGO_ENABLED=0", "GOOS=${TARGETOS}", "GOARCH=${TARGETARCH}"} {
		if !strings.Contains(env, want) {
			t.Errorf("the build's environment %q lacks %s", env, want)
		}
	}
	for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "./cmd/analyzerd"} {
		if !strings.Contains(args, want) {
			t.Errorf("the build's arguments %q lack %s", args, want)
		}
	}
	// The variable the ldflags set must exist in the daemon.
	main, err := os.ReadFile(filepath.Join(repoRoot, "cmd", "analyzerd", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^var version = `).Match(main) {
		t.Error("cmd/analyzerd/main.go has no package-level `var version = ...` for -X main.version")
	}
}

func TestDockerfileStages(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	froms := regexp.MustCompile(`(?m)^FROM\s+(?:--platform=\S+\s+)?(\S+)`).FindAllStringSubmatch(text, -1)
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, found %d FROM", len(froms))
	}
	final := froms[len(froms)-1][1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") || !strings.HasSuffix(final, ":nonroot") {
		t.Errorf("the final stage is %s, want a distroless static nonroot image", final)
	}
	// The builder's Go must be able to build the module (go.mod's go line).
	goMod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	goArg := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\d+\.\d+)`).FindStringSubmatch(text)
	if goLine == nil || goArg == nil {
		t.Fatalf("want go.mod's go line and the Dockerfile's ARG GO_VERSION")
	}
	if string(goLine[1]) != goArg[1] {
		t.Errorf("the Dockerfile builds with Go %s, go.mod says go %s", goArg[1], goLine[1])
	}
	// The chart runs the pod as the image's user.
	if !regexp.MustCompile(`(?m)^USER 65532:65532$`).MatchString(text) {
		t.Error("want USER 65532:65532 (the distroless nonroot user the chart's podSecurityContext names)")
	}
	if !regexp.MustCompile(`(?m)^ENTRYPOINT \["/usr/local/bin/analyzerd"\]$`).MatchString(text) {
		t.Error(`want ENTRYPOINT ["/usr/local/bin/analyzerd"], the binary the build stage copies`)
	}
}

// TestDockerfileStaticBuild checks the binary TestMain built with the Dockerfile's command:
// no dynamic loader, no shared libraries, and the version from -ldflags.
func TestDockerfileStaticBuild(t *testing.T) {
	f, err := elf.Open(analyzerdBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Error("the binary has a PT_INTERP program header: it is dynamically linked")
		case elf.PT_DYNAMIC:
			t.Error("the binary has a PT_DYNAMIC program header: it is dynamically linked")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	out, err := exec.Command(analyzerdBin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("analyzerd version: %v\n%s", err, out)
	}
	if got := string(bytes.TrimSpace(out)); got != binVersion {
		t.Errorf("analyzerd version printed %q, want %q (set through -ldflags -X)", got, binVersion)
	}
}

func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/") {
		case "go.mod", "go.sum", "cmd", "internal", "*.go", "**/*.go":
			t.Errorf(".dockerignore leaves out %s, which the build needs", line)
		}
	}
}
