package wireguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weftnet/weft/internal/nl"
)

// probeName is the link Prepare creates and deletes at once to learn whether
// the kernel has WireGuard (creating a wireguard link loads the module).
const probeName = "weft-wgprobe"

// kernelSupport reports whether the kernel can create a wireguard link, and
// if not, why (for the log line of the choice).
func kernelSupport(h *nl.Handle) (bool, error) {
	err := h.Netlink().LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: probeName}})
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		// EEXIST: a probe left by a killed weftd, itself a wireguard link.
		if derr := h.DeleteLink(probeName); derr != nil {
			return true, derr
		}
		return true, nil
	default:
		return false, err
	}
}

// ensureKernelLink makes name a kernel wireguard link (any existing one is
// adopted: wgctrl sets its key, port and peers) and returns it.
func ensureKernelLink(h *nl.Handle, name string) (netlink.Link, bool, error) {
	l, created, err := h.EnsureLink(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}}, nil)
	if err != nil {
		return nil, false, fmt.Errorf("kernel WireGuard device: %w (load the wireguard module, or set \"Implementation\": \"userspace\" or \"auto\")", err)
	}
	return l, created, nil
}

// userspace is the embedded WireGuard: wireguard-go on a persistent TUN
// device, configured through its UAPI socket like the kernel's through
// genetlink. It lives in weftd; the TUN device (with its address and routes)
// outlives weftd, so while weftd is down pod traffic for peers is dropped in
// the device instead of leaving in plaintext by another route.
type userspace struct {
	log  *slog.Logger
	name string
	tun  tun.Device
	dev  *device.Device
	// netns is where the bind opens its sockets when it is not the
	// process's namespace; nil otherwise.
	netns ns.NetNS

	// The UAPI listener and its accept loop; replaced when the socket
	// file is removed (Sync repairs that).
	mu       sync.Mutex
	ln       net.Listener  // guarded by mu
	served   chan struct{} // guarded by mu; closed when the accept loop ends
	handlers sync.WaitGroup
}

// startUserspace creates (or re-attaches to) the TUN device name, makes it
// persistent, starts wireguard-go on it (reading it through batchTUN) and
// serves its UAPI socket. It must
// be called from the node's network namespace: the TUN is created there, and
// wireguard-go's UDP sockets are opened there (it opens them later, from its
// own goroutines; see newBind).
func startUserspace(log *slog.Logger, name string, mtu int) (*userspace, error) {
	netns, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("current network namespace: %w", err)
	}
	if sameAsProcess(netns) {
		netns.Close()
		netns = nil
	}
	t, err := tun.CreateTUN(name, mtu)
	if err == nil {
		if err = persist(t); err != nil {
			t.Close()
			err = fmt.Errorf("make TUN %s persistent: %w", name, err)
		}
	} else {
		err = fmt.Errorf("create TUN %s: %w", name, err)
	}
	if err != nil {
		if netns != nil {
			netns.Close()
		}
		return nil, err
	}
	u := &userspace{log: log, name: name, tun: t, netns: netns}
	u.dev = device.NewDevice(newBatchTUN(t), newBind(netns), newDeviceLogger(log))
	if err := u.serve(); err != nil {
		u.dev.Close()
		u.closeNS()
		return nil, err
	}
	return u, nil
}

func (u *userspace) closeNS() {
	if u.netns != nil {
		_ = u.netns.Close()
	}
}

// persist sets TUNSETPERSIST on t's descriptor.
func persist(t tun.Device) error {
	nt, ok := t.(*tun.NativeTun)
	if !ok {
		return errors.New("not a native TUN device")
	}
	rc, err := nt.File().SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 1) }); err != nil {
		return err
	}
	return ierr
}

