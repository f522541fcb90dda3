package lab

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestMatrixTableAndJSON(t *testing.T) {
	m := &Matrix{
		Lab: "x", Backend: "vxlan",
		Sources: []string{"n1-p1", "n2-p1"},
		Targets: []string{"n1-p1", "n2-p1", "n1", "n2"},
		Probes: []Probe{
			{From: "n1-p1", To: "n2-p1", Addr: "10.244.2.2", OK: true, Attempts: 1},
			{From: "n1-p1", To: "n2", Addr: "198.19.1.12", OK: true, Attempts: 1},
			{From: "n2-p1", To: "n1-p1", Addr: "10.244.1.2", OK: false, Attempts: 3, Error: "100% packet loss"},
			{From: "n2-p1", To: "n1", Addr: "198.19.1.11", OK: true, Attempts: 2},
		},
	}
	m.finish()
	if m.OK || m.Failures != 1 {
		t.Fatalf("finish: OK=%t Failures=%d, want false, 1", m.OK, m.Failures)
	}
	var b bytes.Buffer
	if err := m.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"from\\to", "n2-p1  FAIL", "1 FAILED", "n2-p1 -> n1-p1 (10.244.1.2): 100% packet loss"} {
		if !strings.Contains(strings.Join(strings.Fields(out), "  "), strings.Join(strings.Fields(want), "  ")) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := m.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Matrix
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.OK || back.Failures != 1 || len(back.Probes) != 4 {
		t.Errorf("JSON round trip: %+v", back)
	}

	all := &Matrix{Probes: []Probe{{OK: true}}}
	all.finish()
	if !all.OK {
		t.Error("all-ok matrix not OK")
	}
	empty := &Matrix{}
	empty.finish()
	if empty.OK {
		t.Error("empty matrix is OK; a lab test with no probes proves nothing")
	}
}
