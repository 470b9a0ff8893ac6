//go:build linux

package bpftest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/ulikunitz/xz"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/kmod"
)

// The guard's verdicts and reasons (decide.h), by number.
const (
	verdictAllowed = 1
	verdictBlocked = 2
	verdictAudit   = 3

	reasonDigest           = 1
	reasonName             = 2
	reasonCompressedDigest = 3
	reasonNotListed        = 4
	reasonNameDiffers      = 5
	reasonNameMismatch     = 6
	reasonBadELF           = 7
	reasonCompressed       = 8
	reasonNoPolicy         = 11
	reasonForeignNS        = 14
	reasonUnsigned         = 15

	flagForeign = 1 << 5 // KG_F_FOREIGN
	flagSigned  = 1 << 6 // KG_F_SIGNED
)

// decide runs decide.h's kg_measure and kg_judge on img under policy p (nil:
// no policy installed) and returns the decision record.
func (h *harness) decide(tb testing.TB, img []byte, a *allowlist.Allowlist, mode allowlist.Mode) bpftestKgEvent {
	tb.Helper()
	return h.decideAs(tb, img, a, mode, 0)
}

// decideAs is decide for a caller the guard would flag with flags
// (flagForeign: outside the host's namespaces).
func (h *harness) decideAs(tb testing.TB, img []byte, a *allowlist.Allowlist, mode allowlist.Mode, flags uint64) bpftestKgEvent {
	tb.Helper()
	if a == nil {
		if err := h.objs.KgPolicy.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			tb.Fatal(err)
		}
	} else {
		p, err := enforcer.PolicyFor(a, mode, 7)
		if err != nil {
			tb.Fatal(err)
		}
		m, err := p.NewMap()
		if err != nil {
			tb.Fatal(err)
		}
		defer m.Close()
		if err := h.objs.KgPolicy.Put(uint32(0), m); err != nil {
			tb.Fatalf("install the policy: %v", err)
		}
	}
	if err := h.setInput(img); err != nil {
		tb.Fatal(err)
	}
	ctx := binary.NativeEndian.AppendUint64(nil, uint64(len(img)))
	ctx = binary.NativeEndian.AppendUint64(ctx, flags)
	if ret, err := h.objs.TestDecide.Run(&ebpf.RunOptions{Context: ctx}); err != nil || ret != 0 {
		tb.Fatalf("test_decide: %d, %v", ret, err)
	}
	var e bpftestKgEvent
	if err := h.objs.KgTestEvent.Lookup(uint32(0), &e); err != nil {
		tb.Fatal(err)
	}
	return e
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func list(mode allowlist.Mode, entries ...allowlist.Entry) *allowlist.Allowlist {
	a := allowlist.New("decide-test", mode)
	a.Spec.Modules = entries
	a.Reindex()
	return a
}