// serve opens the UAPI socket (/var/run/wireguard/<name>.sock, 0600, where
// wgctrl and wg(8) look) and accepts connections on it until it is closed or
// the file is removed.
func (u *userspace) serve() error {
	f, err := ipc.UAPIOpen(u.name)
	if err != nil {
		return fmt.Errorf("open UAPI socket of %s: %w", u.name, err)
	}
	ln, err := ipc.UAPIListen(u.name, f)
	f.Close() // the listener holds its own descriptor
	if err != nil {
		return fmt.Errorf("listen on UAPI socket of %s: %w", u.name, err)
	}
	served := make(chan struct{})
	u.mu.Lock()
	u.ln, u.served = ln, served
	u.mu.Unlock()
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.handlers.Go(func() { u.dev.IpcHandle(c) })
		}
	}()
	return nil
}

// ensureServed re-opens the UAPI socket when its accept loop has ended
// (someone removed the socket file): wgctrl finds the device only there.
func (u *userspace) ensureServed() (repaired bool, err error) {
	u.mu.Lock()
	served, ln := u.served, u.ln
	u.mu.Unlock()
	select {
	case <-served:
	default:
		return false, nil
	}
	_ = ln.Close()
	u.log.Warn("UAPI socket was gone; serving it again", "device", u.name)
	return true, u.serve()
}

// alive reports whether wireguard-go still runs: it closes itself when its
// TUN fails (e.g. the link was deleted).
func (u *userspace) alive() bool {
	select {
	case <-u.dev.Wait():
		return false
	default:
		return true
	}
}

// close stops the UAPI socket and wireguard-go. The TUN device stays.
func (u *userspace) close() {
	u.mu.Lock()
	ln, served := u.ln, u.served
	u.mu.Unlock()
	_ = ln.Close()
	<-served
	// wgctrl closes its connection after each request, so handlers end.
	u.handlers.Wait()
	u.dev.Close()
	u.closeNS()
}

// newBind is wireguard-go's standard UDP bind. wireguard-go opens its sockets
// from its own goroutines, on threads that are in the process's network
// namespace; when that is not the node's (netns not nil: an embedder or a
// test driving the backend from a thread inside a namespace), the sockets
// are opened inside netns instead. The plain bind is kept otherwise:
// wireguard-go runs its sticky-socket route listener only on it.
func newBind(netns ns.NetNS) conn.Bind {
	b := conn.NewDefaultBind()
	if netns == nil {
		return b
	}
	return &nsBind{Bind: b, netns: netns}
}

// sameAsProcess reports whether netns is the namespace of the process's
// unlocked threads, where wireguard-go's goroutines run. A new goroutine
// that locks itself to a thread gets one of those: a thread locked into
// another namespace (ns.Do) serves only its own goroutine. (/proc/self/ns/net
// would not do: it is the main thread's, which may be the one in ns.Do.)
func sameAsProcess(netns ns.NetNS) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(netns.Fd()), &a) != nil {
		return false
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- unix.Stat("/proc/thread-self/ns/net", &b)
	}()
	return <-errc == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// nsBind opens its inner bind's sockets inside netns; sockets stay in the
// namespace they were created in.
type nsBind struct {
	conn.Bind
	netns ns.NetNS
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	derr := b.netns.Do(func(ns.NetNS) error {
		fns, actual, err = b.Bind.Open(port)
		return nil
	})
	if derr != nil {
		return nil, 0, derr
	}
	return fns, actual, err
}

// newDeviceLogger sends wireguard-go's verbose lines to Debug and its
// errors to Warn, each distinct error format at most once a minute: some
// (a send to an unreachable peer) repeat per packet batch.
func newDeviceLogger(log *slog.Logger) *device.Logger {
	var mu sync.Mutex
	last := map[string]time.Time{}
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug("wireguard-go: " + fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			mu.Lock()
			now := time.Now()
			quiet := now.Sub(last[format]) < time.Minute
			if !quiet {
				last[format] = now
			}
			mu.Unlock()
			msg := "wireguard-go: " + fmt.Sprintf(format, args...)
			if quiet {
				log.Debug(msg)
				return
			}
			log.Warn(msg)
		},
	}
}
