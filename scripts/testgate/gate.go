package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/weftnet/weft/internal/nstest"
)

// event is one line of `go test -json` (cmd/test2json's TestEvent, plus the
// build events go test adds).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output, build-fail
}

// key names a test of a package.
type key struct{ pkg, test string }

// skip is a test that skipped, and why.
type skip struct {
	key
	why string
}

// gate follows the stream: output buffered per test until the test ends.
type gate struct {
	out      io.Writer
	buf      map[key][]string
	failed   []key
	skipped  []skip
	packages int             // packages that reported a result
	broken   map[string]bool // packages that failed or did not build
	empty    []string        // packages with tests of which none ran
}

// run reads a go test -json stream from in, writes the readable view to
// out and returns the exit code. ci makes any skipped test a failure.
func run(in io.Reader, out io.Writer, ci bool) int {
	g := &gate{out: out, buf: map[key][]string{}, broken: map[string]bool{}}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// go test writes some errors as plain text (a package that
			// does not exist, a vet failure): pass them on.
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		g.event(e)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "testgate: read go test -json: %v\n", err)
		return 1
	}
	return g.verdict(ci)
}

func (g *gate) event(e event) {
	k := key{e.Package, e.Test}
	switch e.Action {
	case "build-output":
		fmt.Fprint(g.out, e.Output)
	case "build-fail":
		g.broken[e.ImportPath] = true
		fmt.Fprintf(g.out, "testgate: %s failed to build\n", e.ImportPath)
	case "output":
		if e.Test == "" {
			// Package lines: "ok  pkg 1.2s", "FAIL pkg", a panic outside
			// any test. Not the bare PASS/FAIL of -v, nor run markers.
			o := strings.TrimSpace(e.Output)
			if o != "PASS" && o != "FAIL" && !strings.HasPrefix(o, "=== ") {
				fmt.Fprint(g.out, e.Output)
			}
			// A -run or -skip that matches nothing (GOFLAGS can carry
			// one) skips a whole package without a skip event.
			if strings.HasSuffix(o, "[no tests to run]") {
				g.empty = append(g.empty, e.Package)
			}
			return
		}
		if o := strings.TrimSpace(e.Output); strings.HasPrefix(o, "=== RUN") || strings.HasPrefix(o, "=== PAUSE") ||
			strings.HasPrefix(o, "=== CONT") || strings.HasPrefix(o, "=== NAME") {
			return
		}
		g.buf[k] = append(g.buf[k], e.Output)
	case "fail":
		if e.Test == "" {
			g.packages++
			g.broken[e.Package] = true
			return
		}
		g.failed = append(g.failed, k)
		for _, l := range g.buf[k] {
			fmt.Fprint(g.out, l)
		}
		delete(g.buf, k)
	case "skip":
		if e.Test == "" {
			g.packages++ // no test files, or every test filtered out
			return
		}
		g.skipped = append(g.skipped, skip{k, reason(g.buf[k])})
		delete(g.buf, k)
	case "pass":
		if e.Test == "" {
			g.packages++
		}
		delete(g.buf, k)
	}
}

// reason is the skip message in a skipped test's output: the lines that
// are not the "--- SKIP" line itself, joined.
func reason(lines []string) string {
	var r []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--- SKIP") {
			r = append(r, l)
		}
	}
	if len(r) == 0 {
		return "(no message)"
	}
	return strings.Join(r, " | ")
}

func (g *gate) verdict(ci bool) int {
	code := 0
	if len(g.skipped) > 0 {
		fmt.Fprintf(g.out, "testgate: %d tests skipped:\n", len(g.skipped))
		for _, s := range g.skipped {
			fmt.Fprintf(g.out, "  %s %s: %s\n", s.pkg, s.test, s.why)
		}
		if ci {
			fmt.Fprintf(g.out, "testgate: FAIL: %s is set and CI runs every test; a skip is a failure here\n", nstest.CIEnv)
			code = 1
		}
	}
	if len(g.empty) > 0 {
		fmt.Fprintf(g.out, "testgate: %d packages ran none of their tests: %s\n", len(g.empty), strings.Join(g.empty, " "))
		if ci {
			fmt.Fprintf(g.out, "testgate: FAIL: %s is set and CI runs every test; was a -run or -skip given (GOFLAGS)?\n", nstest.CIEnv)
			code = 1
		}
	}
	if n := len(g.failed); n > 0 || len(g.broken) > 0 {
		fmt.Fprintf(g.out, "testgate: FAIL: %d tests failed, %d packages failed or did not build\n", n, len(g.broken))
		for _, k := range g.failed {
			fmt.Fprintf(g.out, "  %s %s\n", k.pkg, k.test)
		}
		code = 1
	}
	if g.packages == 0 {
		fmt.Fprintln(g.out, "testgate: FAIL: no package reported a result (did go test run?)")
		code = 1
	}
	return code
}
