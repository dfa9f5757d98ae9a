package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/gitsource"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
)

// Submit hands a prepared push of trigger t to the manager: the git source
// (the deploy key and host key are added when a worker registers, see
// GitSource), the tags, Dockerfile and context, the pull robot and the
// trigger metadata. Webhook deliveries and manual runs both use it.
func (s *Service) Submit(ctx context.Context, t *store.Trigger, prep triggers.Prepared) (*store.Build, error) {
	repo, err := s.o.Store.GetRepository(ctx, t.Namespace, t.Repository)
	if err != nil {
		return nil, fmt.Errorf("repository of trigger %s: %w", t.UUID, err)
	}
	var requester *store.Account
	if t.ConnectedUserID != 0 {
		if requester, err = s.o.Store.GetAccountByID(ctx, t.ConnectedUserID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("connected user of trigger %s: %w", t.UUID, err)
		}
	}
	md, err := json.Marshal(prep.Metadata)
	if err != nil {
		return nil, fmt.Errorf("trigger metadata: %w", err)
	}
	return s.o.Manager.Submit(ctx, buildmanager.BuildRequest{
		Repository:  repo,
		Requester:   requester,
		DisplayName: prep.DisplayName(),
		Tags:        prep.Tags,
		Request: store.BuildRequest{
			Git:            &store.BuildGitSource{URL: prep.Metadata.GitURL, CommitSHA: prep.Metadata.Commit, Ref: prep.Metadata.Ref},
			DockerfilePath: prep.DockerfilePath,
			Context:        prep.Context,
			PullRobot:      t.PullRobot,
		},
		TriggerID:       t.UUID,
		TriggerMetadata: md,
		TriggerKind:     t.Service,
	})
}

// TriggerGetter reads a trigger.
type TriggerGetter interface {
	GetTrigger(ctx context.Context, uuid string) (*store.Trigger, error)
}

// GitSource completes a trigger build's git source with the trigger's
// deploy key and recorded host key, for buildmanager.Options.GitSource.
// Builds without a trigger get their source as recorded.
func GitSource(st TriggerGetter, secrets *auth.Secrets) buildmanager.GitSourceFunc {
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
		src.PrivateKey, src.KnownHosts, err = access(t, secrets)
		return src, err
	}
}

// access is the deploy key and recorded host key builds of t fetch with.
func access(t *store.Trigger, secrets *auth.Secrets) (privateKey, knownHosts string, err error) {
	if len(t.SealedPrivateKey) > 0 {
		key, err := secrets.Open(t.SealedPrivateKey, PrivateKeyPurpose(t.UUID))
		if err != nil {
			return "", "", fmt.Errorf("trigger %s deploy key: %w", t.UUID, err)
		}
		privateKey = string(key)
	}
	return privateKey, t.KnownHosts, nil
}

// gitSource is the git source a build of tr with cfg would fetch ref from,
// with the deploy key and recorded host key the worker gets.
func (s *Service) gitSource(tr *store.Trigger, cfg triggers.Config, ref string) (gitsource.Source, error) {
	key, hosts, err := access(tr, s.o.Secrets)
	if err != nil {
		return gitsource.Source{}, err
	}
	return gitsource.Source{URL: s.GitURL(tr, cfg), Ref: ref, PrivateKey: key, KnownHosts: hosts}, nil
}

// RunParams name what a manual run builds: the ref (RefName of RefKind
// "branch" or "tag", else BranchName, else the default branch) and the
// commit (CommitSHA, else the ref's head on the git server now).
type RunParams struct {
	BranchName string
	CommitSHA  string
	RefKind    string
	RefName    string
}

