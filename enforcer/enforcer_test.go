//go:build linux

package enforcer_test

import (
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/lsm"
)

func digestOf(s string) (string, [32]byte) {
	var d [32]byte
	h := sum([]byte(s))
	for i := range d {
		var b byte
		for _, c := range h[2*i : 2*i+2] {
			b <<= 4
			if c >= 'a' {
				b |= byte(c-'a') + 10
			} else {
				b |= byte(c - '0')
			}
		}
		d[i] = b
	}
	return h, d
}

func TestPolicyFor(t *testing.T) {
	h1, d1 := digestOf("dummy.ko")
	h2, d2 := digestOf("dummy.ko.xz")
	h3, d3 := digestOf("veth.ko")
	a := list(t, allowlist.ModeEnforce,
		entry{"dummy", []string{h1, h2}},
		entry{"veth", []string{h3}},
		entry{name: "snd-hda-intel"},
	)
	p, err := enforcer.PolicyFor(a, allowlist.ModeEnforce, 4)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != lsm.ModeEnforce || p.Generation != 4 {
		t.Errorf("mode %v generation %d", p.Mode, p.Generation)
	}
	for d, want := range map[[32]byte]string{d1: "dummy", d2: "dummy", d3: "veth"} {
		if got := p.Digests[d]; got.Name != want {
			t.Errorf("digest %x admits %q, want %q", d, got.Name, want)
		}
	}
	if len(p.Digests) != 3 {
		t.Errorf("%d digests, want 3", len(p.Digests))
	}
	if e, ok := p.Names["snd_hda_intel"]; !ok || e.Name != "snd-hda-intel" || len(p.Names) != 1 {
		t.Errorf("name-only entries %v: want only snd-hda-intel, folded", p.Names)
	}
	if e := p.Digests[d3]; e.Index != 1 {
		t.Errorf("veth entry index %d, want 1", e.Index)
	}

	audit, err := enforcer.PolicyFor(a, allowlist.ModeAudit, 5)
	if err != nil || audit.Mode != lsm.ModeAudit {
		t.Errorf("audit override: %v, %v", audit, err)
	}
	if _, err := enforcer.PolicyFor(a, "permissive", 1); err == nil {
		t.Error("an unknown mode was accepted")
	}
}

func TestPolicyForRefusesOneDigestTwoNames(t *testing.T) {
	h, _ := digestOf("x")
	a := allowlist.New("t", allowlist.ModeEnforce)
	// Built by hand: the allowlist package refuses this too, but the
	// enforcer must not rely on it.
	a.Spec.Modules = []allowlist.Entry{{Name: "dummy", SHA256: []string{h}}, {Name: "veth", SHA256: []string{h}}}
	a.Reindex()
	if _, err := enforcer.PolicyFor(a, allowlist.ModeEnforce, 1); err == nil || !strings.Contains(err.Error(), "two module names") {
		t.Fatalf("PolicyFor = %v, want a two-names error", err)
	}
	// The same digest twice under one name (two kernels) is fine.
	a.Spec.Modules[1].Name = "dummy"
	a.Reindex()
	if _, err := enforcer.PolicyFor(a, allowlist.ModeEnforce, 1); err != nil {
		t.Fatalf("same digest, same name: %v", err)
	}
}

func TestUnlisted(t *testing.T) {
	a := list(t, allowlist.ModeEnforce, entry{name: "snd_hda_intel"}, entry{name: "veth"})
	table := `snd_hda_intel 57344 0 - Live 0x0000000000000000
veth 40960 0 - Live 0x0000000000000000
dummy 16384 0 - Live 0x0000000000000000 (OE)

nf_tables 331776 0 - Live 0x0000000000000000
`
	got, err := enforcer.Unlisted(a, strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "dummy,nf_tables" {
		t.Fatalf("Unlisted = %v, want [dummy nf_tables]", got)
	}
}

func TestLoadWithoutBPFLSM(t *testing.T) {
	if lsm.Supported() == nil {
		t.Skip("BPF LSM is active here")
	}
	_, err := enforcer.Load(enforcer.Config{PinDir: t.TempDir()}, list(t, allowlist.ModeEnforce, entry{name: "veth"}))
	if err == nil || !strings.Contains(err.Error(), "BPF LSM is not active") {
		t.Fatalf("Load = %v, want the BPF LSM explanation", err)
	}
}
