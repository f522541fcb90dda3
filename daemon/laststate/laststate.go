package laststate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/subnet"
)

// FileName is the file's name in the node's state directory.
const FileName = "last-known-state.json"

// Format is the file format this package writes and the newest it reads.
const Format = 1

// Bounds of what is written and read. 65536 peers is a /8 network cut into
// /24s; a peer takes about 250 bytes.
const (
	MaxPeers = 65536
	MaxBytes = 32 << 20
	// KeepBad is how many refused files MoveAside keeps (the newest).
	KeepBad = 3
)

// State is what a node last knew.
type State struct {
	// Scope names the lease store and network the state was read from
	// (e.g. "etcd /coreos.com/network"). Load refuses a file of another
	// scope.
	Scope string
	// Config is the network config as the store returned it.
	Config *subnet.Config
	// Own is this node's lease, as the store last confirmed it.
	Own subnet.Lease
	// Peers are the peer leases the node accepted, each with its store
	// revision and expiry (zero for a reservation). Own is never among them.
	Peers []subnet.Lease
	// Revision is the store revision the peer set was read at.
	Revision int64
	// Writer is the version of the weftd that wrote the file (set by
	// Encode; informative only).
	Writer string
	// Saved is when the file was last written (its modification time); set
	// by Load, not stored.
	Saved time.Time
}

// Live returns the peers whose lease had not expired at now by their
// recorded expiry (reservations never expire), and how many had.
func (s *State) Live(now time.Time) (live []subnet.Lease, expired int) {
	for _, l := range s.Peers {
		if expiredAt(l, now) {
			expired++
			continue
		}
		live = append(live, l)
	}
	return live, expired
}

// OwnExpired reports whether the own lease had expired at now by its
// recorded expiry: then another node may hold the subnet, and the state
// must not be used.
func (s *State) OwnExpired(now time.Time) bool { return expiredAt(s.Own, now) }

func expiredAt(l subnet.Lease, now time.Time) bool {
	return !l.Reserved() && !l.Expiration.IsZero() && !now.Before(l.Expiration)
}

// Problem is what is wrong with a refused file.
type Problem int

const (
	// Truncated: the file ends early (or is empty).
	Truncated Problem = iota + 1
	// Corrupt: not the format, a checksum mismatch, or content that does
	// not validate (a subnet outside the network, a duplicate, too large).
	Corrupt
	// Newer: written by a newer weft, in a format this one does not read.
	Newer
	// OtherNetwork: written for another store scope or another node.
	OtherNetwork
)

func (p Problem) String() string {
	switch p {
	case Truncated:
		return "truncated"
	case Corrupt:
		return "corrupt"
	case Newer:
		return "from a newer weft"
	case OtherNetwork:
		return "from another network"
	}
	return "bad"
}

// Error is a file Load refused. Match it with errors.As.
type Error struct {
	Path    string
	Problem Problem
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("last known state %s is %s: %v", e.Path, e.Problem, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Hint says what an operator can do about the refused file.
func (e *Error) Hint() string {
	const rewritten = "weftd starts without it and writes a new one once the lease store answers"
	switch e.Problem {
	case Truncated, Corrupt:
		return "weftd writes it atomically, so a damaged file points at the disk or at something else writing there: check the disk (dmesg, df) and that only weftd uses --state-dir; " + rewritten
	case Newer:
		return "weft was downgraded; nothing to do: " + rewritten
	case OtherNetwork:
		return "--state-dir, --etcd-prefix (the store) or --public-ip changed, or the directory was copied from another node; if that is intended, nothing to do: " + rewritten
	}
	return rewritten
}

// Expect is what Load checks a file's identity against. Zero fields accept
// anything (weftctl reads a file whatever wrote it).
type Expect struct {
	Scope string
	// PublicIP, or for a node without IPv4 PublicIPv6, is the node's
	// address: a file whose own lease carries another was written by
	// another node.
	PublicIP, PublicIPv6 netip.Addr
}

// Load reads and validates the file at path. A missing file returns an
// error matching os.ErrNotExist; a refused one an *Error.
func Load(path string, want Expect) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxBytes {
		return nil, &Error{Path: path, Problem: Corrupt, Err: fmt.Errorf("%d bytes, more than the %d this weftd reads", fi.Size(), MaxBytes)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read last known state %s: %w", path, err)
	}
	st, err := Decode(data, want)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Path = path
		}
		return nil, err
	}
	st.Saved = fi.ModTime()
	return st, nil
}