// TestDecide runs the guard's judgement, compiled from the same header as
// the guard, over images and allowlists, and checks each verdict and reason
// and that it agrees with allowlist.Match, the judge that Falco's rules and
// `kmodguard allowlist check` use. The guard sees one buffer: for an ELF
// image its digest is both the file's and the ELF's.
func TestDecide(t *testing.T) {
	h := newHarness(t, 1<<20)
	dummy := module("license=GPL\x00name=dummy\x00", "dummy")
	other := module("license=GPL\x00name=dummy\x00vermagic=x\x00", "dummy") // another build of dummy
	forged := module("name=dummy\x00", "rootkit")
	dashed := module("name=nf-tables\x00", "nf-tables")
	noName := module("license=GPL\x00", "dummy")
	var z bytes.Buffer
	w, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(dummy)
	w.Close()
	compressed := z.Bytes()

	for _, tc := range []struct {
		name    string
		img     []byte
		a       *allowlist.Allowlist
		mode    allowlist.Mode
		verdict uint8
		reason  uint8
		entry   string
	}{
		{"digest listed", dummy, list("", allowlist.Entry{Name: "dummy", SHA256: []string{sum(dummy)}}), "", verdictAllowed, reasonDigest, "dummy"},
		{"another build", other, list("", allowlist.Entry{Name: "dummy", SHA256: []string{sum(dummy)}}), "", verdictBlocked, reasonNotListed, ""},
		{"audit mode", other, list("", allowlist.Entry{Name: "dummy", SHA256: []string{sum(dummy)}}), allowlist.ModeAudit, verdictAudit, reasonNotListed, ""},
		{"by name", other, list("", allowlist.Entry{Name: "dummy"}), "", verdictAllowed, reasonName, "dummy"},
		{"entry name folded", dummy, list("", allowlist.Entry{Name: "dum-my"}), "", verdictBlocked, reasonNotListed, ""},
		{"dashed image name", dashed, list("", allowlist.Entry{Name: "nf_tables"}), "", verdictBlocked, reasonNotListed, ""},
		{"dashed, digest listed", dashed, list("", allowlist.Entry{Name: "nf_tables", SHA256: []string{sum(dashed)}}), "", verdictBlocked, reasonNameDiffers, "nf_tables"},
		{"digest under another name", dummy, list("", allowlist.Entry{Name: "veth", SHA256: []string{sum(dummy)}}), "", verdictBlocked, reasonNameDiffers, "veth"},
		// The digest's entry names another module, but an entry admits
		// this name alone: allowed, as Match allows it.
		{"digest elsewhere, name alone here", dummy, list("",
			allowlist.Entry{Name: "veth", SHA256: []string{sum(dummy)}},
			allowlist.Entry{Name: "dummy"}), "", verdictAllowed, reasonName, "dummy"},
		{"names differ", forged, list("", allowlist.Entry{Name: "dummy"}, allowlist.Entry{Name: "rootkit"}), "", verdictBlocked, reasonNameMismatch, ""},
		{"names differ, digest listed", forged, list("", allowlist.Entry{Name: "dummy", SHA256: []string{sum(forged)}}), "", verdictBlocked, reasonNameMismatch, ""},
		{"no name= in .modinfo", noName, list("", allowlist.Entry{Name: "dummy"}), "", verdictBlocked, reasonBadELF, ""},
		{"compressed, file digest listed", compressed, list("", allowlist.Entry{Name: "dummy", SHA256: []string{sum(compressed)}}), "", verdictAllowed, reasonCompressedDigest, "dummy"},
		{"compressed, name alone", compressed, list("", allowlist.Entry{Name: "dummy"}), "", verdictBlocked, reasonCompressed, ""},
		{"empty allowlist", dummy, list(""), "", verdictBlocked, reasonNotListed, ""},
		{"no policy installed", dummy, nil, "", verdictBlocked, reasonNoPolicy, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := h.decide(t, tc.img, tc.a, tc.mode)
			if e.Verdict != tc.verdict || e.Reason != tc.reason || cstring(int8s(e.Entry[:])) != tc.entry {
				t.Errorf("verdict %d, reason %d, entry %q; want %d, %d, %q",
					e.Verdict, e.Reason, cstring(int8s(e.Entry[:])), tc.verdict, tc.reason, tc.entry)
			}
			if got := hex.EncodeToString(e.Digest[:]); got != sum(tc.img) || e.Size != uint64(len(tc.img)) {
				t.Errorf("measured %s (%d bytes), want %s (%d)", got, e.Size, sum(tc.img), len(tc.img))
			}
			if tc.a != nil && e.Generation != 7 {
				t.Errorf("generation %d, want the policy's 7", e.Generation)
			}
			if tc.a == nil {
				return
			}
			// The same question to allowlist.Match. A compressed buffer
			// is judged on the file's digest alone: Match is asked
			// with that digest only.
			m, err := kmod.InspectBytes(tc.img)
			if err != nil {
				m = &kmod.Module{} // not a module at all: Match refuses it too
			}
			if m.Compression != kmod.CompressionNone {
				m.ELFSHA256 = ""
			}
			d := tc.a.Match(m)
			bpfAllowed := e.Verdict == verdictAllowed
			if tc.reason == reasonCompressed {
				// The one difference, by design: Match reads the names
				// inside a compressed file; the guard, given only the
				// compressed bytes (6.1, 6.12), cannot, and refuses.
				// (From 7.2 on it is given the decompressed image.)
				if !d.Allowed || bpfAllowed {
					t.Errorf("compressed by name: Match allowed=%v, guard allowed=%v; want true, false", d.Allowed, bpfAllowed)
				}
				return
			}
			if d.Allowed != bpfAllowed {
				t.Errorf("the guard says allowed=%v (reason %d), allowlist.Match says allowed=%v: %s", bpfAllowed, e.Reason, d.Allowed, d.Reason)
			}
		})
	}
}

// int8s views a C char array as bytes for cstring.
func int8s(b []int8) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = byte(c)
	}
	return out
}

// signed returns img with an appended module signature: a PKCS#7 blob
// (here opaque bytes), struct module_signature and the kernel's marker.
func signed(img []byte) []byte {
	blob := bytes.Repeat([]byte{0x30}, 40)
	var sig [12]byte
	sig[2] = 2 // id_type PKEY_ID_PKCS7
	binary.BigEndian.PutUint32(sig[8:], uint32(len(blob)))
	out := append(bytes.Clone(img), blob...)
	out = append(out, sig[:]...)
	return append(out, "~Module signature appended~\n"...)
}

