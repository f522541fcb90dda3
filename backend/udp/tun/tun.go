// Package tun opens a multi-queue Linux TUN device for the udp backend,
// with the virtio-net header (IFF_VNET_HDR) and TCP segmentation offload
// (TUNSETOFFLOAD) when the kernel offers them.
package tun

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TUNSETOFFLOAD flags from <linux/if_tun.h> (not in x/sys/unix).
const (
	tunFCsum = 0x01 // TUN_F_CSUM: we accept partial checksums
	tunFTSO4 = 0x02 // TUN_F_TSO4: we accept TCP/IPv4 super-packets
	tunFTSO6 = 0x04 // TUN_F_TSO6: we accept TCP/IPv6 super-packets
)

// ErrIncompatible means a device of that name exists with settings a
// multi-queue TUN cannot attach to (e.g. a single-queue TUN or not a TUN).
var ErrIncompatible = errors.New("existing device is not a compatible multi-queue tun")

// Config says what to open.
type Config struct {
	Name   string
	Queues int
	// Offload asks for IFF_VNET_HDR and TSO; Open falls back without them.
	Offload bool
}

// Device is an open TUN device: one file per queue. Each descriptor is
// non-blocking but NOT registered with the Go poller: the udp backend
// waits for it with poll(2) on a goroutine of its own, and a registered
// descriptor would wake the runtime's epoll thread on every packet for
// nothing. So do not Read or Write the os.File (that would block a
// thread on EAGAIN semantics it does not expect); use the descriptor, and
// Close only once nothing uses it any more. Reads and writes move one
// packet each (preceded by a virtio-net header when VnetHdr). Files are
// bound to the network namespace Open ran in, wherever they are used from.
type Device struct {
	Name  string
	Files []*os.File
	// VnetHdr: every read and write carries a virtio-net header.
	VnetHdr bool
	// TSO: reads may return TCP/IPv4 and TCP/IPv6 super-packets (and
	// partial checksums).
	TSO bool
}

// Open creates the device, or attaches to a persistent one left by a
// previous run, and marks it persistent so that its routes survive a
// restart of the process (packets are dropped, not misrouted, meanwhile).
// It must be called in the network namespace the device lives in.
func Open(cfg Config) (*Device, error) {
	if cfg.Queues < 1 {
		cfg.Queues = 1
	}
	d := &Device{Name: cfg.Name}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
	if cfg.Offload {
		f, err := attach(cfg.Name, flags|unix.IFF_VNET_HDR)
		if err == nil {
			d.VnetHdr = true
			d.Files = append(d.Files, f)
			flags |= unix.IFF_VNET_HDR
		} else if errors.Is(err, ErrIncompatible) {
			return nil, err
		}
	}
	for len(d.Files) < cfg.Queues {
		f, err := attach(cfg.Name, flags)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.Files = append(d.Files, f)
	}
	if err := ioctl(d.Files[0], unix.TUNSETPERSIST, 1); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun %s: set persistent: %w", cfg.Name, err)
	}
	if d.VnetHdr {
		// Without TUN_F_CSUM the kernel completes checksums itself and
		// never sends super-packets; with it we must finish them.
		d.TSO = ioctl(d.Files[0], unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6) == nil
		if !d.TSO {
			_ = ioctl(d.Files[0], unix.TUNSETOFFLOAD, 0)
		}
	}
	return d, nil
}

func attach(name string, flags uint16) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("tun %s: %w: %w", name, ErrIncompatible, err)
		}
		return nil, fmt.Errorf("tun %s: TUNSETIFF: %w", name, err)
	}
	// os.NewFile registers a descriptor with the poller only when it is
	// already non-blocking: wrap it first, then make it non-blocking.
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("tun %s: set non-blocking: %w", name, err)
	}
	return f, nil
}

func ioctl(f *os.File, req uint, v int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var operr error
	if err := rc.Control(func(fd uintptr) { operr = unix.IoctlSetInt(int(fd), req, v) }); err != nil {
		return err
	}
	return operr
}

// Close closes every queue. The device stays (it is persistent).
func (d *Device) Close() error {
	var errs []error
	for _, f := range d.Files {
		if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
