// Package version says which build of kmodguard is running: the CLI and
// its daemons, the enforcer's status and metrics, and the Falco plugin all
// report it, so that a fleet can see skew between the plugin and the
// enforcer companion it talks to.
//
// The Makefile stamps a build with the linker:
//
//	go build -ldflags "-X github.com/kmodguard/kmodguard/internal/version.version=0.1.0 \
//	    -X github.com/kmodguard/kmodguard/internal/version.commit=$(git rev-parse HEAD) \
//	    -X github.com/kmodguard/kmodguard/internal/version.modified=false"
//
// A build that is not stamped (go build, go install, a test binary) falls
// back on what the Go toolchain recorded in the binary
// (runtime/debug.ReadBuildInfo): the module's version when it was built at
// a release tag, and the commit of the work tree it was built in.
package version

import (
	"debug/buildinfo"
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
)

// Release is the version of this source tree: the plugin's version, which
// the rules file requires (required_plugin_versions), and the base of
// every build's version.
const Release = "0.1.0"

// Set with -ldflags -X (see the package comment). Each may be empty.
var (
	// version is the build's version, with or without a leading v: a
	// release ("0.1.0"), or any semantic version.
	version string
	// commit is the full commit hash the build was made from.
	commit string
	// modified is "true" when the work tree had uncommitted changes.
	modified string
)

// Info describes the running build.
type Info struct {
	// Version is a semantic version (semver.org): the stamped one, the
	// module's release version, or Release with the commit as build
	// metadata ("0.1.0+g0123456789ab", ".dirty" for a modified tree).
	Version string `json:"version"`
	// Commit is the full commit hash, when known.
	Commit string `json:"commit,omitempty"`
	// Modified is set when the build was made from a tree with
	// uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// CommitTime is the commit's time (RFC 3339), when the toolchain
	// recorded it.
	CommitTime string `json:"commit_time,omitempty"`
	// GoVersion is the Go toolchain that built it.
	GoVersion string `json:"go_version"`
	// Source says where Version and Commit came from: "ldflags" (stamped at
	// build time), "buildinfo" (the toolchain's record) or "none".
	Source string `json:"source"`
}

// Get returns the running build's Info.
func Get() Info { return get() }

var get = sync.OnceValue(func() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(stamp{version: version, commit: commit, modified: modified}, bi)
})

// stamp is what the linker set.
type stamp struct{ version, commit, modified string }

// resolve makes the Info of a build from its stamp and its build info (nil
// when the binary has none).
func resolve(s stamp, bi *debug.BuildInfo) Info {
	info := Info{GoVersion: runtime.Version(), Source: "none"}
	var vcs map[string]string
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		vcs = map[string]string{}
		for _, kv := range bi.Settings {
			vcs[kv.Key] = kv.Value
		}
	}
	if s.version != "" || s.commit != "" {
		info.Source = "ldflags"
		info.Version = strings.TrimPrefix(s.version, "v")
		info.Commit = s.commit
		info.Modified, _ = strconv.ParseBool(s.modified)
		if info.Commit != "" && info.Commit == vcs["vcs.revision"] {
			info.CommitTime = vcs["vcs.time"]
		}
	} else if rev := vcs["vcs.revision"]; rev != "" || (bi != nil && isRelease(bi.Main.Version)) {
		info.Source = "buildinfo"
		info.Commit = rev
		info.Modified = vcs["vcs.modified"] == "true"
		info.CommitTime = vcs["vcs.time"]
		if isRelease(bi.Main.Version) {
			info.Version = strings.TrimPrefix(bi.Main.Version, "v")
		}
	}
	if info.Version == "" {
		info.Version = Release
		var meta []string
		if info.Commit != "" {
			meta = append(meta, "g"+short(info.Commit))
		}
		if info.Modified {
			meta = append(meta, "dirty")
		}
		if len(meta) > 0 {
			info.Version += "+" + strings.Join(meta, ".")
		}
	}
	return info
}

