package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/falcosecurity/plugin-sdk-go/pkg/loader"

	"github.com/kmodguard/kmodguard/internal/version"
	"github.com/kmodguard/kmodguard/plugin"
)

var (
	buildOnce sync.Once
	soPath    string
	buildErr  error
	buildDir  string
)

// buildPlugin builds libkmodguard.so once per test run, as `make plugin`
// does, into a temporary directory.
func buildPlugin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if _, err := exec.LookPath("go"); err != nil {
			buildErr = err
			return
		}
		buildDir, buildErr = os.MkdirTemp("", "kmodguard-so-")
		if buildErr != nil {
			return
		}
		soPath = filepath.Join(buildDir, "libkmodguard.so")
		// Stamped as the Makefile stamps it, with a made-up commit: Falco
		// must see it in the plugin's version.
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", soPath,
			"-ldflags=-X "+versionPkg+".commit="+stampedCommit+" -X "+versionPkg+".modified=true",
			"github.com/kmodguard/kmodguard/cmd/plugin")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		if _, ok := buildErr.(*buildError); ok {
			t.Fatalf("build libkmodguard.so: %v", buildErr)
		}
		t.Skipf("needs the go tool to build the plugin: %v", buildErr)
	}
	return soPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// loadPlugin loads and validates the .so through the framework's loader.
// The library itself stays mapped for the whole run: a Go runtime cannot be
// unloaded, and the loader only drops its reference when the last plugin
// handle is closed.
func loadPlugin(t *testing.T) *loader.Plugin {
	t.Helper()
	p, err := loader.NewValidPlugin(buildPlugin(t))
	if err != nil {
		t.Fatalf("loader.NewValidPlugin: %v", err)
	}
	return p
}

// The version stamp of the test's build of the plugin.
const (
	versionPkg    = "github.com/kmodguard/kmodguard/internal/version"
	stampedCommit = "0123456789abcdef0123456789abcdef01234567"
)

var keep []*loader.Plugin // handles never unloaded; see loadPlugin

func TestSharedObjectInfo(t *testing.T) {
	p := loadPlugin(t)
	keep = append(keep, p)
	info := p.Info()
	if info.Name != "kmodguard" || info.ID != plugin.ID || info.EventSource != "kmodguard" {
		t.Errorf("info = %+v", info)
	}
	// The build's version, a semantic version whose core is the one the
	// rules require (Falco reads major.minor.patch and compares those).
	if want := plugin.Version + "+g" + stampedCommit[:12] + ".dirty"; info.Version != want || !version.IsSemver(info.Version) {
		t.Errorf("version %q, want %q (the stamped commit, as semver build metadata)", info.Version, want)
	}
	if info.Description == "" || info.Contact == "" {
		t.Errorf("info lacks a description or contact: %+v", info)
	}
	if !p.HasCapSourcing() || !p.HasCapExtraction() || p.HasCapBroken() {
		t.Errorf("capabilities: sourcing %v, extraction %v, broken %v", p.HasCapSourcing(), p.HasCapExtraction(), p.CapBrokenError())
	}
}

func TestSharedObjectFields(t *testing.T) {
	p := loadPlugin(t)
	keep = append(keep, p)
	got := p.Fields()
	want := plugin.New().Fields()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the .so exports other fields than package plugin:\n so: %+v\nwant %+v", got, want)
	}
	for _, name := range []string{"syscall", "res", "ok", "name", "this_module_name", "name_mismatch", "sha256", "elf_sha256",
		"size", "params", "path", "flags", "vermagic", "srcversion", "depends", "signed", "signer", "truncated", "unreadable", "image_at_exit",
		"params_at_exit", "file_changed", "allowed", "allowlist_entry", "verdict", "toctou", "pid", "tid", "ppid", "comm", "exe", "cmdline",
		"uid", "gid", "loginuid", "cgroup", "container_id", "host_ns", "host_mntns", "pidns", "mntns", "userns", "cap_effective"} {
		found := false
		for _, f := range got {
			if f.Name == "kmod."+name {
				found = true
				if f.Display == "" || f.Desc == "" {
					t.Errorf("kmod.%s has no display name or description", name)
				}
			}
		}
		if !found {
			t.Errorf("the .so does not export kmod.%s", name)
		}
	}
}

