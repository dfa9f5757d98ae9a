package triggers

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/berth-dev/berth/registry/reference"
)

// EscapeTag makes s a valid tag (reference.ValidateTag) the way Quay's escape_tag does: every
// character outside [A-Za-z0-9_.-] becomes "_" (one per character), a leading
// "." or "-" becomes "_", and the result is cut to 128 characters. Unlike
// Quay, whose \w admits non-ASCII letters, only ASCII is kept, since
// registries reject anything else. The empty string stays empty.
func EscapeTag(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == reference.MaxTagLength {
			break
		}
		ok := r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-')
		if !ok || (n == 0 && (r == '.' || r == '-')) {
			r = '_'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// templateVars are the ${…} variables of Quay's tag templates: every leaf of
// the prepared-build metadata plus commit_info.short_sha and parsed_ref.*.
var templateVars = map[string]func(Metadata) string{
	"commit":         func(m Metadata) string { return m.Commit },
	"commit_sha":     func(m Metadata) string { return m.Commit },
	"ref":            func(m Metadata) string { return m.Ref },
	"default_branch": func(m Metadata) string { return m.DefaultBranch },
	"git_url":        func(m Metadata) string { return m.GitURL },
	"commit_info.short_sha": func(m Metadata) string {
		return shortSHA(m.Commit)
	},
	"commit_info.url":                  infoField(func(c *CommitInfo) string { return c.URL }),
	"commit_info.message":              infoField(func(c *CommitInfo) string { return c.Message }),
	"commit_info.date":                 infoField(func(c *CommitInfo) string { return c.Date }),
	"commit_info.author.username":      userField(authorOf, func(u *User) string { return u.Username }),
	"commit_info.author.url":           userField(authorOf, func(u *User) string { return u.URL }),
	"commit_info.author.avatar_url":    userField(authorOf, func(u *User) string { return u.AvatarURL }),
	"commit_info.committer.username":   userField(committerOf, func(u *User) string { return u.Username }),
	"commit_info.committer.url":        userField(committerOf, func(u *User) string { return u.URL }),
	"commit_info.committer.avatar_url": userField(committerOf, func(u *User) string { return u.AvatarURL }),
	"parsed_ref.branch":                refField("heads"),
	"parsed_ref.tag":                   refField("tags"),
	"parsed_ref.remote":                refField("remotes"),
}

// objectVars are paths that name an object, not a value: Quay fails on them
// at build time; berth says which leaf was meant when the trigger is saved.
var objectVars = map[string]string{
	"commit_info":           "commit_info.short_sha",
	"commit_info.author":    "commit_info.author.username",
	"commit_info.committer": "commit_info.committer.username",
	"parsed_ref":            "parsed_ref.branch",
}

// TemplateVariables lists the variables tag templates may use, sorted.
func TemplateVariables() []string {
	vars := make([]string, 0, len(templateVars))
	for v := range templateVars {
		vars = append(vars, v)
	}
	sort.Strings(vars)
	return vars
}

func shortSHA(commit string) string {
	if len(commit) > 7 {
		return commit[:7]
	}
	return commit
}

func infoField(f func(*CommitInfo) string) func(Metadata) string {
	return func(m Metadata) string {
		if m.CommitInfo == nil {
			return ""
		}
		return f(m.CommitInfo)
	}
}

func authorOf(c *CommitInfo) *User    { return c.Author }
func committerOf(c *CommitInfo) *User { return c.Committer }

func userField(who func(*CommitInfo) *User, f func(*User) string) func(Metadata) string {
	return func(m Metadata) string {
		if m.CommitInfo == nil {
			return ""
		}
		if u := who(m.CommitInfo); u != nil {
			return f(u)
		}
		return ""
	}
}

func refField(kind string) func(Metadata) string {
	return func(m Metadata) string {
		k, name := ParsedRef(m.Ref)
		if k != kind {
			return ""
		}
		return name
	}
}

// templatePart is a literal run or a ${variable} of a parsed template.
type templatePart struct {
	literal string
	varName string
}

// errTemplate marks template syntax and variable errors.
var errTemplate = errors.New("invalid tag template")

// parseTemplate splits a template into literals and variables. "$" not
// followed by "{" is literal; an unclosed "${" or an unknown variable is an
// error.
func parseTemplate(tmpl string) ([]templatePart, error) {
	var parts []templatePart
	rest := tmpl
	for rest != "" {
		i := strings.Index(rest, "${")
		if i < 0 {
			parts = append(parts, templatePart{literal: rest})
			break
		}
		if i > 0 {
			parts = append(parts, templatePart{literal: rest[:i]})
		}
		end := strings.IndexByte(rest[i+2:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%w %q: unclosed ${", errTemplate, tmpl)
		}
		name := strings.TrimSpace(rest[i+2 : i+2+end])
		// JSONPath's root "$." is implied; accept it written out.
		name = strings.TrimPrefix(name, "$.")
		if _, ok := templateVars[name]; !ok {
			if leaf, isObj := objectVars[name]; isObj {
				return nil, fmt.Errorf("%w %q: ${%s} is an object, not a value; did you mean ${%s}?", errTemplate, tmpl, name, leaf)
			}
			return nil, fmt.Errorf("%w %q: unknown variable ${%s}; known: %s", errTemplate, tmpl, name, strings.Join(TemplateVariables(), ", "))
		}
		parts = append(parts, templatePart{varName: name})
		rest = rest[i+2+end+1:]
	}
	return parts, nil
}

// RenderTag renders one tag template against the metadata and escapes the
// result. ok is false, with no error, when a variable has no value for this
// push (e.g. ${parsed_ref.branch} on a tag push): Quay then drops the
// template, and so does Prepare. err reports a template that can never
// render.
func RenderTag(tmpl string, md Metadata) (tag string, ok bool, err error) {
	parts, err := parseTemplate(tmpl)
	if err != nil {
		return "", false, err
	}
	var b strings.Builder
	for _, p := range parts {
		if p.varName == "" {
			b.WriteString(p.literal)
			continue
		}
		v := templateVars[p.varName](md)
		if v == "" {
			return "", false, nil
		}
		b.WriteString(v)
	}
	tag = EscapeTag(b.String())
	return tag, tag != "", nil
}

// validateTemplate rejects a template that can never yield a tag.
func validateTemplate(tmpl string) error {
	if strings.TrimSpace(tmpl) == "" {
		return fmt.Errorf("%w: empty template", errTemplate)
	}
	parts, err := parseTemplate(tmpl)
	if err != nil {
		return err
	}
	literal := 0
	for _, p := range parts {
		literal += len([]rune(p.literal))
	}
	if literal > reference.MaxTagLength {
		return fmt.Errorf("%w %q: its fixed text alone exceeds %d characters", errTemplate, tmpl, reference.MaxTagLength)
	}
	return nil
}
