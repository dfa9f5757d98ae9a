package triggers

import "strings"

// Event is what a delivery asks for: exactly one of Push (build it) or a
// non-empty Skip (answer 200, record the reason, build nothing).
type Event struct {
	// Name is the forge's event name (X-GitHub-Event, X-Gitlab-Event,
	// X-Event-Key, "push" for custom-git), for the delivery record.
	Name string
	Push *PushEvent
	Skip Skip
}

// PushEvent is a push to build.
type PushEvent struct {
	// Service is the provider that parsed it.
	Service string
	// Repository is the forge's name of the repository ("owner/repo",
	// GitLab's path_with_namespace, Bitbucket's full_name; "" for custom-git),
	// for commit statuses and the diff API.
	Repository string
	// Before is the SHA the ref pointed at before the push, "" when unknown
	// or the ref is new; the Bitbucket caller hands it to the diff API.
	Before string
	// Metadata is Quay's prepared-build metadata (BuildView.trigger_metadata).
	Metadata Metadata
	// Files is every path the push added, modified or removed, when
	// FilesKnown. Forges that send no list (Bitbucket, custom-git, tag
	// pushes, truncated commit lists) leave FilesKnown false, and Prepare
	// then does not apply path filters.
	Files      []string
	FilesKnown bool
}

// Metadata is Quay's METADATA_SCHEMA: what a trigger build records and what
// tag templates read.
type Metadata struct {
	Commit        string      `json:"commit"`
	Ref           string      `json:"ref"`
	DefaultBranch string      `json:"default_branch,omitempty"`
	GitURL        string      `json:"git_url"`
	CommitInfo    *CommitInfo `json:"commit_info,omitempty"`
}

// CommitInfo describes the built commit.
type CommitInfo struct {
	URL       string `json:"url,omitempty"`
	Message   string `json:"message"`
	Date      string `json:"date,omitempty"`
	Author    *User  `json:"author,omitempty"`
	Committer *User  `json:"committer,omitempty"`
}

// User is a commit's author or committer as the forge names them.
type User struct {
	Username  string `json:"username"`
	URL       string `json:"url,omitempty"`
	AvatarURL string `json:"avatar_url,omitempty"`
}

// ParsedRef splits a ref into its kind and name the way Quay does
// (ref.split("/", 2)): refs/heads/a/b → ("heads", "a/b"). Anything that is
// not refs/<kind>/<name> yields ("", "").
func ParsedRef(ref string) (kind, name string) {
	parts := strings.SplitN(ref, "/", 3)
	if len(parts) != 3 || parts[0] != "refs" || parts[2] == "" {
		return "", ""
	}
	return parts[1], parts[2]
}

// SkipReason is a stable, machine-readable reason a delivery builds nothing;
// the delivery record stores it.
type SkipReason string

// Skip reasons.
const (
	SkipPing             SkipReason = "ping"
	SkipRefDeleted       SkipReason = "ref_deleted"
	SkipUnsupportedEvent SkipReason = "unsupported_event"
	SkipCommitMessage    SkipReason = "skip_directive"
	SkipFiltered         SkipReason = "filtered"
	SkipPaths            SkipReason = "paths_filtered"
	SkipInvalidConfig    SkipReason = "invalid_config"
)

// Skip is why a delivery builds nothing; the zero value means "do build".
type Skip struct {
	Reason  SkipReason
	Message string
}

// Skipped reports whether the delivery is skipped.
func (s Skip) Skipped() bool { return s.Reason != "" }

func skip(reason SkipReason, msg string) Skip { return Skip{Reason: reason, Message: msg} }

// zeroSHA reports whether sha is git's all-zero object name, which forges send
// as "after" when a ref is deleted.
func zeroSHA(sha string) bool {
	return sha != "" && strings.Trim(sha, "0") == ""
}

// fileSet gathers added/modified/removed paths in first-seen order.
type fileSet struct {
	seen  map[string]bool
	paths []string
}

func (f *fileSet) add(lists ...[]string) {
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	for _, l := range lists {
		for _, p := range l {
			if !f.seen[p] {
				f.seen[p] = true
				f.paths = append(f.paths, p)
			}
		}
	}
}
