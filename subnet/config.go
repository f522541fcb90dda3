package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Backend type names accepted in Config.Backend.Type.
const (
	BackendVXLAN  = "vxlan"
	BackendHostGW = "host-gw"
	BackendUDP    = "udp"
	// BackendWireGuard encrypts pod traffic between nodes (Flannel's
	// wireguard backend).
	BackendWireGuard = "wireguard"
	// BackendAlloc only takes leases and programs nothing (Flannel's
	// "alloc"): for clusters that route pod subnets some other way, and for
	// control-plane tests.
	BackendAlloc = "alloc"
)

// BackendTypes lists the accepted Backend.Type values (DefaultBackendType
// is what a config without Backend runs).
func BackendTypes() []string {
	return []string{BackendVXLAN, BackendHostGW, BackendUDP, BackendWireGuard, BackendAlloc}
}

// Limits Flannel applies to subnet sizes: every node subnet needs room for
// the network address, the gateway, at least one pod and the broadcast
// address, and the network must hold at least four subnets (Flannel's rule:
// the first is never handed out, and fewer would leave room for one or two
// nodes).
const (
	maxSubnetLen4 = 30
	maxSubnetLen6 = 126
	// defaultSubnetLen4 is used when the network has room for four of them.
	defaultSubnetLen4 = 24
	defaultSubnetLen6 = 64
)

// Config is the network config at <prefix>/config after defaults are
// applied and validated (see ParseConfig).
type Config struct {
	EnableIPv4    bool
	EnableIPv6    bool
	Network       netip.Prefix
	SubnetLen     int
	SubnetMin     netip.Addr
	SubnetMax     netip.Addr
	IPv6Network   netip.Prefix
	IPv6SubnetLen int
	IPv6SubnetMin netip.Addr
	IPv6SubnetMax netip.Addr
	// BackendType is Backend.Type, defaulted to "vxlan".
	BackendType string
	// Backend is the raw "Backend" object; each backend decodes its own
	// options from it.
	Backend json.RawMessage
	// EnableNFTables is Flannel's choice of firewall API for the whole
	// cluster: true nftables, false iptables; nil when the config does not
	// say. weftd follows it unless --masq-backend names one.
	EnableNFTables *bool
	// Raw is the JSON the config was parsed from.
	Raw []byte
}

// ConfigError is a network config that ParseConfig rejected. Key is the JSON
// key at fault ("" when the document itself is not a JSON object) and Msg
// says what is wrong and what is allowed.
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string {
	if e.Key == "" {
		return "config: " + e.Msg
	}
	return "config: " + e.Key + " " + e.Msg
}

func cfgErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// rawConfig mirrors the JSON document. Fields are pointers or raw messages
// so that "absent" and "zero" can be told apart; encoding/json matches keys
// case-insensitively, as it does for Flannel.
type rawConfig struct {
	EnableIPv4     *bool
	EnableIPv6     *bool
	Network        *string
	SubnetLen      *json.RawMessage
	SubnetMin      *string
	SubnetMax      *string
	IPv6Network    *string
	IPv6SubnetLen  *json.RawMessage
	IPv6SubnetMin  *string
	IPv6SubnetMax  *string
	Backend        json.RawMessage
	EnableNFTables *bool
}

