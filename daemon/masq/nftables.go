package masq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// DefaultTable is the name of weft's nftables table (family inet).
const DefaultTable = "weft"

// nftables chain and set names inside weft's table.
const (
	nftPostrouting = "postrouting"
	nftForward     = "forward"
	nftInput       = "input"
	nftPeers4      = "vxlan-peers4"
	nftPeers6      = "vxlan-peers6"
	nftSources4    = "vxlan-sources4"
	nftSources6    = "vxlan-sources6"
)

// Options configures NewNFTables.
type Options struct {
	// Table is the name of weft's inet table; "" means DefaultTable.
	Table string
	// NetNS, when set, is the network namespace every call programs (its
	// file descriptor is used for each netlink socket and must stay open
	// while the Manager is used; ns.NetNS and *os.File satisfy it). Nil
	// means the namespace of the calling thread at each call.
	NetNS interface{ Fd() uintptr }
}

// NFTables is the nftables implementation of Manager and PeerFilter.
type NFTables struct {
	logger *slog.Logger
	table  *nftables.Table
	netns  interface{ Fd() uintptr }

	mu sync.Mutex // serialises batches so two of ours never interleave
	// inner is whether the kernel takes the VXLAN inner source check;
	// guarded by mu.
	inner innerSupport
	// setID numbers the sets of a batch; guarded by mu. A Set with ID 0
	// makes google/nftables number it from a package variable it updates
	// without a lock, a data race between two NFTables (the parallel
	// kernel tests); the kernel needs the ID unique only within a batch.
	setID uint32
	// filterRules is the number of rules of the peer filter this Manager
	// installed (0: none); guarded by mu. Verify checks it.
	filterRules int
	// filter is the peer filter as this Manager last installed it, for
	// updates that only add and delete the changed set elements; nil when
	// unknown (none installed, removed, or Verify found the table changed).
	// Guarded by mu.
	filter *installedFilter
}

var (
	_ Manager           = (*NFTables)(nil)
	_ PeerFilter        = (*NFTables)(nil)
	_ PeerFilterUpdater = (*NFTables)(nil)
)

// NewNFTables returns the nftables Manager. It checks that nf_tables
// answers (in opts.NetNS or the calling thread's namespace) so a kernel
// without it is reported at start, not at the first Ensure.
func NewNFTables(logger *slog.Logger, opts Options) (*NFTables, error) {
	name := opts.Table
	if name == "" {
		name = DefaultTable
	}
	m := &NFTables{
		logger: logger,
		table:  &nftables.Table{Name: name, Family: nftables.TableFamilyINet},
		netns:  opts.NetNS,
	}
	c, err := m.conn()
	if err != nil {
		return nil, err
	}
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return nil, fmt.Errorf("nftables: list tables (is nf_tables available?): %w", err)
	}
	return m, nil
}

func (m *NFTables) conn() (*nftables.Conn, error) { return m.connFor(0) }

// connFor is conn for a transaction that writes elems set elements. The
// kernel takes a transaction in one sendmsg, refused (EMSGSIZE) when it is
// larger than the socket's send buffer (212 KiB by default: ~2000 peers of
// the peer filter), so the buffer is raised to fit, as nft does
// (SO_SNDBUFFORCE; weftd has CAP_NET_ADMIN). Acks carry only the error
// code, not a copy of each request (NETLINK_CAP_ACK): a copy of a large
// request overflowed the receive buffer (ENOBUFS).
func (m *NFTables) connFor(elems int) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		if err := c.SetOption(netlink.CapAcknowledge, true); err != nil {
			return fmt.Errorf("NETLINK_CAP_ACK: %w", err)
		}
		if elems == 0 {
			return nil
		}
		return setSendBuffer(c, elems*filterElemBytes+filterBatchBytes)
	})}
	if m.netns != nil {
		opts = append(opts, nftables.WithNetNSFd(int(m.netns.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink: %w", err)
	}
	return c, nil
}

// filterElemBytes bounds what one peer filter element takes in a
// transaction (an IPv6 sources element: two 32-byte keys and their
// attributes), and filterBatchBytes the rest of it (tables, sets, chain,
// rules).
const (
	filterElemBytes  = 192
	filterBatchBytes = 64 << 10
)

// chunkElems is the most elements one message of a transaction carries:
// a message's element list is one netlink attribute, whose length is 16
// bits, so a list past 64 KiB (~2500 IPv4 peers' sources) came out garbled
// (the kernel answered ENOENT). Many messages of one transaction still
// apply at once.
const chunkElems = 256

// inChunks calls add (Conn.SetAddElements or SetDeleteElements) on elems
// chunkElems at a time.
func inChunks(s *nftables.Set, elems []nftables.SetElement, add func(*nftables.Set, []nftables.SetElement) error) error {
	for len(elems) > 0 {
		n := min(len(elems), chunkElems)
		if err := add(s, elems[:n]); err != nil {
			return err
		}
		elems = elems[n:]
	}
	return nil
}

// setSendBuffer raises c's send buffer to at least size bytes: with
// SO_SNDBUFFORCE, past net.core.wmem_max, or SO_SNDBUF (capped at it)
// without the capability.
func setSendBuffer(c *netlink.Conn, size int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if have, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil && have >= size {
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size); serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, size)
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("send buffer of %d bytes: %w", size, serr)
	}
	return nil
}

