package triggers

import (
	"fmt"
	"net/http"
	"time"

	gitlab "gitlab.com/gitlab-org/api/client-go"

	"github.com/berth-dev/berth/triggers/forge"
)

func init() {
	Register(Registration{Provider: GitLab{}, API: &ForgeAPI{
		ConfigKey:      "GITLAB_TRIGGER_CONFIG",
		DefaultWebHost: "gitlab.com",
		ParseConfig:    forge.DecodeConfig[forge.GitLabConfig],
	}})
}

// GitLab parses GitLab project webhooks. Every delivery must carry the
// trigger's secret in X-Gitlab-Token.
type GitLab struct{}

// Service implements Provider.
func (GitLab) Service() string { return ServiceGitLab }

// Verify implements Provider: X-Gitlab-Token must equal the secret.
func (GitLab) Verify(r *http.Request, _ []byte, secret []byte) error {
	return verifyToken(r.Header.Get("X-Gitlab-Token"), secret)
}

// EventName implements Provider.
func (GitLab) EventName(r *http.Request) string { return r.Header.Get("X-Gitlab-Event") }

// DeliveryID implements Provider.
func (GitLab) DeliveryID(r *http.Request) string { return r.Header.Get("X-Gitlab-Event-UUID") }

// gitlabCommit is what Parse needs of PushEventCommit and TagEventCommit,
// which the client declares as two identical types.
type gitlabCommit struct {
	id, message, url string
	timestamp        *time.Time
	author           gitlab.EventCommitAuthor
	files            [][]string
}

// gitlabPush is the part of PushEvent and TagEvent that Parse reads.
type gitlabPush struct {
	before, after, ref, checkoutSHA string
	userUsername, userEmail, avatar string
	project                         gitlab.PushEventProject
	commits                         []gitlabCommit
	totalCommits                    int64
}

// Parse implements Provider: Push Hook and Tag Push Hook build; a zero
// "after" is a deletion; other events skip as unsupported.
func (GitLab) Parse(r *http.Request, body []byte) (Event, error) {
	if err := checkSize(body); err != nil {
		return Event{}, err
	}
	name := r.Header.Get("X-Gitlab-Event")
	ev := Event{Name: name}
	kind := gitlab.EventType(name)
	if kind != gitlab.EventTypePush && kind != gitlab.EventTypeTagPush {
		ev.Skip = skip(SkipUnsupportedEvent, fmt.Sprintf("event %q does not build", name))
		return ev, nil
	}
	parsed, err := gitlab.ParseWebhook(kind, body)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var p gitlabPush
	switch e := parsed.(type) {
	case *gitlab.PushEvent:
		p = gitlabPush{
			before: e.Before, after: e.After, ref: e.Ref, checkoutSHA: e.CheckoutSHA,
			userUsername: e.UserUsername, userEmail: e.UserEmail, avatar: e.UserAvatar,
			project: e.Project, totalCommits: e.TotalCommitsCount,
		}
		for _, c := range e.Commits {
			if c != nil {
				p.commits = append(p.commits, gitlabCommit{c.ID, c.Message, c.URL, c.Timestamp, c.Author, [][]string{c.Added, c.Modified, c.Removed}})
			}
		}
	case *gitlab.TagEvent:
		pr := e.Project
		p = gitlabPush{
			before: e.Before, after: e.After, ref: e.Ref, checkoutSHA: e.CheckoutSHA,
			userUsername: e.UserUsername, userEmail: e.UserEmail, avatar: e.UserAvatar,
			totalCommits: e.TotalCommitsCount,
			project: gitlab.PushEventProject{
				ID: pr.ID, Name: pr.Name, GitSSHURL: pr.GitSSHURL, GitHTTPURL: pr.GitHTTPURL,
				PathWithNamespace: pr.PathWithNamespace, DefaultBranch: pr.DefaultBranch, WebURL: pr.WebURL,
			},
		}
		for _, c := range e.Commits {
			if c != nil {
				p.commits = append(p.commits, gitlabCommit{c.ID, c.Message, c.URL, c.Timestamp, c.Author, [][]string{c.Added, c.Modified, c.Removed}})
			}
		}
	default:
		return Event{}, fmt.Errorf("%w: %s parsed as %T", ErrMalformed, name, parsed)
	}
	if zeroSHA(p.after) {
		ev.Skip = skip(SkipRefDeleted, fmt.Sprintf("%s was deleted", p.ref))
		return ev, nil
	}
	refKind, _ := ParsedRef(p.ref)
	if refKind == "" {
		return Event{}, fmt.Errorf("%w: push without a refs/<kind>/<name> ref", ErrMalformed)
	}
	commit := p.checkoutSHA
	if commit == "" {
		commit = p.after
	}
	if commit == "" {
		return Event{}, fmt.Errorf("%w: push without checkout_sha or after", ErrMalformed)
	}
	gitURL := p.project.GitSSHURL
	if gitURL == "" {
		gitURL = p.project.GitHTTPURL
	}
	if gitURL == "" {
		return Event{}, fmt.Errorf("%w: push without project.git_ssh_url", ErrMalformed)
	}
	pe := &PushEvent{
		Service:    ServiceGitLab,
		Repository: p.project.PathWithNamespace,
		Metadata: Metadata{
			Commit:        commit,
			Ref:           p.ref,
			DefaultBranch: p.project.DefaultBranch,
			GitURL:        gitURL,
		},
	}
	if !zeroSHA(p.before) {
		pe.Before = p.before
	}
	for _, c := range p.commits {
		if c.id != commit {
			continue
		}
		info := &CommitInfo{URL: c.url, Message: c.message}
		if c.timestamp != nil {
			info.Date = c.timestamp.Format(time.RFC3339)
		}
		// The payload names commit authors by name and e-mail only; the
		// pusher's username and avatar apply when the pusher is the author.
		if c.author.Email != "" && c.author.Email == p.userEmail && p.userUsername != "" {
			info.Author = &User{Username: p.userUsername, AvatarURL: p.avatar}
		} else if c.author.Name != "" {
			info.Author = &User{Username: c.author.Name}
		}
		pe.Metadata.CommitInfo = info
	}
	// GitLab lists at most 20 commits (total_commits_count says how many
	// there were) and none for tag pushes.
	if refKind == "heads" && len(p.commits) > 0 && int64(len(p.commits)) >= p.totalCommits {
		var files fileSet
		for _, c := range p.commits {
			files.add(c.files...)
		}
		pe.Files, pe.FilesKnown = files.paths, true
		if pe.Files == nil {
			pe.Files = []string{}
		}
	}
	ev.Push = pe
	return ev, nil
}
