package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	iauth "github.com/berth-dev/berth/internal/auth"
)

// tokenResponse is the token spec's answer. token and access_token carry
// the same JWT: Docker reads the first, OAuth2 clients the second.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// TokenHandler serves the token endpoint (GET /v2/auth, and the OAuth2
// variant: POST with grant_type=password). Credentials are optional: an
// anonymous caller gets a token for what anonymous users may do, which may
// be nothing. The requested scopes are narrowed to what the policy grants;
// a partial or empty grant is still a 200, as the spec asks. Bad
// credentials are a 401, never a 500.
func (s *Server) TokenHandler() http.Handler {
	return http.HandlerFunc(s.serveToken)
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	default:
		w.Header().Set("Allow", "GET, POST")
		tokenError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "use GET or POST")
		return
	}
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", "malformed request")
		return
	}
	ctx := r.Context()
	log := s.logger()

	who, user, limit, err := s.tokenPrincipal(r)
	if err != nil {
		var te *iauth.ThrottledError
		switch {
		case errors.As(err, &te):
			log.InfoContext(ctx, "token request throttled", "user", user)
			WriteChallenge(w, &ChallengeError{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests,
				Message: "too many failed logins", RetryAfter: te.RetryAfter})
		case errors.Is(err, errUnsupportedGrant):
			tokenError(w, http.StatusBadRequest, "UNSUPPORTED", "unsupported grant_type: only password is accepted")
		case errors.Is(err, iauth.ErrInvalidCredentials):
			log.InfoContext(ctx, "token request with bad credentials", "user", user)
			WriteChallenge(w, &ChallengeError{Status: http.StatusUnauthorized,
				Header: `Basic realm=` + quote(s.service(r)), Code: CodeUnauthorized,
				Message: "invalid username or password"})
		default:
			log.ErrorContext(ctx, "token request failed", "user", user, "err", err)
			tokenError(w, http.StatusInternalServerError, "UNKNOWN", "internal error")
		}
		return
	}

	requested, err := requestedScopes(r.Form["scope"])
	if err != nil {
		tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", err.Error())
		return
	}
	access := make([]iauth.ResourceActions, 0, len(requested))
	for _, ra := range requested {
		var acts []iauth.Action
		var err error
		if limit != nil {
			acts = iauth.Intersect(ra.Actions, claimedActions(limit, ra))
		} else {
			acts, err = s.grant(r, who, ra)
		}
		if err != nil {
			log.ErrorContext(ctx, "token request failed", "user", user, "scope", ra.String(), "err", err)
			tokenError(w, http.StatusInternalServerError, "UNKNOWN", "internal error")
			return
		}
		if len(acts) > 0 {
			access = append(access, iauth.ResourceActions{Type: ra.Type, Name: ra.Name, Actions: acts})
		}
	}

	service := r.Form.Get("service")
	if service == "" {
		service = s.service(r)
	}
	tok, err := s.Tokens.Issue(who, service, access)
	if err != nil {
		log.ErrorContext(ctx, "token signing failed", "err", err)
		tokenError(w, http.StatusInternalServerError, "UNKNOWN", "internal error")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	_ = json.NewEncoder(w).Encode(tokenResponse{
		Token: tok.Token, AccessToken: tok.Token, ExpiresIn: tok.ExpiresIn,
		IssuedAt: tok.IssuedAt.UTC().Format(time.RFC3339),
	})
}

var errUnsupportedGrant = errors.New("unsupported grant_type")

// tokenPrincipal authenticates a token request: Basic credentials, the
// OAuth2 password grant's form fields, or nobody. It also returns the user
// name claimed, for logs.
func (s *Server) tokenPrincipal(r *http.Request) (who *iauth.Principal, user string, limit *iauth.Claims, err error) {
	if r.Method == http.MethodPost {
		switch r.PostForm.Get("grant_type") {
		case "password":
			user := r.PostForm.Get("username")
			p, err := s.Authenticator.Basic(r.Context(), user, r.PostForm.Get("password"))
			return p, user, nil, err
		case "":
		default:
			// Refresh tokens are not issued, so none can be redeemed.
			return nil, "", nil, errUnsupportedGrant
		}
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, "", nil, nil
	}
	user, pw, ok := r.BasicAuth()
	if !ok {
		return nil, "", nil, iauth.ErrInvalidCredentials
	}
	if user == iauth.RegistryTokenUser {
		// A token this server issued, presented as a password (build
		// workers do): it grants what it carries and nothing more.
		c, err := s.Tokens.Verify(r.Context(), pw)
		if err != nil {
			return nil, user, nil, fmt.Errorf("%w: %w", iauth.ErrInvalidCredentials, err)
		}
		return c.Principal(), user, c, nil
	}
	p, err := s.Authenticator.Basic(r.Context(), user, pw)
	return p, user, nil, err
}

// claimedActions is what a token's access claim grants on ra's resource.
func claimedActions(c *iauth.Claims, ra iauth.ResourceActions) []iauth.Action {
	var acts []iauth.Action
	for _, a := range c.Access {
		if a.Type == ra.Type && a.Name == ra.Name {
			acts = append(acts, a.Actions...)
		}
	}
	return acts
}

// requestedScopes parses and merges every scope parameter: a resource
// named twice gets the union of its actions.
func requestedScopes(params []string) ([]iauth.ResourceActions, error) {
	total := 0
	for _, p := range params {
		total += len(p)
	}
	if total > maxScopeBytes {
		return nil, errors.New("scope parameters too long")
	}
	var out []iauth.ResourceActions
	for _, p := range params {
		ras, err := iauth.ParseScope(p)
		if err != nil {
			return nil, err
		}
	next:
		for _, ra := range ras {
			for i := range out {
				if out[i].Type == ra.Type && out[i].Name == ra.Name {
					for _, a := range ra.Actions {
						if !containsAction(out[i].Actions, a) {
							out[i].Actions = append(out[i].Actions, a)
						}
					}
					continue next
				}
			}
			if len(out) == MaxScopes {
				return nil, errors.New("too many scopes")
			}
			out = append(out, ra)
		}
	}
	return out, nil
}

// grant narrows one requested resource to what who may do on it.
func (s *Server) grant(r *http.Request, who *iauth.Principal, ra iauth.ResourceActions) ([]iauth.Action, error) {
	switch ra.Type {
	case iauth.TypeRepository:
		ns, name, ok := iauth.SplitRepository(ra.Name)
		if !ok {
			return nil, nil // no namespace: nobody can hold it
		}
		granted, _, err := s.Policy.RepositoryActions(r.Context(), who, ns, name)
		if err != nil {
			return nil, err
		}
		return iauth.Intersect(ra.Actions, granted), nil
	case iauth.TypeRegistry:
		if s.Policy.CatalogAllowed(who) {
			return ra.Actions, nil
		}
	}
	return nil, nil
}

func containsAction(list []iauth.Action, a iauth.Action) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// tokenError answers a token request that is malformed or failed inside.
func tokenError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Errors: []errorEntry{{Code: code, Message: strings.TrimSpace(msg)}}})
}
