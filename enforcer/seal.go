package enforcer

import "github.com/kmodguard/kmodguard/lsm"

// SealPinned seals the pinned guard in pinDir (lsm.DefaultPinDir when
// empty) until reboot, for a seal made apart from the daemon: from the
// host's mount namespace, while the daemon runs sandboxed in one of its
// own. It reports whether the guard was sealed already.
func SealPinned(pinDir string) (already bool, err error) {
	g, err := lsm.OpenPinned(pinDir)
	if err != nil {
		return false, err
	}
	defer g.Close()
	if already, err = g.Sealed(); err != nil || already {
		return already, err
	}
	return false, g.Seal()
}