// ParseConfig parses the network config JSON, applies Flannel's defaults and
// validates it the way Flannel v0.28.9's code does (its ParseConfig and
// CheckNetworkConfig), so a config one accepts the other accepts too. Every
// rejection is a *ConfigError naming the key and what is allowed. Unknown
// keys are ignored, as Flannel ignores them.
//
// Defaults: EnableIPv4 is true (an IPv6-only network sets it to false);
// SubnetLen is 24 when the network holds at least four /24s, else the
// network's length + 2; SubnetMin is the second subnet of the network and
// SubnetMax the last one (the first is never handed out: its .0 would be the
// network address); an address key given as "0.0.0.0" (or "::") is unset,
// as in Flannel. A config with no Backend key runs udp, as Flannel's code
// does (its documentation says vxlan); a Backend without a Type is refused,
// as Flannel refuses it. Backend.Type is matched case-insensitively. IPv6
// works alike with /64.
func ParseConfig(data []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, cfgErr(te.Field, "has the wrong type: want a JSON %s", jsonKind(te.Field))
		}
		return nil, cfgErr("", "not a JSON object: %v", err)
	}

	cfg := &Config{Raw: bytes.Clone(data)}
	if raw.EnableNFTables != nil {
		v := *raw.EnableNFTables
		cfg.EnableNFTables = &v
	}
	var err error
	// Flannel's address types refuse an empty string: "Network": "" is an
	// error there, not an absent key.
	for _, k := range []struct {
		key string
		val *string
	}{{"Network", raw.Network}, {"IPv6Network", raw.IPv6Network}, {"SubnetMin", raw.SubnetMin},
		{"SubnetMax", raw.SubnetMax}, {"IPv6SubnetMin", raw.IPv6SubnetMin}, {"IPv6SubnetMax", raw.IPv6SubnetMax}} {
		if k.val != nil && strings.TrimSpace(*k.val) == "" {
			return nil, cfgErr(k.key, "is an empty string, which Flannel refuses: leave the key out or give a value")
		}
	}
	if raw.Network != nil {
		if cfg.Network, err = parseNetwork("Network", *raw.Network, false); err != nil {
			return nil, err
		}
	}
	if raw.IPv6Network != nil {
		if cfg.IPv6Network, err = parseNetwork("IPv6Network", *raw.IPv6Network, true); err != nil {
			return nil, err
		}
	}
	cfg.EnableIPv4 = true
	if raw.EnableIPv4 != nil {
		cfg.EnableIPv4 = *raw.EnableIPv4
	}
	if raw.EnableIPv6 != nil {
		cfg.EnableIPv6 = *raw.EnableIPv6
	}
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		return nil, cfgErr("EnableIPv4", "is false and EnableIPv6 is not true: enable at least one address family")
	}

	if cfg.EnableIPv4 {
		if !cfg.Network.IsValid() {
			if cfg.EnableIPv6 && raw.EnableIPv4 == nil {
				return nil, cfgErr("Network", "is missing: set it to the pod network, or set EnableIPv4 to false for an IPv6-only network (EnableIPv4 defaults to true, as in Flannel)")
			}
			return nil, cfgErr("Network", "is missing: set it to the pod network, e.g. \"10.244.0.0/16\"")
		}
		fam := family{net: "Network", len: "SubnetLen", min: "SubnetMin", max: "SubnetMax",
			maxLen: maxSubnetLen4, defLen: defaultSubnetLen4}
		cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, err = fam.resolve(cfg.Network, raw.SubnetLen, raw.SubnetMin, raw.SubnetMax)
		if err != nil {
			return nil, err
		}
	}
	if cfg.EnableIPv6 {
		if !cfg.IPv6Network.IsValid() {
			return nil, cfgErr("IPv6Network", "is missing but EnableIPv6 is true: set it to the pod network, e.g. \"fc00::/48\"")
		}
		fam := family{net: "IPv6Network", len: "IPv6SubnetLen", min: "IPv6SubnetMin", max: "IPv6SubnetMax",
			maxLen: maxSubnetLen6, defLen: defaultSubnetLen6}
		cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax, err = fam.resolve(cfg.IPv6Network, raw.IPv6SubnetLen, raw.IPv6SubnetMin, raw.IPv6SubnetMax)
		if err != nil {
			return nil, err
		}
	}

	if cfg.BackendType, err = parseBackendType(raw.Backend); err != nil {
		return nil, err
	}
	cfg.Backend = bytes.Clone(raw.Backend)
	return cfg, nil
}

// DefaultBackendType is what a config without a Backend key runs. Flannel's
// documentation says vxlan, but its code (v0.28.9 parseBackendType) runs
// udp, and a mixed cluster must agree with the code.
const DefaultBackendType = BackendUDP

