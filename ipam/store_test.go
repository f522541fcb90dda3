package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The cross-process test re-executes this test binary as a helper that
// allocates addresses and prints them; these variables configure it.
const (
	helperDirEnv    = "WEFT_IPAM_HELPER_DIR"
	helperIDEnv     = "WEFT_IPAM_HELPER_ID"
	helperCountEnv  = "WEFT_IPAM_HELPER_COUNT"
	helperSubnetEnv = "WEFT_IPAM_HELPER_SUBNET"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		if err := allocHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func allocHelper(dir string) error {
	n, err := strconv.Atoi(os.Getenv(helperCountEnv))
	if err != nil {
		return err
	}
	subnet, err := netip.ParsePrefix(os.Getenv(helperSubnetEnv))
	if err != nil {
		return err
	}
	s, err := Open(dir, "net")
	if err != nil {
		return err
	}
	defer s.Close()
	for i := range n {
		ip, _, err := s.Allocate(subnet, Attachment{ContainerID: fmt.Sprintf("%s-%d", os.Getenv(helperIDEnv), i), IfName: "eth0"})
		if err != nil {
			return err
		}
		fmt.Println(ip)
	}
	return nil
}

func openT(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, "net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func att(id string) Attachment { return Attachment{ContainerID: id, IfName: "eth0"} }

func mustAlloc(t *testing.T, s *Store, subnet string, a Attachment) netip.Addr {
	t.Helper()
	ip, _, err := s.Allocate(netip.MustParsePrefix(subnet), a)
	if err != nil {
		t.Fatalf("allocate %v: %v", a, err)
	}
	return ip
}

func TestUsable(t *testing.T) {
	tests := []struct {
		subnet      string
		first, last string
		wantErr     bool
	}{
		{subnet: "10.244.3.0/24", first: "10.244.3.2", last: "10.244.3.254"},
		{subnet: "10.244.3.1/24", first: "10.244.3.2", last: "10.244.3.254"},
		{subnet: "10.244.0.0/16", first: "10.244.0.2", last: "10.244.255.254"},
		{subnet: "10.244.3.4/30", first: "10.244.3.6", last: "10.244.3.6"},
		{subnet: "10.0.0.0/8", first: "10.0.0.2", last: "10.255.255.254"},
		{subnet: "10.244.3.0/31", wantErr: true},
		{subnet: "10.244.3.0/32", wantErr: true},
		{subnet: "fd00::/64", first: "fd00::2", last: "fd00::ffff:ffff:ffff:ffff"},
		{subnet: "fd10:0:0:3::1/64", first: "fd10:0:0:3::2", last: "fd10::3:ffff:ffff:ffff:ffff"},
		{subnet: "fd10::/126", first: "fd10::2", last: "fd10::3"},
		{subnet: "fd10::/127", wantErr: true},
		{subnet: "::ffff:10.0.0.0/120", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.subnet, func(t *testing.T) {
			first, last, err := Usable(netip.MustParsePrefix(tt.subnet))
			if tt.wantErr {
				if !errors.Is(err, ErrBadSubnet) {
					t.Fatalf("err = %v, want ErrBadSubnet", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if first.String() != tt.first || last.String() != tt.last {
				t.Errorf("Usable = %s..%s, want %s..%s", first, last, tt.first, tt.last)
			}
		})
	}
}

func TestAllocateSkipsReservedAndExhausts(t *testing.T) {
	s := openT(t, t.TempDir())
	// 10.0.0.0/29: .0 network, .1 gateway, .7 broadcast; .2-.6 usable.
	var got []string
	for i := range 5 {
		got = append(got, mustAlloc(t, s, "10.0.0.1/29", att(fmt.Sprint("c", i))).String())
	}
	if want := "10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6"; strings.Join(got, " ") != want {
		t.Fatalf("allocated %v, want %s", got, want)
	}
	_, _, err := s.Allocate(netip.MustParsePrefix("10.0.0.1/29"), att("c-more"))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("6th allocation: err = %v, want ErrExhausted", err)
	}
	if !strings.Contains(err.Error(), "10.0.0.0/29") || !strings.Contains(err.Error(), "5 usable") {
		t.Errorf("exhaustion error does not name the subnet and size: %v", err)
	}
	// Freeing one makes exactly that one available again.
	if _, err := s.Release(att("c2")); err != nil {
		t.Fatal(err)
	}
	if ip := mustAlloc(t, s, "10.0.0.0/29", att("c-more")); ip.String() != "10.0.0.4" {
		t.Errorf("after release got %s, want 10.0.0.4", ip)
	}
}

// TestAllocateEachDualStack is a dual-stack pod: one address per family in
// one step, idempotent, each family round-robin on its own, and all or
// nothing when one family is full.
func TestAllocateEachDualStack(t *testing.T) {
	s := openT(t, t.TempDir())
	v4, v6 := netip.MustParsePrefix("10.0.0.1/29"), netip.MustParsePrefix("fd10:0:0:3::1/64")
	dual := []netip.Prefix{v4, v6}
	got, err := s.AllocateEach(dual, att("a"))
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != (Allocated{IP: netip.MustParseAddr("10.0.0.2"), Created: true}) ||
		got[1] != (Allocated{IP: netip.MustParseAddr("fd10:0:0:3::2"), Created: true}) {
		t.Fatalf("first dual-stack pod got %+v", got)
	}
	again, err := s.AllocateEach(dual, att("a"))
	if err != nil || again[0] != (Allocated{IP: got[0].IP}) || again[1] != (Allocated{IP: got[1].IP}) {
		t.Fatalf("repeated AllocateEach = %+v, %v; want the same addresses, not created", again, err)
	}
	// An IPv6-only pod takes the next IPv6 address; the IPv4 round-robin
	// is untouched by it.
	if ip := mustAlloc(t, s, "fd10:0:0:3::/64", att("b")); ip.String() != "fd10:0:0:3::3" {
		t.Errorf("IPv6-only pod got %s, want fd10:0:0:3::3", ip)
	}
	if ip := mustAlloc(t, s, "10.0.0.0/29", att("c")); ip.String() != "10.0.0.3" {
		t.Errorf("IPv4-only pod got %s, want 10.0.0.3", ip)
	}
	// Fill the IPv4 /29 (.2-.6); a dual-stack pod then gets nothing, not
	// an IPv6 address alone.
	for i := range 3 {
		mustAlloc(t, s, "10.0.0.0/29", att(fmt.Sprint("fill", i)))
	}
	before, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AllocateEach([]netip.Prefix{v6, v4}, att("full")); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.0.0.0/29") {
		t.Fatalf("dual-stack pod in a full IPv4 subnet: err = %v, want ErrExhausted naming 10.0.0.0/29", err)
	}
	after, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("a failed AllocateEach left allocations: before %v, after %v", before, after)
	}
	// Release frees both families of the pod.
	freed, err := s.Release(att("a"))
	if err != nil || len(freed) != 2 {
		t.Errorf("Release(a) = %v, %v; want its two addresses", freed, err)
	}
	if _, err := s.AllocateEach([]netip.Prefix{v4, netip.MustParsePrefix("10.1.0.0/24")}, att("x")); err == nil {
		t.Error("AllocateEach took two IPv4 subnets")
	}
}

func TestAllocateRoundRobin(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	a := mustAlloc(t, s, "10.0.0.0/24", att("a"))
	mustAlloc(t, s, "10.0.0.0/24", att("b"))
	if _, err := s.Release(att("a")); err != nil {
		t.Fatal(err)
	}
	// A just-freed address is not reused at once, even by a new process.
	s2 := openT(t, dir)
	c := mustAlloc(t, s2, "10.0.0.0/24", att("c"))
	if c == a || c.String() != "10.0.0.4" {
		t.Errorf("got %s after freeing %s, want 10.0.0.4", c, a)
	}
}

func TestAllocateWrapsAround(t *testing.T) {
	s := openT(t, t.TempDir())
	for i := range 5 {
		mustAlloc(t, s, "10.0.0.0/29", att(fmt.Sprint("c", i)))
	}
	if _, err := s.Release(att("c0")); err != nil {
		t.Fatal(err)
	}
	if ip := mustAlloc(t, s, "10.0.0.0/29", att("x")); ip.String() != "10.0.0.2" {
		t.Errorf("got %s, want wrap-around to 10.0.0.2", ip)
	}
}

func TestAllocateSameAttachmentIsIdempotent(t *testing.T) {
	s := openT(t, t.TempDir())
	subnet := netip.MustParsePrefix("10.0.0.0/24")
	ip1, created1, err := s.Allocate(subnet, att("a"))
	if err != nil {
		t.Fatal(err)
	}
	ip2, created2, err := s.Allocate(subnet, att("a"))
	if err != nil {
		t.Fatal(err)
	}
	if ip1 != ip2 || !created1 || created2 {
		t.Errorf("second allocate = %s created=%t, first = %s created=%t", ip2, created2, ip1, created1)
	}
	// Another interface of the same container is another attachment.
	ip3, _, err := s.Allocate(subnet, Attachment{ContainerID: "a", IfName: "net1"})
	if err != nil {
		t.Fatal(err)
	}
	if ip3 == ip1 {
		t.Errorf("net1 got eth0's address %s", ip3)
	}
	allocs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 2 {
		t.Errorf("store holds %v, want 2 allocations", allocs)
	}
}

func TestSubnetChange(t *testing.T) {
	s := openT(t, t.TempDir())
	old := mustAlloc(t, s, "10.1.0.1/24", att("a"))
	mustAlloc(t, s, "10.1.0.1/24", att("b"))
	// The node now owns 10.2.0.0/30: one usable address, .6... of its own.
	ip, created, err := s.Allocate(netip.MustParsePrefix("10.2.0.1/30"), att("a"))
	if err != nil {
		t.Fatal(err)
	}
	if ip.String() != "10.2.0.2" || !created {
		t.Fatalf("after subnet change a got %s (created=%t), want new 10.2.0.2; old was %s", ip, created, old)
	}
	// The old subnet's free addresses are never used, even when the new one
	// is full.
	_, _, err = s.Allocate(netip.MustParsePrefix("10.2.0.1/30"), att("c"))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted", err)
	}
	// Release by attachment frees both the old and the new address.
	freed, err := s.Release(att("a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(freed) != 2 {
		t.Errorf("released %v, want a's two addresses", freed)
	}
}

func TestOutside(t *testing.T) {
	dir := t.TempDir()
	if got, err := Outside(dir, "net", netip.MustParsePrefix("10.2.0.0/24")); err != nil || got != nil {
		t.Fatalf("no store: %v, %v; want nothing", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "net")); !os.IsNotExist(err) {
		t.Fatalf("Outside created the store (%v)", err)
	}
	s := openT(t, dir)
	stale := mustAlloc(t, s, "10.1.0.1/24", att("old"))
	mustAlloc(t, s, "10.2.0.1/24", att("new"))
	got, err := Outside(dir, "net", netip.MustParsePrefix("10.2.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].IP != stale || got[0].Attachment != att("old") {
		t.Errorf("outside 10.2.0.0/24: %v, want only %s of old", got, stale)
	}
	if got, _ := Outside(dir, "net", netip.MustParsePrefix("10.0.0.0/8")); len(got) != 0 {
		t.Errorf("outside 10.0.0.0/8: %v, want none", got)
	}
	// Dual stack: an address is outside when no subnet of the node holds
	// it, whatever its family.
	v6 := mustAlloc(t, s, "fd10:2::/64", att("new"))
	got, err = Outside(dir, "net", netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("fd10:2::/64"))
	if err != nil || len(got) != 1 || got[0].IP != stale {
		t.Errorf("outside the dual-stack pair: %v, %v; want only %s", got, err, stale)
	}
	got, err = Outside(dir, "net", netip.MustParsePrefix("10.2.0.0/24"), netip.Prefix{})
	if err != nil || len(got) != 2 || got[1].IP != v6 {
		t.Errorf("outside the IPv4 subnet alone: %v, %v; want %s and %s", got, err, stale, v6)
	}
	// A holder of the lock (a hung plugin process) does not stall it.
	err = s.withLock(func() error {
		done := make(chan error, 1)
		go func() { _, err := Outside(dir, "net", netip.MustParsePrefix("10.2.0.0/24")); done <- err }()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("Outside waited for the store's lock")
		}
	})
	if err != nil {
		t.Error(err)
	}
	if _, err := Outside(dir, "../net", netip.MustParsePrefix("10.2.0.0/24")); err == nil {
		t.Error("Outside accepted the network name ../net")
	}
}

func TestReleaseUnknownAndReleaseIP(t *testing.T) {
	s := openT(t, t.TempDir())
	if freed, err := s.Release(att("nobody")); err != nil || len(freed) != 0 {
		t.Fatalf("Release(unknown) = %v, %v", freed, err)
	}
	a := mustAlloc(t, s, "10.0.0.0/24", att("a"))
	// ReleaseIP by a non-owner is a no-op.
	if err := s.ReleaseIP(a, att("b")); err != nil {
		t.Fatal(err)
	}
	if ips, err := s.Find(att("a")); err != nil || len(ips) != 1 || ips[0] != a {
		t.Fatalf("Find(a) = %v, %v; want [%s]", ips, err, a)
	}
	if err := s.ReleaseIP(a, att("a")); err != nil {
		t.Fatal(err)
	}
	if ips, err := s.Find(att("a")); err != nil || len(ips) != 0 {
		t.Fatalf("after ReleaseIP Find(a) = %v, %v", ips, err)
	}
	if err := s.ReleaseIP(a, att("a")); err != nil {
		t.Errorf("second ReleaseIP: %v", err)
	}
}

func TestOnDiskLayout(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "ipam")
	s := openT(t, dataDir)
	ip := mustAlloc(t, s, "10.0.0.0/24", Attachment{ContainerID: "ctr1", IfName: "eth0"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dataDir, "net", ip.String())
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// host-local's form: its DEL and GC match the content whole.
	if string(data) != "ctr1\r\neth0" {
		t.Errorf("allocation file holds %q, want host-local's %q", data, "ctr1\r\neth0")
	}
	for p, want := range map[string]os.FileMode{
		dataDir:                               0o700 | os.ModeDir,
		filepath.Join(dataDir, "net"):         0o700 | os.ModeDir,
		path:                                  0o600,
		filepath.Join(dataDir, "net", "lock"): 0o600,
		filepath.Join(dataDir, "net", "last_reserved_ip"): 0o600,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode(), want)
		}
	}
	// Allocations survive the process: a new Store sees them.
	s2 := openT(t, dataDir)
	allocs, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 1 || allocs[0].IP != ip || allocs[0].ContainerID != "ctr1" || allocs[0].IfName != "eth0" {
		t.Errorf("after reopen List = %+v", allocs)
	}
	// Closed stores refuse work instead of racing without the lock.
	if _, err := s.List(); err == nil {
		t.Error("List on a closed store succeeded")
	}
}

