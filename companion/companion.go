// Package companion serves the kmodguard enforcer to other processes as a
// hashicorp/go-plugin gRPC service, and connects to it.
//
// The enforcer (package enforcer, the BPF LSM guard) runs as a child of its
// client: the Falco plugin launches `kmodguard enforcer serve-companion`,
// hands it the allowlist with [Enforcer.Apply], and streams the guard's
// decisions with [Enforcer.Decisions] to set kmod.verdict on its events. The
// same service is also served on a Unix socket by a long-running enforcer
// ([ServeSocket], [DialSocket]) for clients that attach instead of launch.
//
// The package follows go-plugin's layout: [Handshake] and [PluginMap] name
// the plugin, [Enforcer] is the Go interface, [EnforcerPlugin] holds the gRPC
// adapters, and the service is defined in proto/companion.proto (generated
// code committed). Launched companions use AutoMTLS, so only the process that
// started the companion can talk to it.
//
// A companion that cannot load the guard (no BPF LSM in the kernel, no
// privileges) still starts and answers every call with an error wrapping
// [ErrUnavailable], so that its client can report why, instead of seeing a
// child that died during the handshake.
package companion

import (
	"context"
	"errors"

	"github.com/hashicorp/go-plugin"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
)

// ProtocolVersion is the version of the companion protocol. Bump it on any
// incompatible change of the service: go-plugin refuses to connect a client
// and a server that disagree.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake shared by the companion and its
// clients. The cookie only keeps `kmodguard enforcer serve-companion` from
// being run by hand by mistake; it is not a secret (AutoMTLS authenticates).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "KMODGUARD_COMPANION",
	MagicCookieValue: "b6f3d3a1e0c94f2e8d7a5c41-enforcer",
}

// PluginName is the name of the enforcer in PluginMap.
const PluginName = "enforcer"

// PluginMap is the set of plugins a companion serves.
var PluginMap = plugin.PluginSet{PluginName: &EnforcerPlugin{}}

// Enforcer is what the companion serves: the enforcer's policy, state and
// decisions. Package enforcer implements it over the BPF LSM guard.
type Enforcer interface {
	// Apply validates a and puts it in force atomically.
	Apply(ctx context.Context, a *allowlist.Allowlist) (Applied, error)
	// Status reports the guard's state.
	Status(ctx context.Context) (Status, error)
	// Decisions streams the guard's decisions (event.Decision) made from
	// the time of the call on, and the enforcer's reports about the guard
	// (event.Report). The channel is closed when ctx ends or the enforcer
	// stops.
	Decisions(ctx context.Context) (<-chan event.GuardMessage, error)
}

// ErrUnavailable is wrapped by every error of an enforcer that could not load
// its guard; the rest of the message says why (for example that BPF LSM is
// not enabled in the kernel).
var ErrUnavailable = errors.New("enforcer unavailable")

// ErrInvalidAllowlist is wrapped by the errors of Apply for an allowlist the
// companion refused.
var ErrInvalidAllowlist = errors.New("invalid allowlist")

// ErrUntrusted is wrapped by the errors of Apply for an allowlist without a
// valid signature, refused by a companion that was given a public key: the
// signature of exactly the bytes sent must verify under it.
var ErrUntrusted = errors.New("allowlist refused: no valid signature under the enforcer's key")

// ErrDisconnected is wrapped by the errors of calls that failed because the
// companion went away (it exited, or the connection broke).
var ErrDisconnected = errors.New("companion disconnected")

// Applied is the result of Apply.
type Applied struct {
	// Generation of the policy now in force.
	Generation uint64 `json:"generation"`
	// Entries counts the digests and names in the policy.
	Entries uint64 `json:"entries"`
	// Mode is "enforce" or "audit".
	Mode string `json:"mode"`
}

// Status is the state of the guard.
type Status struct {
	Mode       string `json:"mode"`
	Generation uint64 `json:"generation"`
	Entries    uint64 `json:"entries"`
	Sealed     bool   `json:"sealed"`
	// PinDir is the bpffs directory of the guard's pins, "" when not pinned.
	PinDir string `json:"pin_dir,omitempty"`
	// Links lists the hooks whose links are attached; Missing those whose
	// links are not.
	Links   []string `json:"links,omitempty"`
	Missing []string `json:"missing,omitempty"`
	// Decision counters since the guard was loaded.
	Allowed    uint64 `json:"allowed"`
	Blocked    uint64 `json:"blocked"`
	Audited    uint64 `json:"audited"`
	LostEvents uint64 `json:"lost_events"`
	// Allowlist is metadata.name of the allowlist in force.
	Allowlist string `json:"allowlist,omitempty"`
	// MissingDecisions counts the decision records another process
	// consumed from the guard's ring buffer before the enforcer read them.
	MissingDecisions uint64 `json:"missing_decisions"`
	// Version is the enforcer's build version (`kmodguard version`), for
	// telling a plugin and a companion of different builds apart. Empty
	// from an enforcer built before it was reported.
	Version string `json:"version,omitempty"`
}
