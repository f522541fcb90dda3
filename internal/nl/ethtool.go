package nl

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value from <linux/ethtool.h>.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data: the name, then a pointer. It is
// padded to sizeof(struct ifreq) (40 bytes on 64-bit). The pointer field is
// an unsafe.Pointer, not a uintptr, so the GC keeps the target alive.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(unsafe.Pointer(nil))]byte
}

// ethtool runs one legacy ETHTOOL_* get/set command on the named interface
// in the calling thread's network namespace.
func ethtool(name string, cmd, data uint32) (uint32, error) {
	if len(name) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", name)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	v := &ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], name)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// TxChecksum reports whether TX checksum offload (the "tx-checksumming"
// feature group of `ethtool -k`) is on for the named interface in the
// calling thread's network namespace.
func TxChecksum(name string) (bool, error) {
	v, err := ethtool(name, unix.ETHTOOL_GTXCSUM, 0)
	if err != nil {
		return false, fmt.Errorf("ethtool get tx-checksumming of %s: %w", name, err)
	}
	return v != 0, nil
}

// SetTxChecksum turns TX checksum offload on or off for the named interface
// (like `ethtool -K name tx on|off`) in the calling thread's network
// namespace. It is a no-op when the feature is already in the wanted state.
func SetTxChecksum(name string, on bool) error {
	cur, err := TxChecksum(name)
	if err != nil {
		return err
	}
	if cur == on {
		return nil
	}
	var v uint32
	if on {
		v = 1
	}
	if _, err := ethtool(name, unix.ETHTOOL_STXCSUM, v); err != nil {
		return fmt.Errorf("ethtool set tx-checksumming of %s: %w", name, err)
	}
	return nil
}
