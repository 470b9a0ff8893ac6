// Package registry_test checks kmodguard's registry metadata against the
// conventions of falcosecurity's plugin registry and falcoctl's index, and
// against the plugin itself.
package registry_test

import (
	"bytes"
	"hash/crc32"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kmodguard/kmodguard/plugin"
)

// The registry's rules (falcosecurity/plugins docs/registering-a-plugin.md
// and registry.yaml).
var (
	nameRe   = regexp.MustCompile(`^[a-z]+[a-z0-9-_\-]*$`)
	sourceRe = regexp.MustCompile(`^[a-z]+[a-z0-9_]*$`)
	// reservedSources are taken by Falco itself.
	reservedSources = []string{"syscall", "internal", "plugins"}
	// spdx lists the licences this project ships under.
	spdx = []string{"Apache-2.0"}
)

// Plugin ID blocks (falcosecurity/plugins docs/plugin-ids.md): the registry
// assigns IDs from the public block; the private block is never assigned.
// devID is the registry's shared ID for source plugins in development.
const (
	publicEnd    = 1 << 30 // public: [0, publicEnd)
	privateEnd   = 1 << 31 // private: [publicEnd, privateEnd)
	devID        = 999
	highestTaken = 28 // the highest ID the registry has assigned (2026-12)
)

type maintainer struct {
	Name  string `yaml:"name"`
	Email string `yaml:"email"`
}

type registryEntry struct {
	Name         string       `yaml:"name"`
	Description  string       `yaml:"description"`
	Authors      string       `yaml:"authors"`
	Contact      string       `yaml:"contact"`
	Maintainers  []maintainer `yaml:"maintainers"`
	Keywords     []string     `yaml:"keywords"`
	URL          string       `yaml:"url"`
	RulesURL     string       `yaml:"rules_url"`
	License      string       `yaml:"license"`
	Capabilities struct {
		Sourcing struct {
			Supported bool   `yaml:"supported"`
			ID        uint32 `yaml:"id"`
			Source    string `yaml:"source"`
		} `yaml:"sourcing"`
		Extraction struct {
			Supported bool `yaml:"supported"`
		} `yaml:"extraction"`
	} `yaml:"capabilities"`
}

type indexEntry struct {
	Name        string       `yaml:"name"`
	Type        string       `yaml:"type"`
	Registry    string       `yaml:"registry"`
	Repository  string       `yaml:"repository"`
	Description string       `yaml:"description"`
	Home        string       `yaml:"home"`
	Keywords    []string     `yaml:"keywords"`
	License     string       `yaml:"license"`
	Maintainers []maintainer `yaml:"maintainers"`
	Sources     []string     `yaml:"sources"`
}

