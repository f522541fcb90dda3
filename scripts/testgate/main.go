// Command testgate reads `go test -json` on stdin and prints what go test
// prints without -json: a line per package and the output of every test
// that failed. It then lists the tests that skipped, with their reason.
//
// It exits 1 when a test or package failed, when no package reported at
// all, and, with WEFT_CI set (nstest.CIEnv; .ci/run sets it), when any test
// skipped or a package ran none of its tests: CI is green only when every
// test ran. `make test` pipes its
// go test runs through it.
package main

import (
	"os"

	"github.com/weftnet/weft/internal/nstest"
)

func main() {
	os.Exit(run(os.Stdin, os.Stdout, nstest.InCI()))
}
