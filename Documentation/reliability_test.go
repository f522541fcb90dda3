package docs

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite reliability.md's result blocks from reliability-results.txt")

// reliabilityResults is what `make reliability` writes (and the repo keeps):
// the RESULT lines of one run of e2e/reliability, between a "# started" and
// a "# finished" line.
const reliabilityResults = "reliability-results.txt"

// resultLine is one RESULT line: the test (with subtest) and what it measured.
type resultLine struct{ test, text string }

// results holds a parsed results file.
type results struct {
	started, finished string
	lines             []resultLine
}

var resultRE = regexp.MustCompile(`^\S+ RESULT ([^:]+): (.*)$`)

func readResults(t *testing.T, path string) results {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (make reliability writes it)", err)
	}
	var r results
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# started "):
			if r.started != "" {
				t.Fatalf("%s holds more than one run: make reliability writes one", path)
			}
			r.started = strings.TrimPrefix(line, "# started ")
		case strings.HasPrefix(line, "# finished "):
			r.finished = strings.TrimPrefix(line, "# finished ")
		case line == "":
		default:
			m := resultRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: not a RESULT line: %q", path, line)
			}
			r.lines = append(r.lines, resultLine{m[1], m[2]})
		}
	}
	if r.started == "" || r.finished == "" || len(r.lines) == 0 {
		t.Fatalf("%s is not one whole run (started %q, finished %q, %d results)", path, r.started, r.finished, len(r.lines))
	}
	if !strings.Contains(r.finished, ": passed after ") {
		t.Fatalf("%s is from a run that did not pass (%s): keep only a passing run's figures", path, r.finished)
	}
	return r
}

// topTest is the top-level test of a test name ("TestEtcdDown/vxlan" →
// "TestEtcdDown").
func topTest(name string) string {
	top, _, _ := strings.Cut(name, "/")
	return top
}

// resultBlock is a generated block of reliability.md: the RESULT lines of
// the named tests, or (name "run") where and when they were measured.
var resultBlock = regexp.MustCompile(`(?s)(<!-- results: ([^>]*?) -->\n)(.*?)(<!-- /results -->)`)

func renderBlock(r results, names []string) string {
	if slices.Equal(names, []string{"run"}) {
		// The file's header may end with the test binary's flags, which
		// name paths of the machine it ran on; the flags that matter are
		// those of make reliability, above.
		started, _, _ := strings.Cut(r.started, "; test flags:")
		return fmt.Sprintf("Measured by `make reliability`, started %s; finished %s.\n", started, r.finished)
	}
	var rows []resultLine
	for _, l := range r.lines {
		if slices.Contains(names, topTest(l.test)) {
			rows = append(rows, l)
		}
	}
	// Parallel tests interleave in the file; group each test's lines,
	// keeping their order.
	slices.SortStableFunc(rows, func(a, b resultLine) int { return strings.Compare(a.test, b.test) })
	var b strings.Builder
	b.WriteString("| test | result |\n|---|---|\n")
	for _, l := range rows {
		fmt.Fprintf(&b, "| `%s` | %s |\n", l.test, strings.ReplaceAll(l.text, "|", `\|`))
	}
	return b.String()
}

// TestReliabilityDoc keeps reliability.md's figures those of the kept
// results file: every block between <!-- results: TestX ... --> and
// <!-- /results --> is generated from it (go test -run TestReliabilityDoc
// ./Documentation -update, which make reliability runs), every test of the
// file appears in a block, and every block's tests are in the file.
func TestReliabilityDoc(t *testing.T) {
	r := readResults(t, reliabilityResults)
	raw, err := os.ReadFile("reliability.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	blocks := resultBlock.FindAllStringSubmatchIndex(doc, -1)
	if len(blocks) == 0 {
		t.Fatal("reliability.md has no <!-- results: ... --> block")
	}
	covered := map[string]bool{}
	var out strings.Builder
	last := 0
	for _, b := range blocks {
		names := strings.Fields(doc[b[4]:b[5]])
		for _, n := range names {
			covered[n] = true
		}
		want := renderBlock(r, names)
		if want == renderBlock(results{}, names) && !slices.Equal(names, []string{"run"}) {
			t.Errorf("reliability.md has a block for %v, which %s has no results of", names, reliabilityResults)
		}
		if got := doc[b[6]:b[7]]; got != want && !*update {
			t.Errorf("reliability.md's block for %v differs from %s: run make reliability, or go test -run TestReliabilityDoc ./Documentation -update\nhave:\n%s\nwant:\n%s", names, reliabilityResults, got, want)
		}
		out.WriteString(doc[last:b[6]])
		out.WriteString(want)
		last = b[7]
	}
	out.WriteString(doc[last:])
	var missing []string
	for _, l := range r.lines {
		if top := topTest(l.test); !covered[top] && !slices.Contains(missing, top) {
			missing = append(missing, top)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s has results of %v, which no block of reliability.md shows", reliabilityResults, missing)
	}
	if *update && out.String() != doc {
		if err := os.WriteFile("reliability.md", []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("rewrote reliability.md's result blocks")
	}
}
