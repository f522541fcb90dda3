// Package version carries the build's version stamp, set by the Makefile
// with -ldflags "-X github.com/weftnet/weft/internal/version.Version=...".
package version

import (
	"fmt"
	"runtime"
)

// Set at link time; these are the only package-level variables in weft,
// because the linker can only stamp variables.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one-line version report every binary prints for --version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, %s %s/%s)", binary, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
