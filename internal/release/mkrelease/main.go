// Command mkrelease lays out a kmodguard release from the binaries
// scripts/build-arch.sh built, one directory per platform (BIN/linux-amd64,
// BIN/linux-arm64, each with kmodguard and libkmodguard.so). `make release`
// runs it; it writes into OUT:
//
//	kmodguard-VERSION-linux-ARCH           the CLI, static
//	kmodguard-VERSION-linux-x86_64.tar.gz  the plugin, as falcoctl pushes it
//	kmodguard-VERSION-linux-aarch64.tar.gz
//	kmodguard-rules-VERSION.tar.gz         the rules file, as falcoctl pushes it
//	oci/plugin oci/rules oci/image         OCI image layouts, tagged
//	push.sh                                the commands that publish them
//	release.json                           what was written: sizes, digests, tags
//	SHA256SUMS
//
// The plugin artifact's plugin_api_version requirement and the plugin's
// name and version are read from the plugin itself, loaded the way Falco
// loads it (the build for this machine's architecture).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/loader"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kmodguard/kmodguard/internal/release"
)

// Where the release goes: the repositories registry/index.yaml names, and
// the image deploy/kubernetes/enforcer-daemonset.yaml runs (the tests
// check that they agree).
const (
	PluginRepo = "ghcr.io/kmodguard/plugins/plugin/kmodguard"
	RulesRepo  = "ghcr.io/kmodguard/plugins/ruleset/kmodguard"
	ImageRepo  = "ghcr.io/kmodguard/kmodguard"
	Source     = "https://github.com/kmodguard/kmodguard"
	// RulesName is the rules artifact's name in the index.
	RulesName = "kmodguard-rules"
)

// Platforms are the architectures a release is built for, with the names
// falcosecurity's plugin tarballs use for them.
var Platforms = []struct{ GoArch, Machine string }{
	{"amd64", "x86_64"},
	{"arm64", "aarch64"},
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkrelease:", err)
		os.Exit(1)
	}
}

// Options say what to lay out.
type Options struct {
	Version string
	Bin     string
	Rules   string
	Out     string
	Created time.Time
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkrelease", flag.ContinueOnError)
	var o Options
	var epoch string
	fs.StringVar(&o.Version, "version", "", "the release's version (MAJOR.MINOR.PATCH[-PRE]); required")
	fs.StringVar(&o.Bin, "bin", "dist/bin", "the built binaries, one directory per platform (linux-ARCH)")
	fs.StringVar(&o.Rules, "rules", "rules/kmodguard_rules.yaml", "the rules file")
	fs.StringVar(&o.Out, "out", "dist/release", "the directory to write (emptied first)")
	fs.StringVar(&epoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "the time stamped into every output, in seconds since 1970 (the commit's time); required")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Version == "" || epoch == "" {
		return errors.New("-version and -source-date-epoch (or SOURCE_DATE_EPOCH) are required")
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return fmt.Errorf("-source-date-epoch %q: %w", epoch, err)
	}
	o.Created = time.Unix(secs, 0).UTC()
	m, err := Build(context.Background(), o)
	if err != nil {
		return err
	}
	for _, f := range m.Files {
		fmt.Printf("%-44s %10d  %s\n", f.Name, f.Size, f.SHA256)
	}
	for _, a := range m.OCI {
		fmt.Printf("%-44s %s  %s\n", a.Layout, a.Digest, strings.Join(a.Tags, ","))
	}
	return nil
}

// Manifest is release.json: what a release holds.
type Manifest struct {
	Version string `json:"version"`
	// PluginAPIVersion is the plugin API version the plugin requires.
	PluginAPIVersion string        `json:"plugin_api_version"`
	Files            []FileEntry   `json:"files"`
	OCI              []LayoutEntry `json:"oci"`
}

// FileEntry is one file of a release.
type FileEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// LayoutEntry is one OCI layout: where it goes, its root digest, its tags.
type LayoutEntry struct {
	Layout string   `json:"layout"`
	Repo   string   `json:"repository"`
	Digest string   `json:"digest"`
	Tags   []string `json:"tags"`
}

