// Package release writes kmodguard's release outputs as OCI image layouts
// (the directory format of the OCI image spec): the falcoctl artifacts of
// the Falco plugin and of its rules, and the container image the enforcer
// DaemonSet runs.
//
// The falcoctl artifacts are packed the way `falcoctl registry push` packs
// them, with the library it pushes with (oras-go): one image manifest per
// tarball, a config blob of falcoctl's artifact config (name, version,
// requirements, dependencies) under falcoctl's media types, the tarball as
// the only layer, titled with its file name; a plugin's manifests, one per
// platform, under an image index. Copying a layout to a registry (`oras cp
// --from-oci-layout`) gives the same manifests, config and layers as
// pushing the tarballs with falcoctl would, and `falcoctl artifact install`
// takes them.
//
// Every timestamp is the one given (the commit's time), and the tarballs
// are written with fixed modes, owners and times, so that a release built
// twice from one commit has the same digests.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"sigs.k8s.io/yaml"
)

// falcoctl's media types (falcoctl pkg/oci): a config blob and a tar.gz
// layer for each artifact type.
const (
	PluginConfigMediaType    = "application/vnd.cncf.falco.plugin.config.v1+json"
	PluginLayerMediaType     = "application/vnd.cncf.falco.plugin.layer.v1+tar.gz"
	RulesfileConfigMediaType = "application/vnd.cncf.falco.rulesfile.config.v1+json"
	RulesfileLayerMediaType  = "application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz"
)

// Requirement names falcoctl checks before installing an artifact.
const (
	// PluginAPIRequirement is the plugin API version the plugin needs of
	// Falco.
	PluginAPIRequirement = "plugin_api_version"
	// EngineRequirement is the rules engine version a rules file needs,
	// from its required_engine_version.
	EngineRequirement = "engine_version_semver"
)

// Config is falcoctl's artifact config, the JSON of an artifact's config
// blob.
type Config struct {
	Name         string        `json:"name,omitempty"`
	Version      string        `json:"version,omitempty"`
	Dependencies []Dependency  `json:"dependencies,omitempty"`
	Requirements []Requirement `json:"requirements,omitempty"`
}

// Dependency is another artifact this one needs: for a rules file, a
// plugin from its required_plugin_versions.
type Dependency struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Requirement is something of Falco's this artifact needs.
type Requirement struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// File is one regular file of a tarball.
type File struct {
	Name string
	Mode int64
	Data []byte
}

// TarGz returns a gzip-compressed tar of files, in the order given, owned
// by root, every time set to mtime, and no time in the gzip header: the
// same files give the same bytes. Directories that a name needs are
// written before it.
func TarGz(files []File, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	dirs := map[string]bool{}
	for _, f := range files {
		if f.Name == "" || path.IsAbs(f.Name) || path.Clean(f.Name) != f.Name || strings.HasPrefix(f.Name, "../") {
			return nil, fmt.Errorf("tarball entry %q: not a clean relative path", f.Name)
		}
		if err := writeParents(tw, dirs, path.Dir(f.Name), mtime); err != nil {
			return nil, err
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.Name,
			Mode:     f.Mode,
			Size:     int64(len(f.Data)),
			ModTime:  mtime,
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeParents writes dir and the directories above it that dirs does not
// hold yet, outermost first.
func writeParents(tw *tar.Writer, dirs map[string]bool, dir string, mtime time.Time) error {
	if dir == "." || dirs[dir] {
		return nil
	}
	if err := writeParents(tw, dirs, path.Dir(dir), mtime); err != nil {
		return err
	}
	dirs[dir] = true
	return tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir,
		Name:     dir + "/",
		Mode:     0o755,
		ModTime:  mtime,
		Format:   tar.FormatPAX,
	})
}

// Tags returns the tags a release of version gets: the version itself and,
// for a release (no pre-release part), the floating tags falcoctl's
// --add-floating-tags adds, MAJOR and MAJOR.MINOR, which `falcoctl artifact
// follow` tracks. A pre-release ("0.2.0-rc.1", "0.1.0-dev.g0123abcd")
// gets its own tag only: it must never move a floating tag.
func Tags(version string) ([]string, error) {
	core, pre, _ := strings.Cut(version, "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("version %q: not MAJOR.MINOR.PATCH", version)
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 32); err != nil || (len(p) > 1 && p[0] == '0') {
			return nil, fmt.Errorf("version %q: %q is not a number without leading zeros", version, p)
		}
	}
	if strings.Contains(version, "+") {
		return nil, fmt.Errorf("version %q: build metadata (+...) cannot be an OCI tag", version)
	}
	if pre != "" {
		return []string{version}, nil
	}
	return []string{version, parts[0] + "." + parts[1], parts[0]}, nil
}

