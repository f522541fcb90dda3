package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/lab"
)

// TestCNIStress drives the real plugin on a lab node the way a runtime
// under pressure does: 200 pod cycles, 20 at a time, where each ADD and
// each DEL is SIGKILLed at a random moment with probability 1/3. A killed
// DEL is retried (runtimes retry DEL until it succeeds); a killed ADD is
// left to GC, as after a runtime restart. Then GC runs with the live pods as
// the valid attachments. Measured: kills, and that the IPAM store and the
// node's veths then match the live pods exactly.
func TestCNIStress(t *testing.T) {
	t.Parallel()
	l := up(t, lab.Options{Name: labName("cs"), Nodes: 1, PodsPerNode: 0, Backend: "host-gw"})
	n1 := l.Node("n1")
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	data, err := os.ReadFile(n1.ConfList())
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	// The weft entry of weftd's conflist, as a runtime hands it to the plugin.
	var conf map[string]any
	if err := json.Unmarshal(list.Plugins[0], &conf); err != nil {
		t.Fatal(err)
	}
	conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
	plugin := func(ctx context.Context, cmd, id, netns string, extra map[string]any, kill bool) error {
		c := map[string]any{}
		for k, v := range conf {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		stdin, _ := json.Marshal(c)
		p := exec.CommandContext(ctx, "ip", "netns", "exec", n1.NS, filepath.Join(l.BinDir, "weft"))
		p.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netns, "CNI_IFNAME=eth0", "CNI_PATH=" + l.BinDir}
		p.Stdin = strings.NewReader(string(stdin))
		if err := p.Start(); err != nil {
			return err
		}
		if kill {
			// `ip netns exec` execs the plugin in place: this PID is it.
			time.AfterFunc(time.Duration(rand.IntN(60_000))*time.Microsecond, func() { _ = p.Process.Kill() })
		}
		return p.Wait()
	}

	const cycles, workers = 200, 20
	ctx := ctxFor(t, 4*time.Minute)
	var (
		mu                       sync.Mutex
		live                     []string
		addKills, delKills, dels int
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				id := fmt.Sprintf("stress-%03d", i)
				ns := fmt.Sprintf("%s-cs%03d", l.Name, i)
				if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
					t.Errorf("ip netns add %s: %v %s", ns, err, out)
					continue
				}
				t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
				addErr := plugin(ctx, "ADD", id, "/run/netns/"+ns, nil, rand.IntN(3) == 0)
				keep := i%2 == 0 && addErr == nil
				if !keep && addErr == nil {
					// The pod goes away: DEL, retried until it succeeds.
					for attempt := 0; ; attempt++ {
						err := plugin(ctx, "DEL", id, "/run/netns/"+ns, nil, attempt == 0 && rand.IntN(3) == 0)
						if err == nil {
							break
						}
						mu.Lock()
						delKills++
						mu.Unlock()
						if ctx.Err() != nil {
							return
						}
					}
				}
				mu.Lock()
				switch {
				case addErr != nil:
					addKills++
				case keep:
					live = append(live, id)
				default:
					dels++
				}
				mu.Unlock()
			}
		})
	}
	for i := range cycles {
		jobs <- i
	}
	close(jobs)
	wg.Wait()

	valid := make([]map[string]string, 0, len(live))
	for _, id := range live {
		valid = append(valid, map[string]string{"containerID": id, "ifname": "eth0"})
	}
	if err := plugin(ctx, "GC", "", "", map[string]any{"cni.dev/valid-attachments": valid}, false); err != nil {
		t.Fatalf("GC: %v", err)
	}

	// The store: one file per address holding "containerID\r\nifname"
	// (host-local's form).
	var stored []string
	dir := filepath.Join(n1.IPAMDir, list.Name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || !strings.Contains(e.Name(), ".") || strings.HasPrefix(e.Name(), "last_reserved") {
			continue // lock file, round-robin marker
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			stored = append(stored, f[0])
		}
	}
	slices.Sort(stored)
	slices.Sort(live)
	veths := strings.Count(run(t, l, "n1", "ip", "-o", "link", "show", "type", "veth"), "master "+conf["bridge"].(string))
	record(t, "%d CNI cycles 20-way with random SIGKILLs: %d ADDs killed, %d DEL attempts killed (retried), %d pods deleted, %d live; after GC the store holds %d addresses and the node %d pod veths",
		cycles, addKills, delKills, dels, len(live), len(stored), veths)
	if !slices.Equal(stored, live) {
		t.Errorf("after GC the IPAM store holds %d attachments, want exactly the %d live pods", len(stored), len(live))
	}
	if veths != len(live) {
		t.Errorf("after GC the node has %d pod veths, want %d", veths, len(live))
	}
	if addKills == 0 {
		t.Error("no ADD was killed: the test did not exercise what it claims")
	}
}
