package subnet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DefaultFilePath is where weftd writes the subnet file and the CNI plugin
// reads it.
const DefaultFilePath = "/run/weft/subnet.env"

// FileInfo is the content of the subnet file, in Flannel's format:
//
//	FLANNEL_NETWORK=10.244.0.0/16
//	FLANNEL_SUBNET=10.244.3.1/24
//	FLANNEL_MTU=1450
//	FLANNEL_IPMASQ=true
type FileInfo struct {
	Network netip.Prefix
	// Subnet is the node's subnet with the gateway address (.1) as its
	// address, as Flannel writes it: 10.244.3.1/24.
	Subnet      netip.Prefix
	IPv6Network netip.Prefix
	IPv6Subnet  netip.Prefix
	MTU         int
	IPMasq      bool
}

// Marshal renders f in the subnet file format.
func (f FileInfo) Marshal() []byte {
	var b bytes.Buffer
	if f.Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", f.Network)
	}
	if f.Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", f.Subnet)
	}
	if f.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\n", f.IPv6Network)
	}
	if f.IPv6Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_SUBNET=%s\n", f.IPv6Subnet)
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", f.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", f.IPMasq)
	return b.Bytes()
}

// ParseFile parses the subnet file format. Unknown keys are ignored (other
// tools add their own); a file without FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET,
// or with a malformed value, is an error that names the key. Besides what
// Flannel writes it reads what flanneld reads back (godotenv): comments,
// `export KEY=...` and quoted values.
func ParseFile(data []byte) (FileInfo, error) {
	var f FileInfo
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, val, ok := strings.Cut(strings.TrimPrefix(text, "export "), "=")
		if !ok {
			return FileInfo{}, fmt.Errorf("line %d: %q is not KEY=VALUE", line, text)
		}
		key = strings.TrimSpace(key)
		if val, ok = dotenvValue(val); !ok {
			return FileInfo{}, fmt.Errorf("line %d: %s has an unterminated quote", line, key)
		}
		var err error
		switch key {
		case "FLANNEL_NETWORK":
			f.Network, err = netip.ParsePrefix(val)
		case "FLANNEL_SUBNET":
			f.Subnet, err = netip.ParsePrefix(val)
		case "FLANNEL_IPV6_NETWORK":
			f.IPv6Network, err = netip.ParsePrefix(val)
		case "FLANNEL_IPV6_SUBNET":
			f.IPv6Subnet, err = netip.ParsePrefix(val)
		case "FLANNEL_MTU":
			f.MTU, err = strconv.Atoi(val)
			if err == nil && (f.MTU < 68 || f.MTU > 65536) {
				err = fmt.Errorf("must be between 68 and 65536")
			}
		case "FLANNEL_IPMASQ":
			f.IPMasq, err = strconv.ParseBool(val)
		}
		if err != nil {
			return FileInfo{}, fmt.Errorf("line %d: %s=%q: %w", line, key, val, err)
		}
	}
	if err := sc.Err(); err != nil {
		return FileInfo{}, err
	}
	for _, k := range []struct {
		key string
		p   netip.Prefix
		v6  bool
	}{{"FLANNEL_NETWORK", f.Network, false}, {"FLANNEL_SUBNET", f.Subnet, false},
		{"FLANNEL_IPV6_NETWORK", f.IPv6Network, true}, {"FLANNEL_IPV6_SUBNET", f.IPv6Subnet, true}} {
		if k.p.IsValid() && (k.p.Addr().Is6() != k.v6 || k.p.Addr().Is4In6()) {
			want := "IPv4"
			if k.v6 {
				want = "IPv6"
			}
			return FileInfo{}, fmt.Errorf("%s=%s is not %s", k.key, k.p, want)
		}
	}
	if !f.Subnet.IsValid() && !f.IPv6Subnet.IsValid() {
		return FileInfo{}, fmt.Errorf("no FLANNEL_SUBNET: the file is incomplete")
	}
	if f.MTU == 0 {
		return FileInfo{}, fmt.Errorf("no FLANNEL_MTU: the file is incomplete")
	}
	return f, nil
}

// dotenvValue unquotes a value the way godotenv does: 'single' or "double"
// quotes are stripped; an unquoted value ends at a " #" comment.
func dotenvValue(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if len(v) > 0 && (v[0] == '"' || v[0] == '\'') {
		end := strings.IndexByte(v[1:], v[0])
		if end < 0 {
			return "", false
		}
		return v[1 : 1+end], true
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	return v, true
}

// ReadFile reads and parses the subnet file at path.
func ReadFile(path string) (FileInfo, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return FileInfo{}, err
	}
	f, err := ParseFile(data)
	if err != nil {
		return FileInfo{}, fmt.Errorf("subnet file %s: %w", path, err)
	}
	return f, nil
}

// WriteFile writes f to path atomically (temp file, fsync, rename), mode
// 0644, creating the directory if needed. Readers never see a partial file.
func WriteFile(path string, f FileInfo) error {
	return WriteFileAtomic(path, f.Marshal(), 0o644)
}

// WriteFileAtomic writes data to path through a temp file in the same
// directory, fsyncs it, renames it over path and fsyncs the directory, so
// the new file survives a crash once it returns.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return WriteFileAtomicFunc(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileAtomicFunc is WriteFileAtomic of what write writes, through a
// buffer: a large file is streamed to disk, never held in memory whole. An
// error from write leaves path as it was.
func WriteFileAtomicFunc(path string, mode os.FileMode, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	bw := bufio.NewWriterSize(tmp, 64<<10)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir makes a rename in dir durable. File systems that cannot sync a
// directory (EINVAL) are left as they are.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
