package nstest

import (
	"os/exec"
	"strings"
	"testing"
)

func TestUnderlayConnectsNodesAndCleansUp(t *testing.T) {
	var names []string
	t.Run("build", func(t *testing.T) {
		nodes, addrs := Underlay(t, 2, 200)
		for _, n := range nodes {
			names = append(names, n.Name)
		}
		nodes[0].MustRun(t, "ping", "-c", "1", "-W", "2", addrs[1])
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left behind after the subtest", n)
		}
	}
}