// envelope is the file's outer object. State stays raw: the checksum is
// over its bytes as written.
type envelope struct {
	Format *int            `json:"format"`
	SHA256 string          `json:"sha256"`
	State  json.RawMessage `json:"state"`
}

// stateJSON is the state object. Decode reads it; encoding.state writes its
// fields in this order (TestEncodingIsStateJSON).
type stateJSON struct {
	Writer   string          `json:"writer,omitempty"`
	Scope    string          `json:"scope"`
	Config   json.RawMessage `json:"config"`
	Own      leaseJSON       `json:"own"`
	Peers    []leaseJSON     `json:"peers"`
	Revision int64           `json:"revision"`
}

type leaseJSON struct {
	Subnet     netip.Prefix      `json:"subnet,omitzero"`
	IPv6Subnet netip.Prefix      `json:"ipv6Subnet,omitzero"`
	Attrs      subnet.LeaseAttrs `json:"attrs"`
	Expiration time.Time         `json:"expiration,omitzero"`
	Revision   int64             `json:"revision"`
	LeaseID    int64             `json:"leaseID,omitempty"`
}

func toJSON(l subnet.Lease) leaseJSON {
	return leaseJSON{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, Attrs: l.Attrs, Expiration: l.Expiration, Revision: l.Revision, LeaseID: l.LeaseID}
}

func (l leaseJSON) lease() subnet.Lease {
	return subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, Attrs: l.Attrs, Expiration: l.Expiration, Revision: l.Revision, LeaseID: l.LeaseID}
}

// Decode parses and validates the file's bytes (see Load).
func Decode(data []byte, want Expect) (*State, error) {
	bad := func(p Problem, format string, a ...any) error {
		return &Error{Problem: p, Err: fmt.Errorf(format, a...)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, bad(Truncated, "the file is empty")
	}
	if len(data) > MaxBytes {
		return nil, bad(Corrupt, "%d bytes, more than the %d this weftd reads", len(data), MaxBytes)
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) && se.Offset >= int64(len(bytes.TrimRight(data, " \t\r\n"))) {
			return nil, bad(Truncated, "it ends after %d bytes, inside the JSON", len(data))
		}
		return nil, bad(Corrupt, "not the last-known-state format: %v", err)
	}
	switch {
	case env.Format == nil:
		return nil, bad(Corrupt, "no format field")
	case *env.Format > Format:
		return nil, bad(Newer, "format %d, this weftd reads format %d", *env.Format, Format)
	case *env.Format < 1:
		return nil, bad(Corrupt, "format %d", *env.Format)
	}
	sum := sha256.Sum256(env.State)
	if env.SHA256 != hex.EncodeToString(sum[:]) {
		return nil, bad(Corrupt, "checksum mismatch: the content changed after it was written")
	}
	var sj stateJSON
	if err := json.Unmarshal(env.State, &sj); err != nil {
		return nil, bad(Corrupt, "state: %v", err)
	}
	if want.Scope != "" && sj.Scope != want.Scope {
		return nil, bad(OtherNetwork, "written for %q, this weftd uses %q", sj.Scope, want.Scope)
	}
	cfg, err := subnet.ParseConfig(sj.Config)
	if err != nil {
		return nil, bad(Corrupt, "network config: %v", err)
	}
	st := &State{Scope: sj.Scope, Config: cfg, Own: sj.Own.lease(), Revision: sj.Revision, Writer: sj.Writer}
	if w := (subnet.LeaseAttrs{PublicIP: want.PublicIP, PublicIPv6: want.PublicIPv6}); (w.PublicIP.IsValid() || w.PublicIPv6.IsValid()) && !subnet.SameNode(st.Own.Attrs, w) {
		return nil, bad(OtherNetwork, "written by the node at %s, this node is %s", nodeAddr(st.Own.Attrs), nodeAddr(w))
	}
	for _, l := range sj.Peers {
		st.Peers = append(st.Peers, l.lease())
	}
	if _, err := validate(st); err != nil {
		return nil, bad(Corrupt, "%v", err)
	}
	return st, nil
}

