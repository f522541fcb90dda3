package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDataRaces(t *testing.T) {
	const report = "==================\nWARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n  main.f()\n      /x/main.go:10 +0x1\n==================\n"
	tests := []struct {
		name  string
		logs  map[string]string
		count int // reports expected
		want  []string
	}{
		{name: "clean", logs: map[string]string{"etcd.log": "started\n", "n1/weftd.log": "level=INFO msg=ready\n"}},
		{name: "no logs"},
		{name: "two in one log, one in another",
			logs:  map[string]string{"etcd.log": "ok\n", "n1/weftd.log": "a\n" + report + "b\n" + report, "n2/weftd.log": report},
			count: 3, want: []string{"n1/weftd.log: WARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:", "n2/weftd.log", "main.go:10"}},
		{name: "cut off at the end", logs: map[string]string{"n1/weftd.log": "WARNING: DATA RACE\nRead at 0x1 by goroutine 9:\n"},
			count: 1, want: []string{"goroutine 9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &Lab{State: State{Dir: t.TempDir()}}
			for name, content := range tt.logs {
				p := filepath.Join(l.Dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := l.DataRaces()
			if tt.count == 0 {
				if err != nil {
					t.Fatalf("DataRaces = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("DataRaces = nil, want the reports")
			}
			if n := strings.Count(err.Error(), "WARNING: DATA RACE"); n != tt.count {
				t.Errorf("%d reports, want %d:\n%v", n, tt.count, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