// TestDecideRequirements runs the spec's requirements through the guard's
// judgement: requireHostNamespaces refuses a caller the guard flags as
// outside the host's namespaces, requireModuleSignature an image without
// a signature (and a compressed file, whose signature the guard cannot
// see), before the list is looked at; audit mode lets them through as
// audit. allowlist.Judge, which Falco's kmod.allowed and watch use, must
// say the same of the sensor's event for that load (host_ns, signed).
func TestDecideRequirements(t *testing.T) {
	h := newHarness(t, 1<<20)
	plain := module("license=GPL\x00name=dummy\x00", "dummy")
	withSig := signed(plain)
	var z bytes.Buffer
	w, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(withSig)
	w.Close()
	compressed := z.Bytes()
	listed := func(mode allowlist.Mode, hostNS, sig bool, imgs ...[]byte) *allowlist.Allowlist {
		e := allowlist.Entry{Name: "dummy"}
		for _, img := range imgs {
			e.SHA256 = append(e.SHA256, sum(img))
		}
		a := list(mode, e)
		a.Spec.RequireHostNamespaces, a.Spec.RequireModuleSignature = hostNS, sig
		return a
	}
	for _, tc := range []struct {
		name    string
		img     []byte
		foreign bool
		a       *allowlist.Allowlist
		mode    allowlist.Mode
		verdict uint8
		reason  uint8
	}{
		{"host caller, host namespaces required", plain, false, listed("", true, false, plain), "", verdictAllowed, reasonDigest},
		{"foreign caller, host namespaces required", plain, true, listed("", true, false, plain), "", verdictBlocked, reasonForeignNS},
		{"foreign caller, audit", plain, true, listed("", true, false, plain), allowlist.ModeAudit, verdictAudit, reasonForeignNS},
		{"foreign caller, nothing required", plain, true, listed("", false, false, plain), "", verdictAllowed, reasonDigest},
		{"foreign caller, by name, required", plain, true, func() *allowlist.Allowlist { a := listed("", true, false); return a }(), "", verdictBlocked, reasonForeignNS},
		{"unsigned, signature required", plain, false, listed("", false, true, plain), "", verdictBlocked, reasonUnsigned},
		{"unsigned, signature required, audit", plain, false, listed("", false, true, plain), allowlist.ModeAudit, verdictAudit, reasonUnsigned},
		{"signed, signature required", withSig, false, listed("", false, true, withSig), "", verdictAllowed, reasonDigest},
		{"signed, by name, signature required", withSig, false, listed("", false, true), "", verdictAllowed, reasonName},
		{"signed, not listed, signature required", withSig, false, listed("", false, true, plain), "", verdictBlocked, reasonNotListed},
		{"unsigned, nothing required", plain, false, listed("", false, false, plain), "", verdictAllowed, reasonDigest},
		{"compressed signed file, signature required", compressed, false, listed("", false, true, compressed), "", verdictBlocked, reasonUnsigned},
		{"both required, foreign and signed", withSig, true, listed("", true, true, withSig), "", verdictBlocked, reasonForeignNS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var flags uint64
			if tc.foreign {
				flags = flagForeign
			}
			e := h.decideAs(t, tc.img, tc.a, tc.mode, flags)
			if e.Verdict != tc.verdict || e.Reason != tc.reason {
				t.Errorf("verdict %d, reason %d; want %d, %d", e.Verdict, e.Reason, tc.verdict, tc.reason)
			}
			m, err := kmod.InspectBytes(tc.img)
			if err != nil {
				t.Fatal(err)
			}
			if m.Compression == kmod.CompressionNone && (e.Flags&flagSigned != 0) != m.Signature.Present {
				t.Errorf("the guard flags the image signed=%v, kmod.Inspect says %v", e.Flags&flagSigned != 0, m.Signature.Present)
			}
			if m.Compression != kmod.CompressionNone {
				// The guard sees the compressed bytes only (6.1, 6.12):
				// no signature, no names; Judge reads the file inside.
				return
			}
			ev := &event.Event{
				Syscall: event.InitModule, Name: m.Name, ThisModuleName: m.ThisModuleName,
				SHA256: m.FileSHA256, ELFSHA256: m.ELFSHA256, Signed: m.Signature.Present, HostNS: !tc.foreign,
			}
			tc.a.Judge(ev)
			if got, want := *ev.Allowed, e.Verdict == verdictAllowed; got != want {
				t.Errorf("allowlist.Judge says allowed=%v, the guard %v (reason %d)", got, want, e.Reason)
			}
		})
	}
}
