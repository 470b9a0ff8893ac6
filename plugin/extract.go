package plugin

import (
	"bytes"
	"fmt"
	"math"
	"syscall"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/event"
)

// decode returns the event behind evt, decoding its payload only when evt
// is not the event decoded last: Falco asks for many fields of one event in
// a row.
func (p *Plugin) decode(evt sdk.EventReader) (*event.Event, error) {
	num := evt.EventNum()
	if p.cacheOK && p.cacheNum == num {
		return &p.cacheEvt, p.cacheErr
	}
	p.cacheOK = false
	buf := bytes.NewBuffer(p.cacheBuf[:0])
	if _, err := buf.ReadFrom(evt.Reader()); err != nil {
		return nil, fmt.Errorf("read payload of event %d: %w", num, err)
	}
	p.cacheBuf = buf.Bytes()
	p.cacheErr = p.cacheEvt.UnmarshalBinary(p.cacheBuf)
	if p.cacheErr != nil {
		p.cacheErr = fmt.Errorf("event %d: %w", num, p.cacheErr)
	}
	p.cacheNum, p.cacheOK = num, true
	return &p.cacheEvt, p.cacheErr
}

// Extract sets the value of one field of one event. A field that the event
// does not have is left without a value (no error), as Falco expects.
func (p *Plugin) Extract(req sdk.ExtractRequest, evt sdk.EventReader) error {
	id := req.FieldID()
	if id >= numFields || req.IsList() != fieldList[id].IsList || req.FieldType() != fieldTypes[id] {
		// The SDK would panic setting a value of the wrong shape.
		return fmt.Errorf("extract %s: field id %d (type %d, list %v) does not match the plugin's field list",
			req.Field(), id, req.FieldType(), req.IsList())
	}
	e, err := p.decode(evt)
	if err != nil {
		return err
	}
	if v, ok := fieldValue(e, id); ok {
		req.SetValue(v)
	}
	return nil
}

// fieldTypes are the SDK type codes of fieldList.
var fieldTypes = func() (t [numFields]uint32) {
	for i, f := range fieldList {
		switch f.Type {
		case typeString:
			t[i] = sdk.FieldTypeCharBuf
		case typeUint64:
			t[i] = sdk.FieldTypeUint64
		case typeBool:
			t[i] = sdk.FieldTypeBool
		}
	}
	return t
}()

func isLoad(e *event.Event) bool {
	return e.Syscall == event.InitModule || e.Syscall == event.FinitModule
}

// inspected reports whether e carries what inspecting a module file or
// image found: a load, or a present module tied to its file.
func inspected(e *event.Event) bool {
	return isLoad(e) || (e.Syscall == event.Present && e.Path != "")
}

