package masq

import (
	"net/netip"
	"runtime"
	"testing"
)

// maxFilterBytesPerPeer bounds TestInstalledFilterMemoryPerPeer.
const maxFilterBytesPerPeer = 350

// TestInstalledFilterMemoryPerPeer is the regression guard of what the
// nftables manager keeps per peer of an installed peer filter with the
// inner check: the keys of its three elements (its address, its pod
// subnet's and its address's source ranges) and, under its address, which
// they are: 448 bytes a peer when each key was held twice and the address's
// keys in four lists, 308 since.
func TestInstalledFilterMemoryPerPeer(t *testing.T) {
	const n = 5000
	peers := make([]FilterPeer, n)
	for i := range peers {
		a := netip.AddrFrom4([4]byte{100, 64, byte(i / 250), byte(1 + i%250)})
		peers[i] = FilterPeer{Addr: a, Sources: []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i/256), byte(i), 0}), 24), netip.PrefixFrom(a, 32)}}
	}
	f, err := newFilterSets(peers)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st := newInstalledFilter(4789, true, f)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := len(st.elems[0]) + len(st.elems[2]); got != 3*n {
		t.Fatalf("%d elements, want %d", got, 3*n)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes of live heap per peer", per)
	if per > maxFilterBytesPerPeer {
		t.Errorf("the installed filter keeps %d bytes per peer, want at most %d", per, maxFilterBytesPerPeer)
	}
	runtime.KeepAlive(st)
	runtime.KeepAlive(f)
}