// validate checks what the daemon relies on: every lease of the network
// and of its length, the own lease a real one of the config's backend, no
// peer twice or on the own subnet, the bounds kept. It returns the peers'
// indexes in the order of their subnets (the order they are written in):
// duplicates are neighbours there, so no set of every subnet is built.
func validate(st *State) ([]int32, error) {
	cfg := st.Config
	if err := fits(cfg, st.Own); err != nil {
		return nil, fmt.Errorf("own lease: %w", err)
	}
	if st.Own.Attrs.BackendType != cfg.BackendType {
		return nil, fmt.Errorf("own lease: backend %q, the network uses %q", st.Own.Attrs.BackendType, cfg.BackendType)
	}
	if len(st.Peers) > MaxPeers {
		return nil, fmt.Errorf("%d peers, more than %d", len(st.Peers), MaxPeers)
	}
	if st.Revision < 0 {
		return nil, fmt.Errorf("revision %d", st.Revision)
	}
	own := st.Own.Key()
	for _, l := range st.Peers {
		if err := fits(cfg, l); err != nil {
			return nil, fmt.Errorf("peer %s: %w", l.Key(), err)
		}
		if l.Key() == own {
			return nil, fmt.Errorf("peer %s: listed as the own lease", own)
		}
	}
	order := sortedPeers(st.Peers)
	for i := 1; i < len(order); i++ {
		if k := st.Peers[order[i]].Key(); k == st.Peers[order[i-1]].Key() {
			return nil, fmt.Errorf("peer %s: listed twice", k)
		}
	}
	return order, nil
}

// sortedPeers returns the indexes of peers in the order of their subnets
// (the key: IPv4 subnet, else IPv6). Indexes, not a sorted copy: with 10000
// peers a copy was 2.6 MB more while the file was written.
func sortedPeers(peers []subnet.Lease) []int32 {
	order := make([]int32, len(peers))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		ka, kb := peers[a].Key(), peers[b].Key()
		if c := ka.Addr().Compare(kb.Addr()); c != 0 {
			return c
		}
		return ka.Bits() - kb.Bits()
	})
	return order
}

// fits checks a lease's subnets against the network: in it, of its subnet
// length, aligned, and with an address to reach the node at.
func fits(cfg *subnet.Config, l subnet.Lease) error {
	if !l.Subnet.IsValid() && !l.IPv6Subnet.IsValid() {
		return errors.New("no subnet")
	}
	check := func(sn, network netip.Prefix, bits int, family string) error {
		if !sn.IsValid() {
			return nil
		}
		if !network.IsValid() || !network.Contains(sn.Addr()) || sn.Bits() != bits || sn.Masked() != sn {
			return fmt.Errorf("%s subnet %s is not a /%d of %s", family, sn, bits, network)
		}
		return nil
	}
	if err := check(l.Subnet, cfg.Network, cfg.SubnetLen, "IPv4"); err != nil {
		return err
	}
	if err := check(l.IPv6Subnet, cfg.IPv6Network, cfg.IPv6SubnetLen, "IPv6"); err != nil {
		return err
	}
	if !l.Attrs.PublicIP.IsValid() && !l.Attrs.PublicIPv6.IsValid() {
		return errors.New("no public IP")
	}
	if l.Revision < 0 {
		return fmt.Errorf("revision %d", l.Revision)
	}
	return nil
}

// nodeAddr is the address SameNode compares: PublicIP, else PublicIPv6.
func nodeAddr(a subnet.LeaseAttrs) netip.Addr {
	if a.PublicIP.IsValid() {
		return a.PublicIP
	}
	return a.PublicIPv6
}

