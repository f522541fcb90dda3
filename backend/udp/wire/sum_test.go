package wire

import (
	"math/rand/v2"
	"testing"
)

// refSum is RFC 1071 word by word: the reference for sum.
func refSum(b []byte, initial uint64) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	return fold(s)
}

func TestSumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3000)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	ones := make([]byte, 3000)
	for i := range ones {
		ones[i] = 0xff // every add carries: exercises the carry chain
	}
	for _, b := range [][]byte{buf, ones} {
		for n := range 200 {
			for _, off := range []int{0, 1, 3} {
				for _, initial := range []uint64{0, 0x1fffe, 0xffff_ffff} {
					p := b[off : off+n*13%2900]
					if got, want := fold(sum(p, initial)), refSum(p, initial); got != want {
						t.Fatalf("len %d off %d initial %#x: sum %#04x, want %#04x", len(p), off, initial, got, want)
					}
				}
			}
		}
	}
}

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 1460)
	for i := range buf {
		buf[i] = byte(i)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		_ = Checksum(buf)
	}
}
