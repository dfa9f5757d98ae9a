package plugin

import (
	"slices"
	"strings"
	"testing"
)

type factory func() string

func TestTable(t *testing.T) {
	tab := NewTable[factory]("test plug-in")
	tab.Register("b", func() string { return "made by b" })
	tab.Register("a", func() string { return "made by a" })
	if f, ok := tab.Lookup("b"); !ok || f() != "made by b" {
		t.Errorf("Lookup(b) = %v", ok)
	}
	if _, ok := tab.Lookup("c"); ok {
		t.Error("Lookup of a name never registered succeeded")
	}
	if got := tab.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Names() = %v, want [a b]", got)
	}
}

func TestTableRegisterPanics(t *testing.T) {
	tab := NewTable[factory]("test plug-in")
	tab.Register("taken", func() string { return "" })
	for name, register := range map[string]func(){
		"duplicate":   func() { tab.Register("taken", func() string { return "" }) },
		"nil factory": func() { tab.Register("nil", nil) },
		"empty name":  func() { tab.Register("", func() string { return "" }) },
	} {
		t.Run(name, func(t *testing.T) {
			msg := panicMessage(register)
			if !strings.Contains(msg, "test plug-in") {
				t.Errorf("panic %q does not name the family", msg)
			}
		})
	}
	if got := tab.Names(); !slices.Equal(got, []string{"taken"}) {
		t.Errorf("after refused registrations Names() = %v, want [taken]", got)
	}
}

// panicMessage runs fn and returns what it panicked with ("" when it did
// not panic).
func panicMessage(fn func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg, _ = r.(string)
		}
	}()
	fn()
	return ""
}
