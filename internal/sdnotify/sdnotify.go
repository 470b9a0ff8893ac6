// Package sdnotify tells the service manager about a daemon's state over
// the datagram socket named by $NOTIFY_SOCKET (systemd's Type=notify
// protocol, sd_notify(3)): READY=1 once the service does what it is for,
// STATUS= lines for `systemctl status`, STOPPING=1 on the way out.
//
// It matters for the guard: with Type=notify, units ordered after the
// enforcer (systemd-modules-load, udev) start only once every hook is
// attached, not when the process was merely executed.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// EnvSocket is the variable the service manager sets to its socket.
const EnvSocket = "NOTIFY_SOCKET"

// Notify sends state, newline-separated KEY=VALUE assignments, to the
// socket in $NOTIFY_SOCKET. It reports whether a message was sent: without
// the variable (not run by a service manager that asked for it) it sends
// nothing and returns false, nil. Abstract socket names start with '@'.
func Notify(state string) (bool, error) {
	addr := os.Getenv(EnvSocket)
	if addr == "" {
		return false, nil
	}
	if err := send(addr, state); err != nil {
		return false, fmt.Errorf("notify the service manager (%s=%s): %w", EnvSocket, addr, err)
	}
	return true, nil
}

func send(addr, state string) error {
	switch {
	case strings.HasPrefix(addr, "@"):
		// Go names abstract sockets with a leading '@' too.
	case strings.HasPrefix(addr, "/"):
	default:
		return errors.New("not an absolute path nor an abstract socket name")
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := c.Write([]byte(state))
	if err != nil {
		return err
	}
	if n != len(state) {
		return fmt.Errorf("sent %d of %d bytes", n, len(state))
	}
	return nil
}
