// Package deploy_test checks the deployment files against the types that
// read them: the Kubernetes manifests decode strictly into the API types
// (an unknown or misspelt field fails; the Prometheus operator's kinds
// into the fields of theirs that we use), the allowlist in the ConfigMap
// passes the allowlist parser, the Falco values' init_config passes the
// plugin's own strict config parser and their keys are the chart's
// (chart_test.go), the alerts are the operator guide's on metrics the code
// exports (monitoring_test.go), and the systemd unit keeps its hardening
// (and passes systemd-analyze where it is installed).
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
			case "v1/Service":
				obj = &corev1.Service{}
			case "apps/v1/DaemonSet":
				obj = &appsv1.DaemonSet{}
			case "monitoring.coreos.com/v1/ServiceMonitor":
				obj = &serviceMonitor{}
			case "monitoring.coreos.com/v1/PrometheusRule":
				obj = &prometheusRule{}
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
		"ServiceAccount/kmodguard-enforcer", "DaemonSet/kmodguard-enforcer",
		"Service/kmodguard-enforcer", "ServiceMonitor/kmodguard-enforcer", "PrometheusRule/kmodguard"} {
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

	// Ready by the guard's own account, not by the metrics server.
	rp := c.ReadinessProbe
	if rp == nil || rp.Exec == nil || rp.HTTPGet != nil || rp.TCPSocket != nil {
		t.Errorf("readiness probe %+v: want an exec of kmodguard enforcer status --ready", rp)
	} else if cmd := rp.Exec.Command; len(cmd) != 4 || filepath.Base(cmd[0]) != "kmodguard" || !slices.Equal(cmd[1:], []string{"enforcer", "status", "--ready"}) {
		t.Errorf("readiness probe runs %q, want kmodguard enforcer status --ready", cmd)
	} else if rp.TimeoutSeconds < 2 || rp.PeriodSeconds < rp.TimeoutSeconds {
		t.Errorf("readiness probe timeout %ds every %ds: status reads every BPF link", rp.TimeoutSeconds, rp.PeriodSeconds)
	}
	// Live while the daemon answers; a guard that is not whole is no
	// reason for a restart, which could not make it whole.
	lp := c.LivenessProbe
	if lp == nil {
		t.Error("no liveness probe")
	} else if lp.Exec != nil {
		t.Errorf("liveness probe runs %q: a restart does not mend the guard", lp.Exec.Command)
	} else if lp.HTTPGet != nil && lp.HTTPGet.Port.String() != "metrics" {
		t.Errorf("liveness probe on port %s, not the metrics port", lp.HTTPGet.Port.String())
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

// valuesFiles are the falcosecurity/falco chart values in helm/.
var valuesFiles = []string{"helm/falco-values.yaml", "helm/falco-values-plugin-only.yaml"}

// falcoValues is the part of the chart values the tests read.
type falcoValues struct {
	Driver struct {
		Enabled *bool  `json:"enabled"`
		Kind    string `json:"kind"`
	} `json:"driver"`
	ContainerSecurityContext *corev1.SecurityContext `json:"containerSecurityContext"`
	Falcoctl                 struct {
		Config struct {
			Artifact struct {
				AllowedTypes []string `json:"allowedTypes"`
				Install      struct {
					Refs []string `json:"refs"`
				} `json:"install"`
				Follow struct {
					Refs []string `json:"refs"`
				} `json:"follow"`
			} `json:"artifact"`
		} `json:"config"`
	} `json:"falcoctl"`
	Metrics struct {
		Enabled               bool  `json:"enabled"`
		PluginsMetricsEnabled *bool `json:"pluginsMetricsEnabled"`
	} `json:"metrics"`
	Falco struct {
		RulesFiles      []string `json:"rules_files"`
		LoadPlugins     []string `json:"load_plugins"`
		PluginsHostinfo *bool    `json:"plugins_hostinfo"`
		Plugins         []struct {
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

func readValues(t *testing.T, path string) falcoValues {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v falcoValues
	// Not strict at the top level: the chart has many more values
	// (chart_test.go checks the keys against the chart's).
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// rulesPath is where kmodguard's rules are, on a host (the package) as in
// the chart (falcoctl installs rulesfiles into /etc/falco).
const rulesPath = "/etc/falco/kmodguard_rules.yaml"

// TestFalcoValues checks the Helm values: the plugin is loaded, its rules
// are listed before the local tuning, its init_config passes the plugin's
// strict parser, every file it names is mounted, it attaches to the socket
// the enforcer serves, and falcoctl fetches kmodguard's artifacts.
func TestFalcoValues(t *testing.T) {
	ds := objects(t)["DaemonSet/kmodguard-enforcer"].(*appsv1.DaemonSet)
	for _, path := range valuesFiles {
		t.Run(filepath.Base(path), func(t *testing.T) {
			v := readValues(t, path)
			if !slices.Contains(v.Falco.LoadPlugins, plugin.Name) {
				t.Errorf("load_plugins %v does not load %s", v.Falco.LoadPlugins, plugin.Name)
			}
			// kmodguard's rules, then the local tuning, then rules.d.
			rf := v.Falco.RulesFiles
			ours, local, dir := slices.Index(rf, rulesPath), slices.Index(rf, "/etc/falco/falco_rules.local.yaml"), slices.Index(rf, "/etc/falco/rules.d")
			if ours < 0 || local < 0 || dir < 0 || !(ours < local && local < dir) {
				t.Errorf("rules_files %v: want %s, then falco_rules.local.yaml, then rules.d", rf, rulesPath)
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
			vols := map[string]bool{}
			for _, vol := range v.Mounts.Volumes {
				vols[vol.Name] = true
			}
			for _, m := range v.Mounts.VolumeMounts {
				if !vols[m.Name] {
					t.Errorf("mount %s names no volume %q", m.MountPath, m.Name)
				}
			}
			if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, "--companion-socket="+cfg.Enforcer.Socket) {
				t.Errorf("the plugin attaches to %s, which the enforcer DaemonSet does not serve", cfg.Enforcer.Socket)
			}
			// falcoctl: the plugin and its ruleset from kmodguard's index,
			// the ruleset followed.
			art := v.Falcoctl.Config.Artifact
			if !slices.Contains(art.AllowedTypes, "plugin") || !slices.Contains(art.AllowedTypes, "rulesfile") {
				t.Errorf("allowedTypes %v", art.AllowedTypes)
			}
			for _, repo := range indexRepositories(t) {
				if !slices.ContainsFunc(art.Install.Refs, func(r string) bool { return strings.HasPrefix(r, repo+":") }) {
					t.Errorf("install refs %v lack %s", art.Install.Refs, repo)
				}
				if strings.Contains(repo, "/ruleset/") && !slices.ContainsFunc(art.Follow.Refs, func(r string) bool { return strings.HasPrefix(r, repo+":") }) {
					t.Errorf("follow refs %v lack %s", art.Follow.Refs, repo)
				}
			}
			// The alerts on the plugin's metrics need them served.
			if !v.Metrics.Enabled || (v.Metrics.PluginsMetricsEnabled != nil && !*v.Metrics.PluginsMetricsEnabled) {
				t.Error("metrics (with the plugins' metrics) are not enabled: the plugin's alerts would have nothing to read")
			}
		})
	}
}

// indexRepositories lists the OCI repositories of kmodguard's artifacts in
// its falcoctl index.
func indexRepositories(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../registry/index.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var idx []struct {
		Registry   string `json:"registry"`
		Repository string `json:"repository"`
	}
	if err := yaml.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range idx {
		out = append(out, e.Registry+"/"+e.Repository)
	}
	if len(out) != 2 {
		t.Fatalf("index lists %v, want the plugin and its ruleset", out)
	}
	return out
}

// TestPluginOnlyValues: without Falco's driver the chart leaves the
// container's securityContext to the values, so they must name what the
// sensor needs and no more, and mount the host's /proc read-only where
// the sensor looks for it.
func TestPluginOnlyValues(t *testing.T) {
	v := readValues(t, "helm/falco-values-plugin-only.yaml")
	if v.Driver.Enabled == nil || *v.Driver.Enabled {
		t.Fatal("driver.enabled is not false")
	}
	sc := v.ContainerSecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no containerSecurityContext with capabilities: the chart would give the container none of its own")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("privileged is not false")
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	slices.Sort(add)
	if !slices.Equal(add, []string{"BPF", "PERFMON", "SYS_PTRACE"}) {
		t.Errorf("capabilities add %v, want BPF PERFMON SYS_PTRACE (see the values' comments)", add)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined ||
		sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Error("seccomp and AppArmor are not unconfined: default profiles refuse bpf(2) or reads of other processes")
	}
	// Falco's own rules have nothing to match without the syscall source.
	for _, r := range append(v.Falcoctl.Config.Artifact.Install.Refs, v.Falcoctl.Config.Artifact.Follow.Refs...) {
		if strings.HasPrefix(r, "falco-rules:") {
			t.Errorf("ref %s: no syscall source to apply Falco's rules to", r)
		}
	}
	if slices.Contains(v.Falco.RulesFiles, "/etc/falco/falco_rules.yaml") {
		t.Error("rules_files lists falco_rules.yaml without the syscall source")
	}
	// The chart's own /proc mount is writable and rendered when
	// plugins_hostinfo is on; the values bring a read-only one.
	if v.Falco.PluginsHostinfo == nil || *v.Falco.PluginsHostinfo {
		t.Error("falco.plugins_hostinfo is not false: the chart would mount the host's /proc writable, at the same path")
	}
	var proc *corev1.VolumeMount
	for i, m := range v.Mounts.VolumeMounts {
		if m.MountPath == "/host/proc" {
			proc = &v.Mounts.VolumeMounts[i]
		}
	}
	if proc == nil || !proc.ReadOnly {
		t.Fatalf("the host's /proc is not mounted read-only at /host/proc: %+v", proc)
	}
	for _, vol := range v.Mounts.Volumes {
		if vol.Name == proc.Name && (vol.HostPath == nil || vol.HostPath.Path != "/proc") {
			t.Errorf("volume %s is not the host's /proc", vol.Name)
		}
	}
}

// TestOneRulesPath: the package installs the rules where falcoctl installs
// the ruleset and where the values and the docs load them from.
func TestOneRulesPath(t *testing.T) {
	b, err := os.ReadFile("package/nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Contents []struct {
			Src string `json:"src"`
			Dst string `json:"dst"`
		} `json:"contents"`
	}
	if err := yaml.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range pkg.Contents {
		if c.Src == "rules/kmodguard_rules.yaml" {
			found = true
			if c.Dst != rulesPath {
				t.Errorf("the package installs the rules at %s, not %s", c.Dst, rulesPath)
			}
		}
	}
	if !found {
		t.Error("the package ships no rules")
	}
	for _, doc := range []string{"../docs/operator-guide.md", "../docs/install.md", "../plugin/README.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), rulesPath) {
			t.Errorf("%s does not name %s", doc, rulesPath)
		}
		if strings.Contains(string(b), "rules.d/kmodguard_rules.yaml") {
			t.Errorf("%s names rules.d/kmodguard_rules.yaml", doc)
		}
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
