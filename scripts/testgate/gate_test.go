package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// jsonl joins test2json events into a stream.
func jsonl(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

const (
	pkgOK    = `{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}` + "\n" + `{"Action":"pass","Package":"p"}`
	runA     = `{"Action":"run","Package":"p","Test":"TestA"}`
	outRunA  = `{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`
	skipMsgA = `{"Action":"output","Package":"p","Test":"TestA","Output":"    x_test.go:9: kernel test: needs root\n"}`
	skipA    = `{"Action":"output","Package":"p","Test":"TestA","Output":"--- SKIP: TestA (0.00s)\n"}` + "\n" + `{"Action":"skip","Package":"p","Test":"TestA"}`
	failMsgA = `{"Action":"output","Package":"p","Test":"TestA","Output":"    x_test.go:9: broken\n"}`
	failA    = `{"Action":"output","Package":"p","Test":"TestA","Output":"--- FAIL: TestA (0.00s)\n"}` + "\n" + `{"Action":"fail","Package":"p","Test":"TestA"}`
	passA    = `{"Action":"output","Package":"p","Test":"TestA","Output":"    x_test.go:9: chatter\n"}` + "\n" + `{"Action":"pass","Package":"p","Test":"TestA"}`
	pkgFail  = `{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}` + "\n" + `{"Action":"fail","Package":"p"}`
)

func TestRun(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		ci      bool
		code    int
		want    []string // in the output
		notWant []string
	}{
		{name: "pass", in: jsonl(runA, outRunA, passA, pkgOK), code: 0, want: []string{"ok  \tp"}, notWant: []string{"chatter", "=== RUN", "skipped"}},
		{name: "skip on a laptop", in: jsonl(runA, outRunA, skipMsgA, skipA, pkgOK), code: 0, want: []string{"1 tests skipped", "p TestA: x_test.go:9: kernel test: needs root"}},
		{name: "skip in CI", in: jsonl(runA, outRunA, skipMsgA, skipA, pkgOK), ci: true, code: 1, want: []string{"p TestA: x_test.go:9: kernel test: needs root", "WEFT_CI is set"}},
		{name: "test fails", in: jsonl(runA, outRunA, failMsgA, failA, pkgFail), code: 1, want: []string{"x_test.go:9: broken", "--- FAIL: TestA", "FAIL\tp", "1 tests failed"}, notWant: []string{"=== RUN"}},
		{name: "package fails outside tests", in: jsonl(`{"Action":"output","Package":"p","Output":"panic: in TestMain\n"}`, pkgFail), code: 1, want: []string{"panic: in TestMain", "1 packages failed"}},
		{name: "build fails", in: jsonl(`{"ImportPath":"p [p.test]","Action":"build-output","Output":"p/x.go:1: syntax error\n"}`, `{"ImportPath":"p [p.test]","Action":"build-fail"}`, pkgFail),
			code: 1, want: []string{"syntax error", "p [p.test] failed to build"}},
		{name: "nothing ran", in: "", code: 1, want: []string{"no package reported"}},
		{name: "plain text passes through", in: jsonl("go: warning: something", pkgOK), code: 0, want: []string{"go: warning: something"}},
		{name: "no tests to run on a laptop", in: jsonl(`{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s [no tests to run]\n"}`, `{"Action":"pass","Package":"p"}`), code: 0, want: []string{"1 packages ran none of their tests: p"}},
		{name: "no tests to run in CI", in: jsonl(`{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s [no tests to run]\n"}`, `{"Action":"pass","Package":"p"}`), ci: true, code: 1, want: []string{"GOFLAGS"}},
		{name: "no test files", in: jsonl(`{"Action":"output","Package":"q","Output":"?   \tq\t[no test files]\n"}`, `{"Action":"skip","Package":"q"}`), ci: true, code: 0, want: []string{"[no test files]"}, notWant: []string{"skipped"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(strings.NewReader(tt.in), &out, tt.ci); code != tt.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tt.code, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out.String(), w) {
					t.Errorf("output has %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// TestGateOnRealGoTest runs go test -json on testdata/sample: a skip
// passes on a laptop and fails in CI, a failure fails both, and so does,
// in CI, a -run in GOFLAGS that selects nothing.
func TestGateOnRealGoTest(t *testing.T) {
	tests := []struct {
		sample string
		ci     bool
		code   int
	}{
		{"pass", true, 0},
		{"skip", false, 0},
		{"skip", true, 1},
		{"fail", false, 1},
		{"pass -run=NoSuchTest", true, 1},
	}
	for _, tt := range tests {
		sample, flags, _ := strings.Cut(tt.sample, " ")
		cmd := exec.Command("go", "test", "-count=1", "-json", "./testdata/sample")
		cmd.Env = append(os.Environ(), "TESTGATE_SAMPLE="+sample, "GOFLAGS="+flags)
		stream, err := cmd.Output()
		if sample != "fail" && err != nil {
			t.Fatalf("go test %s: %v\n%s", tt.sample, err, stream)
		}
		var out bytes.Buffer
		if code := run(bytes.NewReader(stream), &out, tt.ci); code != tt.code {
			t.Errorf("sample %s, ci %v: exit %d, want %d; output:\n%s", tt.sample, tt.ci, code, tt.code, out.String())
		}
		listed := strings.Contains(out.String(), "sample TestAsTold: sample_test.go:") && strings.Contains(out.String(), "needs something this machine lacks")
		if sample == "skip" && !listed {
			t.Errorf("the skip and its reason are not listed:\n%s", out.String())
		}
	}
}
