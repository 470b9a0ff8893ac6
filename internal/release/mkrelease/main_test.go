package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"sigs.k8s.io/yaml"

	"github.com/kmodguard/kmodguard/internal/release"
	"github.com/kmodguard/kmodguard/internal/version"
)

// TestBuiltRelease checks a release that make release built, as a fleet
// would take it: every file against SHA256SUMS, the binaries' machines,
// the tarballs' contents, and the OCI layouts read with
// go-containerregistry (a library other than the one that wrote them).
func TestBuiltRelease(t *testing.T) {
	dir := os.Getenv("KMODGUARD_RELEASE")
	if dir == "" {
		t.Skip("KMODGUARD_RELEASE is not set: make release-check builds a release (make release) and runs this test on it")
	}
	var m Manifest
	readJSON(t, filepath.Join(dir, "release.json"), &m)
	tags, err := release.Tags(m.Version)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.PluginAPIVersion, "3.") {
		t.Errorf("plugin_api_version %q: the plugin SDK speaks plugin API 3", m.PluginAPIVersion)
	}

	// SHA256SUMS, and the files it lists.
	sums := map[string]string{}
	f, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: bad line %q", sc.Text())
		}
		sums[name] = sum
	}
	files := map[string][]byte{}
	for _, e := range m.Files {
		b, err := os.ReadFile(filepath.Join(dir, e.Name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256hex(b); got != e.SHA256 || sums[e.Name] != got || int64(len(b)) != e.Size {
			t.Errorf("%s: sha256 %s size %d; release.json says %s %d, SHA256SUMS %s", e.Name, got, len(b), e.SHA256, e.Size, sums[e.Name])
		}
		files[e.Name] = b
	}
	if len(sums) != len(m.Files) {
		t.Errorf("SHA256SUMS lists %d files, release.json %d", len(sums), len(m.Files))
	}

	// The CLI: static, for its machine; the plugin: a shared object for
	// its machine with the plugin API's entry points.
	for _, p := range Platforms {
		cli := files[fmt.Sprintf("kmodguard-%s-linux-%s", m.Version, p.GoArch)]
		checkELF(t, "CLI "+p.GoArch, cli, p.GoArch, elf.ET_EXEC, false)
		tgz := files[fmt.Sprintf("kmodguard-%s-linux-%s.tar.gz", m.Version, p.Machine)]
		so := onlyFile(t, tgz, "libkmodguard.so")
		checkELF(t, "plugin "+p.GoArch, so, p.GoArch, elf.ET_DYN, true)
	}
	rules, err := os.ReadFile("../../../rules/kmodguard_rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := onlyFile(t, files[fmt.Sprintf("%s-%s.tar.gz", RulesName, m.Version)], "kmodguard_rules.yaml"); !bytes.Equal(got, rules) {
		t.Error("the rules tarball's kmodguard_rules.yaml is not rules/kmodguard_rules.yaml")
	}

	// The layouts go where registry/index.yaml and the DaemonSet say.
	checkRepos(t, m)

	byLayout := map[string]LayoutEntry{}
	for _, l := range m.OCI {
		byLayout[l.Layout] = l
		if !reflect.DeepEqual(l.Tags, tags) {
			t.Errorf("%s: tags %v, want %v", l.Layout, l.Tags, tags)
		}
	}

	// The plugin: an index, a manifest per platform, each layer the
	// platform's tarball as released.
	pidx := rootIndex(t, dir, byLayout["oci/plugin"], tags)
	pm, _ := pidx.IndexManifest()
	if len(pm.Manifests) != len(Platforms) {
		t.Fatalf("oci/plugin: %d manifests, want %d", len(pm.Manifests), len(Platforms))
	}
	for i, d := range pm.Manifests {
		p := Platforms[i]
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != p.GoArch {
			t.Errorf("oci/plugin manifest %d: platform %v, want linux/%s", i, d.Platform, p.GoArch)
		}
		img, err := pidx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg := artifact(t, img, release.PluginConfigMediaType, release.PluginLayerMediaType,
			fmt.Sprintf("kmodguard-%s-linux-%s.tar.gz", m.Version, p.Machine), files)
		want := release.Config{Name: "kmodguard", Version: m.Version, Requirements: []release.Requirement{{Name: release.PluginAPIRequirement, Version: m.PluginAPIVersion}}}
		if !reflect.DeepEqual(cfg, want) {
			t.Errorf("oci/plugin %s: config %+v, want %+v", p.GoArch, cfg, want)
		}
	}

	// The rules: one manifest, needing the engine of required_engine_version
	// and the plugin of required_plugin_versions.
	rroot, err := layout.ImageIndexFromPath(filepath.Join(dir, "oci/rules"))
	if err != nil {
		t.Fatal(err)
	}
	rd := tagged(t, "oci/rules", rroot, byLayout["oci/rules"], tags)
	rimg, err := rroot.Image(rd)
	if err != nil {
		t.Fatal(err)
	}
	cfg := artifact(t, rimg, release.RulesfileConfigMediaType, release.RulesfileLayerMediaType,
		fmt.Sprintf("%s-%s.tar.gz", RulesName, m.Version), files)
	want := release.Config{
		Name: RulesName, Version: m.Version,
		Requirements: []release.Requirement{{Name: release.EngineRequirement, Version: "0.31.0"}},
		Dependencies: []release.Dependency{{Name: "kmodguard", Version: version.Release}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("oci/rules: config %+v, want %+v", cfg, want)
	}

	// The image: valid for a registry and a runtime, and running the CLI
	// as released.
	iidx := rootIndex(t, dir, byLayout["oci/image"], tags)
	if err := validate.Index(iidx); err != nil {
		t.Errorf("oci/image does not validate: %v", err)
	}
	im, _ := iidx.IndexManifest()
	for i, d := range im.Manifests {
		p := Platforms[i]
		img, err := iidx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != p.GoArch || !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/usr/bin/kmodguard"}) {
			t.Errorf("oci/image %s: os %s arch %s entrypoint %v", p.GoArch, cf.OS, cf.Architecture, cf.Config.Entrypoint)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("oci/image %s: %d layers, %v", p.GoArch, len(layers), err)
		}
		rc, err := layers[0].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		tgz, _ := io.ReadAll(rc)
		rc.Close()
		if got := member(t, tgz, "usr/bin/kmodguard"); !bytes.Equal(got, files[fmt.Sprintf("kmodguard-%s-linux-%s", m.Version, p.GoArch)]) {
			t.Errorf("oci/image %s: /usr/bin/kmodguard is not the released CLI", p.GoArch)
		}
	}

	// push.sh names every tarball and every repository.
	push := string(files["push.sh"])
	for name := range files {
		if strings.HasSuffix(name, ".tar.gz") && !strings.Contains(push, name) {
			t.Errorf("push.sh does not push %s", name)
		}
	}
	// falcoctl reads no requirement from a tarball: push.sh must pass the
	// rules artifact's, or it would carry none.
	for _, flag := range []string{"--requires " + release.EngineRequirement + ":0.31.0", "--depends-on kmodguard:" + version.Release, "--requires " + release.PluginAPIRequirement + ":" + m.PluginAPIVersion} {
		if !strings.Contains(push, flag) {
			t.Errorf("push.sh does not pass %s to falcoctl", flag)
		}
	}
	for _, l := range m.OCI {
		if !strings.Contains(push, l.Repo+":"+strings.Join(l.Tags, ",")) {
			t.Errorf("push.sh does not copy %s to %s", l.Layout, l.Repo)
		}
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func checkELF(t *testing.T, what string, b []byte, goarch string, typ elf.Type, plugin bool) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if f.Machine != machines[goarch] || f.Type != typ {
		t.Errorf("%s: %s %s, want %s %s", what, f.Machine, f.Type, machines[goarch], typ)
	}
	interp := false
	for _, p := range f.Progs {
		interp = interp || p.Type == elf.PT_INTERP
	}
	if !plugin && interp {
		t.Errorf("%s: dynamically linked; the CLI is static", what)
	}
	if plugin {
		syms, err := f.DynamicSymbols()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		have := map[string]bool{}
		for _, s := range syms {
			have[s.Name] = true
		}
		for _, s := range []string{"plugin_get_required_api_version", "plugin_init", "plugin_open", "plugin_next_batch", "plugin_extract_fields"} {
			if !have[s] {
				t.Errorf("%s does not export %s", what, s)
			}
		}
	}
}

// onlyFile returns the one file of a tar.gz, which must be name.
func onlyFile(t *testing.T, tgz []byte, name string) []byte {
	t.Helper()
	entries := untar(t, tgz)
	if len(entries) != 1 || entries[name] == nil {
		t.Errorf("the tarball holds %d entries, want only %s", len(entries), name)
	}
	return entries[name]
}

// member returns the file name of a tar.gz.
func member(t *testing.T, tgz []byte, name string) []byte {
	t.Helper()
	return untar(t, tgz)[name]
}

func untar(t *testing.T, tgz []byte) map[string][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			out[h.Name], _ = io.ReadAll(tr)
		}
	}
}

