//go:build linux

package deploy_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/lsm"
	"github.com/kmodguard/kmodguard/plugin"
)

// TestMonitoringTargets: the Service selects the enforcer's pods and its
// metrics port, and the ServiceMonitor selects the Service.
func TestMonitoringTargets(t *testing.T) {
	objs := objects(t)
	ds := objs["DaemonSet/kmodguard-enforcer"].(*appsv1.DaemonSet)
	svc := objs["Service/kmodguard-enforcer"].(*corev1.Service)
	sm := objs["ServiceMonitor/kmodguard-enforcer"].(*serviceMonitor)

	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not select the enforcer's pods %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	if svc.Namespace != ds.Namespace {
		t.Errorf("Service in %s, DaemonSet in %s", svc.Namespace, ds.Namespace)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Error("the Service is not headless: Prometheus must scrape every node's enforcer")
	}
	portNames := map[string]int32{}
	for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
		portNames[p.Name] = p.ContainerPort
	}
	svcPorts := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = true
		if _, ok := portNames[p.TargetPort.String()]; !ok && p.TargetPort.IntVal != portNames["metrics"] {
			t.Errorf("Service port %s targets %s, not a port of the enforcer", p.Name, p.TargetPort.String())
		}
	}
	for _, a := range ds.Spec.Template.Spec.Containers[0].Args {
		if addr, ok := strings.CutPrefix(a, "--metrics-addr="); ok && !strings.HasSuffix(addr, fmt.Sprintf(":%d", portNames["metrics"])) {
			t.Errorf("the enforcer serves metrics on %s, the metrics port is %d", addr, portNames["metrics"])
		}
	}

	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the Service's labels %v (%v)", sm.Spec.Selector, svc.Labels, err)
	}
	if !sm.Spec.NamespaceSelector.Any && !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
		t.Errorf("ServiceMonitor looks in %v, the Service is in %s", sm.Spec.NamespaceSelector.MatchNames, svc.Namespace)
	}
	if len(sm.Spec.Endpoints) == 0 {
		t.Fatal("no endpoints")
	}
	for _, e := range sm.Spec.Endpoints {
		if !svcPorts[e.Port] {
			t.Errorf("endpoint port %q is no port of the Service", e.Port)
		}
		if e.Path != "" && e.Path != "/metrics" {
			t.Errorf("endpoint path %s: the enforcer serves /metrics", e.Path)
		}
	}
}

// metricSet is the metrics one process exports: name to its label names,
// and to each label's values seen.
type metricSet map[string]map[string][]string

// enforcerMetrics gathers every metric the enforcer's registry exports,
// with a guard, an allowlist and one of each decision and report.
func enforcerMetrics(t *testing.T) metricSet {
	t.Helper()
	st := enforcer.Status{PinDir: "/sys/fs/bpf/kmodguard", Mode: "enforce", Generation: 1, Missing: []string{"bpf"}}
	for _, h := range lsm.Hooks() {
		st.Links = append(st.Links, lsm.LinkStatus{Hook: h})
	}
	a := allowlist.New("fleet", allowlist.ModeEnforce)
	m := enforcer.NewMetrics(enforcer.MetricsSource{
		Status:    func() (enforcer.Status, error) { return st, nil },
		Allowlist: func() *allowlist.Allowlist { return a },
		Sensor:    func() (enforcer.SensorStats, bool) { return enforcer.SensorStats{}, true },
	})
	m.Observe(enforcer.Decision{Op: lsm.OpFinitModule, Verdict: lsm.Blocked})
	m.Observe(enforcer.Report{Kind: event.ReportMissing, Count: 1})
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := metricSet{}
	for _, f := range fams {
		ls := map[string][]string{}
		for _, mt := range f.GetMetric() {
			for _, lp := range mt.GetLabel() {
				ls[lp.GetName()] = append(ls[lp.GetName()], lp.GetValue())
			}
		}
		out[f.GetName()] = ls
	}
	return out
}

