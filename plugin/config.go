package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/invopop/jsonschema"
	"github.com/sirupsen/logrus"
)

// Config is the plugin's init_config in falco.yaml. Every key is optional;
// Reset sets the defaults.
type Config struct {
	Allowlist        string `json:"allowlist,omitempty" jsonschema:"title=Allowlist file" jsonschema_description:"Path of the kmodguard allowlist (YAML). When set, kmod.allowed and kmod.allowlist_entry are evaluated against it; the file is re-read when it changes. Empty: no allowlist, and kmod.allowed has no value."`
	RequireSignature bool   `json:"require_signature,omitempty" jsonschema:"title=Require a signed allowlist" jsonschema_description:"Refuse to start without public_key, so that a forgotten key is an error rather than an unchecked allowlist."`
	PublicKey        string `json:"public_key,omitempty" jsonschema:"title=Public key file" jsonschema_description:"PEM ed25519 public key that signs the allowlist (see kmodguard allowlist sign). When set, the allowlist is accepted only with a valid signature in ALLOWLIST.sig. Required with require_signature."`
	AllowlistCheck   string `json:"allowlist_check_interval,omitempty" jsonschema:"title=Allowlist check interval" jsonschema_description:"How often the plugin looks for a changed allowlist file (a stat call), as a Go duration between 100ms and 10m."`
	RingbufSize      int    `json:"ringbuf_size,omitempty" jsonschema:"title=Ring buffer size" jsonschema_description:"Size in bytes of the BPF ring buffer between the sensor and the plugin: a power of two between 4096 and 1073741824, best larger than image_cap."`
	ImageCap         uint64 `json:"image_cap,omitempty" jsonschema:"title=Image capture cap" jsonschema_description:"Largest init_module image in bytes that the sensor copies for hashing and inspection, between 4096 and 268435456; a larger image is reported with kmod.truncated."`
	HiddenScan       string `json:"hidden_scan_interval,omitempty" jsonschema:"title=Hidden module scan interval" jsonschema_description:"How often the live source looks for hidden modules (live modules that the kernel's module address tree or /sys/module shows and /proc/modules does not, as kmodguard scan does) and sends each one found, once, as a hidden event: a Go duration between 1s and 24h, or 0 for never."`
	LogLevel         string `json:"log_level,omitempty" jsonschema:"title=Log level,enum=panic,enum=fatal,enum=error,enum=warn,enum=warning,enum=info,enum=debug,enum=trace" jsonschema_description:"logrus level of the plugin's own log on stderr."`
	// Enforcer connects the plugin to the enforcer companion (companion.go).
	Enforcer EnforcerConfig `json:"enforcer,omitzero" jsonschema:"title=Enforcer companion" jsonschema_description:"Joins the BPF LSM guard's decisions to the sensor's events (kmod.verdict, kmod.guard_sha256, kmod.toctou): the plugin launches the kmodguard enforcer as its companion (path) or attaches to a running one (socket), and hands it the allowlist."`
}

// EnforcerConfig connects the plugin to the enforcer companion, which serves
// the guard's decisions (see companion.go and package companion).
type EnforcerConfig struct {
	Enabled bool   `json:"enabled,omitempty" jsonschema_description:"Launch or attach to the enforcer companion and join its decisions to the events."`
	Path    string `json:"path,omitempty" jsonschema_description:"Path of the kmodguard binary to launch as the companion (kmodguard enforcer serve-companion). Used when socket is empty."`
	Socket  string `json:"socket,omitempty" jsonschema_description:"Unix socket of a running companion (kmodguard enforcer serve-companion --socket) to attach to instead of launching one."`
}

// Defaults.
const (
	DefaultRingbufSize    = 32 << 20 // bpf.DefaultRingBufferSize
	DefaultImageCap       = 16 << 20 // bpf.DefaultImageCap
	DefaultLogLevel       = "info"
	DefaultAllowlistCheck = "2s"
	DefaultHiddenScan     = "1m"
	maxRingbufSize        = 1 << 30
	minImageCap           = 4096
	maxImageCap           = 256 << 20 // bpf.MaxImageCap
)

// Reset sets the defaults.
func (c *Config) Reset() {
	*c = Config{
		RingbufSize:    DefaultRingbufSize,
		ImageCap:       DefaultImageCap,
		LogLevel:       DefaultLogLevel,
		AllowlistCheck: DefaultAllowlistCheck,
		HiddenScan:     DefaultHiddenScan,
	}
}

