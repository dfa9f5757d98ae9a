// Package auth decides who a caller is and what they may do: password
// hashing, the Basic-credential authenticator, the repository permission
// policy, the registry's bearer tokens and the scope grammar clients use to
// ask for them.
package auth

import "github.com/berth-dev/berth/internal/store"

// Principal is the caller a request acts for. A nil Principal or one with a
// nil Account is anonymous.
type Principal struct {
	Account *store.Account
	// Scopes limits what the principal may do when it authenticated with an
	// OAuth access token: the policy grants the intersection of the
	// account's rights and the scopes. nil means the account's full rights
	// (a password, a robot token, a web session).
	Scopes []OAuthScope
	// CredentialEpoch is the account's credential epoch when the
	// credentials were checked: a session or token made for this principal
	// records it, and stops working once the epoch rises (the password
	// changed, the account was disabled), even when it was made on a
	// request that raced the revocation.
	CredentialEpoch uint64
	// token is the registry token the principal presented, if any.
	token *Claims
}

// anonymous is shared by every anonymous token's claims.
var anonymous = &Principal{}

// Name is the account name, or "" for an anonymous principal.
func (p *Principal) Name() string {
	if p == nil || p.Account == nil {
		return ""
	}
	return p.Account.Name
}

// IsAnonymous reports whether p carries no account.
func (p *Principal) IsAnonymous() bool { return p == nil || p.Account == nil }

func (p *Principal) account() *store.Account {
	if p == nil {
		return nil
	}
	return p.Account
}

// Action is something a principal may do on a resource, with the names the
// distribution token spec uses in scopes and token claims.
type Action string

const (
	Pull   Action = "pull"
	Push   Action = "push"
	Delete Action = "delete"
	// All stands for every action on the resource.
	All Action = "*"
)

// Grant sets returned by the policy. They are shared, so callers must not
// modify their elements (appending is safe: a literal's capacity is its
// length, so append copies).
var (
	grantAll      = []Action{Pull, Push, Delete}
	grantPullPush = []Action{Pull, Push}
	grantPull     = []Action{Pull}
)

// Covers reports whether the granted actions include a: it is listed, or
// All is.
func Covers(granted []Action, a Action) bool {
	for _, g := range granted {
		if g == a || g == All {
			return true
		}
	}
	if a == All {
		return coversEach(granted, grantAll)
	}
	return false
}

func coversEach(granted, need []Action) bool {
	for _, n := range need {
		if !Covers(granted, n) {
			return false
		}
	}
	return true
}

// Intersect returns the requested actions that granted allows, in request
// order and without duplicates. A requested All is kept as All when every
// action is granted; otherwise it is narrowed to the granted actions, because
// the token spec says a partial grant is not an error.
func Intersect(requested, granted []Action) []Action {
	var out []Action
	add := func(a Action) {
		for _, o := range out {
			if o == a {
				return
			}
		}
		out = append(out, a)
	}
	for _, r := range requested {
		switch {
		case r == All && Covers(granted, All):
			add(All)
		case r == All:
			for _, g := range grantAll {
				if Covers(granted, g) {
					add(g)
				}
			}
		case Covers(granted, r):
			add(r)
		}
	}
	return out
}
