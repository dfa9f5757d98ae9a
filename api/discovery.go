package api

import (
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/internal/auth"
)

// echoParam matches echo's ":name" path parameters.
var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// swaggerPath converts an echo path to Swagger's "{name}" syntax.
func swaggerPath(p string) string { return echoParam.ReplaceAllString(p, "{$1}") }

// documentedRoutes are the registered routes discovery describes: every
// route of the echo router except the trailing-slash aliases and internal
// (superuser) routes, each with its Doc. A registered route without a Doc
// (added to Echo() directly) is described by its path alone.
func (a *API) documentedRoutes() []routeKey {
	var out []routeKey
	for _, r := range a.e.Routes() {
		k := routeKey{r.Method, r.Path}
		if a.aliases[k] || a.docs[k].Internal || !strings.HasPrefix(r.Path, Prefix) {
			continue
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].path != out[j].path {
			return out[i].path < out[j].path
		}
		return out[i].method < out[j].method
	})
	return out
}

// discovery serves a Swagger 2.0 document generated from the routes the
// router actually has.
func (a *API) discovery(c echo.Context) error {
	paths := map[string]map[string]any{}
	for _, k := range a.documentedRoutes() {
		doc := a.docs[k]
		p := swaggerPath(k.path)
		params := []map[string]any{}
		for _, m := range echoParam.FindAllStringSubmatch(k.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "type": "string"})
		}
		for _, q := range doc.Query {
			params = append(params, map[string]any{"name": q, "in": "query", "required": false, "type": "string"})
		}
		if len(doc.Body) > 0 {
			props := map[string]any{}
			for _, b := range doc.Body {
				props[b] = map[string]any{}
			}
			params = append(params, map[string]any{"name": "body", "in": "body", "required": true,
				"schema": map[string]any{"type": "object", "properties": props}})
		}
		op := map[string]any{
			"operationId": strings.ToLower(k.method) + operationName(k.path),
			"summary":     doc.Summary,
			"parameters":  params,
			"responses": map[string]any{
				"default": map[string]any{"description": "Quay's error object", "schema": map[string]any{"$ref": "#/definitions/ApiError"}},
			},
			"security": []map[string]any{{"oauth2_implicit": []string{}}},
		}
		if doc.Description != "" {
			op["description"] = doc.Description
		}
		if doc.Tag != "" {
			op["tags"] = []string{doc.Tag}
		}
		if paths[p] == nil {
			paths[p] = map[string]any{}
		}
		paths[p][strings.ToLower(k.method)] = op
	}
	scopes := map[string]string{}
	for _, s := range auth.AllScopes {
		scopes[string(s)] = scopeDescriptions[s]
	}
	base := a.externalURL(c.Request())
	host := strings.TrimPrefix(strings.TrimPrefix(base, "https://"), "http://")
	scheme := "http"
	if strings.HasPrefix(base, "https://") {
		scheme = "https"
	}
	return c.JSON(http.StatusOK, map[string]any{
		"swagger":  "2.0",
		"host":     host,
		"basePath": "/",
		"schemes":  []string{scheme},
		"info": map[string]any{
			"title":       "berth API",
			"version":     "v1",
			"description": "Red Hat Quay compatible REST API v1 served by berth.",
		},
		"paths": paths,
		"securityDefinitions": map[string]any{
			"oauth2_implicit": map[string]any{
				"type": "oauth2", "flow": "implicit",
				"authorizationUrl": base + "/oauth/authorize", "scopes": scopes,
			},
		},
		"definitions": map[string]any{
			"ApiError": map[string]any{
				"type":     "object",
				"required": []string{"status", "type", "title", "detail", "error_type", "error_message"},
				"properties": map[string]any{
					"status": map[string]any{"type": "integer"}, "type": map[string]any{"type": "string"},
					"title": map[string]any{"type": "string"}, "detail": map[string]any{"type": "string"},
					"error_type": map[string]any{"type": "string"}, "error_message": map[string]any{"type": "string"},
				},
			},
		},
	})
}

var scopeDescriptions = map[auth.OAuthScope]string{
	auth.ScopeRepoRead:   "View all visible repositories",
	auth.ScopeRepoWrite:  "Read/Write to any accessible repositories",
	auth.ScopeRepoAdmin:  "Administer Repositories",
	auth.ScopeRepoCreate: "Create Repositories",
	auth.ScopeUserRead:   "Read User Information",
	auth.ScopeUserAdmin:  "Administer User",
	auth.ScopeOrgAdmin:   "Administer Organization",
	auth.ScopeSuperUser:  "Super User Access",
}

// operationName makes an operation id from a path: "/api/v1/repository/
// :namespace/:repo/tag/" becomes "RepositoryNamespaceRepoTag".
func operationName(p string) string {
	var b strings.Builder
	for _, seg := range strings.Split(strings.TrimPrefix(p, Prefix), "/") {
		seg = strings.TrimPrefix(seg, ":")
		for _, part := range strings.FieldsFunc(seg, func(r rune) bool { return r == '_' || r == '-' }) {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}