func (m *NFTables) postrouting() *nftables.Chain {
	return &nftables.Chain{
		Name: nftPostrouting, Table: m.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	}
}

func (m *NFTables) forward() *nftables.Chain {
	return &nftables.Chain{
		Name: nftForward, Table: m.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	}
}

func (m *NFTables) input() *nftables.Chain {
	return &nftables.Chain{
		Name: nftInput, Table: m.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	}
}

// Ensure implements Manager. The table and chains are added (a no-op when
// they exist), flushed and refilled in one batch: the kernel commits it as
// one transaction, so packets see either the old rules or the new ones.
func (m *NFTables) Ensure(ctx context.Context, r Rules) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	c.AddTable(m.table)

	post := c.AddChain(m.postrouting())
	c.FlushChain(post)
	if r.Masquerade {
		for _, rl := range natRules(r) {
			c.AddRule(&nftables.Rule{Table: m.table, Chain: post, Exprs: rl.nftExprs(!r.DisableRandomFully), UserData: nftComment(rl.comment)})
		}
	} else {
		// Adding then deleting in the same batch removes the chain whether
		// or not it existed, without a racy "list first".
		c.DelChain(post)
	}

	fwd := c.AddChain(m.forward())
	c.FlushChain(fwd)
	for _, rl := range forwardRules(r) {
		c.AddRule(&nftables.Rule{Table: m.table, Chain: fwd, Exprs: rl.nftExprs(false), UserData: nftComment(rl.comment)})
	}

	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: ensure table inet %s for network %s: %w", m.table.Name, r.networks(), err)
	}
	m.logger.Debug("nftables rules ensured", "table", m.table.Name, "network", r.Network, "subnet", r.Subnet,
		"ipv6Network", r.IPv6Network, "masquerade", r.Masquerade)
	return nil
}

// Remove implements Manager: it deletes weft's whole table, peer filter
// included.
func (m *NFTables) Remove(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	// add+delete in one batch: succeeds whether or not the table exists.
	c.AddTable(m.table)
	c.DelTable(m.table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: remove table inet %s: %w", m.table.Name, err)
	}
	m.filterRules, m.filter = 0, nil
	m.logger.Debug("nftables table removed", "table", m.table.Name)
	return nil
}

// Verify implements Manager: weft's table holds postrouting (when
// masquerading) and forward with the rule counts Ensure(r) gives, and the
// input chain with the peer filter's when this Manager installed one.
func (m *NFTables) Verify(ctx context.Context, r Rules) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("nftables: list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == m.table.Name }) {
		return m.changedLocked()
	}
	want := map[string]int{nftForward: len(forwardRules(r))}
	if r.Masquerade {
		want[nftPostrouting] = len(natRules(r))
	}
	if m.filterRules > 0 {
		want[nftInput] = m.filterRules
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("nftables: list chains: %w", err)
	}
	have := map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name == m.table.Name {
			have[ch.Name] = true
		}
	}
	for name, n := range want {
		if !have[name] {
			return m.changedLocked()
		}
		rules, err := c.GetRules(m.table, &nftables.Chain{Name: name, Table: m.table})
		if err != nil {
			return false, fmt.Errorf("nftables: list rules of %s: %w", name, err)
		}
		if len(rules) != n {
			return m.changedLocked()
		}
	}
	return true, nil
}

