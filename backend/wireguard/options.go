package wireguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/backend"
)

// Defaults and constants, as Flannel's wireguard backend has them.
const (
	// DefaultListenPort is the UDP port of the IPv4 device.
	DefaultListenPort = 51820
	// DefaultListenPortV6 is the UDP port of the IPv6 device in Mode
	// separate.
	DefaultListenPortV6 = 51821
	// Overhead is what the tunnel adds to an inner packet: an IPv6 outer
	// header (40; 20 for IPv4, but Flannel reserves the larger one so one
	// MTU fits both), UDP (8), WireGuard's type, receiver index and nonce
	// (16) and the authentication tag (16).
	Overhead = 80
	// DeviceName is the WireGuard device (Flannel: flannel-wg).
	DeviceName = "weft-wg"
	// DeviceNameV6 is the IPv6 device of Mode separate (Flannel:
	// flannel-wg-v6): DeviceName with "-v6".
	DeviceNameV6 = DeviceName + "-v6"
	// minMTU is IPv4's minimum datagram every link must carry.
	minMTU = 576
)

// Mode is Flannel's choice of devices and underlay family.
type Mode string

// Flannel's modes. With a single-family network separate, auto and the
// mode of that family program the same: one device, peers reached over the
// underlay of that family. They differ for dual-stack networks: separate
// gives IPv6 its own device weft-wg-v6 on ListenPortV6 (IPv4 stays on
// weft-wg), each family reaching peers over the underlay of its own family;
// auto, ipv4 and ipv6 put both families on weft-wg and reach peers over the
// IPv4 (ipv4), the IPv6 (ipv6) or, per peer, the likelier to work (auto, as
// Flannel chooses: see autoVia) underlay. ipv4 needs a network with IPv4,
// ipv6 one with IPv6.
const (
	ModeSeparate Mode = "separate"
	ModeAuto     Mode = "auto"
	ModeIPv4     Mode = "ipv4"
	ModeIPv6     Mode = "ipv6"
)

// Implementation is which WireGuard carries the device.
type Implementation string

// Implementations. A weft option; Flannel has only the kernel's.
const (
	// ImplAuto uses the kernel's WireGuard when the kernel can create a
	// wireguard link, else the embedded one; the choice is logged.
	ImplAuto Implementation = "auto"
	// ImplKernel requires the kernel's WireGuard (module wireguard).
	ImplKernel Implementation = "kernel"
	// ImplUserspace runs the embedded wireguard-go on a TUN device.
	ImplUserspace Implementation = "userspace"
)

// Secret is a string option that is never printed: String, GoString,
// Format, LogValue and MarshalJSON redact it, so an Options value in a log
// line, an error or JSON output does not carry it. It decodes from JSON as a
// plain string.
type Secret string

const redacted = "[redacted]"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (s Secret) reveal() string             { return string(s) }
func (s Secret) set() bool                  { return s != "" }
func (Secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }

// Options are the backend's keys in the config's "Backend" object. The
// first six are Flannel's, with its defaults and meanings.
type Options struct {
	// ListenPort is the UDP port of weft-wg (default 51820).
	ListenPort int
	// ListenPortV6 is the UDP port of the IPv6 device in Mode separate
	// (default 51821); published in BackendV6Data when IPv6 is carried.
	ListenPortV6 int
	// MTU is, as in Flannel, the underlay MTU the tunnel must fit in (0:
	// the underlay link's); the device and pod MTU are MTU − Overhead.
	MTU int
	// PSK is an optional pre-shared key (base64, as `wg genpsk` prints)
	// applied to every peer: a second, symmetric layer every node of the
	// cluster must share.
	PSK Secret
	// PersistentKeepaliveInterval, in seconds, makes the device send a
	// keepalive to each peer that often (0: off), for underlays with NAT or
	// stateful firewalls that forget idle flows.
	PersistentKeepaliveInterval int
	// Mode is Flannel's device/family choice; default separate.
	Mode Mode
	// Implementation (weft) forces kernel or userspace; default auto.
	Implementation Implementation
}