func TestReadsHostLocalFilesAndCleansTemps(t *testing.T) {
	dataDir := t.TempDir()
	s := openT(t, dataDir)
	dir := s.Dir()
	for name, content := range map[string]string{
		"10.0.0.7":       "hl-ctr\r\neth0",
		"10.0.0.8":       "old-weft\neth1",
		".tmp-deadbeef0": "half-written",
		"10.0.0.300":     "not an address: ignored",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	allocs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 2 || allocs[0].ContainerID != "hl-ctr" || allocs[0].IfName != "eth0" ||
		allocs[1].ContainerID != "old-weft" || allocs[1].IfName != "eth1" {
		t.Errorf("List = %+v, want the host-local allocation and the older weft one", allocs)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-deadbeef0")); !os.IsNotExist(err) {
		t.Errorf("stale temp file survived a locked operation: %v", err)
	}
}

func TestOpenAndAllocateErrors(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := Open(dir, name); err == nil {
			t.Errorf("Open(%q) succeeded", name)
		}
	}
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(blocker, "net"); err == nil {
		t.Error("Open under a regular file succeeded")
	}
	s := openT(t, dir)
	for _, a := range []Attachment{{ContainerID: ""}, {ContainerID: "a\nb", IfName: "eth0"}, {ContainerID: "a", IfName: "e\n"}} {
		if _, _, err := s.Allocate(netip.MustParsePrefix("10.0.0.0/24"), a); err == nil {
			t.Errorf("Allocate(%q) succeeded", a)
		}
	}
	if _, _, err := s.Allocate(netip.MustParsePrefix("10.0.0.0/31"), att("a")); !errors.Is(err, ErrBadSubnet) {
		t.Errorf("Allocate in a /31: err = %v, want ErrBadSubnet", err)
	}
}

