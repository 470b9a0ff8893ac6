package companion

import (
	"context"
	"fmt"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
)

// Unavailable returns the Enforcer a companion serves when its guard could
// not load: every call fails with an error wrapping ErrUnavailable and
// reason, so that the client learns why (for example that BPF LSM is not
// enabled) instead of seeing the companion die during the handshake.
func Unavailable(reason error) Enforcer { return unavailable{reason} }

type unavailable struct{ reason error }

func (u unavailable) err() error {
	if u.reason == nil {
		return ErrUnavailable
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, u.reason)
}

func (u unavailable) Apply(context.Context, *allowlist.Allowlist) (Applied, error) {
	return Applied{}, u.err()
}

func (u unavailable) Status(context.Context) (Status, error) { return Status{}, u.err() }

func (u unavailable) Decisions(context.Context) (<-chan event.GuardMessage, error) {
	return nil, u.err()
}
