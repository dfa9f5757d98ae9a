package triggers

import (
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// Config is the build-relevant part of a trigger's config (Quay's keys plus
// berth's path filters). Unknown keys in the stored JSON (credentials,
// hook_id, …) are the store's business and ignored here.
type Config struct {
	// BuildSource is "owner/repo" for forges; for custom-git the git URL,
	// which becomes the build's git_url.
	BuildSource string `json:"build_source,omitempty"`
	// DockerfilePath and Context are relative to the repository root; a
	// leading "/" means that root. DockerfilePath is counted from the root,
	// not from Context.
	DockerfilePath string `json:"dockerfile_path,omitempty"`
	Context        string `json:"context,omitempty"`
	// BranchTagRegex must match all of "heads/<branch>" or "tags/<tag>".
	BranchTagRegex string `json:"branchtag_regex,omitempty"`
	// DefaultTagFromRef and LatestForDefaultBranch default to true (Quay).
	DefaultTagFromRef      *bool    `json:"default_tag_from_ref,omitempty"`
	LatestForDefaultBranch *bool    `json:"latest_for_default_branch,omitempty"`
	TagTemplates           []string `json:"tag_templates,omitempty"`
	// IncludedPaths and ExcludedPaths are doublestar globs over the
	// repository-relative paths a push changed.
	IncludedPaths []string `json:"included_paths,omitempty"`
	ExcludedPaths []string `json:"excluded_paths,omitempty"`
	// CloneURL, when set, is where builds of a forge trigger fetch the
	// pushed commit instead of the clone URL the forge's payload names (a
	// mirror, an HTTPS URL, or Bitbucket, whose payload names none).
	CloneURL string `json:"clone_url,omitempty"`
	// ForgeGitURL is the clone link a forge's repository API named at
	// activation (Bitbucket's links.clone, SSH when offered): its payload
	// names none, and the API may be a Bitbucket-compatible server whose
	// git is not at bitbucket.org. Activation sets it; services not
	// registered with ForgeAPI.SparsePayload ignore it.
	ForgeGitURL string `json:"forge_git_url,omitempty"`
}

// PathFilterStatus tells what the path filters did, for the delivery record.
type PathFilterStatus string

// Path filter outcomes.
const (
	// PathFiltersNone: the trigger has no path filters.
	PathFiltersNone PathFilterStatus = ""
	// PathFiltersMatched: the changed files passed the filters.
	PathFiltersMatched PathFilterStatus = "matched"
	// PathFiltersNotApplied: filters are configured but the push carried no
	// file list, so the build goes ahead unfiltered.
	PathFiltersNotApplied PathFilterStatus = "not_applied_no_file_list"
)

// Prepared is a push ready to hand to the build manager.
type Prepared struct {
	// Metadata is the trigger_metadata of the build (git_url resolved).
	Metadata Metadata
	// Tags are escaped, valid and unique, in order: templates, the ref name,
	// latest.
	Tags []string
	// DockerfilePath and Context are clean, absolute from the repository
	// root ("/", "/sub/Dockerfile"); only Context goes to the build engine.
	DockerfilePath string
	Context        string
	// PathFilters says whether included/excluded paths were applied.
	PathFilters PathFilterStatus
}

// DisplayName is Quay's display name of a trigger build: the short SHA.
func (p Prepared) DisplayName() string { return shortSHA(p.Metadata.Commit) }

// ValidateConfig rejects a config that can never build as written: a bad
// branchtag_regex, a tag template that cannot render (syntax, unknown or
// object variable, too long), a bad glob, or a path leaving the repository.
func ValidateConfig(cfg Config) error {
	var errs []error
	if _, err := compileRefRegex(cfg.BranchTagRegex); err != nil {
		errs = append(errs, err)
	}
	for _, t := range cfg.TagTemplates {
		if err := validateTemplate(t); err != nil {
			errs = append(errs, err)
		}
	}
	for _, list := range []struct {
		key  string
		pats []string
	}{{"included_paths", cfg.IncludedPaths}, {"excluded_paths", cfg.ExcludedPaths}} {
		for _, p := range list.pats {
			if p == "" || !doublestar.ValidatePattern(strings.TrimPrefix(p, "/")) {
				errs = append(errs, fmt.Errorf("%s: invalid glob %q", list.key, p))
			}
		}
	}
	if _, _, err := buildPaths(cfg); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// compileRefRegex anchors the regex so that it must match the whole
// "heads/<branch>" or "tags/<tag>" string, as Quay's matches_ref requires.
func compileRefRegex(expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("branchtag_regex %q: %w", expr, err)
	}
	return re, nil
}

// repoPath cleans a repository path to "/"-rooted form, refusing any that
// climbs above the root.
func repoPath(key, p string) (string, error) {
	rel := path.Clean(strings.TrimLeft(p, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s %q leaves the repository", key, p)
	}
	if rel == "." {
		return "/", nil
	}
	return "/" + rel, nil
}

// buildPaths resolves the Dockerfile and context: neither set → "/Dockerfile"
// in "/"; only the context → <context>/Dockerfile; only the Dockerfile → its
// directory is the context; a Dockerfile path ending in "/" names a directory
// holding "Dockerfile".
func buildPaths(cfg Config) (dockerfile, context string, err error) {
	if cfg.Context != "" {
		if context, err = repoPath("context", cfg.Context); err != nil {
			return "", "", err
		}
	}
	switch {
	case cfg.DockerfilePath == "":
		if context == "" {
			context = "/"
		}
		dockerfile = path.Join(context, "Dockerfile")
	default:
		df := cfg.DockerfilePath
		if strings.HasSuffix(df, "/") {
			df += "Dockerfile"
		}
		if dockerfile, err = repoPath("dockerfile_path", df); err != nil {
			return "", "", err
		}
		if dockerfile == "/" {
			return "", "", fmt.Errorf("dockerfile_path %q names the repository root, not a file", cfg.DockerfilePath)
		}
		if context == "" {
			context = path.Dir(dockerfile)
		}
	}
	return dockerfile, context, nil
}

// Prepare applies a trigger's config to a push: the branch/tag regex, the
// [skip build] directive, the path filters, then the tags. A Skip with a
// reason means build nothing; its message is for the delivery record.
func Prepare(cfg Config, ev PushEvent) (Prepared, Skip) {
	md := ev.Metadata
	// Prepare does not know the forge's host: without a URL of the config's
	// the payload's stands, as a forge's SSH URL would.
	if u := GitURL(ev.Service, cfg, ""); u != "" {
		md.GitURL = u
	}
	if md.GitURL == "" {
		return Prepared{}, skip(SkipInvalidConfig, "no git URL: the payload has none and build_source is empty")
	}
	kind, name := ParsedRef(md.Ref)
	if kind == "" {
		return Prepared{}, skip(SkipInvalidConfig, fmt.Sprintf("ref %q is not refs/<kind>/<name>", md.Ref))
	}
	re, err := compileRefRegex(cfg.BranchTagRegex)
	if err != nil {
		return Prepared{}, skip(SkipInvalidConfig, err.Error())
	}
	refPath := kind + "/" + name
	if re != nil && !re.MatchString(refPath) {
		return Prepared{}, skip(SkipFiltered, fmt.Sprintf("%s does not match branchtag_regex %q", refPath, cfg.BranchTagRegex))
	}
	if md.CommitInfo != nil && hasSkipDirective(md.CommitInfo.Message) {
		return Prepared{}, skip(SkipCommitMessage, "the commit message asks to skip the build")
	}
	filters, sk := applyPathFilters(cfg, ev)
	if sk.Skipped() {
		return Prepared{}, sk
	}
	dockerfile, context, err := buildPaths(cfg)
	if err != nil {
		return Prepared{}, skip(SkipInvalidConfig, err.Error())
	}
	tags, err := determineTags(cfg, md, kind, name)
	if err != nil {
		return Prepared{}, skip(SkipInvalidConfig, err.Error())
	}
	return Prepared{
		Metadata:       md,
		Tags:           tags,
		DockerfilePath: dockerfile,
		Context:        context,
		PathFilters:    filters,
	}, Skip{}
}

// GitURL is the URL builds of a trigger of service clone, the first that
// applies: custom-git's build_source (Quay forces custom-git builds to
// clone the configured source); the config's clone_url; the clone link the
// forge's API named at activation (forge_git_url, for a forge registered
// with ForgeAPI.SparsePayload; others ignore one); else the forge's SSH URL
// git@<forgeHost>:<build_source>.git. A push's payload names its own URL,
// which stands in for the last rule: Prepare passes no forgeHost. "" when
// nothing names a URL.
func GitURL(service string, cfg Config, forgeHost string) string {
	switch {
	case service == ServiceCustomGit:
		return cfg.BuildSource
	case cfg.CloneURL != "":
		return cfg.CloneURL
	case cfg.ForgeGitURL != "" && SparsePayload(service):
		return cfg.ForgeGitURL
	case cfg.BuildSource == "" || forgeHost == "":
		return ""
	}
	// The SSH host is the web host without its port: an scp-like URL has
	// no room for one, and a forge's SSH port is not its web port.
	host := forgeHost
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return "git@" + host + ":" + cfg.BuildSource + ".git"
}

// hasSkipDirective is Quay's should_skip_commit.
func hasSkipDirective(msg string) bool {
	return strings.Contains(msg, "[skip build]") || strings.Contains(msg, "[build skip]")
}

// applyPathFilters: a file is relevant unless an excluded glob matches it;
// the push builds when some relevant file matches an included glob (or, with
// no included globs, when any relevant file is left).
func applyPathFilters(cfg Config, ev PushEvent) (PathFilterStatus, Skip) {
	if len(cfg.IncludedPaths) == 0 && len(cfg.ExcludedPaths) == 0 {
		return PathFiltersNone, Skip{}
	}
	if !ev.FilesKnown {
		return PathFiltersNotApplied, Skip{}
	}
	for _, f := range ev.Files {
		f = strings.TrimPrefix(f, "/")
		if matchAny(cfg.ExcludedPaths, f) {
			continue
		}
		if len(cfg.IncludedPaths) == 0 || matchAny(cfg.IncludedPaths, f) {
			return PathFiltersMatched, Skip{}
		}
	}
	return "", skip(SkipPaths, fmt.Sprintf("none of the %d changed files passes included_paths/excluded_paths", len(ev.Files)))
}

func matchAny(patterns []string, file string) bool {
	for _, p := range patterns {
		// ValidateConfig has vetted the patterns; a bad one matches nothing.
		if ok, _ := doublestar.Match(strings.TrimPrefix(p, "/"), file); ok {
			return true
		}
	}
	return false
}

// determineTags is Quay's _determine_tags with ordered, de-duplicated output.
func determineTags(cfg Config, md Metadata, kind, name string) ([]string, error) {
	seen := map[string]bool{}
	var tags []string
	add := func(t string) {
		if t != "" && !seen[t] {
			seen[t] = true
			tags = append(tags, t)
		}
	}
	for _, tmpl := range cfg.TagTemplates {
		tag, ok, err := RenderTag(tmpl, md)
		if err != nil {
			return nil, err
		}
		if ok {
			add(tag)
		}
	}
	if cfg.DefaultTagFromRef == nil || *cfg.DefaultTagFromRef {
		add(EscapeTag(name))
	}
	if (cfg.LatestForDefaultBranch == nil || *cfg.LatestForDefaultBranch) &&
		kind == "heads" && md.DefaultBranch != "" && name == md.DefaultBranch {
		add("latest")
	}
	if len(tags) == 0 {
		add(EscapeTag(shortSHA(md.Commit)))
	}
	if len(tags) == 0 {
		return nil, errors.New("no tag could be derived: the push names no commit")
	}
	return tags, nil
}
