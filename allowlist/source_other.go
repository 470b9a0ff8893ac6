//go:build !linux

package allowlist

import "os"

// sysID has only the size and modification time to go by here.
func sysID(os.FileInfo) (dev, ino uint64, ctimeNs int64) { return 0, 0, 0 }
