package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/kmodguard/kmodguard/internal/version"
)

var created = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func TestTags(t *testing.T) {
	for v, want := range map[string][]string{
		"0.1.0":               {"0.1.0", "0.1", "0"},
		"1.12.3":              {"1.12.3", "1.12", "1"},
		"0.2.0-rc.1":          {"0.2.0-rc.1"},
		"0.1.0-dev.g0123abcd": {"0.1.0-dev.g0123abcd"},
	} {
		got, err := Tags(v)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Tags(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"", "1", "0.1", "v0.1.0", "0.1.0+g0123", "01.1.0", "0.1.x", "0.1.0.1"} {
		if got, err := Tags(v); err == nil {
			t.Errorf("Tags(%q) = %v, want an error", v, got)
		}
	}
}

func TestRulesConfigFromOurRules(t *testing.T) {
	rules, err := os.ReadFile("../../rules/kmodguard_rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := RulesConfig("kmodguard-rules", "0.1.0", rules)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Name:         "kmodguard-rules",
		Version:      "0.1.0",
		Requirements: []Requirement{{EngineRequirement, "0.31.0"}},
		Dependencies: []Dependency{{"kmodguard", version.Release}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("RulesConfig = %+v, want %+v", cfg, want)
	}
}

func TestRulesConfigForms(t *testing.T) {
	cfg, err := RulesConfig("r", "1.0.0", []byte("- required_engine_version: 15\n- rule: x\n"))
	if err != nil || !reflect.DeepEqual(cfg.Requirements, []Requirement{{EngineRequirement, "0.15.0"}}) || cfg.Dependencies != nil {
		t.Errorf("an integer engine version: %+v, %v; want 0.15.0 and no dependency", cfg, err)
	}
	for name, rules := range map[string]string{
		"no engine version":    "- required_plugin_versions: [{name: a, version: 1.0.0}]\n",
		"engine version 1.5":   "- required_engine_version: 1.5\n",
		"engine version x.y.z": "- required_engine_version: x.y.z\n",
		"not a list":           "required_engine_version: 0.31.0\n",
		"not YAML":             "- [\n",
	} {
		if cfg, err := RulesConfig("r", "1.0.0", []byte(rules)); err == nil {
			t.Errorf("%s: RulesConfig = %+v, want an error", name, cfg)
		}
	}
}

func untar(t *testing.T, tgz []byte) map[string]*tar.Header {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
	}
}

func TestTarGz(t *testing.T) {
	files := []File{{Name: "usr/bin/kmodguard", Mode: 0o755, Data: []byte("cli")}, {Name: "usr/lib/x.so", Mode: 0o644, Data: []byte("so")}}
	a, err := TarGz(files, created)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := TarGz(files, created)
	if !bytes.Equal(a, b) {
		t.Error("the same files gave two different tarballs")
	}
	if c, _ := TarGz(files, created.Add(time.Second)); bytes.Equal(a, c) {
		t.Error("another time gave the same tarball: the time is not in it")
	}
	got := untar(t, a)
	for _, name := range []string{"usr/", "usr/bin/", "usr/bin/kmodguard", "usr/lib/", "usr/lib/x.so"} {
		h := got[name]
		if h == nil {
			t.Errorf("%s is not in the tarball (it has %v)", name, got)
			continue
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) {
			t.Errorf("%s: uid %d gid %d time %v, want root and %v", name, h.Uid, h.Gid, h.ModTime, created)
		}
	}
	if len(got) != 5 {
		t.Errorf("the tarball has %d entries, want 5: %v", len(got), got)
	}
	for _, bad := range []string{"", "/etc/x", "../x", "a/../../x", "a//b"} {
		if _, err := TarGz([]File{{Name: bad, Data: []byte("x")}}, created); err == nil {
			t.Errorf("TarGz accepted the entry name %q", bad)
		}
	}
}

// writeLayouts writes a plugin, a rules and an image layout under dir from
// fixed inputs, and returns their root digests.
func writeLayouts(t *testing.T, dir string) map[string]string {
	t.Helper()
	ctx := context.Background()
	roots := map[string]string{}
	tags := []string{"0.1.0", "0.1", "0"}
	for _, name := range []string{"plugin", "rules", "image"} {
		l, err := NewLayout(filepath.Join(dir, name), created, "https://example.org/kmodguard")
		if err != nil {
			t.Fatal(err)
		}
		var tgz = func(f string) []byte {
			b, err := TarGz([]File{{Name: f, Mode: 0o755, Data: []byte(name + f)}}, created)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		var root, desc = "", error(nil)
		switch name {
		case "plugin":
			d, err := l.Plugin(ctx, Config{Name: "kmodguard", Version: "0.1.0", Requirements: []Requirement{{PluginAPIRequirement, "3.11.0"}}}, []Tarball{
				{"linux/amd64", "p-x86_64.tar.gz", tgz("libkmodguard.so")},
				{"linux/arm64", "p-aarch64.tar.gz", tgz("libkmodguard.so ")},
			})
			root, desc = d.Digest.String(), err
			if err == nil {
				desc = l.Tag(ctx, d, tags...)
			}
		case "rules":
			d, err := l.Rulesfile(ctx, Config{Name: "kmodguard-rules", Version: "0.1.0", Requirements: []Requirement{{EngineRequirement, "0.31.0"}}}, "r.tar.gz", tgz("kmodguard_rules.yaml"))
			root, desc = d.Digest.String(), err
			if err == nil {
				desc = l.Tag(ctx, d, tags...)
			}
		case "image":
			d, err := l.Image(ctx, ImageConfig{Entrypoint: []string{"/usr/bin/kmodguard"}}, map[string][]File{
				"linux/amd64": {{Name: "usr/bin/kmodguard", Mode: 0o755, Data: []byte("amd64")}},
				"linux/arm64": {{Name: "usr/bin/kmodguard", Mode: 0o755, Data: []byte("arm64")}},
			})
			root, desc = d.Digest.String(), err
			if err == nil {
				desc = l.Tag(ctx, d, tags...)
			}
		}
		if desc != nil {
			t.Fatalf("%s: %v", name, desc)
		}
		roots[name] = root
	}
	return roots
}

// tagged returns the descriptor index.json tags as tag, checking that
// every tag of tags points at one descriptor.
func tagged(t *testing.T, dir string, tags []string) v1.Descriptor {
	t.Helper()
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	byTag := map[string]v1.Descriptor{}
	for _, d := range im.Manifests {
		byTag[d.Annotations["org.opencontainers.image.ref.name"]] = d
	}
	if len(byTag) != len(tags) {
		t.Errorf("%s: tags %v, want %v", dir, byTag, tags)
	}
	first := byTag[tags[0]]
	for _, tag := range tags {
		if d, ok := byTag[tag]; !ok || d.Digest != first.Digest {
			t.Errorf("%s: tag %s points at %v, want %v", dir, tag, d.Digest, first.Digest)
		}
	}
	return first
}

func TestLayouts(t *testing.T) {
	dir := t.TempDir()
	roots := writeLayouts(t, dir)
	if again := writeLayouts(t, t.TempDir()); !reflect.DeepEqual(roots, again) {
		t.Errorf("the same inputs gave other digests: %v, then %v", roots, again)
	}
	tags := []string{"0.1.0", "0.1", "0"}

	// The plugin: an index of one artifact manifest per platform.
	pd := tagged(t, filepath.Join(dir, "plugin"), tags)
	if pd.MediaType != types.OCIImageIndex {
		t.Fatalf("plugin: root %s, want an image index", pd.MediaType)
	}
	root, _ := layout.ImageIndexFromPath(filepath.Join(dir, "plugin"))
	pidx, err := root.ImageIndex(pd.Digest)
	if err != nil {
		t.Fatal(err)
	}
	pim, _ := pidx.IndexManifest()
	var platforms []string
	for _, m := range pim.Manifests {
		platforms = append(platforms, m.Platform.String())
		img, err := pidx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkArtifact(t, img, PluginConfigMediaType, PluginLayerMediaType, "kmodguard", Requirement{PluginAPIRequirement, "3.11.0"})
	}
	if strings.Join(platforms, " ") != "linux/amd64 linux/arm64" {
		t.Errorf("plugin platforms %v, want linux/amd64 linux/arm64", platforms)
	}

	// The rules: one artifact manifest.
	rd := tagged(t, filepath.Join(dir, "rules"), tags)
	rroot, _ := layout.ImageIndexFromPath(filepath.Join(dir, "rules"))
	rimg, err := rroot.Image(rd.Digest)
	if err != nil {
		t.Fatal(err)
	}
	checkArtifact(t, rimg, RulesfileConfigMediaType, RulesfileLayerMediaType, "kmodguard-rules", Requirement{EngineRequirement, "0.31.0"})

	// The image: what a registry and a container runtime take, checked by
	// go-containerregistry's validator (digests, sizes, diff IDs,
	// platforms).
	id := tagged(t, filepath.Join(dir, "image"), tags)
	iroot, _ := layout.ImageIndexFromPath(filepath.Join(dir, "image"))
	iidx, err := iroot.ImageIndex(id.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(iidx); err != nil {
		t.Errorf("the image does not validate: %v", err)
	}
	iim, _ := iidx.IndexManifest()
	for _, m := range iim.Manifests {
		img, _ := iidx.Image(m.Digest)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != m.Platform.Architecture || cf.OS != "linux" || strings.Join(cf.Config.Entrypoint, " ") != "/usr/bin/kmodguard" {
			t.Errorf("image %s: config %+v", m.Platform, cf)
		}
	}

	// And the validator sees damage: one byte of a layer changed.
	blobs := filepath.Join(dir, "image", "blobs", "sha256")
	ents, _ := os.ReadDir(blobs)
	damaged := false
	for _, e := range ents {
		p := filepath.Join(blobs, e.Name())
		b, _ := os.ReadFile(p)
		if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b { // a gzip layer
			b[len(b)-5] ^= 0xff
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			damaged = true
			break
		}
	}
	if !damaged {
		t.Fatal("no layer blob to damage")
	}
	if err := validate.Index(iidx); err == nil {
		t.Error("a damaged layer validates")
	}
}

// checkArtifact checks a falcoctl artifact manifest: its config and layer
// media types, the config's name and requirement, and the layer's title.
func checkArtifact(t *testing.T, img v1.Image, configType, layerType, name string, req Requirement) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || string(m.Config.MediaType) != configType {
		t.Errorf("%s: manifest %s, config %s; want an OCI image manifest with config %s", name, m.MediaType, m.Config.MediaType, configType)
	}
	if len(m.Layers) != 1 || string(m.Layers[0].MediaType) != layerType || m.Layers[0].Annotations["org.opencontainers.image.title"] == "" {
		t.Errorf("%s: layers %+v, want one %s with a title", name, m.Layers, layerType)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Name != name || len(cfg.Requirements) != 1 || cfg.Requirements[0] != req {
		t.Errorf("%s: config %+v, want requirement %+v", name, cfg, req)
	}
	if m.Annotations["org.opencontainers.image.created"] != created.Format(time.RFC3339) {
		t.Errorf("%s: created %q, want %s", name, m.Annotations["org.opencontainers.image.created"], created.Format(time.RFC3339))
	}
}
