// Package deploy_test checks the deployment files against the types that
// read them: the Kubernetes manifests decode strictly into the API types
// (an unknown or misspelt field fails), the allowlist in the ConfigMap
// passes the allowlist parser, the Falco values' init_config passes the
// plugin's own strict config parser, and the systemd unit keeps its
// hardening (and passes systemd-analyze where it is installed).
package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/plugin"
)

// strict decodes a YAML document into obj the way the API server's strict
// field validation does: YAML to JSON refusing duplicate keys, then JSON
// matched case-sensitively, refusing unknown and duplicate fields.
// (sigs.k8s.io/yaml's UnmarshalStrict alone would accept "hostPid", as
// encoding/json matches field names case-insensitively.)
func strict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	serrs, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(serrs...)
}

// documents splits a multi-document YAML file.
func documents(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
	return out
}

// objects decodes every manifest under kubernetes/ strictly into its API
// type, by kind.
func objects(t *testing.T) map[string]any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	objs := map[string]any{}
	for _, f := range files {
		for i, doc := range documents(t, f) {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var obj any
			switch tm.APIVersion + "/" + tm.Kind {
			case "v1/Namespace":
				obj = &corev1.Namespace{}
			case "v1/ConfigMap":
				obj = &corev1.ConfigMap{}
			case "v1/ServiceAccount":
				obj = &corev1.ServiceAccount{}
			case "apps/v1/DaemonSet":
				obj = &appsv1.DaemonSet{}
			default:
				t.Fatalf("%s document %d: unexpected %s %s", f, i, tm.APIVersion, tm.Kind)
			}
			if err := strict(doc, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i, tm.Kind, err)
			}
			name := obj.(metav1.Object).GetName()
			objs[tm.Kind+"/"+name] = obj
		}
	}
	return objs
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := objects(t)
	for _, want := range []string{"Namespace/kmodguard", "ConfigMap/kmodguard-allowlist", "ConfigMap/kmodguard-trust",
		"ServiceAccount/kmodguard-enforcer", "DaemonSet/kmodguard-enforcer"} {
		if objs[want] == nil {
			t.Errorf("no %s", want)
		}
	}
}

// TestStrictDecodingCatchesTypos makes sure the check above can fail.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	for _, field := range []string{"hostPid: false", "hostPIDs: false", "volumes: []\n      volumes: []"} {
		doc := []byte("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      " + field + "\n")
		if err := strict(doc, &appsv1.DaemonSet{}); err == nil {
			t.Errorf("%q decoded", field)
		}
	}
}

