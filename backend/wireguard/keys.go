package wireguard

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// KeyFile is the private key's file name in the node's state directory. Its
// content is the key in base64 and a newline, as `wg genkey` writes it, so
// `wg pubkey < wireguard.key` prints the node's public key.
const KeyFile = "wireguard.key"

// keyMode is the key file's mode: readable by root only.
const keyMode fs.FileMode = 0o600

// KeyPath is the key file under stateDir.
func KeyPath(stateDir string) string { return filepath.Join(stateDir, KeyFile) }

// privateKey holds a node's private key. It never prints it: String and
// Format redact it.
type privateKey struct{ k wgtypes.Key }

func (privateKey) String() string             { return redacted }
func (privateKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }
func (p privateKey) public() wgtypes.Key      { return p.k.PublicKey() }

// ErrBadKeyFile marks a key file that exists but holds no usable key.
var ErrBadKeyFile = errors.New("bad wireguard key file")

// ReadKey reads the private key in path and returns its public key. It
// fails with an error wrapping fs.ErrNotExist when there is none.
func ReadKey(path string) (wgtypes.Key, error) {
	k, err := readKey(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	return k.public(), nil
}

func readKey(path string) (privateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return privateKey{}, fmt.Errorf("read wireguard key: %w", err)
	}
	k, err := wgtypes.ParseKey(string(bytes.TrimSpace(data)))
	if err != nil || k == (wgtypes.Key{}) {
		// The content is never quoted: it is meant to be a secret.
		return privateKey{}, fmt.Errorf("%w: %s holds no WireGuard private key; restore it, or create a new one with `weftctl wireguard rotate-key`", ErrBadKeyFile, path)
	}
	return privateKey{k: k}, nil
}

// loadOrCreateKey returns the key in path, creating it (0600, atomically:
// no reader ever sees a partial file, and of two creators one key wins) when
// there is none. tightened reports a key file others could read, whose mode
// was set back to 0600: that key may have leaked, and rotating it is wise.
func loadOrCreateKey(path string) (k privateKey, created, tightened bool, err error) {
	k, err = readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err = newKey()
		if err != nil {
			return privateKey{}, false, false, err
		}
		switch err = writeKey(path, k, false); {
		case err == nil:
			return k, true, false, nil
		case errors.Is(err, fs.ErrExist):
			// Another process made one first: use it.
			k, err = readKey(path)
		}
	}
	if err != nil {
		return privateKey{}, false, false, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return privateKey{}, false, false, fmt.Errorf("wireguard key: %w", err)
	}
	if fi.Mode().Perm()&^keyMode != 0 {
		if err := os.Chmod(path, keyMode); err != nil {
			return privateKey{}, false, false, fmt.Errorf("wireguard key %s is readable by others and cannot be made 0600: %w", path, err)
		}
		tightened = true
	}
	return k, false, tightened, nil
}

// RotateKey replaces the private key in path with a new one (atomically)
// and returns the new public key. A running weftd notices within a second,
// re-prepares its device with the key and republishes its lease; peers take
// the new key from the lease. A stopped weftd uses it when it starts.
func RotateKey(path string) (wgtypes.Key, error) {
	k, err := newKey()
	if err != nil {
		return wgtypes.Key{}, err
	}
	if err := writeKey(path, k, true); err != nil {
		return wgtypes.Key{}, err
	}
	return k.public(), nil
}

func newKey() (privateKey, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return privateKey{}, fmt.Errorf("generate wireguard key: %w", err)
	}
	return privateKey{k: k}, nil
}

// writeKey writes k to path through a 0600 temporary file in the same
// directory (created 0700 if missing), synced before it is put in place.
// With replace, the new file replaces any old one (rename); without, an
// existing key is never overwritten (link fails with fs.ErrExist).
func writeKey(path string, k privateKey, replace bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("wireguard key directory: %w", err)
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("wireguard key: %w", err)
	}
	tmp := filepath.Join(dir, "."+KeyFile+"."+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, keyMode)
	if err != nil {
		return fmt.Errorf("write wireguard key: %w", err)
	}
	defer os.Remove(tmp)
	_, err = f.WriteString(k.k.String() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write wireguard key: %w", err)
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write wireguard key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		// The rename or link is durable once the directory is synced.
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
