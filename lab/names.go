package lab

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"regexp"
	"strings"
)

// DefaultName is the lab name used when none is given.
const DefaultName = "weft"

// DefaultNetwork is the pod network of a lab that names none.
const DefaultNetwork = "10.244.0.0/16"

// DefaultStateRoot holds one directory per lab. It is on tmpfs: a reboot
// forgets labs, as it forgets their namespaces.
const DefaultStateRoot = "/run/weft-lab"

// Underlay addresses: labs use 198.19.0.0/16, one /24 per lab.
const (
	underlayFirst = 198
	underlayNext  = 19
	etcdHost      = 2
	nodeHostBase  = 10 // node K is .10+K
	etcdPort      = 2379
	healthzAddr   = "127.0.0.1:9474"
	underlayIface = "eth0"
	bridgeName    = "br0"
	etcdPortName  = "etcd"
	// MaxNodes is how many nodes fit in one lab's /24 after the fixed hosts.
	MaxNodes = 240
)

// ErrBadName is returned for a lab name that is not usable in namespace
// names.
var ErrBadName = errors.New("bad lab name")

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,23}$`)

// ValidateName checks that name is short lower-case letters, digits and
// dashes, starting with a letter.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) || strings.HasSuffix(name, "-") {
		return fmt.Errorf("%w %q: use 1-24 of a-z, 0-9 and '-', starting with a letter", ErrBadName, name)
	}
	return nil
}

// octetFor is the preferred third octet of the lab's underlay: a hash of its
// name, so the same name gets the same addresses every time.
func octetFor(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % 256)
}

// pickOctet returns the preferred octet for name, or the next one not in
// used.
func pickOctet(name string, used map[int]bool) (int, error) {
	o := octetFor(name)
	for range 256 {
		if !used[o] {
			return o, nil
		}
		o = (o + 1) % 256
	}
	return 0, errors.New("every 198.19.x.0/24 underlay is taken by another lab; remove one with `weftctl lab down`")
}

func underlayPrefix(octet int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{underlayFirst, underlayNext, byte(octet), 0}), 24)
}

func hostAddr(octet, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{underlayFirst, underlayNext, byte(octet), byte(host)})
}

// Namespace names.
func switchNS(lab string) string      { return lab + "-sw" }
func etcdNS(lab string) string        { return lab + "-etcd" }
func nodeName(k int) string           { return fmt.Sprintf("n%d", k) }
func podName(k, j int) string         { return fmt.Sprintf("n%d-p%d", k, j) }
func nsName(lab, short string) string { return lab + "-" + short }
func labNSPattern(lab string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(lab) + `-(sw|etcd|n[0-9]+(-p[0-9]+)?)$`)
}
