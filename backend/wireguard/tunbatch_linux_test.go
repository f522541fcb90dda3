package wireguard

import (
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weftnet/weft/internal/nstest"
)

// TestBatchTUNKernel: small packets queued on a real TUN come out of one
// Read together (wireguard-go's own Read returns one per call), and each
// arrives whole.
func TestBatchTUNKernel(t *testing.T) {
	n := nstest.New(t, "wgtun")
	name := nstest.UniqueName("wgt")
	var dev tun.Device
	if err := n.Do(func(ns.NetNS) error {
		var err error
		dev, err = tun.CreateTUN(name, 1420)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	n.MustRun(t, "ip", "link", "set", name, "up")
	n.MustRun(t, "ip", "addr", "add", "10.99.0.1/24", "dev", name)

	const sent, size = 5, 300
	if err := n.Do(func(ns.NetNS) error {
		c, err := net.Dial("udp4", "10.99.0.2:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for range sent {
			// A write into the TUN queues the packet before it returns.
			if _, err := c.Write(make([]byte, size)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	b := newBatchTUN(dev)
	if _, ok := b.(*batchTUN); !ok {
		t.Fatalf("newBatchTUN did not wrap the native TUN (%T)", b)
	}
	const offset = 16 // wireguard-go's headroom for its transport header
	bufs, sizes := make([][]byte, b.BatchSize()), make([]int, b.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, offset+1500)
	}
	// The kernel may queue its own packets first (IPv6 router solicitation,
	// MLD): they come out of the same reads and are not counted.
	got, reads := 0, 0
	for got < sent && reads < 4 {
		cnt, err := b.Read(bufs, sizes, offset)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		reads++
		for i := range cnt {
			p := bufs[i][offset : offset+sizes[i]]
			if p[0]>>4 == 4 && p[9] == 17 && net.IP(p[16:20]).Equal(net.IPv4(10, 99, 0, 2)) {
				if sizes[i] != 20+8+size {
					t.Errorf("packet %d is %d bytes, want %d", i, sizes[i], 20+8+size)
				}
				got++
			}
		}
	}
	if got != sent || reads != 1 {
		t.Fatalf("read %d of %d datagrams in %d Read calls, want all in 1", got, sent, reads)
	}
}