// ParseOptions decodes raw (the config's Backend object, may be empty) over
// the defaults and validates it. Unknown keys are ignored, as Flannel does.
func ParseOptions(raw json.RawMessage) (Options, error) {
	o := Options{ListenPort: DefaultListenPort, ListenPortV6: DefaultListenPortV6, Mode: ModeSeparate, Implementation: ImplAuto}
	if err := backend.DecodeOptions(raw, &o); err != nil {
		// The decoder's message quotes a value at most for type errors,
		// which a PSK (a string) cannot cause.
		return Options{}, fmt.Errorf("wireguard options: %w", err)
	}
	o.Mode = Mode(strings.ToLower(string(o.Mode)))
	o.Implementation = Implementation(strings.ToLower(string(o.Implementation)))
	if o.Mode == "" {
		o.Mode = ModeSeparate
	}
	if o.Implementation == "" {
		o.Implementation = ImplAuto
	}
	switch {
	case o.ListenPort < 1 || o.ListenPort > 65535:
		return Options{}, fmt.Errorf("wireguard options: ListenPort %d out of range 1..65535 (default %d)", o.ListenPort, DefaultListenPort)
	case o.ListenPortV6 < 1 || o.ListenPortV6 > 65535:
		return Options{}, fmt.Errorf("wireguard options: ListenPortV6 %d out of range 1..65535 (default %d)", o.ListenPortV6, DefaultListenPortV6)
	case o.MTU < 0 || (o.MTU != 0 && o.MTU-Overhead < minMTU):
		return Options{}, fmt.Errorf("wireguard options: MTU %d too small: it is the underlay MTU, the pod MTU is %d less and must be at least %d (0 for the underlay link's)", o.MTU, Overhead, minMTU)
	case o.PersistentKeepaliveInterval < 0 || o.PersistentKeepaliveInterval > 65535:
		return Options{}, fmt.Errorf("wireguard options: PersistentKeepaliveInterval %d out of range 0..65535 seconds", o.PersistentKeepaliveInterval)
	}
	switch o.Mode {
	case ModeSeparate, ModeAuto, ModeIPv4, ModeIPv6:
	default:
		return Options{}, fmt.Errorf("wireguard options: Mode %q is not one of separate, auto, ipv4, ipv6", o.Mode)
	}
	switch o.Implementation {
	case ImplAuto, ImplKernel, ImplUserspace:
	default:
		return Options{}, fmt.Errorf("wireguard options: Implementation %q is not one of auto, kernel, userspace", o.Implementation)
	}
	if o.PSK.set() {
		if _, err := wgtypes.ParseKey(o.PSK.reveal()); err != nil {
			// Never echo the value: it is a secret, even when malformed.
			return Options{}, errors.New("wireguard options: PSK is not a WireGuard key (32 bytes in base64, 44 characters, as `wg genpsk` prints)")
		}
	}
	return o, nil
}

// psk returns the pre-shared key, the zero key when none is set (which is
// how WireGuard says "no PSK").
func (o Options) psk() wgtypes.Key {
	if !o.PSK.set() {
		return wgtypes.Key{}
	}
	k, _ := wgtypes.ParseKey(o.PSK.reveal()) // checked by ParseOptions
	return k
}

// BackendData is this backend's lease attribute, byte for byte as Flannel
// writes it: {"PublicKey":"<base64>","Port":51820}.
type BackendData struct {
	PublicKey string
	Port      uint16
}

// errBadBackendData marks a peer lease whose BackendData cannot be used.
var errBadBackendData = errors.New("bad wireguard BackendData")

// peerData is what a peer's lease says about its WireGuard side.
type peerData struct {
	key  wgtypes.Key
	port uint16
}

// maxQuoted bounds how much of a malformed key a reason quotes.
const maxQuoted = 64

// parseBackendData decodes and checks a peer's BackendData. A Port of 0 (or
// none, as Flannel before v0.20 wrote) means ours, as Flannel reads it.
func parseBackendData(raw json.RawMessage, ourPort int) (peerData, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return peerData{}, fmt.Errorf("%w: missing (no PublicKey)", errBadBackendData)
	}
	var d BackendData
	if err := json.Unmarshal(raw, &d); err != nil {
		return peerData{}, fmt.Errorf("%w: %v", errBadBackendData, err)
	}
	key, err := parsePublicKey(d.PublicKey)
	if err != nil {
		return peerData{}, fmt.Errorf("%w: %v", errBadBackendData, err)
	}
	p := peerData{key: key, port: d.Port}
	if p.port == 0 {
		p.port = uint16(ourPort)
	}
	return p, nil
}

// parsePublicKey checks that s is a usable Curve25519 public key.
func parsePublicKey(s string) (wgtypes.Key, error) {
	if s == "" {
		return wgtypes.Key{}, errors.New("no PublicKey")
	}
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		q := s
		if len(q) > maxQuoted {
			q = q[:maxQuoted] + "…"
		}
		return wgtypes.Key{}, fmt.Errorf("PublicKey %q is not a WireGuard key (32 bytes in base64, 44 characters)", q)
	}
	if k == (wgtypes.Key{}) {
		// The all-zero point gives an all-zero shared secret: WireGuard
		// refuses every handshake with it.
		return wgtypes.Key{}, errors.New("PublicKey is all zeros, not a Curve25519 public key")
	}
	return k, nil
}

// endpoint is where a peer's device listens.
func (p peerData) endpoint(publicIP netip.Addr) netip.AddrPort {
	return netip.AddrPortFrom(publicIP.Unmap(), p.port)
}