// decodeStrict decodes path into v, refusing unknown fields.
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestRegistryEntry(t *testing.T) {
	var reg struct {
		Plugins []registryEntry `yaml:"plugins"`
	}
	decodeStrict(t, "registry.yaml", &reg)
	if len(reg.Plugins) != 1 {
		t.Fatalf("%d entries, want 1", len(reg.Plugins))
	}
	e := reg.Plugins[0]
	info := plugin.New().Info()
	if !nameRe.MatchString(e.Name) || e.Name != info.Name {
		t.Errorf("name %q: must match %s and equal the plugin's name %q", e.Name, nameRe, info.Name)
	}
	src := e.Capabilities.Sourcing
	if !src.Supported || !sourceRe.MatchString(src.Source) || slices.Contains(reservedSources, src.Source) || src.Source != info.EventSource {
		t.Errorf("source %q: must match %s, not be one of %v, and equal the plugin's %q", src.Source, sourceRe, reservedSources, info.EventSource)
	}
	if src.ID != info.ID {
		t.Errorf("registry id %d, plugin id %d: they must agree", src.ID, info.ID)
	}
	if src.ID == 0 {
		t.Error("id 0 is reserved")
	}
	switch {
	case src.ID == devID:
		t.Errorf("id %d is the registry's shared development id: other plugins in development send events under it", devID)
	case src.ID >= privateEnd:
		t.Errorf("id %d is outside both blocks (public below %d, private below %d)", src.ID, publicEnd, privateEnd)
	case src.ID >= publicEnd:
		if want := uint32(publicEnd + crc32.ChecksumIEEE([]byte(info.Name))%publicEnd); src.ID != want {
			t.Errorf("private id %d: the documented rule (2^30 + CRC-32 of %q mod 2^30) gives %d", src.ID, info.Name, want)
		}
		t.Logf("id %d is from the private block: ask the registry for a public id on submission", src.ID)
	case src.ID <= highestTaken:
		t.Errorf("public id %d is already another plugin's (the registry has assigned up to %d)", src.ID, highestTaken)
	}
	if !e.Capabilities.Extraction.Supported || len(plugin.New().Fields()) == 0 {
		t.Error("the plugin extracts fields: extraction must be declared supported")
	}
	if !slices.Contains(spdx, e.License) {
		t.Errorf("license %q is not one this project ships under", e.License)
	}
	for field, v := range map[string]string{"description": e.Description, "authors": e.Authors, "contact": e.Contact, "url": e.URL, "rules_url": e.RulesURL} {
		if strings.TrimSpace(v) == "" {
			t.Errorf("%s is empty", field)
		}
	}
	if len(e.Maintainers) == 0 || len(e.Keywords) == 0 {
		t.Error("maintainers and keywords are required")
	}
	for _, m := range e.Maintainers {
		if m.Name == "" || !strings.Contains(m.Email, "@") {
			t.Errorf("maintainer %+v needs a name and an email", m)
		}
	}
	rules, ok := strings.CutPrefix(e.RulesURL, e.URL+"/tree/main/")
	if !ok {
		t.Fatalf("rules_url %q is not a folder of url %q", e.RulesURL, e.URL)
	}
	if _, err := os.Stat("../" + rules + "/kmodguard_rules.yaml"); err != nil {
		t.Errorf("rules_url: %v", err)
	}
}

// TestRulesRequirePlugin checks that the rules file asks for this plugin by
// its registry name, at a version the plugin satisfies.
func TestRulesRequirePlugin(t *testing.T) {
	b, err := os.ReadFile("../rules/kmodguard_rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var items []map[string]any
	if err := yaml.Unmarshal(b, &items); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		reqs, ok := it["required_plugin_versions"].([]any)
		if !ok {
			continue
		}
		for _, r := range reqs {
			m := r.(map[string]any)
			if m["name"] != plugin.Name {
				t.Errorf("rules require plugin %v, the registry name is %s", m["name"], plugin.Name)
			}
			if m["version"] != plugin.Version {
				t.Errorf("rules require version %v, the plugin is %s", m["version"], plugin.Version)
			}
		}
		return
	}
	t.Error("the rules file has no required_plugin_versions")
}

func TestIndex(t *testing.T) {
	var idx []indexEntry
	decodeStrict(t, "index.yaml", &idx)
	types := map[string]indexEntry{}
	for _, e := range idx {
		if !nameRe.MatchString(e.Name) {
			t.Errorf("index name %q does not match %s", e.Name, nameRe)
		}
		switch e.Type {
		case "plugin":
			if !strings.HasSuffix(e.Repository, "/plugin/"+plugin.Name) {
				t.Errorf("plugin repository %q: want .../plugin/%s", e.Repository, plugin.Name)
			}
		case "rulesfile":
			if !strings.HasSuffix(e.Repository, "/ruleset/"+plugin.Name) {
				t.Errorf("rulesfile repository %q: want .../ruleset/%s", e.Repository, plugin.Name)
			}
		default:
			t.Errorf("%s: type %q is neither plugin nor rulesfile", e.Name, e.Type)
		}
		if e.Registry == "" || e.License == "" || len(e.Maintainers) == 0 || len(e.Sources) == 0 {
			t.Errorf("%s: registry, license, maintainers and sources are required", e.Name)
		}
		types[e.Type] = e
	}
	if types["plugin"].Name != plugin.Name || types["rulesfile"].Name == "" {
		t.Errorf("the index needs the plugin %s and its rulesfile: %v", plugin.Name, idx)
	}
	// The Helm values install exactly these artifacts.
	values, err := os.ReadFile("../deploy/helm/falco-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range idx {
		if !strings.Contains(string(values), e.Registry+"/"+e.Repository+":"+plugin.Version) {
			t.Errorf("deploy/helm/falco-values.yaml does not install %s/%s:%s", e.Registry, e.Repository, plugin.Version)
		}
	}
}
