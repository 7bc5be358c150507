package tracing

import (
	"runtime/debug"
)

// Version is the service.version of a binary whose version variable (set at build time with
// -ldflags "-X main.version=...") says stamped: stamped itself unless it is empty or "dev";
// otherwise the main module's version from the build information (a `go install ...@v1.2.3`
// build), else its VCS revision (with "-dirty" when it had uncommitted changes), else "dev".
func Version(stamped string) string {
	if stamped != "" && stamped != "dev" {
		return stamped
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return versionOf(info)
}

func versionOf(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if revision == "" {
		return "dev"
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if modified == "true" {
		revision += "-dirty"
	}
	return "dev-" + revision
}
