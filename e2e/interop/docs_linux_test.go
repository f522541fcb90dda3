package interop

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// flannelVersion is the flanneld the docs tables describe; scripts/flannel.sh
// must build the same one.
const flannelVersion = "v0.28.9"

// docTable returns the first cells (backquotes dropped) of the rows of the
// table between <!-- marker --> and <!-- /marker --> in
// flannel-compatibility.md, and the whole rows.
func docTable(t *testing.T, marker string) [][]string {
	t.Helper()
	b, err := os.ReadFile("../../Documentation/flannel-compatibility.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- "+marker+" -->")
	body, _, ok2 := strings.Cut(rest, "<!-- /"+marker+" -->")
	if !ok || !ok2 {
		t.Fatalf("flannel-compatibility.md has no %s table", marker)
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(body), "\n")[2:] {
		var cells []string
		for _, c := range strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|") {
			cells = append(cells, strings.Trim(strings.TrimSpace(c), "`"))
		}
		rows = append(rows, cells)
	}
	return rows
}

func TestFlannelVersionPinned(t *testing.T) {
	b, err := os.ReadFile("../../scripts/flannel.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nFLANNEL_VERSION="+flannelVersion+"\n") {
		t.Errorf("scripts/flannel.sh builds another flanneld than %s, which flannel-compatibility.md describes: check its tables and change flannelVersion", flannelVersion)
	}
}

// TestFlanneldFlagsDocumented: the real flanneld's flags (its --help) are
// exactly the rows of the flanneld-flags table.
func TestFlanneldFlagsDocumented(t *testing.T) {
	bins(t)
	out, _ := exec.CommandContext(t.Context(), filepath.Join(flannelDir, "flanneld"), "--help").CombinedOutput() // exits 2 after printing
	var have []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9_-]+)`).FindAllStringSubmatch(string(out), -1) {
		have = append(have, "--"+m[1])
	}
	if len(have) < 20 {
		t.Fatalf("flanneld --help lists %d flags:\n%s", len(have), out)
	}
	var documented []string
	for _, r := range docTable(t, "flanneld-flags") {
		documented = append(documented, r[0])
	}
	slices.Sort(have)
	slices.Sort(documented)
	for _, f := range have {
		if !slices.Contains(documented, f) {
			t.Errorf("flanneld has %s, which flannel-compatibility.md does not list", f)
		}
	}
	for _, f := range documented {
		if !slices.Contains(have, f) {
			t.Errorf("flannel-compatibility.md lists %s, which flanneld %s does not have", f, flannelVersion)
		}
	}
}

// TestFlannelConfigKeysDocumented reads Flannel's source (the module the
// reference build downloaded) and requires a row of the config-keys table
// for every key of its network config (subnet.Config), its vxlan options
// (VXLANConfig) and its udp options (the struct its udp backend decodes).
func TestFlannelConfigKeysDocumented(t *testing.T) {
	bins(t)
	out, err := exec.CommandContext(t.Context(), "go", "mod", "download", "-json", "github.com/flannel-io/flannel@"+flannelVersion).Output()
	if err != nil {
		t.Fatalf("go mod download flannel: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download -json: %v %s", err, out)
	}
	keys := map[string][]string{
		"config": structKeys(t, filepath.Join(mod.Dir, "pkg/subnet/config.go"), "Config"),
		"vxlan":  structKeys(t, filepath.Join(mod.Dir, "pkg/backend/vxlan/vxlan.go"), "VXLANConfig"),
		"udp":    structKeys(t, filepath.Join(mod.Dir, "pkg/backend/udp/udp_amd64.go"), ""),
	}
	rows := map[string]bool{}
	for _, r := range docTable(t, "flannel-config-keys") {
		rows[r[0]+" "+r[1]] = true
	}
	for where, ks := range keys {
		if len(ks) == 0 {
			t.Errorf("found no %s keys in Flannel's source", where)
		}
		for _, k := range ks {
			if !rows[where+" "+k] {
				t.Errorf("Flannel's %s key %s has no row in flannel-compatibility.md", where, k)
			}
			delete(rows, where+" "+k)
		}
	}
	for r := range rows {
		t.Errorf("row %q is not a key of Flannel %s", r, flannelVersion)
	}
}

// structKeys returns the JSON keys of the struct type name in file (for
// name "", the first anonymous struct of a composite literal: the udp
// backend's cfg): the field names, those tagged json:"-" left out.
func structKeys(t *testing.T, file, name string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st *ast.StructType
	ast.Inspect(f, func(n ast.Node) bool {
		if st != nil {
			return false
		}
		switch n := n.(type) {
		case *ast.TypeSpec:
			if s, ok := n.Type.(*ast.StructType); ok && name != "" && n.Name.Name == name {
				st = s
			}
		case *ast.CompositeLit:
			if s, ok := n.Type.(*ast.StructType); ok && name == "" {
				st = s
			}
		}
		return true
	})
	if st == nil {
		t.Fatalf("%s: no struct %q", file, name)
	}
	var keys []string
	for _, fl := range st.Fields.List {
		tag := ""
		if fl.Tag != nil {
			tag = reflect.StructTag(strings.Trim(fl.Tag.Value, "`")).Get("json")
		}
		if tagName, _, _ := strings.Cut(tag, ","); tagName == "-" {
			continue
		}
		// A json tag only changes the case ("vni"), which Flannel's and
		// weft's decoding ignore: the docs write the field names.
		for _, n := range fl.Names {
			keys = append(keys, n.Name)
		}
	}
	return keys
}
