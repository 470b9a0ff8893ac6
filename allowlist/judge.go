package allowlist

import (
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/kmod"
)

// Judge sets e.Allowed and e.AllowlistEntry (the entry that admitted the
// module, "" when none did) from a, for the sensor and the Falco plugin
// alike. It judges the names and digests the event carries, so that a
// recording made without an allowlist can be judged at replay. A module
// the sensor could not read has no names and is not allowed. Events that
// name no module to judge (delete_module, sensor_loss; module_load,
// module_free and hidden, which carry the kernel's name for a module but
// not its image: the load syscall's own event is the one judged) and a nil
// a leave e
// as it is. The spec's requirements are checked first, as the guard does:
// with requireHostNamespaces a caller outside the host's namespaces
// (host_ns false), with requireModuleSignature an image without a
// signature, is not allowed, listed or not.
//
// An autoload request (module_request, or the guard's decision on one)
// names an alias, not a module: with spec.autoload.deny it is not allowed
// when the alias matches a pattern, allowed otherwise (AllowlistEntry "":
// no entry admits an alias); without a deny list it is left as it is.
func (a *Allowlist) Judge(e *event.Event) {
	switch e.Syscall {
	case event.DeleteModule, event.SensorLoss, event.ModuleLoad, event.ModuleFree, event.Hidden:
		return
	}
	if a == nil {
		return
	}
	if e.IsRequest() {
		if len(a.Spec.Autoload.Deny) == 0 {
			return
		}
		_, denied := a.DeniedAutoload(e.Name)
		allowed := !denied
		e.Allowed, e.AllowlistEntry = &allowed, ""
		return
	}
	no := false
	e.Allowed, e.AllowlistEntry = &no, ""
	// An image read only at sys_exit is what the caller's buffer held after
	// the load, and the loaded module's own init can rewrite that buffer:
	// such a load is never shown allowed, whatever the bytes match.
	if e.ImageAtExit {
		return
	}
	// The spec's requirements come first, as in the guard. A guard event
	// carries the guard's own verdict on them, not the caller's context.
	if e.Syscall != event.Guard && ((a.Spec.RequireHostNamespaces && !e.HostNS) || (a.Spec.RequireModuleSignature && !e.Signed)) {
		return
	}
	d := a.Match(&kmod.Module{
		Name:           e.Name,
		ThisModuleName: e.ThisModuleName,
		NameMismatch:   e.NameMismatch,
		FileSHA256:     e.SHA256,
		ELFSHA256:      e.ELFSHA256,
	})
	if d.Allowed {
		yes := true
		e.Allowed = &yes
		if d.Entry != nil {
			e.AllowlistEntry = d.Entry.Name
		}
	}
}