// ConfigError names the init_config key that is wrong and why.
type ConfigError struct {
	Key string // e.g. "ringbuf_size"
	Err error
}

func (e *ConfigError) Error() string { return "init_config." + e.Key + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func keyErr(key, format string, a ...any) error {
	return &ConfigError{Key: key, Err: fmt.Errorf(format, a...)}
}

// ParseConfig decodes init_config (JSON; empty means all defaults) over the
// defaults, strictly: an unknown key is an error. It then validates.
func ParseConfig(s string) (Config, error) {
	var c Config
	c.Reset()
	if strings.TrimSpace(s) == "" {
		return c, c.Validate()
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, configDecodeError(err)
	}
	if dec.More() {
		return c, errors.New("init_config: trailing data after the JSON object")
	}
	return c, c.Validate()
}

func configDecodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return keyErr(te.Field, "want a %s, got a JSON %s", te.Type, te.Value)
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("init_config: unknown key %s", msg)
	}
	return fmt.Errorf("init_config: %w", err)
}

// Validate checks every key and returns the first problem as a ConfigError.
func (c *Config) Validate() error {
	if c.RingbufSize < 4096 || c.RingbufSize > maxRingbufSize || bits.OnesCount(uint(c.RingbufSize)) != 1 {
		return keyErr("ringbuf_size", "must be a power of two >= 4096 and <= %d, got %d", maxRingbufSize, c.RingbufSize)
	}
	if c.ImageCap < minImageCap || c.ImageCap > maxImageCap {
		return keyErr("image_cap", "must be between %d and %d bytes, got %d", minImageCap, maxImageCap, c.ImageCap)
	}
	if _, err := logrus.ParseLevel(c.LogLevel); err != nil {
		return keyErr("log_level", "must be one of panic, fatal, error, warn, info, debug, trace, got %q", c.LogLevel)
	}
	if _, err := c.checkInterval(); err != nil {
		return err
	}
	if _, err := c.hiddenScanInterval(); err != nil {
		return err
	}
	if c.RequireSignature && c.PublicKey == "" {
		return keyErr("public_key", "is required when require_signature is true")
	}
	if c.RequireSignature && c.Allowlist == "" {
		return keyErr("allowlist", "is required when require_signature is true")
	}
	if c.PublicKey != "" && c.Allowlist == "" {
		return keyErr("allowlist", "is required when public_key is set")
	}
	if c.Enforcer.Enabled && c.Enforcer.Path == "" && c.Enforcer.Socket == "" {
		return keyErr("enforcer.path", "or enforcer.socket is required when enforcer.enabled is true")
	}
	if c.Enforcer.Path != "" && c.Enforcer.Socket != "" {
		return keyErr("enforcer.socket", "and enforcer.path exclude each other: launch a companion (path) or attach to one (socket)")
	}
	return nil
}

func (c *Config) checkInterval() (time.Duration, error) {
	d, err := time.ParseDuration(c.AllowlistCheck)
	if err != nil || d < 100*time.Millisecond || d > 10*time.Minute {
		return 0, keyErr("allowlist_check_interval", "must be a duration between 100ms and 10m, got %q", c.AllowlistCheck)
	}
	return d, nil
}

// Schema returns the JSON schema of Config, which Falco checks init_config
// against before it calls Init. It states keys, types and enums; ranges are
// left to Validate, whose messages name the key.
func Schema() (string, error) {
	r := jsonschema.Reflector{
		DoNotReference:             true,
		ExpandedStruct:             true,
		AllowAdditionalProperties:  false,
		RequiredFromJSONSchemaTags: true, // every key is optional
	}
	s := r.Reflect(&Config{})
	s.Title = "kmodguard plugin init_config"
	s.ID = ""
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("marshal init schema: %w", err)
	}
	return string(b), nil
}

// hiddenScanInterval is hidden_scan_interval; 0 for never.
func (c *Config) hiddenScanInterval() (time.Duration, error) {
	if c.HiddenScan == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(c.HiddenScan)
	if err != nil || d < time.Second || d > 24*time.Hour {
		return 0, keyErr("hidden_scan_interval", "must be 0 or a duration between 1s and 24h, got %q", c.HiddenScan)
	}
	return d, nil
}
