package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers/forge"
)

// DeployKeyTitle names berth's deploy key on the forge.
const DeployKeyTitle = "berth builder (read-only)"

// Install registers the read-only deploy key and the webhook (delivering
// to hookURL, signed with secret) on the trigger's forge repository,
// filling t.DeployKeyID and t.HookID. On failure what was installed is
// removed again.
func Install(ctx context.Context, fg forge.Forge, t *store.Trigger, hookURL string, secret []byte) error {
	repo := BuildSource(t)
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

// RecordCloneLink stores, for a forge whose repository API names clone
// links, the repository's link in the trigger's config as forge_git_url
// (triggers.Config.ForgeGitURL): SSH, which the deploy key opens, or HTTPS
// when the API offers no SSH link. Whatever the caller sent under that key
// is replaced. Other forges are left alone.
func RecordCloneLink(ctx context.Context, fg forge.Forge, t *store.Trigger) error {
	cl, ok := fg.(cloneLinker)
	if !ok {
		return nil
	}
	repo := BuildSource(t)
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
