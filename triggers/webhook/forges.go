package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
)

// Purposes the trigger's secrets are sealed under (auth.Secrets): each is
// bound to its trigger and column, so a ciphertext moved elsewhere does not
// open.
func SecretPurpose(uuid string) string     { return "trigger-secret:" + uuid }
func PrivateKeyPurpose(uuid string) string { return "trigger-private-key:" + uuid }
func AuthTokenPurpose(uuid string) string  { return "trigger-auth-token:" + uuid }

// ErrForgeNotConfigured: the service's *_TRIGGER_CONFIG is absent, so
// berth cannot talk to that forge.
var ErrForgeNotConfigured = errors.New("webhook: forge is not configured")

// Forges is how berth reaches each forge's API: config.yaml's
// GITHUB_TRIGGER_CONFIG, GITLAB_TRIGGER_CONFIG and BITBUCKET_TRIGGER_CONFIG.
// A nil entry means the forge is not configured.
type Forges struct {
	GitHub    *forge.GitHubConfig
	GitLab    *forge.GitLabConfig
	Bitbucket *forge.BitbucketConfig
	// HTTPClient is used for every forge call (nil: a default client).
	HTTPClient *http.Client
}

// ForgesFromConfig reads the three *_TRIGGER_CONFIG keys of config.yaml's
// raw map; absent keys leave their forge unconfigured.
func ForgesFromConfig(raw map[string]any) (Forges, error) {
	var f Forges
	var errs []error
	decode := func(key string, dst any) bool {
		v, ok := raw[key]
		if !ok || v == nil {
			return false
		}
		b, err := json.Marshal(v)
		if err == nil {
			err = json.Unmarshal(b, dst)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return false
		}
		return true
	}
	var gh forge.GitHubConfig
	if decode("GITHUB_TRIGGER_CONFIG", &gh) {
		f.GitHub = &gh
	}
	var gl forge.GitLabConfig
	if decode("GITLAB_TRIGGER_CONFIG", &gl) {
		f.GitLab = &gl
	}
	var bb forge.BitbucketConfig
	if decode("BITBUCKET_TRIGGER_CONFIG", &bb) {
		f.Bitbucket = &bb
	}
	return f, errors.Join(errs...)
}

// Client returns the API client of service acting with token ("": the
// configured service token). custom-git has none: (nil, nil).
func (f Forges) Client(service, token string) (forge.Forge, error) {
	switch service {
	case triggers.ServiceCustomGit:
		return nil, nil
	case triggers.ServiceGitHub:
		if f.GitHub == nil {
			return nil, fmt.Errorf("%w: GITHUB_TRIGGER_CONFIG", ErrForgeNotConfigured)
		}
		return forge.NewGitHub(*f.GitHub, token, f.HTTPClient)
	case triggers.ServiceGitLab:
		if f.GitLab == nil {
			return nil, fmt.Errorf("%w: GITLAB_TRIGGER_CONFIG", ErrForgeNotConfigured)
		}
		return forge.NewGitLab(*f.GitLab, token, f.HTTPClient)
	case triggers.ServiceBitbucket:
		if f.Bitbucket == nil {
			return nil, fmt.Errorf("%w: BITBUCKET_TRIGGER_CONFIG", ErrForgeNotConfigured)
		}
		return forge.NewBitbucket(*f.Bitbucket, token, f.HTTPClient)
	}
	return nil, fmt.Errorf("webhook: unknown service %q", service)
}

// ForTrigger is the client a trigger acts with: its own sealed token when it
// has one. custom-git triggers have none: (nil, nil).
func (f Forges) ForTrigger(t *store.Trigger, secrets *auth.Secrets) (forge.Forge, error) {
	token := ""
	if len(t.SealedAuthToken) > 0 {
		b, err := secrets.Open(t.SealedAuthToken, AuthTokenPurpose(t.UUID))
		if err != nil {
			return nil, fmt.Errorf("webhook: trigger %s token: %w", t.UUID, err)
		}
		token = string(b)
	}
	return f.Client(t.Service, token)
}

// BuildSource is the trigger config's build_source: the forge's repository
// name ("owner/repo") or, for custom-git, the git URL.
func BuildSource(t *store.Trigger) string {
	var c struct {
		BuildSource string `json:"build_source"`
	}
	_ = json.Unmarshal(t.Config, &c)
	return c.BuildSource
}

// DeployKeyTitle names berth's deploy key on the forge.
const DeployKeyTitle = "berth builder (read-only)"