// nftComment encodes a rule comment the way nft(8) stores it, so `nft list`
// shows it.
func nftComment(s string) []byte {
	return userdata.Append(nil, userdata.TypeComment, append([]byte(s), 0))
}

// nftExprs renders the rule for an inet-family table. randomFully applies to
// masquerade verdicts.
func (r rule) nftExprs(randomFully bool) []expr.Any {
	var e []expr.Any
	if r.kubeMark {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(KubeProxyMark), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(KubeProxyMark)},
		)
	}
	if r.src.prefix.IsValid() || r.dst.prefix.IsValid() {
		e = append(e, nfproto(r.v6)...)
		srcOff, dstOff := uint32(12), uint32(16) // IPv4 header
		if r.v6 {
			srcOff, dstOff = 8, 24 // IPv6 header
		}
		e = append(e, prefixMatch(r.src, srcOff)...)
		e = append(e, prefixMatch(r.dst, dstOff)...)
	}
	if r.udpDport != 0 {
		e = append(e, udpDport(r.udpDport)...)
	}
	e = append(e, &expr.Counter{})
	switch r.verdict {
	case verdictReturn:
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	case verdictAccept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case verdictDrop:
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case verdictMasquerade:
		e = append(e, &expr.Masq{FullyRandom: randomFully})
	}
	return e
}

// nfproto matches the packet's family: in an inet table, header offsets
// mean nothing until the family is known.
func nfproto(v6 bool) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if v6 {
		p = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// prefixMatch loads the address at offset of the network header, masks it
// to the prefix length and compares.
func prefixMatch(m addrMatch, offset uint32) []expr.Any {
	if !m.prefix.IsValid() {
		return nil
	}
	p := m.prefix.Masked()
	addr := p.Addr().AsSlice()
	size := uint32(len(addr))
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size}}
	if p.Bits() < int(size*8) {
		mask := make([]byte, size)
		for i := range p.Bits() {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	op := expr.CmpOpEq
	if m.not {
		op = expr.CmpOpNeq
	}
	return append(e, &expr.Cmp{Op: op, Register: 1, Data: addr})
}

// EnsurePeerFilter implements PeerFilter with an input-hook chain in weft's
// table and named sets: the peers' addresses per family and, per family,
// the pairs (peer address . inner source prefix) in a concatenated interval
// set.
// The sets are flushed and refilled and the chain rewritten in one batch, so
// there is no moment where a current peer is dropped or a removed one still
// accepted after the call returns.
//
// The inner check reads the outer datagram: after the UDP (8) and VXLAN (8)
// headers and the inner Ethernet header (14) comes the inner IP header, so
// its EtherType is at transport offset 28 and its source address at 42 for
// IPv4 (nft's @th,224,16 and @th,336,32), 38 for IPv6 (@th,304,128): an
// IPv4 datagram must carry IPv4 (weft.<VNI>), an IPv6 one IPv6
// (weft-v6.<VNI>). A kernel without concatenated interval sets (before
// Linux 5.6) refuses the sets; the filter then matches the outer address
// only, and says so once.
func (m *NFTables) EnsurePeerFilter(ctx context.Context, port uint16, peers []FilterPeer) error {
	if port == 0 {
		return fmt.Errorf("%w: peer filter port 0", ErrInvalidRules)
	}
	f, err := newFilterSets(peers)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.probeLocked()
	inner := m.inner == innerSupported
	if st := m.filter; st != nil && st.port == port && st.inner == inner && !st.shrinksBeyond(f, maxFilterDeletes) {
		// The chain is as it was: change only the elements that differ,
		// a small transaction instead of every set flushed and refilled
		// and the chain rewritten (~10 ms each, the cost of every new peer).
		err := m.updateFilterLocked(st, f)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errRewriteCheaper) {
			m.logger.Debug("nftables peer filter update failed; rewriting it", "err", err)
		}
	}
	m.filter = nil
	c, err := m.connFor(f.len())
	if err != nil {
		return err
	}
	c.AddTable(m.table)
	// The rules reference the sets: they go first, so the sets can be
	// replaced.
	in := c.AddChain(m.input())
	c.FlushChain(in)
	sets := []*filterSet{
		{set: &nftables.Set{Table: m.table, Name: nftPeers4, KeyType: nftables.TypeIPAddr, Comment: "weft vxlan peers"}, elem: f.v4},
		{set: &nftables.Set{Table: m.table, Name: nftPeers6, KeyType: nftables.TypeIP6Addr, Comment: "weft vxlan peers"}, elem: f.v6},
	}
	if inner {
		sets = append(sets, &filterSet{set: sourcesSet(m.table), elem: f.sources4},
			&filterSet{set: sourcesSet6(m.table), elem: f.sources6})
	}
	for _, s := range sets {
		// An existing set is deleted and made anew in the same transaction,
		// not flushed and refilled: the kernel took 3.7 s to flush an
		// interval set of 5000 peers' sources and refill it, 50 ms to fill
		// a new one (TestPeerFilterRewriteOfManyPeers).
		old := *s.set
		if err := c.AddSet(m.numberedLocked(&old), nil); err != nil {
			return fmt.Errorf("nftables: add set %s: %w", s.set.Name, err)
		}
		c.DelSet(&old)
		if err := c.AddSet(m.numberedLocked(s.set), nil); err != nil {
			return fmt.Errorf("nftables: add set %s: %w", s.set.Name, err)
		}
		if len(s.elem) > 0 {
			if err := inChunks(s.set, s.elem, c.SetAddElements); err != nil {
				return fmt.Errorf("nftables: add elements to %s: %w", s.set.Name, err)
			}
		}
	}
	src4, src6 := sourcesOf(sets, inner)
	rules := peerFilterRules(port, sets[0].set, sets[1].set, src4, src6)
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: m.table, Chain: in, Exprs: r.exprs, UserData: nftComment(r.comment)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: ensure peer filter on udp port %d: %w", port, err)
	}
	m.filterRules = len(rules)
	m.filter = newInstalledFilter(port, inner, f)
	m.logger.Debug("nftables peer filter ensured", "table", m.table.Name, "port", port, "peers", len(f.v4)+len(f.v6), "innerCheck", inner)
	return nil
}

