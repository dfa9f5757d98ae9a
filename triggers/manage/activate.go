package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/berth-dev/berth/gitsource"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/internal/jsonerr"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
)

// Activation is what activating a trigger takes besides the trigger.
type Activation struct {
	// Config is the trigger's config as the caller sent it (a JSON object
	// or null).
	Config      json.RawMessage
	PullRobot   string
	AccessToken string
	// HookURL is the trigger's webhook URL, without credentials, that the
	// forge is to deliver to.
	HookURL func(triggerUUID string) string
	// CheckPullRobot refuses a pull robot the caller may not use; its
	// error is returned as it is.
	CheckPullRobot func(ctx context.Context, name string) error
	// ConnectedUserID is the account activating the trigger (0: none).
	ConnectedUserID int64
}

// hostKeyTimeout bounds recording a git server's SSH host key.
const hostKeyTimeout = 15 * time.Second

// refusedGitServer is the answer for a git source at an address the
// egress policy refuses: the same for every address and port, since
// nothing was sent there.
const refusedGitServer = "The git server's address is not reachable from berth: loopback, private and link-local addresses are refused unless an administrator allows their network (OUTBOUND_ALLOWED_NETWORKS)."

// Create records a new trigger of service on repository repoID and
// activates it; a trigger that fails to activate is removed again.
func (s *Service) Create(ctx context.Context, repoID int64, service string, in Activation) (*store.Trigger, error) {
	if _, err := triggers.ForService(service); err != nil {
		return nil, &RequestError{Message: "Unknown trigger service " + strconv.Quote(service), Err: err}
	}
	tr := &store.Trigger{UUID: uuid.NewString(), RepoID: repoID, Service: service, Enabled: true, ConnectedUserID: in.ConnectedUserID}
	if err := s.o.Store.CreateTrigger(ctx, tr); err != nil {
		return nil, err
	}
	if err := s.Activate(ctx, tr, in); err != nil {
		if derr := s.o.Store.DeleteTrigger(context.WithoutCancel(ctx), tr.UUID); derr != nil {
			s.log.ErrorContext(ctx, "removing a trigger that failed to activate failed", "trigger", tr.UUID, "err", derr)
		}
		return nil, err
	}
	return tr, nil
}

// Activate checks the config, makes the trigger's secret and deploy key,
// learns the clone link of a forge whose API names it, records the SSH
// host key of the git server builds will fetch from, installs the webhook
// and deploy key on the forge, and saves the trigger.
func (s *Service) Activate(ctx context.Context, tr *store.Trigger, in Activation) error {
	cfgJSON, cfg, err := checkedConfig(in.Config)
	if err != nil {
		return err
	}
	if err := s.checkGitURL(ctx, tr, cfg); err != nil {
		return err
	}
	if in.PullRobot != "" && in.CheckPullRobot != nil {
		if err := in.CheckPullRobot(ctx, in.PullRobot); err != nil {
			return err
		}
	}
	key, err := triggers.GenerateDeployKey("berth trigger " + tr.UUID)
	if err != nil {
		return err
	}
	secret := auth.RandomString(auth.RobotTokenLen, auth.UpperAlnum)
	tr.Config, tr.PublicKey, tr.PullRobot = cfgJSON, key.PublicKey, in.PullRobot
	if in.AccessToken != "" {
		tr.SealedAuthToken = s.o.Secrets.Seal([]byte(in.AccessToken), AuthTokenPurpose(tr.UUID))
	}
	var fg forge.Forge
	if tr.Service != triggers.ServiceCustomGit {
		if !strings.Contains(cfg.BuildSource, "/") {
			return requestError("config.build_source must name the forge repository as owner/name")
		}
		if fg, err = s.ForTrigger(tr); err != nil {
			return &RequestError{Message: "Could not activate the trigger: " + err.Error(), Err: err}
		}
		// The clone link comes first: it names the git server whose host
		// key is recorded next.
		if err := RecordCloneLink(ctx, fg, tr); err != nil {
			return &RequestError{Message: "Could not activate the trigger: " + err.Error(), Err: err}
		}
		if cfg, _, err = ParseConfig(tr.Config); err != nil {
			return err
		}
	}
	if err := s.recordHostKey(ctx, tr, cfg, fg != nil); err != nil {
		return err
	}
	if fg != nil {
		if err := Install(ctx, fg, tr, in.HookURL(tr.UUID), []byte(secret)); err != nil {
			return &RequestError{Message: "Could not activate the trigger: " + err.Error(), Err: err}
		}
	}
	tr.SealedSecret = s.o.Secrets.Seal([]byte(secret), SecretPurpose(tr.UUID))
	tr.SealedPrivateKey = s.o.Secrets.Seal(key.PrivateKeyPEM, PrivateKeyPurpose(tr.UUID))
	if in.ConnectedUserID != 0 {
		tr.ConnectedUserID = in.ConnectedUserID
	}
	return s.o.Store.UpdateTrigger(ctx, tr)
}

