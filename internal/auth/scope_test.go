package auth

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	repo := func(name string, acts ...Action) ResourceActions {
		return ResourceActions{Type: TypeRepository, Name: name, Actions: acts}
	}
	for _, tc := range []struct {
		in      string
		want    []ResourceActions
		wantErr bool
	}{
		{"repository:alice/app:pull", []ResourceActions{repo("alice/app", Pull)}, false},
		{"repository:alice/app:pull,push", []ResourceActions{repo("alice/app", Pull, Push)}, false},
		{"repository:alice/a/b/c:*", []ResourceActions{repo("alice/a/b/c", All)}, false},
		{"repository:alice/app:push,pull,push,bogus,delete", []ResourceActions{repo("alice/app", Push, Pull, Delete)}, false},
		{"repository:a/x:pull repository:b/y:push", []ResourceActions{repo("a/x", Pull), repo("b/y", Push)}, false},
		{"  repository:a/x:pull   ", []ResourceActions{repo("a/x", Pull)}, false},
		{"repository(plugin):a/x:pull", []ResourceActions{repo("a/x", Pull)}, false},
		{"registry:catalog:*", []ResourceActions{{Type: TypeRegistry, Name: CatalogName, Actions: []Action{All}}}, false},
		{"registry:catalog:pull", nil, false},
		{"registry:other:*", nil, false},
		{"weird:thing:pull", nil, false},
		{"repository:a/x:bogus", nil, false},
		{"repository:a/x:", nil, false},
		{"", nil, false},
		{"repository:a/x", nil, true},
		{"repository", nil, true},
		{"repository:A/x:pull", nil, true},
		{"repository:a//x:pull", nil, true},
		{"repository:a/x-:pull", nil, true},
		{"repository:localhost:5000/a/x:pull", nil, true},
		{"repository:" + strings.Repeat("a", 256) + ":pull", nil, true},
	} {
		got, err := ParseScope(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrInvalidScope) {
				t.Errorf("ParseScope(%q): err = %v, want ErrInvalidScope", tc.in, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseScope(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestValidRepositoryName(t *testing.T) {
	for name, want := range map[string]bool{
		"a/b": true, "alice/my-app": true, "a/b.c_d__e---f/g": true, "library": true,
		"0/9": true, "a/b_": false, "a/_b": false, "a/b___c": false, "a/b..c": false,
		"a/B": false, "a/": false, "/a": false, "a b": false, "a/b:c": false, "": false,
		"a/b-c": true, "a/b.-c": false,
	} {
		if got := ValidRepositoryName(name); got != want {
			t.Errorf("ValidRepositoryName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSplitRepository(t *testing.T) {
	for _, tc := range []struct {
		in, ns, name string
		ok           bool
	}{
		{"alice/app", "alice", "app", true},
		{"alice/a/b", "alice", "a/b", true},
		{"app", "app", "", false},
		{"/app", "", "app", false},
	} {
		ns, name, ok := SplitRepository(tc.in)
		if ns != tc.ns || name != tc.name || ok != tc.ok {
			t.Errorf("SplitRepository(%q) = %q %q %v", tc.in, ns, name, ok)
		}
	}
}

// FuzzParseScope checks that any input either fails cleanly or yields only
// well-formed resources that format back to scopes parsing to the same
// result.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"repository:alice/app:pull,push", "registry:catalog:*", "repository(plugin):a/b:*",
		"repository:a/b:pull repository:c/d:delete", "a:b:c:d", "::", "repository:a/b:,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseScope(s)
		if err != nil {
			if got != nil || !errors.Is(err, ErrInvalidScope) {
				t.Fatalf("error %v with result %v", err, got)
			}
			return
		}
		var again []string
		for _, ra := range got {
			switch ra.Type {
			case TypeRepository:
				if !ValidRepositoryName(ra.Name) {
					t.Fatalf("invalid repository name %q accepted", ra.Name)
				}
			case TypeRegistry:
				if ra.Name != CatalogName || len(ra.Actions) != 1 || ra.Actions[0] != All {
					t.Fatalf("unexpected registry scope %v", ra)
				}
			default:
				t.Fatalf("unexpected type %q", ra.Type)
			}
			if len(ra.Actions) == 0 {
				t.Fatalf("resource %v without actions", ra)
			}
			seen := map[Action]bool{}
			for _, a := range ra.Actions {
				if seen[a] || (a != Pull && a != Push && a != Delete && a != All) {
					t.Fatalf("bad action list %v", ra.Actions)
				}
				seen[a] = true
			}
			again = append(again, ra.String())
		}
		round, err := ParseScope(strings.Join(again, " "))
		if err != nil || !reflect.DeepEqual(round, got) {
			t.Fatalf("round trip of %q: %v, %v; want %v", again, round, err, got)
		}
	})
}
