package triggers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
)

func init() { Register(Registration{Provider: CustomGit{}}) }

// CustomGit parses Quay's custom-git payload, which any git server's
// post-receive hook can POST:
//
//	{"commit": "1c002dd", "ref": "refs/heads/master", "default_branch": "master",
//	 "commit_info": {"url": …, "message": …, "date": …,
//	                 "author": {"username": …, "url": …, "avatar_url": …},
//	                 "committer": {…}}}
//
// The webhook URL's `$token` basic auth (CheckTokenAuth) authenticates it;
// an X-Hub-Signature-256 header is optional and verified when present.
type CustomGit struct{}

// Service implements Provider.
func (CustomGit) Service() string { return ServiceCustomGit }

// Verify implements Provider: a present X-Hub-Signature-256 must match; an
// absent one is fine (CheckTokenAuth is the required check).
func (CustomGit) Verify(r *http.Request, body, secret []byte) error {
	h := r.Header.Get("X-Hub-Signature-256")
	if h == "" {
		return nil
	}
	return verifySHA256(h, body, secret)
}

// EventName implements Provider: a custom-git delivery is always a push.
func (CustomGit) EventName(*http.Request) string { return "push" }

// DeliveryID implements Provider: the optional X-Berth-Delivery header.
func (CustomGit) DeliveryID(r *http.Request) string { return r.Header.Get("X-Berth-Delivery") }

// Patterns of Quay's custom-git schema (customhandler.py).
var (
	customCommitRE = regexp.MustCompile(`^[A-Fa-f0-9]{7,}$`)
	customRefRE    = regexp.MustCompile(`^refs/(heads|tags|remotes)/(.+)$`)
)

// Parse implements Provider. The payload is checked against Quay's schema
// only: required keys, their JSON types and the commit/ref patterns; URLs are
// not checked. The git URL is the trigger's build_source, which Prepare sets.
func (CustomGit) Parse(_ *http.Request, body []byte) (Event, error) {
	if err := checkSize(body); err != nil {
		return Event{}, err
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if doc == nil {
		return Event{}, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	var errs []error
	commit := reqString(doc, "commit", &errs)
	ref := reqString(doc, "ref", &errs)
	defaultBranch := reqString(doc, "default_branch", &errs)
	if commit != "" && !customCommitRE.MatchString(commit) {
		errs = append(errs, errors.New("commit: want at least 7 hex digits"))
	}
	if ref != "" && !customRefRE.MatchString(ref) {
		errs = append(errs, errors.New("ref: want refs/heads/…, refs/tags/… or refs/remotes/…"))
	}
	var info *CommitInfo
	if raw, ok := doc["commit_info"]; ok {
		obj, ok := raw.(map[string]any)
		if !ok {
			errs = append(errs, errors.New("commit_info: want an object"))
		} else {
			info = &CommitInfo{
				URL:     reqString(obj, "url", &errs, "commit_info"),
				Message: reqString(obj, "message", &errs, "commit_info"),
				Date:    reqString(obj, "date", &errs, "commit_info"),
			}
			info.Author = customUser(obj, "author", &errs)
			info.Committer = customUser(obj, "committer", &errs)
		}
	}
	if len(errs) > 0 {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, errors.Join(errs...))
	}
	return Event{Name: "push", Push: &PushEvent{
		Service: ServiceCustomGit,
		Metadata: Metadata{
			Commit:        commit,
			Ref:           ref,
			DefaultBranch: defaultBranch,
			CommitInfo:    info,
		},
	}}, nil
}

// reqString reads a required string key, recording a schema error otherwise.
func reqString(obj map[string]any, key string, errs *[]error, parents ...string) string {
	path := key
	for i := len(parents) - 1; i >= 0; i-- {
		path = parents[i] + "." + path
	}
	v, ok := obj[key]
	if !ok {
		*errs = append(*errs, fmt.Errorf("%s: required", path))
		return ""
	}
	s, ok := v.(string)
	if !ok {
		*errs = append(*errs, fmt.Errorf("%s: want a string", path))
	}
	return s
}

func customUser(info map[string]any, key string, errs *[]error) *User {
	raw, ok := info[key]
	if !ok {
		return nil
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		*errs = append(*errs, fmt.Errorf("commit_info.%s: want an object", key))
		return nil
	}
	return &User{
		Username:  reqString(obj, "username", errs, "commit_info", key),
		URL:       reqString(obj, "url", errs, "commit_info", key),
		AvatarURL: reqString(obj, "avatar_url", errs, "commit_info", key),
	}
}