// innerSupport is what the probe found about the inner source check.
type innerSupport int

const (
	innerUnknown innerSupport = iota
	innerSupported
	innerUnsupported
)

// probeLocked finds out once whether the kernel takes the inner check.
func (m *NFTables) probeLocked() {
	if m.inner != innerUnknown {
		return
	}
	m.inner = m.probeInnerCheckLocked()
	if m.inner == innerUnsupported {
		m.logger.Warn("this kernel has no nftables concatenated interval sets (Linux 5.6+): VXLAN datagrams are filtered by peer address only, their inner source is not checked")
	}
}

// probeInnerCheckLocked asks the kernel for a concatenated interval set in
// weft's table (created and deleted in one batch).
func (m *NFTables) probeInnerCheckLocked() innerSupport {
	c, err := m.conn()
	if err != nil {
		return innerUnknown
	}
	c.AddTable(m.table)
	for i, probe := range []*nftables.Set{sourcesSet(m.table), sourcesSet6(m.table)} {
		probe.Name = fmt.Sprintf("probe-concat-interval-%d", i)
		if err := c.AddSet(m.numberedLocked(probe), nil); err != nil {
			return innerUnsupported
		}
		c.DelSet(probe)
	}
	if err := c.Flush(); err != nil {
		m.logger.Debug("nftables concatenated interval set refused", "err", err)
		return innerUnsupported
	}
	return innerSupported
}

// numberedLocked gives s the next set ID (see NFTables.setID) and returns
// it.
func (m *NFTables) numberedLocked(s *nftables.Set) *nftables.Set {
	m.setID++
	s.ID = m.setID
	return s
}

// sourcesSet is the set of (peer address . inner source range) pairs of
// IPv4 VXLAN datagrams.
func sourcesSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: nftSources4, Comment: "weft vxlan peer inner sources",
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr), Concatenation: true, Interval: true}
}

// sourcesSet6 is sourcesSet for IPv6 VXLAN datagrams carrying IPv6.
func sourcesSet6(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: nftSources6, Comment: "weft vxlan peer inner sources",
		KeyType: nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr), Concatenation: true, Interval: true}
}

// sourcesOf returns the sources sets of each family (nil without the inner
// check).
func sourcesOf(sets []*filterSet, inner bool) (v4, v6 *nftables.Set) {
	if !inner {
		return nil, nil
	}
	return sets[2].set, sets[3].set
}

