// Package plugin is the registration table behind each plug-in family
// (storage drivers, executors, build engines): a plug-in's package
// registers its factory by name in an init function, and the binary
// chooses the plug-ins it carries by importing their packages.
package plugin

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
)

// Table maps names to the factories of one family. F is the family's
// factory function type. The zero value is not usable; make one with
// NewTable.
type Table[F any] struct {
	family string
	mu     sync.RWMutex
	byName map[string]F
}

// NewTable returns an empty table; family names a member in panics
// ("storage driver", "executor kind").
func NewTable[F any](family string) *Table[F] {
	return &Table[F]{family: family, byName: map[string]F{}}
}

// Register adds f under name. Like database/sql.Register it panics on an
// empty name, a nil factory or a name already taken: each is a mistake in
// the program, which shows at start, in the plug-in's init.
func (t *Table[F]) Register(name string, f F) {
	if name == "" {
		panic(fmt.Sprintf("plugin: %s registered with an empty name", t.family))
	}
	if reflect.ValueOf(&f).Elem().IsNil() {
		panic(fmt.Sprintf("plugin: %s %q registered with a nil factory", t.family, name))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, taken := t.byName[name]; taken {
		panic(fmt.Sprintf("plugin: %s %q registered twice", t.family, name))
	}
	t.byName[name] = f
}

// Lookup returns the factory registered under name.
func (t *Table[F]) Lookup(name string) (F, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	f, ok := t.byName[name]
	return f, ok
}

// Names lists the registered names, sorted: what the binary carries, for
// error messages.
func (t *Table[F]) Names() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return slices.Sorted(maps.Keys(t.byName))
}
