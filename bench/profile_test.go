package main

import "testing"

func TestParsePerfReport(t *testing.T) {
	const out = `# To display the perf.data header info, please use --header/--header-only options.
#
# Total Lost Samples: 0
#
# Samples: 4K of event 'cpu-clock:pppH'
# Event count (approx.): 9000000000
#
# Overhead  Command  Shared Object      Symbol
# ........  .......  .................  ..........................
#
    41.20%  weftd    [kernel.kallsyms]  [k] _raw_spin_unlock_irqrestore
     9.05%  weftd    weftd              [.] runtime.memmove
     0.60%  iperf3   libc.so.6          [.] __memcpy_avx_unaligned

`
	shares, samples := parsePerfReport(out)
	if samples != "4K samples of cpu-clock:pppH" {
		t.Errorf("samples = %q", samples)
	}
	want := []Share{
		{41.2, "weftd [kernel.kallsyms] [k] _raw_spin_unlock_irqrestore"},
		{9.05, "weftd weftd [.] runtime.memmove"},
		{0.6, "iperf3 libc.so.6 [.] __memcpy_avx_unaligned"},
	}
	if len(shares) != len(want) {
		t.Fatalf("shares = %v, want %v", shares, want)
	}
	for i := range want {
		if shares[i] != want[i] {
			t.Errorf("share %d = %+v, want %+v", i, shares[i], want[i])
		}
	}
	if got := top(shares, 2); len(got) != 2 {
		t.Errorf("top 2 = %v", got)
	}
}