func TestDaemonSetPrivileges(t *testing.T) {
	objs := objects(t)
	ds := objs["DaemonSet/kmodguard-enforcer"].(*appsv1.DaemonSet)
	spec := ds.Spec.Template.Spec
	if spec.HostPID || spec.HostNetwork || spec.HostIPC {
		t.Error("the enforcer does not need host pid, network or ipc namespaces")
	}
	if ds.Spec.Selector == nil {
		t.Fatal("no selector")
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the template's labels", k, v)
		}
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the enforcer must run unprivileged, without privilege escalation")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root file system should be read-only")
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	slices.Sort(add)
	if !slices.Equal(add, []string{"BPF", "PERFMON", "SYS_ADMIN"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities add %v drop %v, want exactly BPF PERFMON SYS_ADMIN on top of none", add, sc.Capabilities.Drop)
	}

	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	readOnly := map[string]bool{"/sys/kernel/security": true, "/lib/modules": true, "/etc/kmodguard/allowlist": true, "/etc/kmodguard/trust": true,
		"/sys/fs/bpf": false, "/run/kmodguard": false}
	for _, m := range c.VolumeMounts {
		ro, known := readOnly[m.MountPath]
		if !known {
			t.Errorf("unexpected mount %s", m.MountPath)
			continue
		}
		delete(readOnly, m.MountPath)
		if m.ReadOnly != ro {
			t.Errorf("mount %s read-only %v, want %v", m.MountPath, m.ReadOnly, ro)
		}
		if m.SubPath != "" {
			t.Errorf("mount %s uses subPath, which never sees ConfigMap updates", m.MountPath)
		}
		if _, ok := vols[m.Name]; !ok {
			t.Errorf("mount %s names no volume %q", m.MountPath, m.Name)
		}
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
			t.Errorf("mount %s: bidirectional propagation needs privileged", m.MountPath)
		}
	}
	for p := range readOnly {
		t.Errorf("no mount at %s", p)
	}

	// Every file the arguments name comes from a mounted ConfigMap key.
	files := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if cm := vols[m.Name].ConfigMap; cm != nil {
			obj, ok := objs["ConfigMap/"+cm.Name].(*corev1.ConfigMap)
			if !ok {
				t.Errorf("volume %s: no ConfigMap %s in the manifests", m.Name, cm.Name)
				continue
			}
			for k := range obj.Data {
				files[m.MountPath+"/"+k] = true
			}
		}
	}
	for _, a := range c.Args {
		for _, flag := range []string{"--allowlist=", "--pubkey="} {
			if p, ok := strings.CutPrefix(a, flag); ok {
				if !files[p] {
					t.Errorf("%s%s: no ConfigMap key provides it", flag, p)
				}
				if flag == "--allowlist=" && !files[p+".sig"] {
					t.Errorf("no signature %s.sig next to the allowlist", p)
				}
			}
		}
	}
}

func TestConfigMapAllowlistParses(t *testing.T) {
	cm := objects(t)["ConfigMap/kmodguard-allowlist"].(*corev1.ConfigMap)
	doc, ok := cm.Data["allowlist.yaml"]
	if !ok {
		t.Fatal("no allowlist.yaml key")
	}
	a, err := allowlist.Parse([]byte(doc), "allowlist-configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if a.Spec.Mode != allowlist.ModeAudit {
		t.Errorf("the example starts in %s mode; the operator guide starts in audit", a.Spec.Mode)
	}
}

// TestFalcoValues checks the Helm values: the plugin is loaded, its rules
// are listed, and its init_config passes the plugin's strict parser.
func TestFalcoValues(t *testing.T) {
	b, err := os.ReadFile("helm/falco-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Falco struct {
			RulesFiles  []string `json:"rules_files"`
			LoadPlugins []string `json:"load_plugins"`
			Plugins     []struct {
				Name        string          `json:"name"`
				LibraryPath string          `json:"library_path"`
				InitConfig  json.RawMessage `json:"init_config"`
				OpenParams  string          `json:"open_params"`
			} `json:"plugins"`
		} `json:"falco"`
		Mounts struct {
			Volumes      []corev1.Volume      `json:"volumes"`
			VolumeMounts []corev1.VolumeMount `json:"volumeMounts"`
		} `json:"mounts"`
	}
	// Not strict at the top level: the chart has many more values.
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(v.Falco.LoadPlugins, plugin.Name) {
		t.Errorf("load_plugins %v does not load %s", v.Falco.LoadPlugins, plugin.Name)
	}
	if !slices.Contains(v.Falco.RulesFiles, "/etc/falco/kmodguard_rules.yaml") {
		t.Errorf("rules_files %v lacks the kmodguard rules", v.Falco.RulesFiles)
	}
	if len(v.Falco.Plugins) != 1 || v.Falco.Plugins[0].Name != plugin.Name || v.Falco.Plugins[0].LibraryPath != "libkmodguard.so" {
		t.Fatalf("plugins %+v", v.Falco.Plugins)
	}
	cfg, err := plugin.ParseConfig(string(v.Falco.Plugins[0].InitConfig))
	if err != nil {
		t.Fatalf("init_config: %v", err)
	}
	if !cfg.Enforcer.Enabled || cfg.Enforcer.Socket == "" {
		t.Errorf("init_config does not attach to the enforcer: %+v", cfg.Enforcer)
	}
	mounted := func(p string) bool {
		for _, m := range v.Mounts.VolumeMounts {
			if strings.HasPrefix(p, m.MountPath+"/") {
				return true
			}
		}
		return false
	}
	for _, p := range []string{cfg.Allowlist, cfg.PublicKey, cfg.Enforcer.Socket} {
		if !mounted(p) {
			t.Errorf("%s is not under any of the values' volume mounts", p)
		}
	}
	ds := objects(t)["DaemonSet/kmodguard-enforcer"].(*appsv1.DaemonSet)
	if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, "--companion-socket="+cfg.Enforcer.Socket) {
		t.Errorf("the plugin attaches to %s, which the enforcer DaemonSet does not serve", cfg.Enforcer.Socket)
	}
}