// Build writes the release o describes and returns its manifest.
func Build(ctx context.Context, o Options) (*Manifest, error) {
	tags, err := release.Tags(o.Version)
	if err != nil {
		return nil, err
	}
	info, err := pluginInfo(filepath.Join(o.Bin, "linux-"+runtime.GOARCH, "libkmodguard.so"))
	if err != nil {
		return nil, err
	}
	if core, _, _ := strings.Cut(info.Version, "+"); core != o.Version && !strings.HasPrefix(o.Version, core+"-") {
		return nil, fmt.Errorf("the plugin says it is version %s, the release is %s", info.Version, o.Version)
	}
	if err := os.RemoveAll(o.Out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	m := &Manifest{Version: o.Version, PluginAPIVersion: info.RequiredAPIVersion}
	write := func(name string, data []byte, mode os.FileMode) error {
		if err := os.WriteFile(filepath.Join(o.Out, name), data, mode); err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		m.Files = append(m.Files, FileEntry{name, int64(len(data)), hex.EncodeToString(sum[:])})
		return nil
	}

	// The CLI, and the plugin tarballs.
	var plugins []release.Tarball
	image := map[string][]release.File{}
	for _, p := range Platforms {
		dir := filepath.Join(o.Bin, "linux-"+p.GoArch)
		cli, err := os.ReadFile(filepath.Join(dir, "kmodguard"))
		if err != nil {
			return nil, err
		}
		if err := write(fmt.Sprintf("kmodguard-%s-linux-%s", o.Version, p.GoArch), cli, 0o755); err != nil {
			return nil, err
		}
		so, err := os.ReadFile(filepath.Join(dir, "libkmodguard.so"))
		if err != nil {
			return nil, err
		}
		tgz, err := release.TarGz([]release.File{{Name: "libkmodguard.so", Mode: 0o755, Data: so}}, o.Created)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("kmodguard-%s-linux-%s.tar.gz", o.Version, p.Machine)
		if err := write(name, tgz, 0o644); err != nil {
			return nil, err
		}
		plugins = append(plugins, release.Tarball{Platform: "linux/" + p.GoArch, Name: name, Data: tgz})
		image["linux/"+p.GoArch] = []release.File{{Name: "usr/bin/kmodguard", Mode: 0o755, Data: cli}}
	}

	// The rules.
	rules, err := os.ReadFile(o.Rules)
	if err != nil {
		return nil, err
	}
	rulesCfg, err := release.RulesConfig(RulesName, o.Version, rules)
	if err != nil {
		return nil, err
	}
	rulesTgz, err := release.TarGz([]release.File{{Name: filepath.Base(o.Rules), Mode: 0o644, Data: rules}}, o.Created)
	if err != nil {
		return nil, err
	}
	rulesName := fmt.Sprintf("%s-%s.tar.gz", RulesName, o.Version)
	if err := write(rulesName, rulesTgz, 0o644); err != nil {
		return nil, err
	}

	// The OCI layouts.
	layout := func(name, repo string, fill func(*release.Layout) (ocispec.Descriptor, error)) error {
		l, err := release.NewLayout(filepath.Join(o.Out, "oci", name), o.Created, Source)
		if err != nil {
			return err
		}
		desc, err := fill(l)
		if err != nil {
			return fmt.Errorf("oci/%s: %w", name, err)
		}
		if err := l.Tag(ctx, desc, tags...); err != nil {
			return err
		}
		m.OCI = append(m.OCI, LayoutEntry{"oci/" + name, repo, desc.Digest.String(), tags})
		return nil
	}
	pluginCfg := release.Config{
		Name:         info.Name,
		Version:      o.Version,
		Requirements: []release.Requirement{{Name: release.PluginAPIRequirement, Version: info.RequiredAPIVersion}},
	}
	if err := layout("plugin", PluginRepo, func(l *release.Layout) (ocispec.Descriptor, error) {
		return l.Plugin(ctx, pluginCfg, plugins)
	}); err != nil {
		return nil, err
	}
	if err := layout("rules", RulesRepo, func(l *release.Layout) (ocispec.Descriptor, error) {
		return l.Rulesfile(ctx, rulesCfg, rulesName, rulesTgz)
	}); err != nil {
		return nil, err
	}
	if err := layout("image", ImageRepo, func(l *release.Layout) (ocispec.Descriptor, error) {
		return l.Image(ctx, release.ImageConfig{
			Entrypoint: []string{"/usr/bin/kmodguard"},
			Labels: map[string]string{
				ocispec.AnnotationSource:  Source,
				ocispec.AnnotationVersion: o.Version,
				ocispec.AnnotationTitle:   "kmodguard",
			},
		}, image)
	}); err != nil {
		return nil, err
	}

	if err := write("push.sh", []byte(pushScript(o.Version, tags, info.RequiredAPIVersion, plugins, rulesName, rulesCfg, m.OCI)), 0o755); err != nil {
		return nil, err
	}
	var sums strings.Builder
	for _, f := range m.Files {
		fmt.Fprintf(&sums, "%s  %s\n", f.SHA256, f.Name)
	}
	if err := os.WriteFile(filepath.Join(o.Out, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return m, os.WriteFile(filepath.Join(o.Out, "release.json"), append(js, '\n'), 0o644)
}

// PluginInfo is what the plugin says of itself.
type PluginInfo struct {
	Name, Version, RequiredAPIVersion string
}

// pluginInfo loads the plugin as Falco does and asks it.
func pluginInfo(so string) (PluginInfo, error) {
	abs, err := filepath.Abs(so)
	if err != nil {
		return PluginInfo{}, err
	}
	p, err := loader.NewValidPlugin(abs)
	if err != nil {
		return PluginInfo{}, fmt.Errorf("load %s: %w", so, err)
	}
	defer p.Unload()
	i := p.Info()
	return PluginInfo{i.Name, i.Version, i.RequiredAPIVersion}, nil
}

// pushScript is push.sh: the two ways to publish the release, which give
// the same artifacts. falcoctl pushes the tarballs; oras copies the
// layouts as they are (and is the only way for the image).
func pushScript(version string, tags []string, api string, plugins []release.Tarball, rulesName string, rules release.Config, layouts []LayoutEntry) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# Publishes this kmodguard release. Run it from this directory, logged in
# to the registry (falcoctl registry auth basic / oras login). By default
# it copies the OCI layouts with oras; "./push.sh falcoctl" pushes the
# plugin and the rules from the tarballs with falcoctl instead, which
# gives the same manifests, config and layers (the image goes with oras
# either way).
set -eu
`)
	floating := ""
	if len(tags) > 1 {
		floating = " --add-floating-tags"
	}
	b.WriteString("if [ \"${1:-}\" = falcoctl ]; then\n")
	fmt.Fprintf(&b, "\tfalcoctl registry push --type plugin --name kmodguard --version %s%s \\\n\t\t--requires %s:%s --annotation-source %s \\\n\t\t%s:%s",
		version, floating, release.PluginAPIRequirement, api, Source, PluginRepo, version)
	for _, p := range plugins {
		fmt.Fprintf(&b, " \\\n\t\t%s --platform %s", p.Name, p.Platform)
	}
	// Given a tarball, falcoctl does not read the rules file inside for
	// its requirements and dependencies: they are passed as flags.
	fmt.Fprintf(&b, "\n\tfalcoctl registry push --type rulesfile --name %s --version %s%s \\\n\t\t", RulesName, version, floating)
	for _, r := range rules.Requirements {
		fmt.Fprintf(&b, "--requires %s:%s ", r.Name, r.Version)
	}
	for _, d := range rules.Dependencies {
		fmt.Fprintf(&b, "--depends-on %s:%s ", d.Name, d.Version)
	}
	fmt.Fprintf(&b, "--annotation-source %s \\\n\t\t%s:%s %s\n", Source, RulesRepo, version, rulesName)
	for _, l := range layouts {
		if l.Layout == "oci/image" {
			fmt.Fprintf(&b, "\toras cp --from-oci-layout %s:%s %s:%s\n", l.Layout, version, l.Repo, strings.Join(l.Tags, ","))
		}
	}
	b.WriteString("\texit 0\nfi\n")
	for _, l := range layouts {
		fmt.Fprintf(&b, "oras cp --from-oci-layout %s:%s %s:%s\n", l.Layout, version, l.Repo, strings.Join(l.Tags, ","))
	}
	return b.String()
}
