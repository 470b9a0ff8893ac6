package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

// buildInfo parses build info as `go version -m` prints it, of a binary
// built with go1.26.8.
func buildInfo(t *testing.T, text string) *debug.BuildInfo {
	t.Helper()
	bi, err := debug.ParseBuildInfo(text)
	if err != nil {
		t.Fatal(err)
	}
	bi.GoVersion = "go1.26.8"
	return bi
}

const (
	rev       = "d971ef3378068e6ddf9743649945b81e3ac5ce36"
	workTree  = "path\tgithub.com/kmodguard/kmodguard/cmd/kmodguard\nmod\tgithub.com/kmodguard/kmodguard\tv0.0.0-20261206013800-d971ef337806+dirty\t\nbuild\tvcs=git\nbuild\tvcs.revision=" + rev + "\nbuild\tvcs.time=2026-12-06T01:38:00Z\nbuild\tvcs.modified=true\n"
	atTag     = "path\tgithub.com/kmodguard/kmodguard/cmd/kmodguard\nmod\tgithub.com/kmodguard/kmodguard\tv0.3.1\t\nbuild\tvcs=git\nbuild\tvcs.revision=" + rev + "\nbuild\tvcs.time=2026-12-06T01:38:00Z\nbuild\tvcs.modified=false\n"
	installed = "path\tgithub.com/kmodguard/kmodguard/cmd/kmodguard\nmod\tgithub.com/kmodguard/kmodguard\tv0.3.1\th1:abc=\n"
	noVCS     = "path\tgithub.com/kmodguard/kmodguard/cmd/kmodguard\nmod\tgithub.com/kmodguard/kmodguard\t(devel)\t\n"
)

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stamp stamp
		bi    string // "" for no build info
		want  Info
	}{
		{"stamped release", stamp{version: "v0.2.0", commit: rev, modified: "false"}, noVCS,
			Info{Version: "0.2.0", Commit: rev, GoVersion: "go1.26.8", Source: "ldflags"}},
		{"stamped commit only, modified", stamp{commit: rev, modified: "true"}, noVCS,
			Info{Version: Release + "+gd971ef337806.dirty", Commit: rev, Modified: true, GoVersion: "go1.26.8", Source: "ldflags"}},
		// The stamp wins over the toolchain's record, whose commit time is
		// kept when it is the same commit.
		{"stamped, built in the work tree", stamp{commit: rev, modified: "false"}, workTree,
			Info{Version: Release + "+gd971ef337806", Commit: rev, CommitTime: "2026-12-06T01:38:00Z", GoVersion: "go1.26.8", Source: "ldflags"}},
		{"go build in a work tree", stamp{}, workTree,
			Info{Version: Release + "+gd971ef337806.dirty", Commit: rev, Modified: true, CommitTime: "2026-12-06T01:38:00Z", GoVersion: "go1.26.8", Source: "buildinfo"}},
		{"go build at a release tag", stamp{}, atTag,
			Info{Version: "0.3.1", Commit: rev, CommitTime: "2026-12-06T01:38:00Z", GoVersion: "go1.26.8", Source: "buildinfo"}},
		{"go install module@v0.3.1", stamp{}, installed,
			Info{Version: "0.3.1", GoVersion: "go1.26.8", Source: "buildinfo"}},
		{"nothing known", stamp{}, noVCS, Info{Version: Release, GoVersion: "go1.26.8", Source: "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bi *debug.BuildInfo
			if tc.bi != "" {
				bi = buildInfo(t, tc.bi)
			}
			got := resolve(tc.stamp, bi)
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if !IsSemver(got.Version) || got.Semver() != got.Version {
				t.Errorf("version %q is not a semantic version", got.Version)
			}
		})
	}
	// Without build info: the running toolchain.
	if got := resolve(stamp{}, nil); got.Version != Release || got.Source != "none" || got.GoVersion == "" {
		t.Errorf("without build info: %+v", got)
	}
}

