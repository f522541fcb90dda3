package vxlan

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/weftnet/weft/backend"
)

// Encapsulation overhead subtracted from the underlay MTU: outer IP header +
// UDP (8) + VXLAN (8) + inner Ethernet (14).
const (
	OverheadIPv4 = 20 + 8 + 8 + 14 // 50
	OverheadIPv6 = 40 + 8 + 8 + 14 // 70
)

// Defaults, as Flannel's.
const (
	DefaultVNI  = 1
	DefaultPort = 8472 // the Linux kernel's historical VXLAN port, Flannel's default
	maxVNI      = 1<<24 - 1
	minMTU      = 68 // the least MTU IPv4 allows
)

// Options are the backend options read from the network config's "Backend"
// object. Key names match Flannel's (matched case-insensitively).
type Options struct {
	VNI      int  // VXLAN network identifier; default 1
	Port     int  // UDP destination port; default 8472
	GBP      bool // VXLAN Group Based Policy extension; default off
	Learning bool // source-address learning on the device; default off
	// MTU is, as in Flannel, the MTU of the path the encapsulated packets
	// take: the device and the pods get MTU minus OverheadIPv4 (or
	// OverheadIPv6). 0 (default) takes the underlay link's MTU.
	MTU int
	// DirectRouting routes peers on the same L2 subnet as the underlay
	// without encapsulation; default off.
	DirectRouting bool
	// DisableTXChecksumOffload turns off TX checksum offload on the device
	// (ethtool -K weft.<VNI> tx off). Works around kernels that emit VXLAN
	// packets with bad inner checksums when the NIC offload is on, a bug
	// Flannel users hit (e.g. with some NAT/conntrack setups); default off.
	DisableTXChecksumOffload bool
	// PeerFilter makes weftd accept VXLAN datagrams only from current
	// peers' PublicIPs (nil means the default, on). Flannel accepts them
	// from anyone who can reach the port.
	PeerFilter *bool
}

// FilterPort implements backend.PeerFiltered: the VXLAN port, and whether
// only peers may send to it.
func (o Options) FilterPort() (uint16, bool) {
	return uint16(o.Port), o.PeerFilter == nil || *o.PeerFilter
}

// ParseOptions decodes raw (the config's Backend JSON, may be empty) over the
// defaults and validates the result.
func ParseOptions(raw json.RawMessage) (Options, error) {
	o := Options{VNI: DefaultVNI, Port: DefaultPort}
	if err := backend.DecodeOptions(raw, &o); err != nil {
		return Options{}, fmt.Errorf("vxlan options: %w", err)
	}
	if o.Port == 0 {
		// Flannel passes 0 on to the kernel, which then uses its default,
		// 8472.
		o.Port = DefaultPort
	}
	switch {
	case o.VNI < 0 || o.VNI > maxVNI:
		return Options{}, fmt.Errorf("vxlan options: VNI %d out of range 0..%d", o.VNI, maxVNI)
	case o.Port < 1 || o.Port > 65535:
		return Options{}, fmt.Errorf("vxlan options: Port %d out of range 1..65535", o.Port)
	case o.MTU < 0 || (o.MTU != 0 && o.MTU < minMTU+OverheadIPv6):
		return Options{}, fmt.Errorf("vxlan options: MTU %d too small: it is the underlay path's MTU, pods get %d less; use at least %d, or 0 for the underlay link's", o.MTU, OverheadIPv4, minMTU+OverheadIPv6)
	}
	return o, nil
}

// DeviceName is the VXLAN device for vni (the IPv4 pod network's).
func DeviceName(vni int) string { return fmt.Sprintf("weft.%d", vni) }

// DeviceName6 is the VXLAN device of the IPv6 pod network for vni, named as
// Flannel names its own (flannel-v6.<VNI>).
func DeviceName6(vni int) string { return fmt.Sprintf("weft-v6.%d", vni) }

// Overhead returns the encapsulation overhead over an underlay of publicIP's
// family.
func Overhead(publicIP netip.Addr) int {
	if publicIP.Unmap().Is4() {
		return OverheadIPv4
	}
	return OverheadIPv6
}

// VtepMAC derives this node's device MAC from its PublicIP and VNI: a
// locally administered unicast address that is the same on every start, so
// peers' neighbour and FDB entries for this node stay valid across restarts
// and reboots.
func VtepMAC(publicIP netip.Addr, vni int) net.HardwareAddr {
	ip := publicIP.Unmap().As16()
	var buf [len("weft-vtep") + 16 + 4]byte
	n := copy(buf[:], "weft-vtep")
	n += copy(buf[n:], ip[:])
	binary.BigEndian.PutUint32(buf[n:], uint32(vni))
	sum := sha256.Sum256(buf[:])
	mac := net.HardwareAddr(sum[:6:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}

// BackendData is this backend's lease attribute, in Flannel's format:
// {"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}.
type BackendData struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// errBadBackendData marks a peer lease whose BackendData cannot be used.
var errBadBackendData = errors.New("bad vxlan BackendData")

// parseBackendData decodes and checks a peer's BackendData, returning its
// VtepMAC.
func parseBackendData(raw json.RawMessage, ourVNI int) (net.HardwareAddr, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("%w: missing", errBadBackendData)
	}
	var d BackendData
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadBackendData, err)
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("%w: VtepMAC %q is not an Ethernet address", errBadBackendData, d.VtepMAC)
	}
	if mac[0]&0x01 != 0 || string(mac) == string(make([]byte, 6)) {
		return nil, fmt.Errorf("%w: VtepMAC %s is not a unicast address", errBadBackendData, mac)
	}
	if d.VNI != 0 && d.VNI != ourVNI {
		return nil, fmt.Errorf("%w: VNI %d differs from this node's %d", errBadBackendData, d.VNI, ourVNI)
	}
	return mac, nil
}