// CLIPath is the package path of the kmodguard command.
const CLIPath = "github.com/kmodguard/kmodguard/cmd/kmodguard"

// pkgPath is this package's path, as -X names its variables.
const pkgPath = "github.com/kmodguard/kmodguard/internal/version"

// OfExecutable reads the version of the kmodguard executable at path, such
// as /proc/PID/exe of a running daemon (which still opens the binary it
// started from after an upgrade replaced the file): from the build
// information the Go toolchain wrote into it, the -X stamps of its
// -ldflags included (cmd/go leaves -ldflags out of a -trimpath build,
// whose Version is then the toolchain's record alone).
func OfExecutable(path string) (Info, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return Info{}, fmt.Errorf("read the build information of %s: %w", path, err)
	}
	if bi.Path != CLIPath {
		return Info{}, fmt.Errorf("%s is %s, not kmodguard", path, bi.Path)
	}
	return resolve(stampOf(bi), bi), nil
}

// stampOf is the -X stamp of this package recorded in bi's -ldflags.
func stampOf(bi *debug.BuildInfo) stamp {
	var s stamp
	for _, kv := range bi.Settings {
		if kv.Key != "-ldflags" {
			continue
		}
		f := strings.Fields(kv.Value)
		for i, arg := range f {
			// -X name=value, or -X=name=value.
			var def string
			switch {
			case arg == "-X" || arg == "--X":
				if i+1 < len(f) {
					def = f[i+1]
				}
			case strings.HasPrefix(arg, "-X="), strings.HasPrefix(arg, "--X="):
				def = arg[strings.Index(arg, "=")+1:]
			}
			name, value, ok := strings.Cut(strings.Trim(def, `'"`), "=")
			if !ok {
				continue
			}
			switch name {
			case pkgPath + ".version":
				s.version = value
			case pkgPath + ".commit":
				s.commit = value
			case pkgPath + ".modified":
				s.modified = value
			}
		}
	}
	return s
}

// short is the first 12 characters of a commit hash.
func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// semverRE is the grammar of semver.org 2.0.0.
var semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
	`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// IsSemver reports whether v is a semantic version (without a leading v).
func IsSemver(v string) bool { return semverRE.MatchString(v) }

// isRelease reports whether a module version is a release tag ("v1.2.3",
// "v1.2.3-rc.1"), not "(devel)" or a pseudo-version
// ("v0.0.0-20261206012428-2ba9a21c0d3e", which Go 1.24 on records for a
// build in a work tree).
func isRelease(v string) bool {
	if !strings.HasPrefix(v, "v") || !IsSemver(v[1:]) {
		return false
	}
	return !pseudoRE.MatchString(v)
}

// pseudoRE matches the pseudo-versions of cmd/go (go.dev/ref/mod#pseudo-versions).
var pseudoRE = regexp.MustCompile(`[-.](0\.)?\d{14}-[0-9a-f]{12}(\+.*)?$`)

// Semver returns the build's version where a semantic version is required
// (the Falco plugin's): Version when it is one, else Release with Version
// as build metadata, cleaned to what semver allows there.
func (i Info) Semver() string {
	if IsSemver(i.Version) {
		return i.Version
	}
	meta := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, i.Version)
	parts := strings.FieldsFunc(meta, func(r rune) bool { return r == '.' })
	if len(parts) == 0 {
		return Release
	}
	return Release + "+" + strings.Join(parts, ".")
}

// String is the one-line, human form: "0.1.0+g0123456789ab (commit
// 0123456789ab…, modified, go1.26.0)".
func (i Info) String() string {
	var extra []string
	if i.Commit != "" {
		c := short(i.Commit)
		if i.CommitTime != "" {
			c += " of " + i.CommitTime
		}
		extra = append(extra, "commit "+c)
	}
	if i.Modified {
		extra = append(extra, "modified")
	}
	extra = append(extra, i.GoVersion)
	return fmt.Sprintf("%s (%s)", i.Version, strings.Join(extra, ", "))
}