// Layout is an OCI image layout being written.
type Layout struct {
	dir     string
	store   *oci.Store
	created time.Time
	source  string
}

// NewLayout creates (or opens) the OCI image layout in dir. created is the
// time every manifest carries (org.opencontainers.image.created); source,
// if not empty, the repository URL it names (org.opencontainers.image.source).
func NewLayout(dir string, created time.Time, source string) (*Layout, error) {
	s, err := oci.New(dir)
	if err != nil {
		return nil, err
	}
	return &Layout{dir: dir, store: s, created: created.UTC(), source: source}, nil
}

// Tag points each tag at desc and writes the layout's index.json, which
// then lists the tagged roots only: the store also lists every manifest it
// was given, but a platform's manifest is reached from its image index,
// and a layout whose index.json holds untagged children reads as several
// images to tools that list it.
func (l *Layout) Tag(ctx context.Context, desc ocispec.Descriptor, tags ...string) error {
	for _, t := range tags {
		if err := l.store.Tag(ctx, desc, t); err != nil {
			return fmt.Errorf("tag %s: %w", t, err)
		}
	}
	if err := l.store.SaveIndex(); err != nil {
		return err
	}
	file := filepath.Join(l.dir, ocispec.ImageIndexFile)
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	var kept []ocispec.Descriptor
	for _, d := range idx.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] != "" {
			kept = append(kept, d)
		}
	}
	// Sorted by tag, so that the file too is the same each time.
	sort.Slice(kept, func(i, j int) bool {
		return kept[i].Annotations[ocispec.AnnotationRefName] < kept[j].Annotations[ocispec.AnnotationRefName]
	})
	idx.Manifests = kept
	out, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return os.WriteFile(file, out, 0o644)
}

func (l *Layout) push(ctx context.Context, mediaType string, data []byte, annotations map[string]string) (ocispec.Descriptor, error) {
	desc := content.NewDescriptorFromBytes(mediaType, data)
	desc.Annotations = annotations
	if err := l.store.Push(ctx, desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return ocispec.Descriptor{}, fmt.Errorf("push %s: %w", mediaType, err)
	}
	return desc, nil
}

func (l *Layout) pushJSON(ctx context.Context, mediaType string, v any) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return l.push(ctx, mediaType, data, nil)
}

func (l *Layout) manifestAnnotations() map[string]string {
	a := map[string]string{ocispec.AnnotationCreated: l.created.Format(time.RFC3339)}
	if l.source != "" {
		a[ocispec.AnnotationSource] = l.source
	}
	return a
}

// artifact packs one falcoctl artifact manifest: the config, and the
// tarball named name as the only layer.
func (l *Layout) artifact(ctx context.Context, configType, layerType string, cfg Config, name string, tarball []byte) (ocispec.Descriptor, error) {
	layer, err := l.push(ctx, layerType, tarball, map[string]string{ocispec.AnnotationTitle: name})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	cfgDesc, err := l.pushJSON(ctx, configType, cfg)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return oras.PackManifest(ctx, l.store, oras.PackManifestVersion1_0, "", oras.PackManifestOptions{
		ConfigDescriptor:    &cfgDesc,
		Layers:              []ocispec.Descriptor{layer},
		ManifestAnnotations: l.manifestAnnotations(),
	})
}

// Tarball is a named tar.gz for one platform ("linux/amd64").
type Tarball struct {
	Platform string
	Name     string
	Data     []byte
}

// Plugin writes a plugin artifact: a manifest per platform under an image
// index, as falcoctl pushes a plugin (it picks the manifest whose platform
// is its own GOOS/GOARCH).
func (l *Layout) Plugin(ctx context.Context, cfg Config, builds []Tarball) (ocispec.Descriptor, error) {
	if len(builds) == 0 {
		return ocispec.Descriptor{}, fmt.Errorf("plugin %s: no build", cfg.Name)
	}
	var manifests []ocispec.Descriptor
	for _, b := range builds {
		os, arch, ok := strings.Cut(b.Platform, "/")
		if !ok || os == "" || arch == "" {
			return ocispec.Descriptor{}, fmt.Errorf("platform %q: not OS/ARCH", b.Platform)
		}
		m, err := l.artifact(ctx, PluginConfigMediaType, PluginLayerMediaType, cfg, b.Name, b.Data)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		m.Platform = &ocispec.Platform{OS: os, Architecture: arch}
		manifests = append(manifests, m)
	}
	return l.index(ctx, manifests)
}

