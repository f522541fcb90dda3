package ipam

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	lockName = "lock"
	// hostLocalLineBreak separates the container ID and the interface
	// name in an allocation file, as host-local writes it: host-local's
	// DEL and GC (a node moving from Flannel shares its store) match the
	// whole content, so a file in another form is never released by DEL
	// and is deleted by a GC that lists its pod as live.
	hostLocalLineBreak = "\r\n"
	// lastReservedName is the last IPv4 address handed out;
	// lastReservedName6 the last IPv6 one. One file per family, so the two
	// families of dual-stack pods go round-robin each on its own.
	lastReservedName  = "last_reserved_ip"
	lastReservedName6 = "last_reserved_ip6"
	tmpPrefix         = ".tmp-"

	dirMode  = 0o700
	fileMode = 0o600
)

// ErrExhausted is returned (wrapped, with the subnet and counts) when every
// usable address of the subnet is allocated.
var ErrExhausted = errors.New("no free address")

// ErrBadSubnet is returned (wrapped) for a subnet the allocator cannot use:
// not an IP prefix, or too small to hold a gateway and one pod.
var ErrBadSubnet = errors.New("unusable subnet")

// Attachment names one pod interface: the runtime's container ID and the
// interface name inside the container (CNI_CONTAINERID, CNI_IFNAME).
type Attachment struct {
	ContainerID string
	IfName      string
}

// Allocation is one reserved address and the attachment that owns it.
type Allocation struct {
	IP netip.Addr
	Attachment
}

// Store is the on-disk allocation store of one network. Its methods are safe
// for concurrent use by goroutines and by other processes opening the same
// directory: each takes an in-process mutex and the directory's flock for
// its whole duration. After Close every method fails.
type Store struct {
	dir string

	mu   sync.Mutex // guards lock and serialises goroutines sharing s
	lock *os.File   // nil after Close
}

