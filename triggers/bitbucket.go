package triggers

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/berth-dev/berth/triggers/forge"
)

func init() {
	Register(Registration{Provider: Bitbucket{}, API: &ForgeAPI{
		ConfigKey:      "BITBUCKET_TRIGGER_CONFIG",
		DefaultWebHost: "bitbucket.org",
		ParseConfig:    forge.DecodeConfig[forge.BitbucketConfig],
		SparsePayload:  true,
	}})
}

// Bitbucket parses Bitbucket Cloud webhooks. Every delivery must carry
// X-Hub-Signature (sha256=, the trigger's secret). Payloads list no changed
// files: the caller asks the diff API (forge.Forge.GetChangedFiles) and sets
// PushEvent.Files itself.
type Bitbucket struct {
	// SSHHost is the host of the clone URL git@<host>:<full_name>.git;
	// "" means bitbucket.org. The payload carries no clone URL, so this is
	// only a fallback: activation records the clone link the repository's
	// API names (Config.ForgeGitURL), and Prepare prefers it.
	SSHHost string
}

// Service implements Provider.
func (Bitbucket) Service() string { return ServiceBitbucket }

// Verify implements Provider: X-Hub-Signature (sha256) is required.
func (Bitbucket) Verify(r *http.Request, body, secret []byte) error {
	return verifySHA256(r.Header.Get("X-Hub-Signature"), body, secret)
}

// EventName implements Provider.
func (Bitbucket) EventName(r *http.Request) string { return r.Header.Get("X-Event-Key") }

// DeliveryID implements Provider.
func (Bitbucket) DeliveryID(r *http.Request) string { return r.Header.Get("X-Request-UUID") }

type bbLink struct {
	Href string `json:"href"`
}

type bbLinks struct {
	HTML   *bbLink `json:"html"`
	Avatar *bbLink `json:"avatar"`
}

type bbAccount struct {
	DisplayName string  `json:"display_name"`
	Nickname    string  `json:"nickname"`
	Links       bbLinks `json:"links"`
}

type bbRef struct {
	Type   string `json:"type"`
	Name   string `json:"name"`
	Target struct {
		Hash    string `json:"hash"`
		Message string `json:"message"`
		Date    string `json:"date"`
		Author  struct {
			Raw  string     `json:"raw"`
			User *bbAccount `json:"user"`
		} `json:"author"`
		Links bbLinks `json:"links"`
	} `json:"target"`
}

type bbPush struct {
	Actor      *bbAccount `json:"actor"`
	Repository *struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Push *struct {
		Changes []struct {
			Old *bbRef `json:"old"`
			New *bbRef `json:"new"`
		} `json:"changes"`
	} `json:"push"`
}

// Parse implements Provider: repo:push builds the last change that has a new
// ref (Quay took the last change even when it was a deletion); a push of
// only deletions skips; diagnostics:ping skips as a ping.
func (b Bitbucket) Parse(r *http.Request, body []byte) (Event, error) {
	if err := checkSize(body); err != nil {
		return Event{}, err
	}
	name := r.Header.Get("X-Event-Key")
	ev := Event{Name: name}
	switch name {
	case "diagnostics:ping":
		if !json.Valid(body) {
			return Event{}, fmt.Errorf("%w: ping is not JSON", ErrMalformed)
		}
		ev.Skip = skip(SkipPing, "ping")
		return ev, nil
	case "repo:push":
	default:
		ev.Skip = skip(SkipUnsupportedEvent, fmt.Sprintf("event %q does not build", name))
		return ev, nil
	}
	var p bbPush
	if err := json.Unmarshal(body, &p); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if p.Repository == nil || p.Repository.FullName == "" {
		return Event{}, fmt.Errorf("%w: push without repository.full_name", ErrMalformed)
	}
	if p.Push == nil || len(p.Push.Changes) == 0 {
		return Event{}, fmt.Errorf("%w: push without push.changes", ErrMalformed)
	}
	idx := -1
	for i := len(p.Push.Changes) - 1; i >= 0; i-- {
		if p.Push.Changes[i].New != nil {
			idx = i
			break
		}
	}
	if idx < 0 {
		last := p.Push.Changes[len(p.Push.Changes)-1].Old
		what := "the ref"
		if last != nil {
			what = bbRefName(last)
		}
		ev.Skip = skip(SkipRefDeleted, fmt.Sprintf("%s was deleted", what))
		return ev, nil
	}
	change := p.Push.Changes[idx]
	nw := change.New
	if nw.Name == "" || nw.Target.Hash == "" {
		return Event{}, fmt.Errorf("%w: push change without new.name or new.target.hash", ErrMalformed)
	}
	if nw.Type != "branch" && nw.Type != "tag" {
		return Event{}, fmt.Errorf("%w: push change of type %q", ErrMalformed, nw.Type)
	}
	host := b.SSHHost
	if host == "" {
		host = "bitbucket.org"
	}
	info := &CommitInfo{Message: nw.Target.Message, Date: nw.Target.Date}
	if nw.Target.Links.HTML != nil {
		info.URL = nw.Target.Links.HTML.Href
	}
	if u := nw.Target.Author.User; u != nil {
		info.Author = bbUser(u)
	} else if raw := nw.Target.Author.Raw; raw != "" {
		info.Author = &User{Username: raw}
	}
	if p.Actor != nil {
		info.Committer = bbUser(p.Actor)
	}
	pe := &PushEvent{
		Service:    ServiceBitbucket,
		Repository: p.Repository.FullName,
		Metadata: Metadata{
			Commit: nw.Target.Hash,
			Ref:    bbRefName(nw),
			GitURL: fmt.Sprintf("git@%s:%s.git", host, p.Repository.FullName),
			// The payload does not name the main branch; the caller fills
			// it from the API (forge.Forge.DefaultBranch).
			CommitInfo: info,
		},
	}
	if change.Old != nil {
		pe.Before = change.Old.Target.Hash
	}
	ev.Push = pe
	return ev, nil
}

func bbRefName(r *bbRef) string {
	if r.Type == "tag" {
		return "refs/tags/" + r.Name
	}
	return "refs/heads/" + r.Name
}

func bbUser(a *bbAccount) *User {
	u := &User{Username: a.Nickname}
	if u.Username == "" {
		u.Username = a.DisplayName
	}
	if u.Username == "" {
		return nil
	}
	if a.Links.HTML != nil {
		u.URL = a.Links.HTML.Href
	}
	if a.Links.Avatar != nil {
		u.AvatarURL = a.Links.Avatar.Href
	}
	return u
}