type filterSet struct {
	set  *nftables.Set
	elem []nftables.SetElement
}

// changedLocked is Verify's "not as installed": what this Manager knows of
// its peer filter is stale too, so the next EnsurePeerFilter rewrites it.
func (m *NFTables) changedLocked() (bool, error) {
	m.filter = nil
	return false, nil
}

// maxFilterDeletes is the most elements a peer filter update deletes one
// by one; more, and it rewrites the sets.
const maxFilterDeletes = 64

// errRewriteCheaper says an update is better done as a full rewrite.
var errRewriteCheaper = errors.New("a rewrite is cheaper")

// UpdatePeerFilter implements masq.PeerFilterUpdater: one transaction of
// the elements of the changed and removed addresses that differ, computed
// from what this Manager installed, without visiting the other peers.
func (m *NFTables) UpdatePeerFilter(ctx context.Context, port uint16, changed []FilterPeer, removed []netip.Addr) error {
	f, err := newFilterSets(changed)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.probeLocked()
	st := m.filter
	if st == nil || st.port != port || st.inner != (m.inner == innerSupported) {
		return fmt.Errorf("nftables: update peer filter on udp port %d: %w", port, ErrPeerFilterUnknown)
	}
	affected := affectedAddrs(changed, removed)
	sets := m.filterSetsLocked()
	add, del := st.updateDiff(f, affected)
	for i := range sets {
		if len(del[i]) > maxFilterDeletes {
			return fmt.Errorf("%d elements of %s to delete: %w (%w)", len(del[i]), sets[i].Name, errRewriteCheaper, ErrPeerFilterUnknown)
		}
	}
	if err := m.applyFilterDiffLocked(sets, add, del); err != nil {
		// The sets changed behind weft's back: unknown now.
		m.filter = nil
		return fmt.Errorf("%w (%w)", err, ErrPeerFilterUnknown)
	}
	st.updated(f, affected)
	return nil
}

// filterSetsLocked are the peer filter's sets, as names for element
// changes: v4, v6, sources4, sources6.
func (m *NFTables) filterSetsLocked() [4]*nftables.Set {
	return [4]*nftables.Set{
		{Table: m.table, Name: nftPeers4, KeyType: nftables.TypeIPAddr},
		{Table: m.table, Name: nftPeers6, KeyType: nftables.TypeIP6Addr},
		sourcesSet(m.table),
		sourcesSet6(m.table),
	}
}

// applyFilterDiffLocked deletes del[i] from and adds add[i] to sets[i] in
// one transaction (none when there is nothing to change).
func (m *NFTables) applyFilterDiffLocked(sets [4]*nftables.Set, add, del [4][]nftables.SetElement) error {
	var c *nftables.Conn
	elems := 0
	for i := range sets {
		elems += len(add[i]) + len(del[i])
	}
	for i := range sets {
		if len(add[i]) == 0 && len(del[i]) == 0 {
			continue
		}
		if c == nil {
			var err error
			if c, err = m.connFor(elems); err != nil {
				return err
			}
		}
		if len(del[i]) > 0 {
			if err := inChunks(sets[i], del[i], c.SetDeleteElements); err != nil {
				return fmt.Errorf("nftables: delete elements of %s: %w", sets[i].Name, err)
			}
		}
		if len(add[i]) > 0 {
			if err := inChunks(sets[i], add[i], c.SetAddElements); err != nil {
				return fmt.Errorf("nftables: add elements to %s: %w", sets[i].Name, err)
			}
		}
	}
	if c == nil {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: update peer filter: %w", err)
	}
	return nil
}

// updateFilterLocked makes the installed filter st hold the elements of f
// in one transaction of the differences (none: no transaction). Any error
// (the sets changed behind weft's back) leaves st unchanged for the
// caller's full rewrite.
func (m *NFTables) updateFilterLocked(st *installedFilter, f filterSets) error {
	sets := m.filterSetsLocked()
	add, del, next := st.fullDiff(f)
	for i := range sets {
		if len(del[i]) > maxFilterDeletes {
			// The kernel removes an interval-set element at a cost that
			// grows with the set (1000 of 2000 took a second): a flush and
			// refill is cheaper then.
			return fmt.Errorf("%d elements of %s to delete: %w", len(del[i]), sets[i].Name, errRewriteCheaper)
		}
	}
	if err := m.applyFilterDiffLocked(sets, add, del); err != nil {
		return err
	}
	st.filterIndex = next
	return nil
}

