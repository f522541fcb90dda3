package reliability

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/lab"
)

// ipamEntries lists the IPAM store of a node: address file → "containerID
// ifname", and checks the store's modes (directory 0700, files 0600).
func ipamEntries(t *testing.T, n *lab.Node) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(n.IPAMDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == n.IPAMDir {
			return err
		}
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if st.Mode().Perm() != 0o700 {
				t.Errorf("IPAM directory %s has mode %o, want 700", path, st.Mode().Perm())
			}
			return nil
		}
		if st.Mode().Perm() != 0o600 && d.Name() != "lock" {
			t.Errorf("IPAM file %s has mode %o, want 600", path, st.Mode().Perm())
		}
		if strings.Count(d.Name(), ".") != 3 { // lock, last_reserved_ip
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out[d.Name()] = strings.Join(strings.Fields(string(data)), " ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func livePods(n *lab.Node) map[string]string {
	out := map[string]string{}
	for _, p := range n.Pods {
		out[p.IP.String()] = p.ContainerID + " eth0"
	}
	return out
}

// TestNodeReboot deletes n2's namespace and its pods' (all kernel state
// gone), keeps its disk (IPAM store), restarts weftd and re-creates the
// pods with new container IDs, as a node reboot and its runtime do.
// Measured: the subnet after the reboot (the same), the stale IPAM entries
// of the old pods before GC, and the store after CNI GC (exactly the live
// pods); full pod connectivity; file modes (subnet file 0644, IPAM
// 0700/0600).
func TestNodeReboot(t *testing.T) {
	t.Parallel()
	l := up(t, lab.Options{Name: labName("rb"), Nodes: 2, PodsPerNode: 2, Backend: "vxlan"})
	n2 := l.Node("n2")
	old := n2.Subnet
	if st, err := os.Stat(n2.SubnetFile); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("subnet file mode: %v %v, want 644", st.Mode().Perm(), err)
	}
	before := ipamEntries(t, n2)
	if len(before) != 2 {
		t.Fatalf("IPAM before: %v, want 2 entries", before)
	}
	if err := l.RebootNode(t.Context(), "n2"); err != nil {
		t.Fatal(err)
	}
	if n2.Subnet != old {
		t.Errorf("subnet after the reboot %s, was %s", n2.Subnet, old)
	}
	requireMatrix(t, l, "after the reboot")
	stale := ipamEntries(t, n2)
	if err := l.CNIGC(t.Context(), "n2"); err != nil {
		t.Fatalf("CNI GC: %v", err)
	}
	after := ipamEntries(t, n2)
	want := livePods(n2)
	record(t, "node n2 rebooted (namespaces deleted, IPAM dir kept, subnet file removed): subnet %s → %s; IPAM %d entries before GC (%d stale), %d after GC, live pods %d",
		old, n2.Subnet, len(stale), len(stale)-len(want), len(after), len(want))
	if len(stale) != 4 {
		t.Errorf("IPAM before GC: %v, want the 2 old and the 2 new pods", stale)
	}
	if !equalMaps(after, want) {
		t.Errorf("IPAM after GC %v, want exactly the live pods %v", after, want)
	}
	if st, err := os.Stat(n2.SubnetFile); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("rewritten subnet file mode: %v %v, want 644", st.Mode().Perm(), err)
	}
	// weftd's HTTP endpoints listen on localhost only.
	if out := run(t, l, "n2", "ss", "-Hltn"); !strings.Contains(out, "127.0.0.1:9474") || strings.Contains(out, "0.0.0.0:9474") || strings.Contains(out, "*:9474") {
		t.Errorf("weftd listeners:\n%s", out)
	}
}

func equalMaps(a, b map[string]string) bool {
	ka, kb := keys(a), keys(b)
	if !slices.Equal(ka, kb) {
		return false
	}
	for k := range a {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}
