package enforcer

import (
	"errors"
	"fmt"

	"github.com/kmodguard/kmodguard/allowlist"
)

// DenyAllName is the name of the policy FailClosed puts in force.
const DenyAllName = "fail-closed-deny-all"

// FailClosed is what `enforcer run --fail-closed` does when the allowlist
// cannot be put in force (missing, unparsable, unsigned, expired): rather
// than leave the host unguarded, it makes sure a guard refuses modules.
//
//   - A guard already pinned keeps the policy it has: a list that failed to
//     load never replaces one in force, and a deny-all would too.
//   - With no guard pinned, it loads one in enforce mode with an empty
//     policy, which refuses every module load until a valid allowlist is
//     applied (the next start of the daemon, or `enforcer apply`), and
//     leaves it pinned. It is never sealed: the fix must not need a reboot.
//
// denied reports whether it loaded the deny-all guard.
func FailClosed(cfg Config) (denied bool, err error) {
	switch _, err := ReadStatus(cfg.PinDir); {
	case err == nil:
		return false, nil
	case !errors.Is(err, ErrNotLoaded):
		return false, fmt.Errorf("fail closed: read the pinned guard: %w", err)
	}
	cfg.Mode, cfg.Seal = allowlist.ModeEnforce, false
	enf, err := Load(cfg, allowlist.New(DenyAllName, allowlist.ModeEnforce))
	if err != nil {
		return false, fmt.Errorf("fail closed: load a deny-all guard: %w", err)
	}
	return true, enf.Close()
}