// Install registers the webhook (delivering to hookURL, signed with secret)
// and the read-only deploy key on the trigger's forge repository, filling
// t.HookID and t.DeployKeyID. On failure what was installed is removed
// again.
func Install(ctx context.Context, fg forge.Forge, t *store.Trigger, hookURL string, secret []byte) error {
	repo := BuildSource(t)
	if cl, ok := fg.(cloneLinker); ok {
		if err := recordCloneLink(ctx, cl, t, repo); err != nil {
			return err
		}
	}
	keyID, err := fg.AddDeployKey(ctx, repo, DeployKeyTitle, t.PublicKey)
	if err != nil {
		return fmt.Errorf("add deploy key to %s: %w", repo, err)
	}
	hookID, err := fg.CreateHook(ctx, repo, hookURL, secret)
	if err != nil {
		if derr := fg.DeleteDeployKey(context.WithoutCancel(ctx), repo, keyID); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove the deploy key again: %w", derr))
		}
		return fmt.Errorf("create webhook on %s: %w", repo, err)
	}
	t.HookID, t.DeployKeyID = hookID, keyID
	return nil
}

// cloneLinker is a forge whose repository API names the clone links
// (Bitbucket: its payloads name none).
type cloneLinker interface {
	CloneLinks(ctx context.Context, repo string) (forge.CloneLinks, error)
}

// recordCloneLink stores the repository's clone link in the trigger's
// config as forge_git_url (triggers.Config.ForgeGitURL): SSH, which the
// deploy key opens, or HTTPS when the API offers no SSH link. Whatever the
// caller sent under that key is replaced.
func recordCloneLink(ctx context.Context, cl cloneLinker, t *store.Trigger, repo string) error {
	links, err := cl.CloneLinks(ctx, repo)
	if err != nil {
		return fmt.Errorf("read the clone links of %s: %w", repo, err)
	}
	link := links.SSH
	if link == "" {
		link = links.HTTPS
	}
	// Raw values keep the rest of the config byte for byte.
	cfg := map[string]json.RawMessage{}
	if len(t.Config) > 0 {
		if err := json.Unmarshal(t.Config, &cfg); err != nil {
			return fmt.Errorf("trigger %s config: %w", t.UUID, err)
		}
	}
	quoted, err := json.Marshal(link)
	if err != nil {
		return fmt.Errorf("trigger %s clone link: %w", t.UUID, err)
	}
	cfg["forge_git_url"] = quoted
	b, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("trigger %s config: %w", t.UUID, err)
	}
	t.Config = b
	return nil
}

// Uninstall removes the trigger's webhook and deploy key from its forge;
// both are attempted, and the errors joined.
func Uninstall(ctx context.Context, fg forge.Forge, t *store.Trigger) error {
	repo := BuildSource(t)
	var errs []error
	if t.HookID != "" {
		if err := fg.DeleteHook(ctx, repo, t.HookID); err != nil {
			errs = append(errs, fmt.Errorf("delete webhook %s: %w", t.HookID, err))
		}
	}
	if t.DeployKeyID != "" {
		if err := fg.DeleteDeployKey(ctx, repo, t.DeployKeyID); err != nil {
			errs = append(errs, fmt.Errorf("delete deploy key %s: %w", t.DeployKeyID, err))
		}
	}
	return errors.Join(errs...)
}

// GitSource completes a trigger build's git source with the trigger's
// deploy key and recorded host key, for buildmanager.Options.GitSource.
// Builds without a trigger get their source as recorded.
func GitSource(st store.Store, secrets *auth.Secrets) buildmanager.GitSourceFunc {
	return func(ctx context.Context, b *store.Build) (*workerpb.GitSource, error) {
		g := b.Request.Git
		if g == nil {
			return nil, errors.New("build has no git source")
		}
		src := &workerpb.GitSource{Url: g.URL, CommitSha: g.CommitSHA, Ref: g.Ref}
		if b.TriggerID == "" {
			return src, nil
		}
		t, err := st.GetTrigger(ctx, b.TriggerID)
		if err != nil {
			return nil, fmt.Errorf("trigger %s: %w", b.TriggerID, err)
		}
		if len(t.SealedPrivateKey) > 0 {
			key, err := secrets.Open(t.SealedPrivateKey, PrivateKeyPurpose(t.UUID))
			if err != nil {
				return nil, fmt.Errorf("trigger %s deploy key: %w", t.UUID, err)
			}
			src.PrivateKey = string(key)
		}
		src.KnownHosts = t.KnownHosts
		return src, nil
	}
}
