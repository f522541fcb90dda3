package masq

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
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
}

var (
	_ Manager    = (*NFTables)(nil)
	_ PeerFilter = (*NFTables)(nil)
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

func (m *NFTables) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if m.netns != nil {
		opts = append(opts, nftables.WithNetNSFd(int(m.netns.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink: %w", err)
	}
	return c, nil
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
		return fmt.Errorf("nftables: ensure table inet %s for network %s: %w", m.table.Name, r.Network, err)
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
	m.logger.Debug("nftables table removed", "table", m.table.Name)
	return nil
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
	e = append(e, &expr.Counter{})
	switch r.verdict {
	case verdictReturn:
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	case verdictAccept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
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
// table and one named set per family. The sets are flushed and refilled and
// the chain rewritten in one batch, so there is no moment where a current
// peer is dropped or a removed one still accepted after the call returns.
func (m *NFTables) EnsurePeerFilter(ctx context.Context, port uint16, peers []netip.Addr) error {
	if port == 0 {
		return fmt.Errorf("%w: peer filter port 0", ErrInvalidRules)
	}
	var v4, v6 []nftables.SetElement
	seen := make(map[netip.Addr]bool, len(peers))
	for _, p := range peers {
		p = p.Unmap()
		if !p.IsValid() || p.Zone() != "" {
			return fmt.Errorf("%w: peer address %q", ErrInvalidRules, p)
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		if p.Is4() {
			v4 = append(v4, nftables.SetElement{Key: p.AsSlice()})
		} else {
			v6 = append(v6, nftables.SetElement{Key: p.AsSlice()})
		}
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
	set4 := &nftables.Set{Table: m.table, Name: nftPeers4, KeyType: nftables.TypeIPAddr, Comment: "weft vxlan peers"}
	set6 := &nftables.Set{Table: m.table, Name: nftPeers6, KeyType: nftables.TypeIP6Addr, Comment: "weft vxlan peers"}
	for _, s := range []struct {
		set  *nftables.Set
		elem []nftables.SetElement
	}{{set4, v4}, {set6, v6}} {
		if err := c.AddSet(s.set, nil); err != nil {
			return fmt.Errorf("nftables: add set %s: %w", s.set.Name, err)
		}
		c.FlushSet(s.set)
		if len(s.elem) > 0 {
			if err := c.SetAddElements(s.set, s.elem); err != nil {
				return fmt.Errorf("nftables: add elements to %s: %w", s.set.Name, err)
			}
		}
	}
	in := c.AddChain(m.input())
	c.FlushChain(in)
	for _, s := range []struct {
		set *nftables.Set
		v6  bool
	}{{set4, false}, {set6, true}} {
		match := append(nfproto(s.v6), udpDport(port)...)
		srcOff := uint32(12)
		size := uint32(4)
		if s.v6 {
			srcOff, size = 8, 16
		}
		accept := append(append([]expr.Any{}, match...),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: srcOff, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: s.set.Name, SetID: s.set.ID},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictAccept},
		)
		drop := append(append([]expr.Any{}, match...), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
		c.AddRule(&nftables.Rule{Table: m.table, Chain: in, Exprs: accept, UserData: nftComment("weft-peer-accept")})
		c.AddRule(&nftables.Rule{Table: m.table, Chain: in, Exprs: drop, UserData: nftComment("weft-peer-drop")})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: ensure peer filter on udp port %d: %w", port, err)
	}
	m.logger.Debug("nftables peer filter ensured", "table", m.table.Name, "port", port, "peers", len(seen))
	return nil
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
	c.AddTable(m.table)
	in := c.AddChain(m.input())
	c.FlushChain(in)
	c.DelChain(in)
	for _, s := range []*nftables.Set{
		{Table: m.table, Name: nftPeers4, KeyType: nftables.TypeIPAddr},
		{Table: m.table, Name: nftPeers6, KeyType: nftables.TypeIP6Addr},
	} {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("nftables: add set %s: %w", s.Name, err)
		}
		c.DelSet(s)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: remove peer filter: %w", err)
	}
	m.logger.Debug("nftables peer filter removed", "table", m.table.Name)
	return nil
}