// filterSets are the elements of the peer filter's sets.
type filterSets struct {
	v4, v6, sources4, sources6 []nftables.SetElement
}

// len is the number of elements in f.
func (f filterSets) len() int { return len(f.v4) + len(f.v6) + len(f.sources4) + len(f.sources6) }

// all are the elements of f by set: v4, v6, sources4, sources6.
func (f filterSets) all() [4][]nftables.SetElement {
	return [4][]nftables.SetElement{f.v4, f.v6, f.sources4, f.sources6}
}

// newFilterSets validates peers and builds the set elements. Duplicate
// peers are merged; of two nested source prefixes of one peer the wider is
// kept (interval sets refuse overlaps). Peers sorted by address, each once
// (as the daemon hands them), are taken in one pass with the element lists
// made at their size: a rewrite of thousands of peers then allocates little
// beyond the elements. A sources element's key and key end both begin
// with its peer address: the installed filter keeps the address once
// (filterIndex).
func newFilterSets(peers []FilterPeer) (filterSets, error) {
	var f filterSets
	if !ascending(peers) {
		peers = mergeFilterPeers(peers)
	}
	var n4, n6, s4, s6 int
	for _, p := range peers {
		if p.Addr.Unmap().Is4() {
			n4, s4 = n4+1, s4+len(p.Sources)
		} else {
			n6, s6 = n6+1, s6+len(p.Sources)
		}
	}
	f.v4, f.v6 = make([]nftables.SetElement, 0, n4), make([]nftables.SetElement, 0, n6)
	f.sources4, f.sources6 = make([]nftables.SetElement, 0, s4), make([]nftables.SetElement, 0, s6)
	var ps, kept []netip.Prefix // one peer's sources; reused
	for _, p := range peers {
		a := p.Addr.Unmap()
		if !a.IsValid() || a.Zone() != "" {
			return f, fmt.Errorf("%w: peer address %q", ErrInvalidRules, p.Addr)
		}
		if a.Is4() {
			f.v4 = append(f.v4, nftables.SetElement{Key: a.AsSlice()})
		} else {
			f.v6 = append(f.v6, nftables.SetElement{Key: a.AsSlice()})
		}
		ps = ps[:0]
		for _, sp := range p.Sources {
			if !sp.IsValid() {
				return f, fmt.Errorf("%w: inner source %q of peer %s", ErrInvalidRules, sp, a)
			}
			// An IPv4 datagram carries IPv4, an IPv6 one IPv6: a source
			// of the other family could never match.
			if sa := sp.Addr().Unmap(); sa.Is4() == a.Is4() {
				ps = append(ps, netip.PrefixFrom(sa, min(sp.Bits(), sa.BitLen())).Masked())
			}
		}
		slices.SortFunc(ps, func(x, y netip.Prefix) int { return cmp.Compare(x.Bits(), y.Bits()) })
		kept = kept[:0]
		for _, p := range ps {
			if !slices.ContainsFunc(kept, p.Overlaps) {
				kept = append(kept, p)
			}
		}
		slices.SortFunc(kept, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
		for _, p := range kept {
			e := nftables.SetElement{
				Key:    append(a.AsSlice(), p.Addr().AsSlice()...),
				KeyEnd: append(a.AsSlice(), lastAddr(p).AsSlice()...),
			}
			if a.Is4() {
				f.sources4 = append(f.sources4, e)
			} else {
				f.sources6 = append(f.sources6, e)
			}
		}
	}
	return f, nil
}

// ascending reports whether peers are sorted by address, each once.
func ascending(peers []FilterPeer) bool {
	for i := 1; i < len(peers); i++ {
		if peers[i-1].Addr.Unmap().Compare(peers[i].Addr.Unmap()) >= 0 {
			return false
		}
	}
	return true
}

// mergeFilterPeers merges the peers of one address into one, in the order
// the addresses first come; the callers' Sources are not changed.
func mergeFilterPeers(peers []FilterPeer) []FilterPeer {
	at := make(map[netip.Addr]int, len(peers))
	out := make([]FilterPeer, 0, len(peers))
	for _, p := range peers {
		a := p.Addr.Unmap()
		if i, ok := at[a]; ok {
			out[i].Sources = append(slices.Clip(out[i].Sources), p.Sources...)
			continue
		}
		at[a] = len(out)
		out = append(out, FilterPeer{Addr: p.Addr, Sources: p.Sources})
	}
	return out
}

// lastAddr is the highest address of the prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Registers for the concatenated lookup: the kernel reads the key from
// consecutive 32-bit registers, and NFT_REG_1 is NFT_REG32_00. The second
// field starts in the register after the first: NFT_REG32_01 after an IPv4
// address, NFT_REG32_04 after an IPv6 one.
const (
	regConcat0  = 1  // NFT_REG_1 (= NFT_REG32_00)
	regConcat1  = 9  // NFT_REG32_01
	regConcat1w = 12 // NFT_REG32_04
)

// Offsets into the transport header of a VXLAN datagram (UDP 8, VXLAN 8,
// inner Ethernet 14).
const (
	vxlanInnerEtherType = 8 + 8 + 12 // bytes, @th,224,16
	vxlanInnerSrc       = 8 + 8 + 14 + 12
	vxlanInnerSrc6      = 8 + 8 + 14 + 8 // @th,304,128
)

type nftRule struct {
	exprs   []expr.Any
	comment string
}

// peerFilterRules is the input chain: per family accept from peers (only
// packets of the datagram's family from the peer's sources, when the
// family's sources set is given), drop the rest from peers
// ("weft-inner-drop"), drop everyone else.
func peerFilterRules(port uint16, peers4, peers6, sources4, sources6 *nftables.Set) []nftRule {
	var out []nftRule
	for _, s := range []struct {
		set, sources *nftables.Set
		v6           bool
	}{{peers4, sources4, false}, {peers6, sources6, true}} {
		match := append(nfproto(s.v6), udpDport(port)...)
		srcOff, size := uint32(12), uint32(4)
		etherType, innerSrc, reg1 := uint16(unix.ETH_P_IP), uint32(vxlanInnerSrc), uint32(regConcat1)
		if s.v6 {
			srcOff, size = 8, 16
			etherType, innerSrc, reg1 = unix.ETH_P_IPV6, vxlanInnerSrc6, regConcat1w
		}
		fromPeer := append(slices.Clone(match),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: srcOff, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: s.set.Name, SetID: s.set.ID},
		)
		accept := slices.Clone(fromPeer)
		if s.sources != nil {
			accept = append(accept,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: vxlanInnerEtherType, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(etherType)},
				&expr.Payload{DestRegister: regConcat0, Base: expr.PayloadBaseNetworkHeader, Offset: srcOff, Len: size},
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: innerSrc, Len: size},
				&expr.Lookup{SourceRegister: regConcat0, SetName: s.sources.Name, SetID: s.sources.ID},
			)
		}
		out = append(out, nftRule{append(accept, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}), "weft-peer-accept"})
		if s.sources != nil {
			out = append(out, nftRule{append(fromPeer, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}), "weft-inner-drop"})
		}
		out = append(out, nftRule{append(slices.Clone(match), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}), "weft-peer-drop"})
	}
	return out
}

// udpDport matches UDP to port (after nfproto).
func udpDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// RemovePeerFilter implements PeerFilter. The rest of weft's table stays.
func (m *NFTables) RemovePeerFilter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	// Add-then-delete each object in one batch: succeeds whatever exists.
	// The chain goes first: it references the sets.
	m.probeLocked()
	c.AddTable(m.table)
	in := c.AddChain(m.input())
	c.FlushChain(in)
	c.DelChain(in)
	sets := []*nftables.Set{
		{Table: m.table, Name: nftPeers4, KeyType: nftables.TypeIPAddr},
		{Table: m.table, Name: nftPeers6, KeyType: nftables.TypeIP6Addr},
	}
	if m.inner == innerSupported {
		sets = append(sets, sourcesSet(m.table), sourcesSet6(m.table))
	}
	for _, s := range sets {
		if err := c.AddSet(m.numberedLocked(s), nil); err != nil {
			return fmt.Errorf("nftables: add set %s: %w", s.Name, err)
		}
		c.DelSet(s)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: remove peer filter: %w", err)
	}
	m.filterRules, m.filter = 0, nil
	m.logger.Debug("nftables peer filter removed", "table", m.table.Name)
	return nil
}