func TestSharedObjectInitSchema(t *testing.T) {
	p := loadPlugin(t)
	keep = append(keep, p)
	s := p.InitSchema()
	if s == nil {
		t.Fatal("no init schema through the loader")
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(s.Schema), &doc); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	props, _ := doc["properties"].(map[string]any)
	for _, k := range []string{"allowlist", "require_signature", "public_key", "ringbuf_size", "image_cap", "log_level", "enforcer"} {
		if _, ok := props[k]; !ok {
			t.Errorf("schema lacks %q", k)
		}
	}
}

// initEnv makes the test binary a one-shot Falco stand-in: load the .so,
// Init it with the config in the variable, print the error, exit.
const initEnv = "KMODGUARD_TEST_SO_INIT"

// TestSharedObjectInit initializes the .so with good and bad configs, each
// in a process of its own, as Falco does: plugin-sdk-go's async-extraction
// bookkeeping assumes one init per process and panics when a failed init
// follows a good one in the same process.
func TestSharedObjectInit(t *testing.T) {
	so := buildPlugin(t)
	dir := t.TempDir()
	good := []string{
		``,
		`{}`,
		`{"log_level": "debug", "ringbuf_size": 65536, "image_cap": 1048576}`,
		`{"enforcer": {"enabled": false}}`,
	}
	bad := map[string]string{
		`{"ringbuf_size": 1000}`:                                   "init_config.ringbuf_size: must be a power of two >= 4096",
		`{"image_cap": 5}`:                                         "init_config.image_cap: must be between 4096",
		`{"require_signature": true}`:                              "init_config.public_key: is required",
		`{"allowlist": "` + filepath.Join(dir, "none.yaml") + `"}`: "init_config.allowlist: ",
		`{"enforcer": {"enabled": true}}`:                          "init_config.enforcer.path",
		`{"ringbuf_size": "big"}`:                                  "Invalid type",
		`{"log_level": "loud"}`:                                    "log_level must be one of the following",
		`{"allowlsit": "/etc/kmodguard/allowlist.yaml"}`:           "allowlsit",
		`not json`: "invalid",
	}
	run := func(cfg string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestInitHelper$")
		cmd.Env = append(os.Environ(), initEnv+"="+cfg, "KMODGUARD_TEST_SO="+so)
		out, err := cmd.Output()
		return string(out), err
	}
	for _, cfg := range good {
		out, err := run(cfg)
		if err != nil || !strings.Contains(out, "init: ok") {
			t.Errorf("Init(%s): %s %v", cfg, out, err)
		}
	}
	for cfg, want := range bad {
		out, err := run(cfg)
		if err != nil || !strings.Contains(out, "init: error: ") || !strings.Contains(out, want) {
			t.Errorf("Init(%s): %q %v, want an error containing %q", cfg, out, err, want)
		}
	}
}

func TestInitHelper(t *testing.T) {
	cfg, ok := os.LookupEnv(initEnv)
	if !ok {
		t.Skip("helper of TestSharedObjectInit")
	}
	p, err := loader.NewValidPlugin(os.Getenv("KMODGUARD_TEST_SO"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Init(cfg); err != nil {
		fmt.Printf("init: error: %v\n", err)
		return
	}
	fmt.Println("init: ok")
	p.Unload()
}

func TestRewrite(t *testing.T) {
	doc := "# x\n\n" + Marker + "\nold table\n" + Marker + "\n\nafter\n"
	out, err := Rewrite([]byte(doc), "| a |\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# x\n\n" + Marker + "\n| a |\n" + Marker + "\n\nafter\n"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
	again, err := Rewrite(out, "| a |\n")
	if err != nil || string(again) != string(out) {
		t.Errorf("rewrite is not idempotent: %q %v", again, err)
	}
	for _, bad := range []string{"no marker", Marker + " only one"} {
		if _, err := Rewrite([]byte(bad), "t"); err == nil {
			t.Errorf("Rewrite(%q) accepted", bad)
		}
	}
	table := FieldsTable(plugin.New().Fields())
	if !strings.Contains(table, "| `kmod.flags` | string (list) |") || strings.Count(table, "\n") != len(plugin.New().Fields())+2 {
		t.Errorf("table:\n%s", table)
	}
}

// TestReadmeIsCurrent fails when plugin/README.md's fields table differs from the
// plugin's fields: run `make readme`. (The .so's fields are the package's,
// as TestSharedObjectFields shows.)
func TestReadmeIsCurrent(t *testing.T) {
	doc, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatalf("plugin/README.md: %v", err)
	}
	want, err := Rewrite(doc, FieldsTable(plugin.New().Fields()))
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(doc) {
		t.Error("plugin/README.md's fields table is stale: run `make readme`")
	}
}
