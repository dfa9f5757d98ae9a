package auth

import (
	"errors"
	"fmt"
	"strings"
)

// Resource types that scopes and token claims name.
const (
	TypeRepository = "repository"
	TypeRegistry   = "registry"
)

// CatalogName is the registry resource guarding GET /v2/_catalog.
const CatalogName = "catalog"

// MaxRepositoryNameLen bounds a full repository name, as the distribution
// reference grammar does.
const MaxRepositoryNameLen = 255

// ResourceActions is one entry of a token's access claim, and one parsed
// scope: actions on a named resource.
type ResourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []Action `json:"actions"`
}

// String formats r as a scope: "repository:ns/app:pull,push".
func (r ResourceActions) String() string {
	var b strings.Builder
	b.WriteString(r.Type)
	b.WriteByte(':')
	b.WriteString(r.Name)
	b.WriteByte(':')
	for i, a := range r.Actions {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(a))
	}
	return b.String()
}

// ErrInvalidScope is wrapped by ParseScope's errors.
var ErrInvalidScope = errors.New("invalid scope")

// ParseScope parses one scope parameter of a token request: space-separated
// scopes of the form "type:name:action[,action]". Repository scopes keep
// their known actions (pull, push, delete, *); the only registry scope kept
// is "registry:catalog:*". Other resource types and unknown actions are
// dropped rather than refused, as the token spec asks, and a resource class
// such as "repository(plugin)" is read as its bare type. A scope that does
// not split into three parts, or names an invalid repository, is an error.
func ParseScope(s string) ([]ResourceActions, error) {
	var out []ResourceActions
	for _, one := range strings.Fields(s) {
		typ, rest, ok := strings.Cut(one, ":")
		i := strings.LastIndexByte(rest, ':')
		if !ok || i < 0 {
			return nil, fmt.Errorf("%w: %q is not type:name:actions", ErrInvalidScope, truncate(one))
		}
		name, actions := rest[:i], rest[i+1:]
		if j := strings.IndexByte(typ, '('); j >= 0 && strings.HasSuffix(typ, ")") {
			typ = typ[:j]
		}
		switch typ {
		case TypeRepository:
			if !ValidRepositoryName(name) {
				return nil, fmt.Errorf("%w: invalid repository name %q", ErrInvalidScope, truncate(name))
			}
			if acts := parseActions(actions); len(acts) > 0 {
				out = append(out, ResourceActions{Type: TypeRepository, Name: name, Actions: acts})
			}
		case TypeRegistry:
			if name == CatalogName && actions == string(All) {
				out = append(out, ResourceActions{Type: TypeRegistry, Name: CatalogName, Actions: []Action{All}})
			}
		}
	}
	return out, nil
}

// parseActions keeps the known actions of a comma-separated list, once each.
func parseActions(s string) []Action {
	var out []Action
	for a := range strings.SplitSeq(s, ",") {
		act := Action(a)
		switch act {
		case Pull, Push, Delete, All:
		default:
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o == act
		}
		if !dup {
			out = append(out, act)
		}
	}
	return out
}

// ValidRepositoryName reports whether name is a repository name as the
// distribution spec defines it: path components of lowercase letters and
// digits joined by ".", "_", "__" or runs of "-", separated by "/", at most
// MaxRepositoryNameLen bytes.
func ValidRepositoryName(name string) bool {
	if name == "" || len(name) > MaxRepositoryNameLen {
		return false
	}
	for comp := range strings.SplitSeq(name, "/") {
		if !validComponent(comp) {
			return false
		}
	}
	return true
}

func validComponent(c string) bool {
	if c == "" || !isAlnum(c[0]) || !isAlnum(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); {
		if isAlnum(c[i]) {
			i++
			continue
		}
		// A separator: ".", "_", "__" or one or more "-", followed by an
		// alphanumeric (guaranteed at the end by the check above).
		j := i
		switch c[i] {
		case '.':
			j++
		case '_':
			j++
			if j < len(c) && c[j] == '_' {
				j++
			}
		case '-':
			for j < len(c) && c[j] == '-' {
				j++
			}
		default:
			return false
		}
		if j >= len(c) || !isAlnum(c[j]) {
			return false
		}
		i = j
	}
	return true
}

func isAlnum(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }

// SplitRepository splits a full repository name into its namespace (the
// first component) and the rest. ok is false when there is no namespace.
func SplitRepository(full string) (namespace, name string, ok bool) {
	namespace, name, ok = strings.Cut(full, "/")
	return namespace, name, ok && namespace != "" && name != ""
}

// truncate keeps error messages short when a client sends a huge value.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
