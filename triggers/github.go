package triggers

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/google/go-github/v84/github"

	"github.com/berth-dev/berth/triggers/forge"
)

// githubMaxCommits is the most commits GitHub lists in a push payload; a push
// of more has an incomplete file list.
const githubMaxCommits = 2048

func init() {
	Register(Registration{Provider: GitHub{}, API: &ForgeAPI{
		ConfigKey:      "GITHUB_TRIGGER_CONFIG",
		DefaultWebHost: "github.com",
		ParseConfig:    forge.DecodeConfig[forge.GitHubConfig],
	}})
}

// GitHub parses GitHub (and GitHub Enterprise) webhooks. Every delivery must
// carry X-Hub-Signature-256.
type GitHub struct{}

// Service implements Provider.
func (GitHub) Service() string { return ServiceGitHub }

// Verify implements Provider: X-Hub-Signature-256 is required.
func (GitHub) Verify(r *http.Request, body, secret []byte) error {
	return verifySHA256(r.Header.Get("X-Hub-Signature-256"), body, secret)
}

// EventName implements Provider.
func (GitHub) EventName(r *http.Request) string { return r.Header.Get("X-GitHub-Event") }

// DeliveryID implements Provider.
func (GitHub) DeliveryID(r *http.Request) string { return r.Header.Get("X-GitHub-Delivery") }

// Parse implements Provider: push builds (branches and tags), ping and
// deletions skip, every other event skips as unsupported.
func (GitHub) Parse(r *http.Request, body []byte) (Event, error) {
	if err := checkSize(body); err != nil {
		return Event{}, err
	}
	name := r.Header.Get("X-GitHub-Event")
	payload, err := githubJSON(r, body)
	if err != nil {
		return Event{}, err
	}
	ev := Event{Name: name}
	switch name {
	case "ping":
		if !json.Valid(payload) {
			return Event{}, fmt.Errorf("%w: ping is not JSON", ErrMalformed)
		}
		ev.Skip = skip(SkipPing, "ping")
		return ev, nil
	case "push":
	default:
		ev.Skip = skip(SkipUnsupportedEvent, fmt.Sprintf("event %q does not build", name))
		return ev, nil
	}
	parsed, err := github.ParseWebHook(name, payload)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	push, ok := parsed.(*github.PushEvent)
	if !ok {
		return Event{}, fmt.Errorf("%w: push payload parsed as %T", ErrMalformed, parsed)
	}
	ref := push.GetRef()
	if push.GetDeleted() || zeroSHA(push.GetAfter()) {
		ev.Skip = skip(SkipRefDeleted, fmt.Sprintf("%s was deleted", ref))
		return ev, nil
	}
	kind, _ := ParsedRef(ref)
	if kind == "" {
		return Event{}, fmt.Errorf("%w: push without a refs/<kind>/<name> ref", ErrMalformed)
	}
	head := push.HeadCommit
	if head == nil || head.GetID() == "" {
		return Event{}, fmt.Errorf("%w: push without head_commit", ErrMalformed)
	}
	repo := push.GetRepo()
	if repo.GetSSHURL() == "" && repo.GetCloneURL() == "" {
		return Event{}, fmt.Errorf("%w: push without repository.ssh_url", ErrMalformed)
	}
	gitURL := repo.GetSSHURL()
	if gitURL == "" {
		gitURL = repo.GetCloneURL()
	}
	defaultBranch := repo.GetDefaultBranch()
	if defaultBranch == "" {
		defaultBranch = repo.GetMasterBranch()
	}
	info := &CommitInfo{
		URL:       head.GetURL(),
		Message:   head.GetMessage(),
		Author:    githubUser(head.Author, push.Sender),
		Committer: githubUser(head.Committer, push.Sender),
	}
	if ts := head.GetTimestamp(); !ts.IsZero() {
		info.Date = ts.Format(time.RFC3339)
	}
	pe := &PushEvent{
		Service:    ServiceGitHub,
		Repository: repo.GetFullName(),
		Metadata: Metadata{
			Commit:        head.GetID(),
			Ref:           ref,
			DefaultBranch: defaultBranch,
			GitURL:        gitURL,
			CommitInfo:    info,
		},
	}
	if !zeroSHA(push.GetBefore()) {
		pe.Before = push.GetBefore()
	}
	// A tag push or a new branch at an existing commit lists no commits, and a
	// huge push lists only the first ones: then the file list says nothing.
	if kind == "heads" && len(push.Commits) > 0 && len(push.Commits) < githubMaxCommits {
		var files fileSet
		for _, c := range push.Commits {
			files.add(c.Added, c.Modified, c.Removed)
		}
		pe.Files, pe.FilesKnown = files.paths, true
		if pe.Files == nil {
			pe.Files = []string{}
		}
	}
	ev.Push = pe
	return ev, nil
}

// githubJSON returns the JSON document of a delivery: the body itself, or the
// `payload` form field when the hook was created with content type "form".
func githubJSON(r *http.Request, body []byte) ([]byte, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/x-www-form-urlencoded" {
		return body, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: form body: %w", ErrMalformed, err)
	}
	return []byte(form.Get("payload")), nil
}

// githubUser maps a commit author; push payloads carry no profile links, so
// they are taken from the sender when the sender is that author.
func githubUser(a *github.CommitAuthor, sender *github.User) *User {
	if a == nil {
		return nil
	}
	u := &User{Username: a.GetLogin()}
	if u.Username == "" {
		u.Username = a.GetName()
	}
	if u.Username == "" {
		return nil
	}
	if sender != nil && a.GetLogin() != "" && sender.GetLogin() == a.GetLogin() {
		u.URL = sender.GetHTMLURL()
		u.AvatarURL = sender.GetAvatarURL()
	}
	return u
}
