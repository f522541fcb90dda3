package wireguard

import (
	"errors"
	"os"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// fakeTUN is a tun.Device whose reads return queued packets, each the
// number of segments a read of it splits into, as wireguard-go's TUN does:
// a packet needing more buffers than given is lost with ErrTooManySegments.
type fakeTUN struct {
	tun.Device
	queue  []int // segments per queued packet; a negative one is an error
	errAt  error // returned when the queue holds a negative entry
	minBuf int   // fewest buffers any Read was given
	reads  int   // inner Read calls
	lost   int   // packets dropped for want of buffers
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	f.reads++
	if f.minBuf == 0 || len(bufs) < f.minBuf {
		f.minBuf = len(bufs)
	}
	if len(f.queue) == 0 {
		return 0, errors.New("fake: would block") // batchTUN must not get here
	}
	segs := f.queue[0]
	f.queue = f.queue[1:]
	if segs < 0 {
		return 0, f.errAt
	}
	if segs > len(bufs) {
		f.lost++
		return len(bufs) - 1, tun.ErrTooManySegments
	}
	for i := range segs {
		sizes[i] = 100 + i
	}
	return segs, nil
}

func (f *fakeTUN) BatchSize() int { return 128 }

func TestBatchTUNRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		queue []int
		// reads: packets returned by each batchTUN.Read until the queue is empty.
		reads []int
	}{
		// Six small packets in one pass: the first, then more while the
		// buffers left could hold a TSO packet of the smallest MSS.
		{"small packets batched", []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, []int{6, 4}},
		// A TSO read leaves too few buffers for another: no second read.
		{"TSO alone", []int{46, 46}, []int{46, 46}},
		// Small packets, then a TSO packet of the smallest MSS: it still
		// fits, none is lost.
		{"small then TSO", []int{1, 1, 1, 1, 1, maxTSOSegments, 1}, []int{5 + maxTSOSegments, 1}},
		{"one", []int{1}, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTUN{queue: tc.queue}
			b := &batchTUN{Device: f, queued: func() bool { return len(f.queue) > 0 }}
			bufs, sizes := make([][]byte, f.BatchSize()), make([]int, f.BatchSize())
			var got []int
			for len(f.queue) > 0 && len(got) < 10 {
				n, err := b.Read(bufs, sizes, 0)
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				got = append(got, n)
			}
			if len(got) != len(tc.reads) {
				t.Fatalf("Read returned %v packets per call, want %v", got, tc.reads)
			}
			for i := range got {
				if got[i] != tc.reads[i] {
					t.Fatalf("Read returned %v packets per call, want %v", got, tc.reads)
				}
			}
			if f.lost != 0 {
				t.Errorf("%d packets lost for want of buffers", f.lost)
			}
			if f.minBuf < maxTSOSegments {
				t.Errorf("an inner Read got %d buffers, fewer than a TSO read may need (%d)", f.minBuf, maxTSOSegments)
			}
		})
	}
}

// An error on a later read comes back with the packets read before it, so
// wireguard-go sends them and then acts on the error.
func TestBatchTUNReadError(t *testing.T) {
	f := &fakeTUN{queue: []int{1, 1, -1, 1}, errAt: os.ErrClosed}
	b := &batchTUN{Device: f, queued: func() bool { return len(f.queue) > 0 }}
	bufs, sizes := make([][]byte, f.BatchSize()), make([]int, f.BatchSize())
	n, err := b.Read(bufs, sizes, 0)
	if n != 2 || !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read = %d, %v; want 2, %v", n, err, os.ErrClosed)
	}
}
