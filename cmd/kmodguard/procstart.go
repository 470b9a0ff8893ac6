//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of the times in /proc/PID/stat: 100 a second on
// every Linux architecture (USER_HZ, whatever the kernel's HZ).
const userHZ = 100

// processStart is when the process pid of this PID namespace started, as
// wall-clock time: /proc/PID/stat's starttime is in clock ticks since boot,
// on the clock CLOCK_BOOTTIME reads.
func processStart(pid uint32) (time.Time, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, err
	}
	// The command name, in parentheses, may hold anything: the fields
	// after it start past the last ')', with the state (field 3).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return time.Time{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	const starttime = 22 - 3
	if len(f) <= starttime {
		return time.Time{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ticks, err := strconv.ParseUint(string(f[starttime]), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	var boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return time.Time{}, errors.New("read CLOCK_BOOTTIME: " + err.Error())
	}
	now := time.Now()
	since := time.Duration(boot.Nano()) - time.Duration(ticks)*(time.Second/userHZ)
	return now.Add(-since), nil
}
