package wireguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // not there yet
	path := KeyPath(dir)
	if _, err := ReadKey(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadKey of no file: %v", err)
	}
	k, created, tightened, err := loadOrCreateKey(path)
	if err != nil || !created || tightened {
		t.Fatalf("first load: created %v tightened %v err %v", created, tightened, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v, want mode 0600", fi, err)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("state dir %v %v, want 0700", di, err)
	}
	data, _ := os.ReadFile(path)
	if want := k.k.String() + "\n"; string(data) != want {
		t.Errorf("key file content is not `wg genkey`'s format")
	}

	again, created, _, err := loadOrCreateKey(path)
	if err != nil || created || again.k != k.k {
		t.Fatalf("second load: created %v err %v, same key %v", created, err, again.k == k.k)
	}
	if pub, err := ReadKey(path); err != nil || pub != k.public() {
		t.Errorf("ReadKey = %v, %v", pub, err)
	}

	// Readable by others: tightened, and the caller told.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, tightened, err := loadOrCreateKey(path); err != nil || !tightened {
		t.Errorf("0644 key: tightened %v err %v", tightened, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after load", fi.Mode())
	}

	pub, err := RotateKey(path)
	if err != nil || pub == k.public() {
		t.Fatalf("rotate: %v, same key %v", err, pub == k.public())
	}
	if got, _ := ReadKey(path); got != pub {
		t.Errorf("after rotation the file has %s, want %s", got, pub)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("rotated key mode %v", fi.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestFlannelKeyFile: flanneld's /run/flannel/wgkey (the key in base64, no
// newline) is read as it is, so a node moved from Flannel can keep its key.
func TestFlannelKeyFile(t *testing.T) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := KeyPath(t.TempDir())
	if err := os.WriteFile(path, []byte(k.String()), 0o400); err != nil {
		t.Fatal(err)
	}
	got, created, tightened, err := loadOrCreateKey(path)
	if err != nil || created || tightened || got.k != k {
		t.Fatalf("flannel's key file: created %v tightened %v err %v, same key %v", created, tightened, err, got.k == k)
	}
}

// TestBadKeyFile: garbage is refused, never quoted.
func TestBadKeyFile(t *testing.T) {
	for _, content := range []string{"", "hunter2-not-a-key\n", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"} {
		path := KeyPath(t.TempDir())
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := loadOrCreateKey(path)
		if !errors.Is(err, ErrBadKeyFile) || !strings.Contains(err.Error(), "rotate-key") {
			t.Errorf("%q: %v, want ErrBadKeyFile saying what to do", content, err)
		}
		if content != "" && strings.Contains(err.Error(), strings.TrimSpace(content)) {
			t.Errorf("the error quotes the file: %v", err)
		}
	}
}

// TestKeyCreateRace: processes starting together agree on one key.
func TestKeyCreateRace(t *testing.T) {
	path := KeyPath(t.TempDir())
	const n = 8
	keys := make([]wgtypes.Key, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, _, _, err := loadOrCreateKey(path)
			keys[i], errs[i] = k.k, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || keys[i] != keys[0] {
			t.Fatalf("creator %d: %v, same key %v", i, errs[i], keys[i] == keys[0])
		}
	}
}

func TestPrivateKeyNotPrinted(t *testing.T) {
	k, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprintf("%v %+v %#v %s %q %x", k, k, k, k, k, k) + k.String()
	if strings.Contains(s, k.k.String()) || strings.Contains(s, fmt.Sprintf("%x", k.k[:])) {
		t.Errorf("private key printed: %s", s)
	}
}