// pluginMetricName is the name Falco's /metrics gives a plugin's metric:
// libs qualifies "<plugin>.<metric>" with the falcosecurity namespace and
// the plugins subsystem, turns what Prometheus does not allow into '_',
// drops unit suffixes it knows from the name, and appends the unit of a
// count, "total", to every plugin metric (the plugin API has no other
// unit), levels included.
func pluginMetricName(name string) string {
	n := "falcosecurity_plugins_" + plugin.Name + "." + name + "_"
	n = regexp.MustCompile(`(_kb|_bytes|_mb|_perc|_percentage|_ratio|_ns|_ts|_sec|_total)`).ReplaceAllString(n, "")
	n = regexp.MustCompile(`[^a-zA-Z0-9_:]`).ReplaceAllString(n+"total", "_")
	return regexp.MustCompile(`_+`).ReplaceAllString(n, "_")
}

func TestPluginMetricName(t *testing.T) {
	for in, want := range map[string]string{
		"sensor_drops":        "falcosecurity_plugins_kmodguard_sensor_drops_total",
		"companion_connected": "falcosecurity_plugins_kmodguard_companion_connected_total",
	} {
		if got := pluginMetricName(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// selectorRe finds the metric names of a PromQL expression with their
// label matchers (ranges and grouping label lists are taken out first).
var (
	selectorRe = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"([^"]*)"`)
	rangeRe    = regexp.MustCompile(`\[[^\]]*\]`)
	groupingRe = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
)

type selector struct {
	name     string
	matchers [][3]string // label, operator, value
}

// selectors lists the series selectors of expr: every name that is not a
// function call, keyword or number.
func selectors(expr string) []selector {
	keywords := map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "and": true, "or": true, "unless": true, "bool": true, "offset": true}
	var out []selector
	expr = groupingRe.ReplaceAllString(rangeRe.ReplaceAllString(expr, ""), " ")
	for _, m := range selectorRe.FindAllStringSubmatch(expr, -1) {
		if m[3] == "(" && m[2] == "" || keywords[m[1]] {
			continue
		}
		s := selector{name: m[1]}
		for _, lm := range matcherRe.FindAllStringSubmatch(m[2], -1) {
			s.matchers = append(s.matchers, [3]string{lm[1], lm[2], lm[3]})
		}
		out = append(out, s)
	}
	return out
}

func TestSelectors(t *testing.T) {
	got := selectors(`increase(kmodguard_guard_decisions_total{verdict="blocked"}[10m]) > 0 and on(node) up{job="x"} == 0`)
	if len(got) != 2 || got[0].name != "kmodguard_guard_decisions_total" || got[0].matchers[0] != [3]string{"verdict", "=", "blocked"} ||
		got[1].name != "up" || got[1].matchers[0] != [3]string{"job", "=", "x"} {
		t.Errorf("selectors: %+v", got)
	}
}

// TestAlertsNameExportedMetrics: every metric an alert reads is one the
// enforcer or the plugin exports (or Prometheus's own up, for the
// enforcer's job), with labels and values they carry.
func TestAlertsNameExportedMetrics(t *testing.T) {
	known := enforcerMetrics(t)
	for _, d := range plugin.Metrics() {
		known[pluginMetricName(d.Name)] = map[string][]string{}
	}
	svc := objects(t)["Service/kmodguard-enforcer"].(*corev1.Service)
	known["up"] = map[string][]string{"job": {svc.Name}}

	for _, r := range alerts(t) {
		sels := selectors(r.Expr)
		if len(sels) == 0 {
			t.Errorf("%s: no metric in %q", r.Alert, r.Expr)
		}
		for _, s := range sels {
			ls, ok := known[s.name]
			if !ok {
				t.Errorf("%s: %s is not a metric kmodguard exports", r.Alert, s.name)
				continue
			}
			for _, m := range s.matchers {
				vals, ok := ls[m[0]]
				if !ok {
					t.Errorf("%s: %s has no label %s", r.Alert, s.name, m[0])
				} else if m[1] == "=" && !slices.Contains(vals, m[2]) {
					t.Errorf("%s: %s{%s} is never %q (seen: %v)", r.Alert, s.name, m[0], m[2], vals)
				}
			}
		}
	}
}