// RunNow is Quay's manual run of an active, enabled trigger. The queued
// build names the commit it will build, resolved over git (ls-remote) when
// not given. A manual run builds what was asked even when the trigger's
// branch/tag regex would not.
func (s *Service) RunNow(ctx context.Context, tr *store.Trigger, p RunParams) (*store.Build, error) {
	switch {
	case !tr.Active():
		return nil, &RequestError{Message: "Trigger is not active.", Err: ErrNotActive}
	case !tr.Enabled:
		return nil, &RequestError{Message: DisabledMessage, Err: ErrDisabled}
	}
	if p.CommitSHA != "" && !isHex(p.CommitSHA) {
		return nil, requestError("commit_sha must be a hexadecimal commit id")
	}
	var cfg triggers.Config
	if err := json.Unmarshal(tr.Config, &cfg); err != nil {
		return nil, fmt.Errorf("trigger %s config: %w", tr.UUID, err)
	}
	src := BuildSource(tr)
	md := triggers.Metadata{Commit: p.CommitSHA, GitURL: s.GitURL(tr, cfg)}
	if tr.Service != triggers.ServiceCustomGit {
		if fg, err := s.ForTrigger(tr); err == nil {
			if b, err := fg.DefaultBranch(ctx, src); err == nil {
				md.DefaultBranch = b
			}
		}
	}
	switch {
	case p.RefName != "":
		kind := "heads"
		if p.RefKind == "tag" {
			kind = "tags"
		}
		md.Ref = "refs/" + kind + "/" + p.RefName
	case p.BranchName != "":
		md.Ref = "refs/heads/" + p.BranchName
	case md.DefaultBranch != "":
		md.Ref = "refs/heads/" + md.DefaultBranch
	}
	if md.Commit == "" {
		head, err := s.resolveHead(ctx, tr, cfg, md.Ref)
		if err != nil {
			return nil, err
		}
		md.Commit, md.Ref = head.Commit, head.Name
		if md.DefaultBranch == "" {
			md.DefaultBranch = head.DefaultBranch
		}
	}
	if md.Ref == "" {
		md.Ref = "refs/heads/master"
	}
	// The run ignores the branch/tag regex; Prepare applies the rest.
	cfg.BranchTagRegex = ""
	prep, sk := triggers.Prepare(cfg, triggers.PushEvent{Service: tr.Service, Repository: src, Metadata: md})
	if sk.Skipped() {
		return nil, requestError(sk.Message)
	}
	return s.Submit(ctx, tr, prep)
}

// resolveHead asks the trigger's git server for ref's head ("": the
// default branch). Every failure is a RequestError the caller can act on.
func (s *Service) resolveHead(ctx context.Context, tr *store.Trigger, cfg triggers.Config, ref string) (gitsource.RemoteRef, error) {
	if s.GitURL(tr, cfg) == "" {
		return gitsource.RemoteRef{}, requestError("The trigger has no build_source to build from.")
	}
	src, err := s.gitSource(tr, cfg, ref)
	if err != nil {
		return gitsource.RemoteRef{}, err
	}
	head, err := gitsource.ResolveRef(ctx, s.egress, src, ref)
	if err == nil {
		return head, nil
	}
	if errors.Is(err, gitsource.ErrRefNotFound) {
		what := "The default branch"
		switch kind, name := triggers.ParsedRef(ref); kind {
		case "heads":
			what = "Branch " + strconv.Quote(name)
		case "tags":
			what = "Tag " + strconv.Quote(name)
		}
		return gitsource.RemoteRef{}, &RequestError{Message: what + " does not exist in the trigger's git repository.", Err: ErrRefNotFound}
	}
	if ue, ok := builderr.AsUserError(err); ok {
		return gitsource.RemoteRef{}, &RequestError{Message: "Could not read the trigger's git repository: " + ue.Message, Err: err}
	}
	s.log.WarnContext(ctx, "resolving a trigger's ref failed", "trigger", tr.UUID, "ref", ref, "err", err)
	return gitsource.RemoteRef{}, requestError("Could not reach the trigger's git repository to find the commit to build; try again, or give commit_sha.")
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return s != ""
}