// unit parses a systemd unit into section -> key -> values, joining
// continuation lines.
func unit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	section := ""
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	const path = "systemd/kmodguard-enforcer.service"
	u := unit(t, path)
	want := map[string]map[string]string{
		"Unit": {"DefaultDependencies": "no"},
		"Service": {
			"ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
			"CapabilityBoundingSet": "CAP_BPF CAP_PERFMON CAP_SYS_ADMIN", "ReadWritePaths": "/sys/fs/bpf",
			// The daemon's READY=1 is what holds modules-load and udev back
			// until the guard is attached.
			"Type": "notify", "NotifyAccess": "main",
		},
	}
	for sec, kv := range want {
		for k, v := range kv {
			if got := u[sec][k]; !slices.Contains(got, v) {
				t.Errorf("[%s] %s = %v, want %s", sec, k, got, v)
			}
		}
	}
	// What the systemd guest (TestVMSystemd) found under systemd 252: each
	// of these left the guard unable to start, started it too late, or hid
	// its failure.
	for sec, keys := range map[string][]string{
		// mounts /sys/fs/bpf read-only; ReadWritePaths= does not reopen it
		"Service": {"ProtectKernelTunables", "PrivateTmp"},
		// PrivateTmp= orders the unit after local-fs.target, past udev.
		// A Condition skips the unit quietly; a failed Assert leaves it
		// inactive, not failed.
		"Unit": {"ConditionPathExists", "AssertPathExists"},
	} {
		for _, k := range keys {
			if v, ok := u[sec][k]; ok {
				t.Errorf("[%s] %s = %v: see the unit's comments", sec, k, v)
			}
		}
	}
	if ro := strings.Fields(strings.Join(u["Service"]["ReadOnlyPaths"], " ")); !slices.Contains(ro, "/sys") || !slices.Contains(ro, "/proc/sys") {
		t.Errorf("ReadOnlyPaths %v: /sys and /proc/sys stay read-only (ProtectKernelTunables= is not used)", ro)
	}
	// Bounded restarts: a guard that cannot start ends failed, visibly.
	if u["Unit"]["StartLimitBurst"] == nil || u["Unit"]["StartLimitIntervalSec"] == nil {
		t.Error("no StartLimitBurst/StartLimitIntervalSec: a guard that cannot start would restart for ever, never failed")
	}
	before := strings.Join(u["Unit"]["Before"], " ")
	for _, s := range []string{"systemd-modules-load.service", "systemd-udevd.service", "sysinit.target"} {
		if !strings.Contains(before, s) {
			t.Errorf("not ordered before %s", s)
		}
	}
	if !strings.Contains(strings.Join(u["Unit"]["After"], " "), "sys-fs-bpf.mount") {
		t.Error("not ordered after sys-fs-bpf.mount")
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit syntax not verified by systemd")
		return
	}
	// systemd-analyze wants the binary to exist: point ExecStart at a real one.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tmp := filepath.Join(dir, "kmodguard-enforcer.service")
	if err := os.WriteFile(tmp, bytes.ReplaceAll(b, []byte("/usr/bin/kmodguard"), []byte("/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", tmp).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