// TestSelectorCheckFails: the check above catches a misspelt metric, label
// or value.
func TestSelectorCheckFails(t *testing.T) {
	known := enforcerMetrics(t)
	for _, expr := range []string{
		`kmodguard_guard_link{state="missing"} > 0`,
		`kmodguard_guard_links{status="missing"} > 0`,
		`kmodguard_guard_links{state="absent"} > 0`,
	} {
		bad := false
		for _, s := range selectors(expr) {
			ls, ok := known[s.name]
			if !ok {
				bad = true
				continue
			}
			for _, m := range s.matchers {
				if vals, ok := ls[m[0]]; !ok || !slices.Contains(vals, m[2]) {
					bad = true
				}
			}
		}
		if !bad {
			t.Errorf("%q passes", expr)
		}
	}
}

// guideAlert is one row of the operator guide's table of alerts.
type guideAlert struct{ expr, forDur, severity string }

// guideAlerts reads the table under "## Alerts" in the operator guide:
// | `Name` | `expr` | for | severity |.
func guideAlerts(t *testing.T, doc string) map[string]guideAlert {
	t.Helper()
	_, sec, ok := strings.Cut(doc, "\n## Alerts\n")
	if !ok {
		t.Fatal(`the operator guide has no "## Alerts" section`)
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	row := regexp.MustCompile("(?m)^\\| `([A-Za-z]+)` \\| `([^`]+)` \\| *([0-9a-z]*) *\\| *([a-z]+) *\\|$")
	out := map[string]guideAlert{}
	for _, m := range row.FindAllStringSubmatch(sec, -1) {
		if _, dup := out[m[1]]; dup {
			t.Errorf("the guide lists %s twice", m[1])
		}
		out[m[1]] = guideAlert{m[2], m[3], m[4]}
	}
	if len(out) == 0 {
		t.Fatal("no alerts in the guide's table")
	}
	return out
}

// TestAlertsAreTheGuides: the PrometheusRule's alerts are the operator
// guide's, one for one, with the same expressions, durations and
// severities, and each runbook_url leads to the guide's entry for it.
func TestAlertsAreTheGuides(t *testing.T) {
	b, err := os.ReadFile("../docs/operator-guide.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	guide := guideAlerts(t, doc)
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`).FindAllStringSubmatch(doc, -1) {
		headings[strings.ToLower(strings.ReplaceAll(m[1], " ", "-"))] = true
	}
	const runbooks = "https://github.com/kmodguard/kmodguard/blob/main/docs/operator-guide.md#"
	seen := map[string]bool{}
	for _, r := range alerts(t) {
		if seen[r.Alert] {
			t.Errorf("%s: twice in the rule file", r.Alert)
		}
		seen[r.Alert] = true
		g, ok := guide[r.Alert]
		if !ok {
			t.Errorf("%s is not in the operator guide's table of alerts", r.Alert)
			continue
		}
		if g.expr != r.Expr {
			t.Errorf("%s: expression\n  rule:  %s\n  guide: %s", r.Alert, r.Expr, g.expr)
		}
		if g.forDur != r.For {
			t.Errorf("%s: for %q in the rule, %q in the guide", r.Alert, r.For, g.forDur)
		}
		if sev := r.Labels["severity"]; sev != g.severity || (sev != "critical" && sev != "warning") {
			t.Errorf("%s: severity %q in the rule, %q in the guide", r.Alert, sev, g.severity)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[k] == "" {
				t.Errorf("%s: no %s annotation", r.Alert, k)
			}
		}
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbooks)
		if !ok || anchor != strings.ToLower(r.Alert) || !headings[anchor] {
			t.Errorf("%s: runbook_url %q: want %s%s, a heading of the guide", r.Alert, r.Annotations["runbook_url"], runbooks, strings.ToLower(r.Alert))
		}
	}
	for name := range guide {
		if !seen[name] {
			t.Errorf("the guide lists %s, the rule file does not", name)
		}
	}
}