// parseBackendType returns Backend.Type, lower-cased as Flannel's backend
// manager looks it up. raw is nil when the key is absent.
func parseBackendType(raw json.RawMessage) (string, error) {
	if raw == nil {
		return DefaultBackendType, nil
	}
	types := strings.Join(BackendTypes(), ", ")
	if string(raw) == "null" {
		return "", cfgErr("Backend", "is null: give an object such as {\"Type\": \"vxlan\"}, or leave Backend out to run %s", DefaultBackendType)
	}
	var be struct{ Type *json.RawMessage }
	if err := json.Unmarshal(raw, &be); err != nil {
		return "", cfgErr("Backend", "must be a JSON object such as {\"Type\": \"vxlan\"}")
	}
	var t string
	if be.Type != nil {
		if err := json.Unmarshal(*be.Type, &t); err != nil {
			return "", cfgErr("Backend.Type", "must be a string, one of %s", types)
		}
	}
	if t == "" {
		// Flannel fails with "unknown backend type" here; say it plainly.
		return "", cfgErr("Backend.Type", "is missing or empty (Flannel refuses it too): set it to one of %s", types)
	}
	lt := strings.ToLower(t)
	if !slices.Contains(BackendTypes(), lt) {
		return "", cfgErr("Backend.Type", "%q is not supported: use one of %s", t, types)
	}
	return lt, nil
}

func jsonKind(field string) string {
	switch strings.ToLower(field) {
	case "enableipv4", "enableipv6", "enablenftables":
		return "boolean"
	case "backend":
		return "object"
	default:
		return "string"
	}
}

func parseNetwork(key, s string, v6 bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if v6 {
			return netip.Prefix{}, cfgErr(key, "%q is not a CIDR prefix: use e.g. \"fc00::/48\"", s)
		}
		return netip.Prefix{}, cfgErr(key, "%q is not a CIDR prefix: use e.g. \"10.244.0.0/16\"", s)
	}
	if v6 && !p.Addr().Is6() || v6 && p.Addr().Is4In6() {
		return netip.Prefix{}, cfgErr(key, "%q is not an IPv6 prefix", s)
	}
	if !v6 && !p.Addr().Is4() {
		return netip.Prefix{}, cfgErr(key, "%q is not an IPv4 prefix: put IPv6 networks in IPv6Network", s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, cfgErr(key, "%q must not carry a zone", s)
	}
	// Flannel (net.ParseCIDR) accepts host bits and drops them.
	return p.Masked(), nil
}

// family names the keys of one address family for error messages.
type family struct {
	net, len, min, max string
	maxLen, defLen     int
}

func (f family) resolve(network netip.Prefix, rawLen *json.RawMessage, rawMin, rawMax *string) (int, netip.Addr, netip.Addr, error) {
	bits := network.Addr().BitLen()
	netLen := network.Bits()
	subLen := 0
	if rawLen != nil && string(*rawLen) != "null" {
		n, err := strconv.Atoi(strings.TrimSpace(string(*rawLen)))
		if err != nil {
			return 0, netip.Addr{}, netip.Addr{}, cfgErr(f.len, "%s is not a whole number: use a prefix length such as %d", *rawLen, f.defLen)
		}
		subLen = n
	}
	if netLen > f.maxLen-2 {
		return 0, netip.Addr{}, netip.Addr{}, cfgErr(f.net, "%s is too small to split into four subnets of at most /%d: use at most /%d", network, f.maxLen, f.maxLen-2)
	}
	switch {
	case subLen == 0 && netLen <= f.defLen-2:
		subLen = f.defLen
	case subLen == 0:
		subLen = netLen + 2
	case subLen < 0:
		return 0, netip.Addr{}, netip.Addr{}, cfgErr(f.len, "%d is negative: use a prefix length such as %d", subLen, f.defLen)
	case subLen > f.maxLen:
		return 0, netip.Addr{}, netip.Addr{}, cfgErr(f.len, "%d leaves no room for pods: use at most %d", subLen, f.maxLen)
	case subLen < netLen+2:
		return 0, netip.Addr{}, netip.Addr{}, cfgErr(f.len, "%d is too short for %s %s, which must hold at least four subnets: use at least %d", subLen, f.net, network, netLen+2)
	}

	size := subnetSize(bits, subLen)
	first := network.Addr()
	last := addOffset(first, new(big.Int).Sub(subnetSize(bits, netLen), size))

	parseBound := func(key string, raw *string, def netip.Addr) (netip.Addr, error) {
		if raw == nil {
			return def, nil
		}
		a, err := netip.ParseAddr(*raw)
		if err != nil || a.BitLen() != bits || a.Is4In6() || a.Zone() != "" {
			return netip.Addr{}, cfgErr(key, "%q is not an address of %s %s", *raw, f.net, network)
		}
		if a.IsUnspecified() {
			// Flannel stores addresses as integers and takes zero for
			// "not set".
			return def, nil
		}
		if !network.Contains(a) {
			return netip.Addr{}, cfgErr(key, "%s is outside %s %s: use an address inside it", a, f.net, network)
		}
		if p := netip.PrefixFrom(a, subLen).Masked(); p.Addr() != a {
			return netip.Addr{}, cfgErr(key, "%s is not on a /%d boundary (%s): use %s", a, subLen, f.len, p.Addr())
		}
		return a, nil
	}
	lo, err := parseBound(f.min, rawMin, addOffset(first, size))
	if err != nil {
		return 0, netip.Addr{}, netip.Addr{}, err
	}
	hi, err := parseBound(f.max, rawMax, last)
	if err != nil {
		return 0, netip.Addr{}, netip.Addr{}, err
	}
	if hi.Less(lo) {
		// Flannel accepts this and then never finds a free subnet.
		return 0, netip.Addr{}, netip.Addr{}, cfgErr(f.max, "%s is below %s %s: no subnet lies between them", hi, f.min, lo)
	}
	return subLen, lo, hi, nil
}

