// Package sdnotify speaks systemd's notify protocol (sd_notify(3)): one
// datagram of KEY=VALUE lines to the unix socket named by $NOTIFY_SOCKET. It
// lets a Type=notify unit learn when weftd is ready and lets systemd's
// watchdog restart a weftd whose loop is stuck.
package sdnotify

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Notifier sends to one notify socket. The zero value (no socket) does
// nothing, so callers need no "are we under systemd" checks.
type Notifier struct {
	socket string
}

// New returns a notifier for socket, the value of $NOTIFY_SOCKET ("" when
// not run by systemd). A leading "@" names an abstract socket.
func New(socket string) Notifier { return Notifier{socket: socket} }

// Enabled reports whether there is a socket to notify.
func (n Notifier) Enabled() bool { return n.socket != "" }

// Notify sends state, e.g. "READY=1\nSTATUS=serving". It is a no-op without
// a socket.
func (n Notifier) Notify(state string) error {
	if n.socket == "" {
		return nil
	}
	name := n.socket
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	return nil
}

// WatchdogInterval parses $WATCHDOG_USEC and $WATCHDOG_PID: how often
// systemd expects "WATCHDOG=1", or 0 when the watchdog is off or meant for
// another process.
func WatchdogInterval(usec, pid string, self int) time.Duration {
	if usec == "" {
		return 0
	}
	if pid != "" && pid != strconv.Itoa(self) {
		return 0
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Microsecond
}