// Encode renders st in the file format. writer names the weftd writing it.
// Peers are written sorted, so the same state always gives the same bytes.
// A state that would not validate on reading is refused.
func Encode(st *State, writer string) ([]byte, error) {
	e, err := newEncoding(st, writer)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(e.size)
	if err := e.file(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Save writes data (from Encode) to path atomically, mode 0600: temp file,
// fsync, rename, fsync of the directory.
func Save(path string, data []byte) error {
	if err := subnet.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("last known state: %w", err)
	}
	return nil
}

// encoding is a state on its way to the file, streamed: the state bytes are
// rendered once to be counted and checksummed (the checksum comes first in
// the file) and again into the file, never held whole in memory. With 10000
// peers holding them, their copy sorted and the JSON made weftd's RSS 11 MB
// larger after every burst of lease events.
type encoding struct {
	st     *State
	writer string
	config json.RawMessage
	order  []int32           // the peers sorted (validate)
	sum    [sha256.Size]byte // of the state bytes
	size   int               // of the file
}

func newEncoding(st *State, writer string) (*encoding, error) {
	if st.Config == nil {
		return nil, errors.New("last known state: no network config")
	}
	order, err := validate(st)
	if err != nil {
		return nil, fmt.Errorf("last known state: %w", err)
	}
	e := &encoding{st: st, writer: writer, order: order}
	var cfg bytes.Buffer
	if err := json.Compact(&cfg, st.Config.Raw); err != nil {
		return nil, fmt.Errorf("last known state: network config: %w", err)
	}
	e.config = cfg.Bytes()
	h := sha256.New()
	cw := &countingWriter{w: h}
	if err := e.state(cw); err != nil {
		return nil, err
	}
	copy(e.sum[:], h.Sum(nil))
	e.size = len(e.header()) + cw.n + len(fileEnd)
	if e.size > MaxBytes {
		return nil, fmt.Errorf("last known state: %d bytes, more than %d", e.size, MaxBytes)
	}
	return e, nil
}

const fileEnd = "}\n"

// pieceSize is about how much of the state bytes encoding.state renders
// before handing them on.
const pieceSize = 16 << 10

func (e *encoding) header() string {
	return fmt.Sprintf(`{"format":%d,"sha256":"%s","state":`, Format, hex.EncodeToString(e.sum[:]))
}

// file writes the whole file: the envelope around the state bytes.
func (e *encoding) file(w io.Writer) error {
	if _, err := io.WriteString(w, e.header()); err != nil {
		return err
	}
	cw := &countingWriter{w: w}
	h := sha256.New()
	if err := e.state(io.MultiWriter(cw, h)); err != nil {
		return err
	}
	if [sha256.Size]byte(h.Sum(nil)) != e.sum {
		return errors.New("last known state: the state changed while it was written") // Offer's contract broken
	}
	_, err := io.WriteString(w, fileEnd)
	return err
}

// state writes the state bytes: stateJSON's encoding, one peer at a time.
func (e *encoding) state(w io.Writer) error {
	st := e.st
	// stateJSON's fields in its order, as json.Marshal would write them,
	// handed on in pieces of about pieceSize: b keeps that size.
	b := bytes.NewBuffer(make([]byte, 0, pieceSize+pieceSize/4))
	enc := json.NewEncoder(b) // into b: no slice per peer
	var lj leaseJSON
	b.WriteByte('{')
	if e.writer != "" {
		writeField(b, "writer", e.writer, false)
	}
	writeField(b, "scope", st.Scope, e.writer != "")
	writeField(b, "config", e.config, true)
	writeField(b, "own", toJSON(st.Own), true)
	b.WriteString(`,"peers":[`)
	for i, idx := range e.order {
		if i > 0 {
			b.WriteByte(',')
		}
		lj = toJSON(st.Peers[idx])
		if err := enc.Encode(&lj); err != nil { // a pointer: no copy boxed per peer
			return fmt.Errorf("last known state: peer %s: %w", st.Peers[idx].Key(), err)
		}
		b.Truncate(b.Len() - 1) // Encode's newline
		if b.Len() >= pieceSize {
			if _, err := w.Write(b.Bytes()); err != nil {
				return err
			}
			b.Reset()
		}
	}
	b.WriteString(`]`)
	writeField(b, "revision", st.Revision, true)
	b.WriteByte('}')
	_, err := w.Write(b.Bytes())
	return err
}

// writeField appends "name":<v's JSON> to b, after a comma unless first.
// v is one of stateJSON's field values, which always encode.
func writeField(b *bytes.Buffer, name string, v any, comma bool) {
	if comma {
		b.WriteByte(',')
	}
	data, _ := json.Marshal(v)
	b.WriteString(`"` + name + `":`)
	b.Write(data)
}

// save streams the file to path atomically, as Save writes it.
func (e *encoding) save(path string) error {
	if err := subnet.WriteFileAtomicFunc(path, 0o600, e.file); err != nil {
		return fmt.Errorf("last known state: %w", err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// MoveAside renames a refused file to <path>.bad-<UTC time>, keeping only
// the KeepBad newest of those, and returns the new name.
func MoveAside(path string, now time.Time) (string, error) {
	to := path + ".bad-" + now.UTC().Format("20060102T150405.000Z")
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("move aside %s: %w", path, err)
	}
	dir, base := filepath.Dir(path), filepath.Base(path)+".bad-"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return to, fmt.Errorf("list %s: %w", dir, err)
	}
	var old []string // ReadDir sorts by name, and the names sort by time
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), base) {
			old = append(old, filepath.Join(dir, e.Name()))
		}
	}
	for len(old) > KeepBad {
		if err := os.Remove(old[0]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return to, fmt.Errorf("remove old %s: %w", old[0], err)
		}
		old = old[1:]
	}
	return to, nil
}