// subnetSize is 2^(bits-subLen) as a big integer.
func subnetSize(bits, subLen int) *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), uint(bits-subLen))
}

func addrInt(a netip.Addr) *big.Int {
	b := a.AsSlice()
	return new(big.Int).SetBytes(b)
}

func intAddr(v *big.Int, bits int) (netip.Addr, bool) {
	if v.Sign() < 0 || v.BitLen() > bits {
		return netip.Addr{}, false
	}
	buf := make([]byte, bits/8)
	v.FillBytes(buf)
	a, _ := netip.AddrFromSlice(buf)
	return a, true
}

func addOffset(a netip.Addr, off *big.Int) netip.Addr {
	r, ok := intAddr(new(big.Int).Add(addrInt(a), off), a.BitLen())
	if !ok {
		return netip.Addr{}
	}
	return r
}

// rangeCount is the number of /subLen subnets from lo to hi inclusive.
func rangeCount(lo, hi netip.Addr, subLen int) *big.Int {
	d := new(big.Int).Sub(addrInt(hi), addrInt(lo))
	d.Rsh(d, uint(lo.BitLen()-subLen))
	return d.Add(d, big.NewInt(1))
}

// maxCandidates caps Subnets: an IPv6 network can hold more /64s than an int
// counts, and no cluster has more nodes than this.
const maxCandidates = 1 << 24

// Subnets is the number of subnets a node can be given: those between
// SubnetMin and SubnetMax (IPv6SubnetMin/Max for an IPv6-only network). In
// a dual-stack network the i-th IPv4 subnet is paired with the i-th IPv6
// subnet, as Flannel pairs them, so it is the smaller of the two counts. It
// is capped at 1<<24.
func (c *Config) Subnets() int {
	n := -1
	if c.EnableIPv4 {
		n = capCount(rangeCount(c.SubnetMin, c.SubnetMax, c.SubnetLen))
	}
	if c.EnableIPv6 {
		n6 := capCount(rangeCount(c.IPv6SubnetMin, c.IPv6SubnetMax, c.IPv6SubnetLen))
		if n < 0 || n6 < n {
			n = n6
		}
	}
	return max(n, 0)
}

func capCount(v *big.Int) int {
	if !v.IsInt64() || v.Int64() > maxCandidates {
		return maxCandidates
	}
	return int(v.Int64())
}

// Subnet returns the i-th candidate, 0 ≤ i < Subnets(): the IPv4 subnet
// (zero when IPv4 is disabled) and the IPv6 subnet (zero when IPv6 is
// disabled). It panics if i is out of range.
func (c *Config) Subnet(i int) (sn, sn6 netip.Prefix) {
	if i < 0 || i >= c.Subnets() {
		panic(fmt.Sprintf("subnet: candidate %d out of range [0,%d)", i, c.Subnets()))
	}
	idx := big.NewInt(int64(i))
	if c.EnableIPv4 {
		off := new(big.Int).Mul(idx, subnetSize(32, c.SubnetLen))
		sn = netip.PrefixFrom(addOffset(c.SubnetMin, off), c.SubnetLen)
	}
	if c.EnableIPv6 {
		off := new(big.Int).Mul(idx, subnetSize(128, c.IPv6SubnetLen))
		sn6 = netip.PrefixFrom(addOffset(c.IPv6SubnetMin, off), c.IPv6SubnetLen)
	}
	return sn, sn6
}