// checkedConfig is the caller's config as it is stored (credentials, which
// are derived on every read, dropped) and as builds read it, refused when
// it can never build.
func checkedConfig(raw json.RawMessage) (json.RawMessage, triggers.Config, error) {
	cfgMap := map[string]any{}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &cfgMap); err != nil {
			return nil, triggers.Config{}, requestError("config must be a JSON object")
		}
	}
	delete(cfgMap, "credentials")
	cfgJSON, err := json.Marshal(cfgMap)
	if err != nil {
		return nil, triggers.Config{}, err
	}
	var cfg triggers.Config
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, triggers.Config{}, &RequestError{Message: "Invalid trigger config: " + jsonerr.Problem(err), Err: err}
	}
	if err := triggers.ValidateConfig(cfg); err != nil {
		return nil, triggers.Config{}, &RequestError{Message: err.Error(), Err: err}
	}
	if p, ok := cfgMap["concurrency"]; ok && p != ConcurrencyParallel && p != ConcurrencySerial {
		return nil, triggers.Config{}, requestError(`concurrency must be "parallel" or "serial"`)
	}
	if cfg.BuildSource == "" {
		return nil, triggers.Config{}, requestError("config.build_source is required")
	}
	return cfgJSON, cfg, nil
}

// recordHostKey records in tr the SSH host key of the server builds of tr
// fetch from, when they fetch over SSH: builds check the server's key
// against the one recorded now, at activation, by the admin setting the
// trigger up. For a forge without clone_url that server is the forge's own
// SSH host, or the one its API named.
func (s *Service) recordHostKey(ctx context.Context, tr *store.Trigger, cfg triggers.Config, isForge bool) error {
	hostport, ok := sshHost(s.GitURL(tr, cfg))
	if !ok {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, hostKeyTimeout)
	line, err := s.o.ScanHostKey(sctx, hostport)
	cancel()
	switch {
	case err == nil:
		tr.KnownHosts = line
	case errors.Is(err, egress.ErrRefused):
		return &RequestError{Message: refusedGitServer, Err: ErrRefusedGitServer}
	case !isForge || cfg.CloneURL != "":
		// The cause (refused, reset, timed out, not SSH) stays in the
		// log: told to the caller, it maps the server's ports.
		s.log.WarnContext(ctx, "recording a git server's SSH host key failed", "trigger", tr.UUID, "host", hostport, "err", err)
		return requestError("Could not record the SSH host key of " + hostport + ": no SSH server answered there.")
	default:
		// The forge's SSH host is derived from its endpoint or API, not
		// given by the admin, and its pushes may name another clone URL:
		// the trigger is still activated, and a build that fetches over
		// SSH fails with a message that names the missing host key.
		s.log.WarnContext(ctx, "forge SSH host key not recorded", "trigger", tr.UUID, "host", hostport, "err", err)
	}
	return nil
}

// checkGitURL refuses, at creation and activation, a git URL builds of tr
// could never fetch: a transport other than ssh, https, http and git (a
// file:// URL or a local path would read the server's disk), or a server
// the egress policy refuses.
func (s *Service) checkGitURL(ctx context.Context, tr *store.Trigger, cfg triggers.Config) error {
	err := gitsource.CheckURL(ctx, s.egress, s.GitURL(tr, cfg))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gitsource.ErrRefusedHost):
		return &RequestError{Message: refusedGitServer, Err: ErrRefusedGitServer}
	}
	if ue, ok := builderr.AsUserError(err); ok {
		return &RequestError{Message: "Invalid git source: " + ue.Message, Err: err}
	}
	return err
}

// sshHost returns host:port of an SSH git URL (ssh://[user@]host[:port]/path
// or scp-like [user@]host:path); other URLs need no host key.
func sshHost(src string) (string, bool) {
	if strings.Contains(src, "://") {
		u, err := url.Parse(src)
		if err != nil || (u.Scheme != "ssh" && u.Scheme != "git+ssh" && u.Scheme != "ssh+git") || u.Hostname() == "" {
			return "", false
		}
		port := u.Port()
		if port == "" {
			port = "22"
		}
		return net.JoinHostPort(u.Hostname(), port), true
	}
	hostPart, _, ok := strings.Cut(src, ":")
	if !ok || strings.Contains(hostPart, "/") {
		return "", false
	}
	if i := strings.LastIndex(hostPart, "@"); i >= 0 {
		hostPart = hostPart[i+1:]
	}
	if hostPart == "" {
		return "", false
	}
	return net.JoinHostPort(hostPart, "22"), true
}

// Delete removes the forge's webhook and deploy key as well as it can
// (their failure is logged, as Quay ignores it) and the trigger.
func (s *Service) Delete(ctx context.Context, tr *store.Trigger) error {
	if tr.Service != triggers.ServiceCustomGit && (tr.HookID != "" || tr.DeployKeyID != "") {
		fg, err := s.ForTrigger(tr)
		if err == nil {
			err = Uninstall(ctx, fg, tr)
		}
		if err != nil {
			s.log.WarnContext(ctx, "removing a trigger's webhook or deploy key failed", "trigger", tr.UUID, "err", err)
		}
	}
	if err := s.o.Store.DeleteTrigger(ctx, tr.UUID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("manage: delete trigger %s: %w", tr.UUID, err)
	}
	return nil
}
