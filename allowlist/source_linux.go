package allowlist

import (
	"os"
	"syscall"
)

func sysID(fi os.FileInfo) (dev, ino uint64, ctimeNs int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Dev, st.Ino, st.Ctim.Nano()
	}
	return 0, 0, 0
}