func (l *Layout) index(ctx context.Context, manifests []ocispec.Descriptor) (ocispec.Descriptor, error) {
	idx := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: manifests,
	}
	if l.source != "" {
		idx.Annotations = map[string]string{ocispec.AnnotationSource: l.source}
	}
	return l.pushJSON(ctx, ocispec.MediaTypeImageIndex, idx)
}

// Rulesfile writes a rules file artifact: one manifest, for every
// platform.
func (l *Layout) Rulesfile(ctx context.Context, cfg Config, name string, tarball []byte) (ocispec.Descriptor, error) {
	return l.artifact(ctx, RulesfileConfigMediaType, RulesfileLayerMediaType, cfg, name, tarball)
}

// RulesConfig returns the artifact config of a rules file as falcoctl
// derives it on push: its requirement is its required_engine_version (an
// integer N meaning 0.N.0, as older rules files write it), its
// dependencies its required_plugin_versions.
func RulesConfig(name, version string, rules []byte) (Config, error) {
	var items []struct {
		Engine  any          `json:"required_engine_version"`
		Plugins []Dependency `json:"required_plugin_versions"`
	}
	if err := yaml.Unmarshal(rules, &items); err != nil {
		return Config{}, fmt.Errorf("rules file: %w", err)
	}
	cfg := Config{Name: name, Version: version}
	for _, it := range items {
		switch e := it.Engine.(type) {
		case nil:
		case float64:
			if e != float64(int(e)) || e < 0 {
				return Config{}, fmt.Errorf("rules file: required_engine_version %v: not a whole number", e)
			}
			cfg.Requirements = []Requirement{{EngineRequirement, fmt.Sprintf("0.%d.0", int(e))}}
		case string:
			if _, err := Tags(e); err != nil {
				return Config{}, fmt.Errorf("rules file: required_engine_version: %w", err)
			}
			cfg.Requirements = []Requirement{{EngineRequirement, e}}
		default:
			return Config{}, fmt.Errorf("rules file: required_engine_version %v: neither a number nor a version", e)
		}
		if it.Plugins != nil && cfg.Dependencies == nil {
			cfg.Dependencies = it.Plugins
		}
	}
	if cfg.Requirements == nil {
		return Config{}, fmt.Errorf("rules file: no required_engine_version: falcoctl could not tell which Falco it needs")
	}
	return cfg, nil
}

// ImageConfig is what the container image runs.
type ImageConfig struct {
	Entrypoint []string
	Labels     map[string]string
}

// Image writes a container image with one layer per platform under an
// image index: files (from ImageFiles) for each platform ("linux/arm64").
func (l *Layout) Image(ctx context.Context, run ImageConfig, layers map[string][]File) (ocispec.Descriptor, error) {
	var manifests []ocispec.Descriptor
	for _, platform := range sortedKeys(layers) {
		os, arch, _ := strings.Cut(platform, "/")
		tgz, err := TarGz(layers[platform], l.created)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		diffID, err := uncompressedDigest(tgz)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		layer, err := l.push(ctx, ocispec.MediaTypeImageLayerGzip, tgz, nil)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		created := l.created
		cfg := ocispec.Image{
			Created:  &created,
			Platform: ocispec.Platform{OS: os, Architecture: arch},
			Config: ocispec.ImageConfig{
				Entrypoint: run.Entrypoint,
				Labels:     run.Labels,
				Env:        []string{"PATH=/usr/bin"},
			},
			RootFS:  ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
			History: []ocispec.History{{Created: &created, CreatedBy: "kmodguard make release"}},
		}
		cfgDesc, err := l.pushJSON(ctx, ocispec.MediaTypeImageConfig, cfg)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		m, err := oras.PackManifest(ctx, l.store, oras.PackManifestVersion1_0, "", oras.PackManifestOptions{
			ConfigDescriptor:    &cfgDesc,
			Layers:              []ocispec.Descriptor{layer},
			ManifestAnnotations: l.manifestAnnotations(),
		})
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		m.Platform = &ocispec.Platform{OS: os, Architecture: arch}
		manifests = append(manifests, m)
	}
	return l.index(ctx, manifests)
}

func uncompressedDigest(tgz []byte) (digest.Digest, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, zr); err != nil {
		return "", err
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
