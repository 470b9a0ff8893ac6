package deploy_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/xeipuuv/gojsonschema"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The values in helm/ are for the falcosecurity/falco chart, which is not
// part of this repository. The tests here read it from a snapshot at test
// time: KMODGUARD_FALCO_CHART names its charts/falco directory (a clone of
// https://github.com/falcosecurity/charts), or else a bare git mirror of
// falcosecurity/charts under /work/.mirror is read with git. Without
// either they are skipped.
const (
	chartEnv    = "KMODGUARD_FALCO_CHART"
	mirrorGlob  = "/work/.mirror/falcosecurity+charts*"
	chartSubdir = "charts/falco"
)

// falcoChart is a snapshot of the chart: its directory and where it came
// from.
type falcoChart struct {
	dir, from string
}

func (c falcoChart) read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		t.Fatalf("chart %s: %v", c.from, err)
	}
	return b
}

// values is the chart's values.yaml, as JSON-typed values.
func (c falcoChart) values(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal(c.read(t, "values.yaml"), &v); err != nil {
		t.Fatalf("chart %s: values.yaml: %v", c.from, err)
	}
	return v
}

// chart finds the snapshot, or skips the test saying how to get one.
func chart(t *testing.T) falcoChart {
	t.Helper()
	if dir := os.Getenv(chartEnv); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "values.yaml")); err != nil {
			t.Fatalf("%s=%s: not the chart's directory: %v", chartEnv, dir, err)
		}
		return logChart(t, falcoChart{dir: dir, from: dir})
	}
	git, err := exec.LookPath("git")
	mirrors, _ := filepath.Glob(mirrorGlob)
	if err == nil {
		for _, m := range mirrors {
			for _, gitDir := range []string{filepath.Join(m, "repo"), m} {
				commit, err := exec.Command(git, "--git-dir", gitDir, "rev-parse", "--verify", "HEAD").Output()
				if err != nil {
					continue
				}
				dir := t.TempDir()
				if err := extract(git, gitDir, dir); err != nil {
					t.Fatalf("%s: %v", gitDir, err)
				}
				c := falcoChart{dir: filepath.Join(dir, chartSubdir), from: fmt.Sprintf("%s at %s", gitDir, bytes.TrimSpace(commit))}
				return logChart(t, c)
			}
		}
	}
	t.Skipf("no snapshot of the falcosecurity/falco chart: set %s to the charts/falco directory of a clone of "+
		"https://github.com/falcosecurity/charts, or put a bare mirror of it at %s (with git installed)", chartEnv, mirrorGlob)
	return falcoChart{}
}

