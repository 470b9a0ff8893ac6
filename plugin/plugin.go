// Package plugin is the kmodguard Falco plugin: a source of kernel module
// events (init_module, finit_module, delete_module) from the kmodguard BPF
// sensor or from a recording, and the extractor of their kmod.* fields.
//
// cmd/plugin builds it into libkmodguard.so; this package holds the logic so
// that it can be tested as Go code.
package plugin

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk/plugins"
	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk/symbols/extract"
	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/version"
)

// Identity of the plugin. Until falcosecurity's registry assigns kmodguard
// an ID from its public block (0 to 2^30-1), the plugin uses one from the
// private block (2^30 to 2^31-1), which the registry never assigns: 2^30
// plus the CRC-32 (IEEE) of "kmodguard" modulo 2^30. Unlike 999, the
// registry's shared development ID, no other plugin in development sends
// events under it by default. registry/registry.yaml carries the same ID
// (registry_test.go checks both).
const (
	ID          = 1954163500
	Name        = "kmodguard"
	EventSource = "kmodguard"
	// Version is the version the rules file requires of the plugin
	// (required_plugin_versions): the source tree's release. Info reports
	// the build's own version, Version with the commit as build metadata
	// ("0.1.0+g0123456789ab"), which Falco compares as Version.
	Version     = version.Release
	Description = "Kernel module loads and unloads (init_module, finit_module, delete_module) from the kmodguard eBPF sensor, with both module names, digests, signature, allowlist verdict and process context"
	Contact     = "github.com/kmodguard/kmodguard"
)

// Log field keys.
const (
	logKeyComponent = "component"
	logKeyAllowlist = "allowlist"
	logKeyEntries   = "entries"
	logKeyParams    = "open_params"
	logKeyVersion   = "version"
	// logKeyCompanionVersion is the enforcer companion's build version.
	logKeyCompanionVersion = "companion_version"
)

// Plugin is the kmodguard plugin state: one per plugin_init.
type Plugin struct {
	plugins.BasePlugin

	cfg    Config
	log    *logrus.Logger
	policy *policy

	// Extraction cache: the last event decoded, by event number.
	cacheNum uint64
	cacheOK  bool
	cacheErr error
	cacheBuf []byte
	cacheEvt event.Event

	// Metrics (metrics.go): read from Falco's metrics thread.
	delivered atomic.Uint64 // events NextBatch returned, all instances
	live      liveSet       // the live instances open now
	mtMu      sync.Mutex
	mt        MetricsTable // plugin_get_metrics' C memory, freed by Destroy
}

// New returns an uninitialized plugin, for the SDK factory and for tests.
func New() *Plugin { return &Plugin{} }

// Info describes the plugin to Falco.
func (p *Plugin) Info() *plugins.Info {
	return &plugins.Info{
		ID:          ID,
		Name:        Name,
		Description: Description,
		Contact:     Contact,
		Version:     version.Get().Semver(),
		EventSource: EventSource,
	}
}

// InitSchema gives Falco the JSON schema of init_config.
func (p *Plugin) InitSchema() *sdk.SchemaInfo {
	s, err := Schema()
	if err != nil {
		// Reflecting a fixed struct cannot fail at run time; a nil schema
		// only turns off Falco's pre-check, and Init still validates.
		return nil
	}
	return &sdk.SchemaInfo{Schema: s}
}

// Init parses and checks init_config and loads the allowlist.
func (p *Plugin) Init(config string) error {
	cfg, err := ParseConfig(config)
	if err != nil {
		return err
	}
	p.cfg = cfg
	p.log = newLogger(cfg.LogLevel)
	pol, err := newPolicy(&p.cfg, p.log)
	if err != nil {
		return err
	}
	p.policy = pol
	p.cacheOK = false
	// The SDK's async extraction parks a busy-waiting worker on a CPU to
	// save the C-to-Go call per field. Module events are rare, so that
	// would burn a core of the host for nothing.
	extract.SetAsync(false)
	return nil
}

// Config returns the configuration Init accepted.
func (p *Plugin) Config() Config { return p.cfg }

// newLogger is the one place the plugin's logrus logger is made: stderr
// only, because a Falco plugin must never write to stdout.
func newLogger(level string) *logrus.Logger {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		lvl = logrus.InfoLevel
	}
	l.SetLevel(lvl)
	l.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true})
	return l
}

// logger returns the plugin's logger, or a default one before Init.
func (p *Plugin) logger() logrus.FieldLogger {
	if p.log == nil {
		p.log = newLogger(DefaultLogLevel)
	}
	return p.log.WithField(logKeyComponent, "plugin")
}

// String renders an event for Falco's %evt.plugininfo and -p outputs.
func (p *Plugin) String(evt sdk.EventReader) (string, error) {
	e, err := p.decode(evt)
	if err != nil {
		return "", err
	}
	name := e.Name
	if e.ThisModuleName != "" && e.ThisModuleName != e.Name {
		name = fmt.Sprintf("%s (registers as %s)", e.Name, e.ThisModuleName)
	}
	return fmt.Sprintf("%s %s res=%s pid=%d comm=%s", e.Syscall, name, resString(e.Res), e.Pid, e.Comm), nil
}