func TestSemver(t *testing.T) {
	for _, tc := range []struct {
		version, want string
	}{
		{"0.2.0", "0.2.0"},
		{"1.0.0-rc.1+g0123", "1.0.0-rc.1+g0123"},
		// A stamp that is not one (git describe of no tag, a date) keeps
		// its text as build metadata of the tree's release.
		{"d971ef3-dirty", Release + "+d971ef3-dirty"},
		{"2026/12/06 build #7", Release + "+2026-12-06-build--7"},
		{"1.2", Release + "+1.2"},
		{"..", Release},
	} {
		got := Info{Version: tc.version}.Semver()
		if got != tc.want || !IsSemver(got) {
			t.Errorf("Semver(%q) = %q, want %q", tc.version, got, tc.want)
		}
	}
}

func TestIsSemver(t *testing.T) {
	for v, want := range map[string]bool{
		"0.1.0": true, "0.1.0+g0123456789ab.dirty": true, "1.0.0-alpha.1": true, "10.20.30-rc.1+build.5": true,
		"v0.1.0": false, "0.1": false, "01.1.0": false, "0.1.0-": false, "0.1.0+": false, "0.1.0-01": false, "": false,
	} {
		if IsSemver(v) != want {
			t.Errorf("IsSemver(%q) = %v, want %v", v, !want, want)
		}
	}
}

func TestIsRelease(t *testing.T) {
	for v, want := range map[string]bool{
		"v0.3.1": true, "v1.0.0-rc.1": true,
		"(devel)": false, "v0.0.0-20261206013800-d971ef337806": false, "v0.0.0-20261206013800-d971ef337806+dirty": false,
		"v0.3.2-0.20261206013800-d971ef337806": false, "0.3.1": false,
	} {
		if isRelease(v) != want {
			t.Errorf("isRelease(%q) = %v, want %v", v, !want, want)
		}
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "0.1.0+gd971ef337806.dirty", Commit: rev, Modified: true, CommitTime: "2026-12-06T01:38:00Z", GoVersion: "go1.26.8"}
	if got, want := i.String(), "0.1.0+gd971ef337806.dirty (commit d971ef337806 of 2026-12-06T01:38:00Z, modified, go1.26.8)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestStampOf reads the linker's stamp back from the -ldflags that cmd/go
// records in a binary, as OfExecutable does for a running daemon.
func TestStampOf(t *testing.T) {
	for _, tc := range []struct {
		name, ldflags string
		want          stamp
	}{
		{"make build", `-X ` + pkgPath + `.version= -X ` + pkgPath + `.commit=` + rev + ` -X ` + pkgPath + `.modified=true`,
			stamp{commit: rev, modified: "true"}},
		{"release, -X=", `-s -w -X=` + pkgPath + `.version=v0.2.0 -X ` + pkgPath + `.commit=` + rev,
			stamp{version: "v0.2.0", commit: rev}},
		{"other variables only", `-X main.build=7 -s`, stamp{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bi := buildInfo(t, "path\t"+CLIPath+"\nmod\tgithub.com/kmodguard/kmodguard\t(devel)\t\nbuild\t-ldflags=\""+tc.ldflags+"\"\n")
			if got := stampOf(bi); got != tc.want {
				t.Errorf("stampOf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestOfExecutableRefusesOthers: a binary that is not the kmodguard
// command, this test binary, is no answer.
func TestOfExecutableRefusesOthers(t *testing.T) {
	if _, err := OfExecutable("/proc/self/exe"); err == nil || !strings.Contains(err.Error(), "not kmodguard") {
		t.Errorf("OfExecutable(this test binary): %v, want an error saying it is not kmodguard", err)
	}
	if _, err := OfExecutable("/nonexistent/kmodguard"); err == nil {
		t.Error("OfExecutable of a missing file: no error")
	}
}