// extract writes the chart's directory at the mirror's HEAD under dir.
func extract(git, gitDir, dir string) error {
	out, err := exec.Command(git, "--git-dir", gitDir, "archive", "--format=tar", "HEAD", chartSubdir).Output()
	if err != nil {
		return fmt.Errorf("git archive %s: %w", chartSubdir, err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if h.Typeflag != tar.TypeReg || !strings.HasPrefix(name, chartSubdir+"/") {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
}

func logChart(t *testing.T, c falcoChart) falcoChart {
	t.Helper()
	var meta struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(c.read(t, "Chart.yaml"), &meta); err != nil {
		t.Fatalf("chart %s: Chart.yaml: %v", c.from, err)
	}
	t.Logf("falco chart %s (Falco %s), from %s", meta.Version, meta.AppVersion, c.from)
	return c
}

// typedValues are the chart values whose default is empty (a map or list
// the chart passes on as it is) that the values files fill in: the test
// decodes them strictly into their Kubernetes types.
var typedValues = map[string]func() any{
	"containerSecurityContext": func() any { return &corev1.SecurityContext{} },
	"mounts.volumes":           func() any { return &[]corev1.Volume{} },
	"mounts.volumeMounts":      func() any { return &[]corev1.VolumeMount{} },
	"falco.plugins":            func() any { return &[]falcoPlugin{} },
}

// falcoPlugin is an entry of falco.yaml's plugins.
type falcoPlugin struct {
	Name        string          `json:"name"`
	LibraryPath string          `json:"library_path"`
	InitConfig  json.RawMessage `json:"init_config,omitempty"`
	OpenParams  string          `json:"open_params,omitempty"`
}

// kind names the shape of a JSON-typed value.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "map"
	case []any:
		return "list"
	case bool:
		return "bool"
	case string:
		return "string"
	case float64, int64, int:
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

// checkValues compares the values ours with the chart's defaults: every
// key ours sets must be a value of the chart, of the same shape (a map, a
// list, or a scalar of the same kind; a null default takes anything),
// and the values in typedValues must decode strictly into their types.
func checkValues(ours, chartVals map[string]any) []string {
	var errs []string
	var walk func(path string, o, c any)
	walk = func(path string, o, c any) {
		if newT, ok := typedValues[path]; ok {
			j, err := json.Marshal(o)
			if err == nil {
				var serrs []error
				serrs, err = kjson.UnmarshalStrict(j, newT(), kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
				err = errors.Join(append(serrs, err)...)
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", path, err))
			}
			if c != nil && kind(c) != kind(o) {
				errs = append(errs, fmt.Sprintf("%s: a %s, the chart's is a %s", path, kind(o), kind(c)))
			}
			return
		}
		if c == nil {
			return
		}
		if kind(o) != kind(c) {
			errs = append(errs, fmt.Sprintf("%s: a %s, the chart's is a %s", path, kind(o), kind(c)))
			return
		}
		om, ok := o.(map[string]any)
		if !ok {
			return
		}
		cm := c.(map[string]any)
		if len(cm) == 0 && len(om) > 0 {
			errs = append(errs, fmt.Sprintf("%s: the chart passes this map on as it is; give its type in typedValues to check it", path))
			return
		}
		keys := make([]string, 0, len(om))
		for k := range om {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := strings.TrimPrefix(path+"."+k, ".")
			cv, ok := cm[k]
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: not a value of the chart", p))
				continue
			}
			walk(p, om[k], cv)
		}
	}
	walk("", ours, chartVals)
	return errs
}

func readValuesMap(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSONStrict(b) // duplicate keys fail
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var v map[string]any
	if err := json.Unmarshal(j, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// validateSchema validates values against a chart's values.schema.json.
func validateSchema(schema []byte, values any) error {
	res, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewGoLoader(values))
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range res.Errors() {
		errs = append(errs, errors.New(e.String()))
	}
	return errors.Join(errs...)
}

// TestValuesAreTheChartsValues checks each values file against the chart:
// its schema where the chart has one, and every key against values.yaml.
func TestValuesAreTheChartsValues(t *testing.T) {
	c := chart(t)
	chartVals := c.values(t)
	schema, err := os.ReadFile(filepath.Join(c.dir, "values.schema.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		schema = nil
		t.Log("the chart has no values.schema.json: keys and shapes are checked against its values.yaml")
	case err != nil:
		t.Fatal(err)
	}
	for _, path := range valuesFiles {
		t.Run(filepath.Base(path), func(t *testing.T) {
			ours := readValuesMap(t, path)
			for _, e := range checkValues(ours, chartVals) {
				t.Error(e)
			}
			if schema != nil {
				if err := validateSchema(schema, ours); err != nil {
					t.Errorf("values.schema.json: %v", err)
				}
			}
		})
	}
}

// TestValuesCheckCatchesMistakes: a misspelt or renamed key, or a value of
// the wrong shape, fails the check above.
func TestValuesCheckCatchesMistakes(t *testing.T) {
	c := chart(t)
	chartVals := c.values(t)
	const path = "helm/falco-values-plugin-only.yaml"
	if errs := checkValues(readValuesMap(t, path), chartVals); len(errs) != 0 {
		t.Fatalf("the file itself fails: %v", errs)
	}
	get := func(v map[string]any, keys ...string) map[string]any {
		for _, k := range keys {
			v = v[k].(map[string]any)
		}
		return v
	}
	rename := func(m map[string]any, from, to string) { m[to] = m[from]; delete(m, from) }
	for name, mutate := range map[string]func(v map[string]any){
		"driver.enable":                   func(v map[string]any) { rename(get(v, "driver"), "enabled", "enable") },
		"falco.rules_file (the old name)": func(v map[string]any) { rename(get(v, "falco"), "rules_files", "rules_file") },
		"metrics.enabled as a string":     func(v map[string]any) { get(v, "metrics")["enabled"] = "true" },
		"install.refs as a map": func(v map[string]any) {
			get(v, "falcoctl", "config", "artifact", "install")["refs"] = map[string]any{"a": "b"}
		},
		"containerSecurityContext.capabilites": func(v map[string]any) { rename(get(v, "containerSecurityContext"), "capabilities", "capabilites") },
		"volumeMounts readonly": func(v map[string]any) {
			rename(get(v, "mounts")["volumeMounts"].([]any)[0].(map[string]any), "readOnly", "readonly")
		},
		"plugins library": func(v map[string]any) {
			rename(get(v, "falco")["plugins"].([]any)[0].(map[string]any), "library_path", "library")
		},
		"a key at the top":     func(v map[string]any) { v["containerSecurityContexts"] = map[string]any{} },
		"collectors as a bool": func(v map[string]any) { v["collectors"] = false },
	} {
		v := readValuesMap(t, path)
		mutate(v)
		if errs := checkValues(v, chartVals); len(errs) == 0 {
			t.Errorf("%s: passes", name)
		} else {
			t.Logf("%s: %s", name, errs[0])
		}
	}
}

// TestValuesSchemaCheck: where a chart has a values.schema.json, it is
// applied (this one does not: a schema of our own stands in).
func TestValuesSchemaCheck(t *testing.T) {
	schema := []byte(`{"type": "object", "properties": {"driver": {"type": "object",
		"properties": {"enabled": {"type": "boolean"}}, "additionalProperties": false}}}`)
	v := readValuesMap(t, "helm/falco-values-plugin-only.yaml")
	if err := validateSchema(schema, v); err != nil {
		t.Fatal(err)
	}
	v["driver"].(map[string]any)["enabled"] = "false"
	if err := validateSchema(schema, v); err == nil {
		t.Error("a string where the schema wants a boolean passes")
	}
	delete(v["driver"].(map[string]any), "enabled")
	v["driver"].(map[string]any)["enable"] = false
	if err := validateSchema(schema, v); err == nil {
		t.Error("an unknown key passes")
	}
}

// block is the text of a chart template's {{ define "name" }}, up to the
// next define.
func block(t *testing.T, tpl []byte, name string) string {
	t.Helper()
	_, rest, ok := strings.Cut(string(tpl), `define "`+name+`"`)
	if !ok {
		t.Fatalf("the chart defines no %s", name)
	}
	if i := strings.Index(rest, "{{- define"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// TestValuesFollowTheChart checks what the values assume of the chart's
// templates and defaults: the Falco rules ref is the chart's current one,
// falcoctl's rulesfiles are mounted where rules_files looks for
// kmodguard's, the host's /proc is where HOST_ROOT says, and the switches
// the plugin-only values use still do what they did.
func TestValuesFollowTheChart(t *testing.T) {
	c := chart(t)
	chartVals := c.values(t)
	pod := c.read(t, "templates/pod-template.tpl")
	helpers := c.read(t, "templates/_helpers.tpl")

	// The chart's falco-rules ref, which a values file that lists refs
	// must repeat (a list replaces the chart's).
	art := chartVals["falcoctl"].(map[string]any)["config"].(map[string]any)["artifact"].(map[string]any)
	chartRef := func(section string) string {
		for _, r := range art[section].(map[string]any)["refs"].([]any) {
			if s, _ := r.(string); strings.HasPrefix(s, "falco-rules:") {
				return s
			}
		}
		t.Fatalf("the chart's falcoctl %s refs have no falco-rules", section)
		return ""
	}
	v := readValues(t, "helm/falco-values.yaml")
	for section, refs := range map[string][]string{"install": v.Falcoctl.Config.Artifact.Install.Refs, "follow": v.Falcoctl.Config.Artifact.Follow.Refs} {
		want := chartRef(section)
		if i := slices.IndexFunc(refs, func(r string) bool { return strings.HasPrefix(r, "falco-rules:") }); i < 0 || refs[i] != want {
			t.Errorf("falco-values.yaml %s refs %v: want the chart's %s", section, refs, want)
		}
	}

	// falcoctl's rulesfiles volume is Falco's /etc/falco.
	m := regexp.MustCompile(`mountPath: (\S+)\s+name: rulesfiles-install-dir`).FindSubmatch(pod)
	if m == nil {
		t.Fatal("the pod template mounts no rulesfiles-install-dir in the Falco container")
	}
	if want := string(m[1]) + "/kmodguard_rules.yaml"; want != rulesPath {
		t.Errorf("falcoctl installs the ruleset as %s; the values and the package use %s", want, rulesPath)
	}

	// The sensor looks for the host's /proc under HOST_ROOT.
	m = regexp.MustCompile(`name: HOST_ROOT\s+value: (\S+)`).FindSubmatch(pod)
	if m == nil {
		t.Fatal("the pod template sets no HOST_ROOT")
	}
	po := readValues(t, "helm/falco-values-plugin-only.yaml")
	if !slices.ContainsFunc(po.Mounts.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == string(m[1])+"/proc" }) {
		t.Errorf("HOST_ROOT is %s, and the plugin-only values mount no %s/proc", m[1], m[1])
	}

	// Without the driver and plugins_hostinfo the chart mounts no /proc
	// of its own, the values' containerSecurityContext is the container's,
	// and Falco runs without the syscall source.
	for name, want := range map[string][]string{
		"falco.procfsMount.enabled": {".Values.driver.enabled", ".Values.falco.plugins_hostinfo"},
		"falco.securityContext":     {".Values.containerSecurityContext"},
		"falco.configSyscallSource": {".Values.driver.enabled", "--disable-source"},
	} {
		b := block(t, append(helpers, pod...), name)
		for _, w := range want {
			if !strings.Contains(b, w) {
				t.Errorf("the chart's %s no longer mentions %s", name, w)
			}
		}
	}
}