// Open opens (creating if needed) the store of network under dataDir.
// network must be a single path element, as CNI network names are.
func Open(dataDir, network string) (*Store, error) {
	dir, err := storeDir(dataDir, network)
	if err != nil {
		return nil, fmt.Errorf("open ipam store: %w", err)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("open ipam store: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return nil, fmt.Errorf("open ipam store: %w", err)
	}
	return &Store{dir: dir, lock: f}, nil
}

// storeDir is the directory of network's store under dataDir.
func storeDir(dataDir, network string) (string, error) {
	if network == "" || network == "." || network == ".." || strings.ContainsAny(network, `/\`) {
		return "", fmt.Errorf("network name %q is not a valid directory name", network)
	}
	return filepath.Join(dataDir, network), nil
}

// Dir is the directory holding the network's allocations.
func (s *Store) Dir() string { return s.dir }

// Close releases the lock file. It is safe to call twice.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close()
	s.lock = nil
	return err
}

// withLock runs f holding the in-process mutex and the directory flock.
func (s *Store) withLock(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return errors.New("ipam store is closed")
	}
	fd := int(s.lock.Fd())
	for {
		err := unix.Flock(fd, unix.LOCK_EX)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock %s: %w", s.lock.Name(), err)
		}
	}
	defer unix.Flock(fd, unix.LOCK_UN) //nolint:errcheck // closing the fd or exiting also unlocks
	if err := s.removeTempFilesLocked(); err != nil {
		return err
	}
	return f()
}

// removeTempFilesLocked deletes temp files left by a process killed while it
// held the lock: nobody else can be writing one now.
func (s *Store) removeTempFilesLocked() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", s.dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale temp file: %w", err)
			}
		}
	}
	return nil
}

// Usable returns the first and last address pods may get in subnet: the
// network address, the gateway (network+1) and, for IPv4, the broadcast
// address are skipped (IPv6 has no broadcast address; its network address
// is the subnet-router anycast address, RFC 4291). subnet may carry a host
// address (10.244.3.1/24, fd10:0:0:3::1/64), as the subnet file does.
func Usable(subnet netip.Prefix) (first, last netip.Addr, err error) {
	if !subnet.IsValid() || subnet.Addr().Is4In6() || subnet.Addr().Zone() != "" {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("%w: %s is not an IPv4 or IPv6 prefix", ErrBadSubnet, subnet)
	}
	bits := subnet.Addr().BitLen()
	if subnet.Bits() > bits-2 {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("%w: %s is smaller than a /%d and has no room for a gateway and a pod", ErrBadSubnet, subnet, bits-2)
	}
	p := subnet.Masked()
	gw := p.Addr().Next()
	first = gw.Next()
	last = lastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev() // before the broadcast address
	}
	return first, last, nil
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Gateway returns the gateway address of subnet: the network address + 1.
func Gateway(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// Allocate returns the address att holds in subnet, or reserves the next
// free one after the last reserved (round-robin). created reports whether
// this call reserved it. Allocations att holds in another subnet (the node's
// subnet changed) are neither returned nor reused: only subnet's addresses
// are handed out. When every usable address is taken the error wraps
// ErrExhausted.
func (s *Store) Allocate(subnet netip.Prefix, att Attachment) (ip netip.Addr, created bool, err error) {
	got, err := s.AllocateEach([]netip.Prefix{subnet}, att)
	if err != nil {
		return netip.Addr{}, false, err
	}
	return got[0].IP, got[0].Created, nil
}

// Allocated is one address AllocateEach returned.
type Allocated struct {
	IP netip.Addr
	// Created reports whether this call reserved IP (false: att held it
	// already, e.g. a repeated ADD).
	Created bool
}

// AllocateEach does what Allocate does for each of subnets (one per address
// family of a dual-stack pod) in one locked step: it returns one address per
// subnet, in order, or reserves nothing. A failure in a later subnet undoes
// the reservations of the earlier ones, so a pod never keeps half its
// addresses.
func (s *Store) AllocateEach(subnets []netip.Prefix, att Attachment) ([]Allocated, error) {
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	type want struct {
		p           netip.Prefix
		first, last netip.Addr
	}
	wants := make([]want, 0, len(subnets))
	for _, sn := range subnets {
		first, last, err := Usable(sn)
		if err != nil {
			return nil, err
		}
		for _, w := range wants {
			if w.p.Addr().Is4() == sn.Addr().Is4() {
				return nil, fmt.Errorf("allocate for %s/%s: %s and %s are of one family: give at most one subnet per family", att.ContainerID, att.IfName, w.p, sn.Masked())
			}
		}
		wants = append(wants, want{sn.Masked(), first, last})
	}
	out := make([]Allocated, len(wants))
	var cur netip.Prefix // the subnet an error is about
	err := s.withLock(func() error {
		allocs, err := s.listLocked()
		if err != nil {
			return err
		}
		taken := make(map[netip.Addr]bool, len(allocs))
		for _, a := range allocs {
			taken[a.IP] = true
		}
		var reserved []netip.Addr
		undo := func(err error) error {
			for _, ip := range reserved {
				err = errors.Join(err, s.removeLocked(ip))
			}
			return err
		}
		for i, w := range wants {
			cur = w.p
			if ip, ok := held(allocs, att, w.p, w.first, w.last); ok {
				out[i] = Allocated{IP: ip}
				continue
			}
			ip, err := s.reserveNextLocked(w.p, w.first, w.last, taken, att)
			if err != nil {
				return undo(err)
			}
			reserved = append(reserved, ip)
			out[i] = Allocated{IP: ip, Created: true}
		}
		if len(reserved) == 0 {
			return nil
		}
		return s.syncDirLocked()
	})
	if err != nil {
		return nil, fmt.Errorf("allocate in %s for %s/%s: %w", cur, att.ContainerID, att.IfName, err)
	}
	return out, nil
}

// held returns the address att holds in p between first and last.
func held(allocs []Allocation, att Attachment, p netip.Prefix, first, last netip.Addr) (netip.Addr, bool) {
	for _, a := range allocs {
		if a.Attachment == att && p.Contains(a.IP) && inRange(a.IP, first, last) {
			return a.IP, true
		}
	}
	return netip.Addr{}, false
}

// reserveNextLocked reserves the first address not in taken after the last
// reserved one of p's family, wrapping around, and records it as the last
// reserved.
func (s *Store) reserveNextLocked(p netip.Prefix, first, last netip.Addr, taken map[netip.Addr]bool, att Attachment) (netip.Addr, error) {
	lastName := lastReservedName
	if p.Addr().Is6() {
		lastName = lastReservedName6
	}
	start := first
	if lr, err := s.lastReservedLocked(lastName); err != nil {
		return netip.Addr{}, err
	} else if lr.IsValid() && inRange(lr, first, last) && lr != last {
		start = lr.Next()
	}
	cand := start
	for {
		if !taken[cand] {
			ok, err := s.reserveLocked(cand, att)
			if err != nil {
				return netip.Addr{}, err
			}
			if ok {
				taken[cand] = true
				if err := s.writeLastReservedLocked(lastName, cand); err != nil {
					return netip.Addr{}, errors.Join(err, s.removeLocked(cand))
				}
				return cand, nil
			}
		}
		if cand == last {
			cand = first
		} else {
			cand = cand.Next()
		}
		if cand == start {
			return netip.Addr{}, fmt.Errorf("%w: all %s usable addresses are allocated; delete pods or run CNI GC to free stale ones", ErrExhausted, addrCount(first, last))
		}
	}
}

// Release frees every address held by att, in any subnet, and returns them.
// Releasing an attachment that holds nothing succeeds.
func (s *Store) Release(att Attachment) ([]netip.Addr, error) {
	var freed []netip.Addr
	err := s.withLock(func() error {
		allocs, err := s.listLocked()
		if err != nil {
			return err
		}
		for _, a := range allocs {
			if a.Attachment != att {
				continue
			}
			if err := s.removeLocked(a.IP); err != nil {
				return err
			}
			freed = append(freed, a.IP)
		}
		if len(freed) == 0 {
			return nil
		}
		return s.syncDirLocked()
	})
	if err != nil {
		return freed, fmt.Errorf("release %s/%s: %w", att.ContainerID, att.IfName, err)
	}
	return freed, nil
}

// ReleaseIP frees ip if att holds it; it is a no-op when ip is free or held
// by another attachment. It undoes a failed ADD without touching anything
// else.
func (s *Store) ReleaseIP(ip netip.Addr, att Attachment) error {
	err := s.withLock(func() error {
		a, ok, err := s.readLocked(ip)
		if err != nil || !ok || a.Attachment != att {
			return err
		}
		if err := s.removeLocked(ip); err != nil {
			return err
		}
		return s.syncDirLocked()
	})
	if err != nil {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	return nil
}

// List returns every allocation, in any subnet, sorted by address.
func (s *Store) List() ([]Allocation, error) {
	var allocs []Allocation
	err := s.withLock(func() error {
		var err error
		allocs, err = s.listLocked()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list allocations: %w", err)
	}
	return allocs, nil
}

// Outside returns the allocations in the store of network under dataDir
// whose address is in none of subnets (the node's subnet of each family it
// has; zero prefixes are skipped): pods holding an address from a subnet the
// node no longer has. It never creates a store; where there is none,
// nothing is outside. It reads without the lock, so a plugin process hung
// while holding it cannot stall the caller: an allocation file is whole
// once its name exists (link(2)), and one made or freed meanwhile may be
// missed or seen, which is fine for what this is for, a warning.
func Outside(dataDir, network string, subnets ...netip.Prefix) ([]Allocation, error) {
	dir, err := storeDir(dataDir, network)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	all, err := (&Store{dir: dir}).listLocked()
	if err != nil {
		return nil, fmt.Errorf("list allocations: %w", err)
	}
	return slices.DeleteFunc(all, func(a Allocation) bool {
		return slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(a.IP) })
	}), nil
}

// Find returns the addresses att holds, in any subnet.
func (s *Store) Find(att Attachment) ([]netip.Addr, error) {
	allocs, err := s.List()
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, a := range allocs {
		if a.Attachment == att {
			ips = append(ips, a.IP)
		}
	}
	return ips, nil
}

func (s *Store) listLocked() ([]Allocation, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.dir, err)
	}
	var allocs []Allocation
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // lock, last_reserved_ip, temp files
		}
		a, ok, err := s.readLocked(ip)
		if err != nil {
			return nil, err
		}
		if ok {
			allocs = append(allocs, a)
		}
	}
	slices.SortFunc(allocs, func(a, b Allocation) int { return a.IP.Compare(b.IP) })
	return allocs, nil
}

// readLocked reads the allocation file of ip; ok is false when there is none.
func (s *Store) readLocked(ip netip.Addr) (a Allocation, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(s.dir, ip.String()))
	if errors.Is(err, fs.ErrNotExist) {
		return Allocation{}, false, nil
	}
	if err != nil {
		return Allocation{}, false, fmt.Errorf("read allocation: %w", err)
	}
	// host-local's "id\r\nifname", as we write it; older weft wrote
	// "id\nifname". Accept both.
	id, ifname, _ := strings.Cut(string(data), "\n")
	return Allocation{
		IP: ip,
		Attachment: Attachment{
			ContainerID: strings.TrimSpace(id),
			IfName:      strings.TrimSpace(ifname),
		},
	}, true, nil
}

// reserveLocked creates the allocation file of ip atomically. ok is false if
// the file already exists.
func (s *Store) reserveLocked(ip netip.Addr, att Attachment) (ok bool, err error) {
	tmp, err := s.writeTempLocked([]byte(att.ContainerID + hostLocalLineBreak + att.IfName))
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	err = os.Link(tmp, filepath.Join(s.dir, ip.String()))
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reserve %s: %w", ip, err)
	}
	return true, nil
}

func (s *Store) removeLocked(ip netip.Addr) error {
	err := os.Remove(filepath.Join(s.dir, ip.String()))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove allocation: %w", err)
	}
	return nil
}

func (s *Store) lastReservedLocked(name string) (netip.Addr, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return netip.Addr{}, nil
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read last reserved address: %w", err)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Addr{}, nil // garbage: start from the beginning
	}
	return ip, nil
}

func (s *Store) writeLastReservedLocked(name string, ip netip.Addr) error {
	tmp, err := s.writeTempLocked([]byte(ip.String()))
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write last reserved address: %w", err)
	}
	return nil
}

// writeTempLocked writes data to a new fsynced temp file in the store
// directory and returns its path.
func (s *Store) writeTempLocked(data []byte) (string, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("temp name: %w", err)
	}
	path := filepath.Join(s.dir, tmpPrefix+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return "", fmt.Errorf("create temp file: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write temp file: %w", err)
	}
	return path, nil
}

// syncDirLocked makes created, linked and removed names durable.
func (s *Store) syncDirLocked() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", s.dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sync %s: %w", s.dir, err)
	}
	return nil
}

func validAttachment(att Attachment) error {
	if att.ContainerID == "" || strings.ContainsAny(att.ContainerID, "\r\n") {
		return fmt.Errorf("container ID %q is empty or spans lines", att.ContainerID)
	}
	if strings.ContainsAny(att.IfName, "\r\n") {
		return fmt.Errorf("interface name %q spans lines", att.IfName)
	}
	return nil
}

func inRange(ip, first, last netip.Addr) bool {
	return ip.Compare(first) >= 0 && ip.Compare(last) <= 0
}

// addrCount is the number of addresses from first to last, in decimal (an
// IPv6 range may hold more than a uint64 counts).
func addrCount(first, last netip.Addr) string {
	n := new(big.Int).Sub(new(big.Int).SetBytes(last.AsSlice()), new(big.Int).SetBytes(first.AsSlice()))
	return n.Add(n, big.NewInt(1)).String()
}
