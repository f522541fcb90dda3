// Package sample is what TestGateOnRealGoTest runs `go test -json` on: a
// test that passes, and one that skips, fails or passes as
// TESTGATE_SAMPLE says.
package sample

import (
	"os"
	"testing"
)

func TestPasses(t *testing.T) {}

func TestAsTold(t *testing.T) {
	switch os.Getenv("TESTGATE_SAMPLE") {
	case "skip":
		t.Skip("sample: needs something this machine lacks")
	case "fail":
		t.Fatal("sample: broken")
	}
}