// TestConcurrentGoroutines allocates from many goroutines, some with their
// own Store (own lock file description) and some sharing one.
func TestConcurrentGoroutines(t *testing.T) {
	dir := t.TempDir()
	shared := openT(t, dir)
	const workers, each = 16, 12
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[netip.Addr]Attachment{}
		errs []error
	)
	for w := range workers {
		wg.Go(func() {
			s := shared
			if w%2 == 0 {
				var err error
				if s, err = Open(dir, "net"); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				defer s.Close()
			}
			for i := range each {
				a := att(fmt.Sprintf("w%d-%d", w, i))
				// Every third pod is dual-stack: both families under
				// the same guarantees.
				subnets := []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}
				if i%3 == 0 {
					subnets = append(subnets, netip.MustParsePrefix("fd10:9::/64"))
				}
				got, err := s.AllocateEach(subnets, a)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				for _, g := range got {
					if prev, dup := seen[g.IP]; dup {
						errs = append(errs, fmt.Errorf("%s given to %v and %v", g.IP, prev, a))
					} else {
						seen[g.IP] = a
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	allocs, err := shared.List()
	if err != nil {
		t.Fatal(err)
	}
	want := workers*each + workers*((each+2)/3)
	if len(seen) != want || len(allocs) != want {
		t.Fatalf("%d distinct addresses handed out, %d in store; want %d", len(seen), len(allocs), want)
	}
	for _, a := range allocs {
		if seen[a.IP] != a.Attachment {
			t.Errorf("store says %s is %v, allocator said %v", a.IP, a.Attachment, seen[a.IP])
		}
	}
	// Release concurrently; the store ends empty.
	for a := range seen {
		wg.Go(func() {
			if _, err := shared.Release(seen[a]); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if allocs, err := shared.List(); err != nil || len(allocs) != 0 {
		t.Fatalf("after releasing everything List = %v, %v", allocs, err)
	}
}

// TestConcurrentProcesses runs several processes against one store at once:
// the flock, not the in-process mutex, must keep them apart.
func TestConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	const procs, each = 5, 40
	cmds := make([]*exec.Cmd, procs)
	outs := make([]strings.Builder, procs)
	for p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			helperDirEnv+"="+dir,
			helperIDEnv+"="+fmt.Sprint("p", p),
			helperCountEnv+"="+fmt.Sprint(each),
			helperSubnetEnv+"=10.7.0.1/24",
		)
		cmd.Stdout = &outs[p]
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[p] = cmd
	}
	for p, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v", p, err)
		}
	}
	seen := map[string]int{}
	for p := range procs {
		for _, line := range strings.Fields(outs[p].String()) {
			if prev, dup := seen[line]; dup {
				t.Errorf("%s handed to process %d and %d", line, prev, p)
			}
			seen[line] = p
		}
	}
	if len(seen) != procs*each {
		t.Fatalf("%d distinct addresses, want %d", len(seen), procs*each)
	}
	allocs, err := openT(t, dir).List()
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != procs*each {
		t.Errorf("store holds %d allocations, want %d", len(allocs), procs*each)
	}
}
