package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// OAuthScope is one of Quay's OAuth scopes, carried by access tokens.
type OAuthScope string

// Quay's OAuth scopes.
const (
	ScopeRepoRead   OAuthScope = "repo:read"
	ScopeRepoWrite  OAuthScope = "repo:write"
	ScopeRepoAdmin  OAuthScope = "repo:admin"
	ScopeRepoCreate OAuthScope = "repo:create"
	ScopeUserRead   OAuthScope = "user:read"
	ScopeUserAdmin  OAuthScope = "user:admin"
	ScopeOrgAdmin   OAuthScope = "org:admin"
	ScopeSuperUser  OAuthScope = "super:user"
)

// AllScopes lists every scope, in Quay's order of display.
var AllScopes = []OAuthScope{
	ScopeRepoRead, ScopeRepoWrite, ScopeRepoAdmin, ScopeRepoCreate,
	ScopeUserRead, ScopeUserAdmin, ScopeOrgAdmin, ScopeSuperUser,
}

// implied maps a scope to the scopes it includes besides itself, as Quay
// defines them: repo:admin ⊃ repo:write ⊃ repo:read, user:admin ⊃ user:read.
var implied = map[OAuthScope][]OAuthScope{
	ScopeRepoAdmin: {ScopeRepoWrite, ScopeRepoRead},
	ScopeRepoWrite: {ScopeRepoRead},
	ScopeUserAdmin: {ScopeUserRead},
}

// ErrUnknownScope is wrapped by ParseOAuthScopes for a name it does not know.
var ErrUnknownScope = errors.New("unknown scope")

// ParseOAuthScopes validates scope names and returns them once each, in
// AllScopes order. Each element may itself hold several names separated by
// commas or spaces (Quay's OAuth "scope" parameter is a comma-separated
// list). An empty result is an error: a token that can do nothing is a
// mistake.
func ParseOAuthScopes(names []string) ([]OAuthScope, error) {
	seen := map[OAuthScope]bool{}
	for _, n := range names {
		for f := range strings.FieldsFuncSeq(n, func(r rune) bool { return r == ',' || r == ' ' }) {
			s := OAuthScope(f)
			if !slices.Contains(AllScopes, s) {
				return nil, fmt.Errorf("%w: %q", ErrUnknownScope, truncate(f))
			}
			seen[s] = true
		}
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("%w: no scope given", ErrUnknownScope)
	}
	out := make([]OAuthScope, 0, len(seen))
	for _, s := range AllScopes {
		if seen[s] {
			out = append(out, s)
		}
	}
	return out, nil
}

// ScopeStrings converts scopes to their names, for storage.
func ScopeStrings(scopes []OAuthScope) []string {
	out := make([]string, len(scopes))
	for i, s := range scopes {
		out[i] = string(s)
	}
	return out
}

// HasScope reports whether p may act with scope s: p carries no scope
// restriction (nil Scopes), or holds s or a scope implying it. An anonymous
// principal holds no scope.
func (p *Principal) HasScope(s OAuthScope) bool {
	if p.IsAnonymous() {
		return false
	}
	if p.Scopes == nil {
		return true
	}
	for _, have := range p.Scopes {
		if have == s || slices.Contains(implied[have], s) {
			return true
		}
	}
	return false
}
