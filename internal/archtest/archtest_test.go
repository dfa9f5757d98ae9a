package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/berth-dev/berth"

// parts are the top-level folders that docs/ARCHITECTURE.md calls parts.
// Every other top-level folder but cmd and test is either internal or a
// neutral shared package, and those import no part at all.
var parts = []string{"api", "buildmanager", "executors", "registry", "triggers", "worker"}

// forbidden is the rule of docs/ARCHITECTURE.md ("Dependencies point one
// way"): for each part, the parts it must not import.
var forbidden = map[string][]string{
	"api":          {"worker"},
	"triggers":     {"api", "worker"},
	"buildmanager": {"api", "registry", "triggers"},
	"registry":     {"api", "buildmanager", "executors", "triggers", "worker"},
	"executors":    {"api", "registry", "triggers", "worker"},
	"worker":       {"api", "buildmanager", "executors", "registry", "triggers"},
}

// allowed are the imports of a forbidden part that the rule names as a
// contract: the worker knows the build manager's wire types.
var allowed = map[string]bool{
	"buildmanager/workerpb": true,
}

type listedPackage struct {
	ImportPath string
	Imports    []string
	Error      *struct{ Err string }
}

// TestImportDirection checks the imports of every package of the module but
// the end-to-end tests under test/ against the rule. It reads production
// imports only: a test may wire parts together.
func TestImportDirection(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages of %s; expected the whole module", len(pkgs), module)
	}

	var violations []string
	for _, p := range pkgs {
		from := strings.TrimPrefix(p.ImportPath, module+"/")
		fromPart := topFolder(from)
		if fromPart == "cmd" || fromPart == "test" || p.ImportPath == module {
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			to := strings.TrimPrefix(imp, module+"/")
			if !breaksRule(fromPart, to) {
				continue
			}
			violations = append(violations, from+" -> "+to)
		}
	}
	sort.Strings(violations)
	for _, v := range violations {
		t.Errorf("import breaks the direction in docs/ARCHITECTURE.md: %s", v)
	}
}

// breaksRule reports whether a package of fromPart may not import the
// module package at path to.
func breaksRule(fromPart, to string) bool {
	toPart := topFolder(to)
	if toPart == fromPart || allowed[to] {
		return false
	}
	if !isPart(fromPart) {
		// internal and the neutral packages are shared by the parts, so
		// they depend on none.
		return isPart(toPart)
	}
	for _, f := range forbidden[fromPart] {
		if toPart == f {
			return true
		}
	}
	return false
}

func isPart(folder string) bool {
	for _, p := range parts {
		if p == folder {
			return true
		}
	}
	return false
}

func topFolder(path string) string {
	folder, _, _ := strings.Cut(path, "/")
	return folder
}

func listPackages(t *testing.T) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Error", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestBreaksRule(t *testing.T) {
	tests := []struct {
		fromPart, to string
		want         bool
	}{
		{"api", "worker/engine", true},
		{"api", "buildmanager", false},
		{"triggers", "api", true},
		{"buildmanager", "registry/storage", true},
		{"buildmanager", "executors", false},
		{"registry", "buildmanager/workerpb", false},
		{"registry", "executors", true},
		{"executors", "worker/sandbox", true},
		{"worker", "buildmanager/workerpb", false},
		{"worker", "buildmanager", true},
		{"worker", "internal/egress", false},
		{"internal", "registry", true},
		{"internal", "internal/store", false},
		{"dockerfile", "worker/engine", true},
		{"dockerfile", "internal/egress", false},
		{"api", "dockerfile", false},
	}
	for _, tt := range tests {
		if got := breaksRule(tt.fromPart, tt.to); got != tt.want {
			t.Errorf("breaksRule(%q, %q) = %v, want %v", tt.fromPart, tt.to, got, tt.want)
		}
	}
}