// fieldValue is the value of field id in e, typed as the field list says
// (string, []string, uint64 or bool), and false when e has no such value.
func fieldValue(e *event.Event, id uint64) (any, bool) {
	if e.Syscall == event.SensorLoss {
		return lossValue(e, id)
	}
	switch id {
	case fieldSyscall:
		return str(string(e.Syscall))
	case fieldRes:
		if !hasRes(e) {
			return nil, false
		}
		return resString(e.Res), true
	case fieldOK:
		if !hasRes(e) {
			return nil, false
		}
		return e.Res == 0, true
	case fieldName:
		return str(e.Name)
	case fieldThisModuleName:
		return str(e.ThisModuleName)
	case fieldNameMismatch:
		if e.Name == "" || e.ThisModuleName == "" {
			return nil, false
		}
		return e.NameMismatch, true
	case fieldSHA256:
		return str(e.SHA256)
	case fieldELFSHA256:
		return str(e.ELFSHA256)
	case fieldSize:
		if !isLoad(e) {
			return nil, false
		}
		return e.Size, true
	case fieldParams:
		return str(e.Params)
	case fieldPath:
		return str(e.Path)
	case fieldFlags:
		if e.Syscall == event.InitModule || e.Syscall == event.Guard {
			return nil, false // init_module has no flags argument
		}
		if e.Flags == nil {
			return []string{}, true
		}
		return e.Flags, true
	case fieldVermagic:
		return str(e.Vermagic)
	case fieldSrcversion:
		return str(e.Srcversion)
	case fieldDepends:
		if !inspected(e) || e.Name == "" {
			return nil, false
		}
		if e.Depends == nil {
			return []string{}, true
		}
		return e.Depends, true
	case fieldSigned:
		if !inspected(e) || e.Name == "" {
			return nil, false // nothing was inspected
		}
		return e.Signed, true
	case fieldSigner:
		return str(e.Signer)
	case fieldTruncated:
		if !isLoad(e) {
			return nil, false
		}
		return e.Truncated, true
	case fieldUnreadable:
		if !isLoad(e) {
			return nil, false
		}
		return e.Unreadable, true
	case fieldImageAtExit:
		if e.Syscall != event.InitModule {
			return nil, false
		}
		return e.ImageAtExit, true
	case fieldParamsAtExit:
		if !isLoad(e) {
			return nil, false
		}
		return e.ParamsAtExit, true
	case fieldFileChanged:
		if e.Syscall != event.FinitModule {
			return nil, false
		}
		return e.FileChanged, true
	case fieldAllowed:
		if e.Allowed == nil {
			return nil, false
		}
		return *e.Allowed, true
	case fieldAllowlistEntry:
		return str(e.AllowlistEntry)
	case fieldVerdict:
		switch e.Syscall {
		case event.DeleteModule, event.Present, event.ModuleRequest, event.ModuleLoad, event.ModuleFree, event.Hidden:
			return nil, false // no guard decision: an unload, a module already there, a request, the kernel's own record
		}
		if e.Verdict == "" {
			return event.VerdictNone, true
		}
		return e.Verdict, true
	case fieldGuardSHA256:
		return str(e.GuardSHA256)
	case fieldTOCTOU:
		if !isLoad(e) {
			return nil, false
		}
		return e.TOCTOU, true
	case fieldPid:
		return nonZero(uint64(e.Pid))
	case fieldTid:
		return nonZero(uint64(e.Tid))
	case fieldPpid:
		return nonZero(uint64(e.Ppid))
	case fieldComm:
		return str(e.Comm)
	case fieldExe:
		return str(e.Exe)
	case fieldCmdline:
		return str(e.Cmdline)
	case fieldUID:
		return uint64(e.UID), e.Syscall != event.Guard || e.Pid != 0
	case fieldGID:
		return uint64(e.GID), e.Syscall != event.Guard || e.Pid != 0
	case fieldLoginUID:
		return uint64(e.LoginUID), e.Syscall != event.Guard || e.Pid != 0
	case fieldCgroup:
		return str(e.Cgroup)
	case fieldContainerID:
		return str(e.ContainerID)
	case fieldHostNS:
		if e.Pid == 0 {
			return nil, false
		}
		return e.HostNS, true
	case fieldHostMntNS:
		if e.Pid == 0 || e.HostMntNS == nil {
			return nil, false
		}
		return *e.HostMntNS, true
	case fieldPidNS:
		return nonZero(uint64(e.PidNS))
	case fieldMntNS:
		return nonZero(uint64(e.MntNS))
	case fieldUserNS:
		return nonZero(uint64(e.UserNS))
	case fieldCapEffective:
		if e.Pid == 0 {
			return nil, false
		}
		return CapNames(e.CapEffective), true
	case fieldGuardReason:
		return str(e.GuardReason)
	case fieldCoalesced:
		if e.Syscall != event.InitModule {
			return nil, false
		}
		return uint64(e.Coalesced), true
	case fieldTaint:
		switch e.Syscall {
		case event.Present, event.ModuleLoad, event.ModuleFree:
			return e.Taint, true
		}
		return nil, false
	case fieldSigOK:
		if e.SigOK == nil {
			return nil, false
		}
		return *e.SigOK, true
	case fieldModuleAddr:
		return nonZero(e.ModuleAddr)
	case fieldHidden:
		return str(e.Hidden)
	case fieldInventory:
		return str(e.Inventory)
	case fieldRequestName:
		return str(e.RequestName)
	case fieldRequestPid:
		return nonZero(uint64(e.RequestPid))
	case fieldRequestComm:
		return str(e.RequestComm)
	}
	return nil, false
}

// lossValue is fieldValue for a sensor_loss event: it has its syscall and
// its counts, and no process, module, result or verdict, so that no rule
// about those matches it.
func lossValue(e *event.Event, id uint64) (any, bool) {
	switch id {
	case fieldSyscall:
		return string(e.Syscall), true
	case fieldLost:
		return e.Lost, true
	case fieldThrottled:
		return e.Throttled, true
	}
	return nil, false
}

// resUnknown is the Res of an event whose sys_exit was lost (bpf.ResUnknown).
const resUnknown = math.MinInt64

// hasRes reports whether e has a syscall result: a guard decision, a
// module already present and an autoload request have none.
func hasRes(e *event.Event) bool {
	switch e.Syscall {
	case event.Guard, event.Present, event.ModuleRequest, event.ModuleLoad, event.ModuleFree, event.Hidden:
		return false
	}
	return e.Res != resUnknown
}

func str(s string) (any, bool) { return s, s != "" }

func nonZero(v uint64) (any, bool) { return v, v != 0 }

// resString formats a syscall result as Falco's evt.res does: SUCCESS, or
// the errno name.
func resString(res int64) string {
	if res == 0 {
		return "SUCCESS"
	}
	if res < 0 && res > -4096 {
		if name := unix.ErrnoName(syscall.Errno(-res)); name != "" {
			return name
		}
	}
	return fmt.Sprint(res)
}

// FieldValues returns every field of e that has a value, keyed by field
// name, as Extract would set them. Rule tests and tools use it to see an
// event the way Falco's rules do.
func FieldValues(e *event.Event) map[string]any {
	out := make(map[string]any, numFields)
	for id := range fieldList {
		if v, ok := fieldValue(e, uint64(id)); ok {
			out[fieldList[id].Name] = v
		}
	}
	return out
}
