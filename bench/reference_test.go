package main

import (
	"strings"
	"testing"
)

// A UAPI get becomes the set that configures another device the same way:
// counters and state dropped, device keys and each peer's lines kept in
// order; a failed get or one without a key is refused.
func TestDeviceConfig(t *testing.T) {
	get := "private_key=aa\nlisten_port=51820\npublic_key=bb\npreshared_key=00\nprotocol_version=1\n" +
		"endpoint=198.19.1.12:51820\nlast_handshake_time_sec=1\ntx_bytes=180\nrx_bytes=124\n" +
		"persistent_keepalive_interval=0\nallowed_ip=10.244.64.0/24\n" +
		"public_key=cc\nendpoint=198.19.1.13:51820\nallowed_ip=10.244.65.0/24\nerrno=0\n"
	got, err := deviceConfig(get)
	if err != nil {
		t.Fatal(err)
	}
	want := "set=1\nprivate_key=aa\nlisten_port=51820\npublic_key=bb\npreshared_key=00\n" +
		"endpoint=198.19.1.12:51820\npersistent_keepalive_interval=0\nallowed_ip=10.244.64.0/24\n" +
		"public_key=cc\nendpoint=198.19.1.13:51820\nallowed_ip=10.244.65.0/24\n\n"
	if got != want {
		t.Errorf("deviceConfig:\n%q\nwant\n%q", got, want)
	}
	for _, bad := range []string{"private_key=aa\nerrno=1\n", "listen_port=51820\nerrno=0\n", "private_key=aa\n"} {
		if s, err := deviceConfig(bad); err == nil {
			t.Errorf("deviceConfig(%q) = %q, want an error", bad, s)
		}
	}
}

// Only the backend with a reference implementation gets its lab's two
// extra nodes, and only once the reference is built.
func TestReferenceNodes(t *testing.T) {
	cfg := &config{}
	for _, s := range backendSpecs(labNetwork) {
		if s.withReference(cfg) {
			t.Errorf("%s: reference nodes without a reference binary", s.name)
		}
	}
	cfg.reference = reference{bin: "/x/wireguard-go", name: "wireguard-go v1"}
	var with []string
	for _, s := range append(backendSpecs(labNetwork), ipv6Backends()...) {
		if s.withReference(cfg) {
			with = append(with, s.name)
		}
	}
	if strings.Join(with, ",") != "wireguard" {
		t.Errorf("backends with reference nodes: %q, want wireguard", with)
	}
}

// The report shows the reference's path, weft / reference, and the
// wireguard targets' notes give the reference's figures; a reference that
// could not run says why.
func TestReportAgainstReference(t *testing.T) {
	wg := &BackendRun{Name: "wireguard", Pod: pathTCP1(2, 0.5), Reference: pathTCP1(2.5, 0.4),
		ReferenceName: "wireguard-go v1"}
	wg.Reference.DaemonCPUPerGB = 4.5
	wg.ratios()
	res := &Results{DataPlane: &DataPlane{Backends: []*BackendRun{
		{Name: "udp", Pod: pathTCP1(8, 0.2)}, wg,
	}}}
	res.Targets = evaluate(res)
	md := string(renderMarkdown(res))
	for _, want := range []string{
		"| wireguard | wireguard-go v1 (reference) pod → pod | **2.50**",
		"| wireguard | wireguard-go v1 | **0.80×** |",
		"The reference wireguard-go v1, same lab and run, moved 2.50 Gbit/s at 4.50 CPU-s per GB (weft: 0.80× that).",
		"The reference wireguard-go v1, same lab and run: ping p50 0.400 ms (weft: 1.25× that).",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	wg.Reference, wg.VsReference, wg.ReferenceNote = nil, nil, "not built: go: not found"
	res.Targets = evaluate(res)
	md = string(renderMarkdown(res))
	if !strings.Contains(md, "| wireguard | wireguard-go v1 | — (not built: go: not found) |") {
		t.Error("report lacks why the reference did not run")
	}
	if strings.Contains(md, "same lab and run, moved") {
		t.Error("a target note cites reference figures that were not measured")
	}
}
