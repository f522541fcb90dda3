package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVagrantScripts validates what of the Vagrant lab can be validated
// without a hypervisor: every shell script parses (bash -n) and passes
// shellcheck when it is installed, the Vagrantfile uses every script and the
// backend variable, and the systemd units it installs verify.
func TestVagrantScripts(t *testing.T) {
	scripts, err := filepath.Glob("vagrant/*.sh")
	if err != nil || len(scripts) < 4 {
		t.Fatalf("vagrant scripts: %v %v", scripts, err)
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	shellcheck, _ := exec.LookPath("shellcheck")
	if shellcheck == "" {
		t.Log("shellcheck not installed: only bash -n runs (apt-get install shellcheck)")
	}
	for _, s := range scripts {
		t.Run(filepath.Base(s), func(t *testing.T) {
			if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
				t.Fatalf("bash -n %s: %v\n%s", s, err, out)
			}
			if shellcheck != "" {
				cmd := exec.Command(shellcheck, "-x", filepath.Base(s))
				cmd.Dir = filepath.Dir(s)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("shellcheck %s: %v\n%s", s, err, out)
				}
			}
		})
	}
	vf, err := os.ReadFile("vagrant/Vagrantfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"WEFT_BACKEND", "provision-etcd.sh", "provision-node.sh", "provision-pod.sh"} {
		if !strings.Contains(string(vf), want) {
			t.Errorf("Vagrantfile does not mention %s", want)
		}
	}
	common, err := os.ReadFile("vagrant/common.sh")
	if err != nil {
		t.Fatal(err)
	}
	units, err := filepath.Glob("../deploy/systemd/*.service")
	if err != nil || len(units) == 0 {
		t.Fatalf("systemd units: %v %v", units, err)
	}
	for _, u := range units {
		if !strings.Contains(string(common), "deploy/systemd/"+filepath.Base(u)) {
			t.Errorf("provisioning does not install %s", u)
		}
	}
	verifyUnits(t, units)
}

// verifyUnits runs systemd-analyze verify on copies of the units whose
// binaries point at /bin/true (the real ones are not installed here).
func verifyUnits(t *testing.T, units []string) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: units not verified")
		return
	}
	dir := t.TempDir()
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer("/usr/local/bin/weftd", "/bin/true", "/usr/local/bin/weftctl", "/bin/true").Replace(string(data))
		p := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", p).CombinedOutput()
		// verify exits 0 on unknown keys; its complaints name the file.
		var bad []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, filepath.Base(u)) {
				bad = append(bad, l)
			}
		}
		if err != nil || len(bad) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, strings.Join(bad, "\n"))
		}
	}
}