// Index returns the candidate index of sn (or of sn6 for an IPv6-only
// network), and false when it is not a candidate of c: wrong length, not
// aligned, or outside SubnetMin..SubnetMax.
func (c *Config) Index(sn, sn6 netip.Prefix) (int, bool) {
	var p netip.Prefix
	var lo netip.Addr
	var subLen int
	switch {
	case c.EnableIPv4 && sn.IsValid():
		p, lo, subLen = sn, c.SubnetMin, c.SubnetLen
	case c.EnableIPv6 && sn6.IsValid():
		p, lo, subLen = sn6, c.IPv6SubnetMin, c.IPv6SubnetLen
	default:
		return 0, false
	}
	if p.Bits() != subLen || p.Masked() != p || p.Addr().BitLen() != lo.BitLen() || p.Addr().Less(lo) {
		return 0, false
	}
	d := rangeCount(lo, p.Addr(), subLen)
	d.Sub(d, big.NewInt(1))
	if !d.IsInt64() || d.Int64() >= int64(c.Subnets()) {
		return 0, false
	}
	return int(d.Int64()), true
}

// Contains reports whether the lease subnets sn and sn6 fit c: each enabled
// family's subnet is a candidate (right length, aligned, between the min and
// the max), and in a dual-stack network both are present. A lease that no
// longer fits (the config changed) is not reused.
func (c *Config) Contains(sn, sn6 netip.Prefix) bool {
	if c.EnableIPv4 != sn.IsValid() || c.EnableIPv6 != sn6.IsValid() {
		return false
	}
	if c.EnableIPv4 {
		if _, ok := c.Index(sn, netip.Prefix{}); !ok {
			return false
		}
	}
	if c.EnableIPv6 {
		if !sn6.Addr().Is6() || sn6.Bits() != c.IPv6SubnetLen || sn6.Masked() != sn6 ||
			sn6.Addr().Less(c.IPv6SubnetMin) || c.IPv6SubnetMax.Less(sn6.Addr()) {
			return false
		}
	}
	return true
}

// noKey4 is the IPv4 part Flannel writes in the key of an IPv6-only lease.
const noKey4 = "0.0.0.0-0"

// KeyName is the name of a lease key under <prefix>/subnets/, in Flannel's
// form: "10.244.3.0-24", or "10.244.3.0-24&fc00:0:0:3::-64" for a
// dual-stack lease, or "0.0.0.0-0&fc00:0:0:3::-64" for an IPv6-only one.
func KeyName(sn, sn6 netip.Prefix) string {
	k := noKey4
	if sn.IsValid() {
		k = sn.Addr().String() + "-" + strconv.Itoa(sn.Bits())
	}
	if sn6.IsValid() {
		k += "&" + sn6.Addr().String() + "-" + strconv.Itoa(sn6.Bits())
	}
	return k
}

// ParseKeyName parses a lease key name (the part after <prefix>/subnets/).
// sn is zero for an IPv6-only key, sn6 for a key without an IPv6 part. Both
// must be valid, masked prefixes of the right family.
func ParseKeyName(name string) (sn, sn6 netip.Prefix, err error) {
	v4, v6, dual := strings.Cut(name, "&")
	if v4 != noKey4 || !dual {
		if sn, err = parseKeyPart(v4, false); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: %w", name, err)
		}
	}
	if dual {
		if sn6, err = parseKeyPart(v6, true); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: %w", name, err)
		}
	}
	return sn, sn6, nil
}

func parseKeyPart(s string, v6 bool) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, errors.New("want ADDR-LEN")
	}
	p, err := netip.ParsePrefix(s[:i] + "/" + s[i+1:])
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() || p.Addr().Is6() != v6 {
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv%d subnet", p, map[bool]int{false: 4, true: 6}[v6])
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set", p)
	}
	return p, nil
}
