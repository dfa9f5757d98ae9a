package config

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// An honoured key is read by the package the table names: its name appears
// as a string literal or a yaml struct tag in that package's code (not in
// this table). Keys whose only reading is the table's own value check
// (Only) are proved by TestRefusedValuesStopWithTheReason instead.
func TestHonouredKeysAreReadWhereTheTableSays(t *testing.T) {
	literals := map[string]map[string]bool{}
	for _, k := range Keys {
		if k.Status == NotSupportedYet {
			if k.ReadBy != "" {
				t.Errorf("%s is not supported yet but names a reader %s", k.Name, k.ReadBy)
			}
			continue
		}
		if k.ReadBy == "" {
			t.Errorf("%s is %s but names no reader", k.Name, k.Status)
			continue
		}
		if len(k.Only) > 0 && k.ReadBy == "internal/config" {
			continue
		}
		lits, ok := literals[k.ReadBy]
		if !ok {
			lits = packageLiterals(t, filepath.Join("..", "..", filepath.FromSlash(k.ReadBy)))
			literals[k.ReadBy] = lits
		}
		if !lits[k.Name] && !lits[strings.TrimPrefix(k.Name, "FEATURE_")] {
			t.Errorf("%s is %s, read by %s, but that package never names it", k.Name, k.Status, k.ReadBy)
		}
	}
}

// packageLiterals collects the string literals and yaml tags of dir's
// non-test Go files, except the key table itself.
func packageLiterals(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	lits := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || filepath.Base(f) == "keys.go" && filepath.Base(dir) == "config" {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if n.Kind == token.STRING {
					if s, err := strconv.Unquote(n.Value); err == nil {
						lits[s] = true
					}
				}
			case *ast.Field:
				if n.Tag != nil {
					if tag, err := strconv.Unquote(n.Tag.Value); err == nil {
						name, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ",")
						lits[name] = true
					}
				}
			}
			return true
		})
	}
	return lits
}

// docs/config.md shows the same table: every key once, with its status.
func TestDocsListEveryKeyWithItsStatus(t *testing.T) {
	b, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([A-Z0-9_]+)` \\| ([^|]+?) \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		if _, dup := documented[m[1]]; dup {
			t.Errorf("docs/config.md lists %s twice", m[1])
		}
		documented[m[1]] = m[2]
	}
	for _, k := range Keys {
		got, ok := documented[k.Name]
		if !ok {
			t.Errorf("docs/config.md does not list %s", k.Name)
			continue
		}
		if got != string(k.Status) {
			t.Errorf("docs/config.md gives %s the status %q, the table %q", k.Name, got, k.Status)
		}
		delete(documented, k.Name)
	}
	for name := range documented {
		t.Errorf("docs/config.md lists %s, which the table does not know", name)
	}
}

func TestKeysAreListedOnce(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Keys {
		if seen[k.Name] {
			t.Errorf("%s is in the table twice", k.Name)
		}
		seen[k.Name] = true
		if k.Note == "" {
			t.Errorf("%s has no note", k.Name)
		}
		if k.Status != Refused && len(k.Only) > 0 {
			t.Errorf("%s is %s but lists refused values", k.Name, k.Status)
		}
	}
}

// The other direction: every top-level key the code reads (cfg.Raw["K"],
// config.NonNegativeInt(cfg.Raw, "K", …), Features["FEATURE_K"],
// Feature("K")) is in the table, so serve does not call a key it reads
// unknown.
func TestKeysTheCodeReadsAreInTheTable(t *testing.T) {
	fset := token.NewFileSet()
	var read []string
	err := filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != "../..") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.IndexExpr:
				if sel, ok := n.X.(*ast.SelectorExpr); ok {
					switch sel.Sel.Name {
					case "Raw", "Features":
						if k := stringLit(n.Index); k != "" {
							read = append(read, k)
						}
					}
				}
			case *ast.CallExpr:
				var name string
				switch fn := n.Fun.(type) {
				case *ast.SelectorExpr:
					name = fn.Sel.Name
				case *ast.Ident:
					name = fn.Name
				}
				switch {
				case name == "NonNegativeInt" && len(n.Args) == 3 && isRawConfig(n.Args[0]):
					if k := stringLit(n.Args[1]); k != "" {
						read = append(read, k)
					}
				case name == "Feature" && len(n.Args) == 2:
					if k := stringLit(n.Args[0]); k != "" {
						read = append(read, "FEATURE_"+k)
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(read) < 10 {
		t.Fatalf("found only %v: the scan is broken", read)
	}
	for _, k := range read {
		if _, ok := keysByName[k]; !ok {
			t.Errorf("the code reads config key %s, which the table does not list", k)
		}
	}
}

func stringLit(e ast.Expr) string {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return ""
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil {
		return ""
	}
	return s
}

// isRawConfig reports whether e is x.Raw or an identifier named raw (the
// top-level map handed down).
func isRawConfig(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.SelectorExpr:
		return e.Sel.Name == "Raw"
	case *ast.Ident:
		return e.Name == "raw"
	}
	return false
}