// tagged checks that index.json tags exactly tags, all at the digest
// release.json gives, and returns it.
func tagged(t *testing.T, name string, root v1.ImageIndex, l LayoutEntry, tags []string) v1.Hash {
	t.Helper()
	im, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range im.Manifests {
		got = append(got, d.Annotations["org.opencontainers.image.ref.name"])
		if d.Digest.String() != l.Digest {
			t.Errorf("%s: index.json has %s, release.json says %s", name, d.Digest, l.Digest)
		}
	}
	want := append([]string(nil), tags...)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: index.json tags %v, want %v", name, got, want)
	}
	h, err := v1.NewHash(l.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func rootIndex(t *testing.T, dir string, l LayoutEntry, tags []string) v1.ImageIndex {
	t.Helper()
	root, err := layout.ImageIndexFromPath(filepath.Join(dir, l.Layout))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := root.ImageIndex(tagged(t, l.Layout, root, l, tags))
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// artifact checks a falcoctl artifact's manifest (media types, the layer
// being the released tarball, titled with its name) and returns its config.
func artifact(t *testing.T, img v1.Image, configType, layerType, tarball string, files map[string][]byte) release.Config {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || string(m.Config.MediaType) != configType {
		t.Errorf("%s: manifest %s config %s, want %s %s", tarball, m.MediaType, m.Config.MediaType, types.OCIManifestSchema1, configType)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("%s: %d layers", tarball, len(m.Layers))
	}
	l := m.Layers[0]
	if string(l.MediaType) != layerType || l.Annotations["org.opencontainers.image.title"] != tarball || l.Digest.Hex != sha256hex(files[tarball]) {
		t.Errorf("%s: layer %s %s %s, want the released tarball as %s", tarball, l.MediaType, l.Annotations, l.Digest, layerType)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var cfg release.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// checkRepos checks the repositories against registry/index.yaml and the
// DaemonSet's image.
func checkRepos(t *testing.T, m Manifest) {
	t.Helper()
	b, err := os.ReadFile("../../../registry/index.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var index []struct{ Name, Type, Registry, Repository string }
	if err := yaml.Unmarshal(b, &index); err != nil {
		t.Fatal(err)
	}
	repos := map[string]string{}
	for _, e := range index {
		repos[e.Type] = e.Registry + "/" + e.Repository
	}
	if repos["plugin"] != PluginRepo || repos["rulesfile"] != RulesRepo {
		t.Errorf("registry/index.yaml: plugin %s, rules %s; the release pushes to %s, %s", repos["plugin"], repos["rulesfile"], PluginRepo, RulesRepo)
	}
	ds, err := os.ReadFile("../../../deploy/kubernetes/enforcer-daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ds), "image: "+ImageRepo+":") {
		t.Errorf("the enforcer DaemonSet does not run %s", ImageRepo)
	}
}
