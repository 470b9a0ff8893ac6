//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// checkArgs fails when args (after the program name) do not name a real
// kmodguard command with flags it has.
func checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	root := newRootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if cmd == root {
		t.Fatalf("%s: %v names no subcommand", where, args)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("%s: %s: %v", where, cmd.CommandPath(), err)
	}
	if len(cmd.Flags().Args()) != 0 && cmd.Args != nil {
		if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
			t.Errorf("%s: %s: %v", where, cmd.CommandPath(), err)
		}
	}
}

// TestDeployCommandLines checks that the systemd unit and the DaemonSet
// run kmodguard with commands and flags that exist.
func TestDeployCommandLines(t *testing.T) {
	unit, err := os.ReadFile("../../deploy/systemd/kmodguard-enforcer.service")
	if err != nil {
		t.Fatal(err)
	}
	var exec string
	env := map[string]string{}
	for _, line := range strings.Split(strings.ReplaceAll(string(unit), "\\\n", " "), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			exec = v
		}
		if v, ok := strings.CutPrefix(line, "Environment="); ok {
			k, v, _ := strings.Cut(v, "=")
			env[k] = v
		}
	}
	// systemd replaces a word $VAR by the variable's value split at
	// white space: zero or more words.
	expand := func(exec string) []string {
		var out []string
		for _, f := range strings.Fields(exec) {
			if name, ok := strings.CutPrefix(f, "$"); ok {
				v, set := env[name]
				if !set {
					t.Errorf("ExecStart uses $%s, which the unit does not set", name)
				}
				out = append(out, strings.Fields(v)...)
				continue
			}
			out = append(out, f)
		}
		return out
	}
	fields := expand(exec)
	if len(fields) < 2 || filepath.Base(fields[0]) != "kmodguard" {
		t.Fatalf("ExecStart=%q does not run kmodguard", exec)
	}
	checkArgs(t, "systemd ExecStart", fields[1:])
	// The drop-in that the unit's comment and the operator guide give.
	env["KMODGUARD_ENFORCER_ARGS"] = "--fail-closed"
	checkArgs(t, "systemd ExecStart with the fail-closed drop-in", expand(exec)[1:])

	b, err := os.ReadFile("../../deploy/kubernetes/enforcer-daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `yaml:"args"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind != "DaemonSet" {
			continue
		}
		for _, c := range doc.Spec.Template.Spec.Containers {
			found = true
			checkArgs(t, "DaemonSet args", c.Args)
		}
	}
	if !found {
		t.Fatal("no DaemonSet container in the manifest")
	}
}
