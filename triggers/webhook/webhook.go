// Package webhook serves POST /webhooks/push/trigger/{uuid}: it finds the
// trigger, authenticates the delivery with the trigger's secret, drops
// replays, parses and prepares the push with package triggers, and hands
// the build to the build manager through the trigger service
// (triggers/manage). Every delivery is recorded with what became of it. Run follows the trigger builds it queued to set commit
// statuses on the forge and to disable triggers whose builds keep failing.
package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/manage"
)

// PathPrefix is where the handler is mounted; the trigger's UUID follows.
const PathPrefix = "/webhooks/push/trigger/"

// Quay's auto-disable thresholds (SUCCESSIVE_TRIGGER_*_DISABLE_THRESHOLD).
const (
	DefaultFailureThreshold       = 100
	DefaultInternalErrorThreshold = 5
)

// DefaultKeepDeliveries is how many deliveries per trigger are kept.
const DefaultKeepDeliveries = 1000

// DefaultReplayWindow is how long an authenticated delivery's body is
// remembered: the same body again within it is a replay, whatever its
// delivery ID. A week covers a forge's manual redelivery and makes a
// captured delivery useless for rolling a tag back to last week's commit.
const DefaultReplayWindow = 7 * 24 * time.Hour

// Unauthenticated deliveries (no or a wrong signature or token) are
// answered and recorded at most this often per trigger; beyond it they get
// 429 and no record, so that strangers who know a trigger's URL cannot
// push its real deliveries out of the kept history.
const (
	rejectedPerMinute = 10
	rejectedBurst     = 10
)

// Store is what the handler reads and writes of the metadata store: the
// deliveries and their payload hashes, the trigger's builds and its
// failure counters, and what the trigger service needs.
type Store interface {
	manage.Store
	AddTriggerDelivery(ctx context.Context, d *store.TriggerDelivery) (bool, error)
	FinishTriggerDelivery(ctx context.Context, triggerUUID, id string, status store.DeliveryStatus, reason, buildID string) error
	PruneTriggerDeliveries(ctx context.Context, triggerUUID string, keep int) (int, error)
	ClaimTriggerPayload(ctx context.Context, triggerUUID, sha256Hex string, at, notBefore time.Time) (bool, error)
	PruneTriggerPayloads(ctx context.Context, triggerUUID string, before time.Time) (int, error)
	ListTriggerBuilds(ctx context.Context, triggerID string, limit int, phases ...store.BuildPhase) ([]store.Build, error)
	GetBuild(ctx context.Context, id string) (*store.Build, error)
	RecordTriggerBuild(ctx context.Context, uuid string, phase store.BuildPhase, failureThreshold, internalThreshold int) (*store.Trigger, error)
}

// Options configure NewHandler. Store, Manager and Secrets are required.
type Options struct {
	Store   Store
	Manager *buildmanager.Manager
	Secrets *auth.Secrets
	Forges  triggers.Forges
	// ExternalURL is berth's base URL ("https://registry.example.com"),
	// for the build page commit statuses link to.
	ExternalURL string
	Logger      *slog.Logger
	// MaxPayloadBytes limits a delivery (default triggers.MaxPayloadBytes).
	MaxPayloadBytes int64
	// FailureThreshold and InternalErrorThreshold disable a trigger after
	// that many successive failed (error / internalerror) builds; default
	// Quay's 100 and 5, negative never.
	FailureThreshold       int
	InternalErrorThreshold int
	// KeepDeliveries bounds the deliveries kept per trigger (default
	// DefaultKeepDeliveries).
	KeepDeliveries int
	// ReplayWindow is how long a delivery's body hash is kept to refuse
	// its replays (default DefaultReplayWindow; negative: bodies are not
	// compared, only delivery IDs).
	ReplayWindow time.Duration
}

// Handler is the webhook endpoint. Create it with NewHandler.
type Handler struct {
	o       Options
	log     *slog.Logger
	service *manage.Service
	// rejected paces the unauthenticated deliveries of each trigger.
	rejected *lru.LRU[string, *rate.Limiter]
}

// NewHandler checks o and returns the handler.
func NewHandler(o Options) *Handler {
	if o.Store == nil || o.Manager == nil || o.Secrets == nil {
		panic("webhook.NewHandler: Store, Manager and Secrets are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = triggers.MaxPayloadBytes
	}
	if o.FailureThreshold == 0 {
		o.FailureThreshold = DefaultFailureThreshold
	}
	if o.InternalErrorThreshold == 0 {
		o.InternalErrorThreshold = DefaultInternalErrorThreshold
	}
	if o.KeepDeliveries <= 0 {
		o.KeepDeliveries = DefaultKeepDeliveries
	}
	if o.ReplayWindow == 0 {
		o.ReplayWindow = DefaultReplayWindow
	}
	o.ExternalURL = strings.TrimSuffix(o.ExternalURL, "/")
	// An evicted limiter starts full again: the bound on recorded
	// rejections holds per trigger for as long as it stays in the cache,
	// which a trigger under attack does.
	rejected := lru.NewLRU[string, *rate.Limiter](16384, nil, 10*time.Minute)
	service, err := manage.New(manage.Options{Store: o.Store, Manager: o.Manager, Secrets: o.Secrets, Forges: o.Forges, Logger: o.Logger})
	if err != nil {
		panic("webhook.NewHandler: " + err.Error())
	}
	return &Handler{o: o, log: o.Logger, service: service, rejected: rejected}
}

// allowRejected reports whether another unauthenticated delivery to the
// trigger may be answered and recorded now.
func (h *Handler) allowRejected(triggerUUID string) bool {
	lim, ok := h.rejected.Get(triggerUUID)
	if !ok {
		lim = rate.NewLimiter(rate.Every(time.Minute/rejectedPerMinute), rejectedBurst)
		h.rejected.Add(triggerUUID, lim)
	}
	return lim.Allow()
}

// answer is the outcome of one delivery: the HTTP reply and the record.
type answer struct {
	code    int
	message string
	status  store.DeliveryStatus
	reason  string
	buildID string
}

func okay(status store.DeliveryStatus, reason string) answer {
	return answer{code: http.StatusOK, message: "Okay", status: status, reason: reason}
}

func rejected(code int, message, reason string) answer {
	return answer{code: code, message: message, status: store.DeliveryRejected, reason: reason}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	id := r.URL.Path
	if i := strings.LastIndex(id, "/trigger/"); i >= 0 {
		id = id[i+len("/trigger/"):]
	}
	id = strings.Trim(id, "/")
	ctx := r.Context()
	t, err := h.o.Store.GetTrigger(ctx, id)
	if errors.Is(err, store.ErrNotFound) || id == "" || strings.Contains(id, "/") {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	if err != nil {
		h.log.ErrorContext(ctx, "webhook trigger lookup failed", "trigger", id, "err", err)
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return
	}
	event := "push"
	if p, err := triggers.ForService(t.Service); err == nil {
		event = p.EventName(r)
	}
	d := &store.TriggerDelivery{ID: uuid.NewString(), TriggerUUID: t.UUID, Event: event}
	a, claimed := h.deliver(ctx, r, t, d)
	if a.code == http.StatusUnauthorized && !h.allowRejected(t.UUID) {
		h.log.DebugContext(ctx, "unauthenticated webhook delivery dropped", "trigger", t.UUID)
		w.Header().Set("Retry-After", "60")
		http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
		return
	}
	// The record outlives a client that hung up.
	rctx := context.WithoutCancel(ctx)
	if !claimed {
		d.Status, d.Reason, d.BuildID = a.status, a.reason, a.buildID
		if _, err := h.o.Store.AddTriggerDelivery(rctx, d); err != nil {
			h.log.ErrorContext(ctx, "recording webhook delivery failed", "trigger", t.UUID, "err", err)
		}
	} else if err := h.o.Store.FinishTriggerDelivery(rctx, t.UUID, d.ID, a.status, a.reason, a.buildID); err != nil {
		h.log.ErrorContext(ctx, "recording webhook delivery failed", "trigger", t.UUID, "delivery", d.ID, "err", err)
	}
	if _, err := h.o.Store.PruneTriggerDeliveries(rctx, t.UUID, h.o.KeepDeliveries); err != nil {
		h.log.WarnContext(ctx, "pruning webhook deliveries failed", "trigger", t.UUID, "err", err)
	}
	if h.o.ReplayWindow > 0 {
		if _, err := h.o.Store.PruneTriggerPayloads(rctx, t.UUID, time.Now().Add(-h.o.ReplayWindow)); err != nil {
			h.log.WarnContext(ctx, "pruning webhook payload hashes failed", "trigger", t.UUID, "err", err)
		}
	}
	h.log.InfoContext(ctx, "webhook delivery", "trigger", t.UUID, "service", t.Service, "delivery", d.ID,
		"status", a.status, "reason", a.reason, "build", a.buildID, "code", a.code)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(a.code)
	_, _ = io.WriteString(w, a.message)
}

// deliver runs one delivery through the steps of package triggers. claimed
// reports that it recorded d already (the replay check), so that the
// caller finishes that record rather than adding one.
func (h *Handler) deliver(ctx context.Context, r *http.Request, t *store.Trigger, d *store.TriggerDelivery) (_ answer, claimed bool) {
	body, err := triggers.ReadPayload(r, h.o.MaxPayloadBytes)
	if err != nil {
		code := triggers.StatusCode(err)
		return rejected(code, http.StatusText(code), err.Error()), false
	}
	p, err := triggers.ForService(t.Service)
	if err != nil {
		return rejected(http.StatusInternalServerError, "Internal Server Error", err.Error()), false
	}
	var secret []byte
	if len(t.SealedSecret) > 0 {
		if secret, err = h.o.Secrets.Open(t.SealedSecret, manage.SecretPurpose(t.UUID)); err != nil {
			h.log.ErrorContext(ctx, "trigger secret does not open", "trigger", t.UUID, "err", err)
			return rejected(http.StatusInternalServerError, "Internal Server Error", "the trigger's secret does not decrypt"), false
		}
	}
	if len(secret) == 0 {
		return rejected(http.StatusUnauthorized, "Unauthorized", "the trigger is not activated"), false
	}
	if t.Service == triggers.ServiceCustomGit {
		if err := triggers.CheckTokenAuth(r, secret); err != nil {
			return rejected(triggers.StatusCode(err), "Unauthorized", err.Error()), false
		}
	}
	if err := p.Verify(r, body, secret); err != nil {
		return rejected(triggers.StatusCode(err), "Unauthorized", err.Error()), false
	}
	if !t.Enabled {
		return rejected(http.StatusBadRequest, manage.DisabledMessage, "the trigger is disabled ("+t.DisabledReason+")"), false
	}
	if fid := p.DeliveryID(r); fid != "" {
		// Only an authenticated delivery may claim an id: otherwise anyone
		// could burn a forge's future delivery ids.
		d.ID = fid
	}
	// Recorded as rejected until it is finished, which is the truth if
	// this process dies before.
	d.Status, d.Reason = store.DeliveryRejected, "processing did not finish"
	added, err := h.o.Store.AddTriggerDelivery(ctx, d)
	if err != nil {
		h.log.ErrorContext(ctx, "webhook delivery claim failed", "trigger", t.UUID, "err", err)
		d.ID = uuid.NewString()
		return rejected(http.StatusInternalServerError, "Internal Server Error", "the delivery could not be recorded"), false
	}
	if !added {
		replayOf := d.ID
		d.ID = uuid.NewString()
		return okay(store.DeliverySkipped, "replay of delivery "+replayOf), false
	}
	// The delivery ID is not covered by the signature, and some hooks send
	// none: the body is. The same body again within the window is a replay
	// under a new name.
	if h.o.ReplayWindow > 0 {
		sum := sha256.Sum256(body)
		now := time.Now()
		fresh, err := h.o.Store.ClaimTriggerPayload(ctx, t.UUID, hex.EncodeToString(sum[:]), now, now.Add(-h.o.ReplayWindow))
		if err != nil {
			h.log.ErrorContext(ctx, "webhook payload claim failed", "trigger", t.UUID, "err", err)
			return rejected(http.StatusInternalServerError, "Internal Server Error", "the delivery could not be recorded"), true
		}
		if !fresh {
			return okay(store.DeliverySkipped, "replay of an earlier delivery's payload"), true
		}
	}
	a := h.process(ctx, r, t, d, p, body)
	return a, true
}

// process parses, prepares and submits a claimed delivery.
func (h *Handler) process(ctx context.Context, r *http.Request, t *store.Trigger, d *store.TriggerDelivery, p triggers.Provider, body []byte) answer {
	ev, err := p.Parse(r, body)
	if err != nil {
		code := triggers.StatusCode(err)
		return rejected(code, http.StatusText(code), err.Error())
	}
	if ev.Skip.Skipped() {
		return okay(store.DeliverySkipped, skipReason(ev.Skip))
	}
	cfg, policy, err := manage.ParseConfig(t.Config)
	if err != nil {
		return rejected(http.StatusInternalServerError, "Internal Server Error", err.Error())
	}
	push := *ev.Push
	if triggers.SparsePayload(t.Service) {
		h.completeFromAPI(ctx, t, &push)
	}
	prep, sk := triggers.Prepare(cfg, push)
	if sk.Skipped() {
		return okay(store.DeliverySkipped, skipReason(sk))
	}
	b, err := h.service.Submit(ctx, t, prep)
	if err != nil {
		if code, msg := manage.SubmitStatus(err); code != 0 {
			return rejected(code, msg, err.Error())
		}
		h.log.ErrorContext(ctx, "submitting trigger build failed", "trigger", t.UUID, "err", err)
		return rejected(http.StatusInternalServerError, "Internal Server Error", err.Error())
	}
	if policy == manage.ConcurrencySerial {
		h.cancelSuperseded(ctx, t, b)
	}
	a := okay(store.DeliveryAccepted, "")
	a.buildID = b.ID
	if prep.PathFilters != triggers.PathFiltersNone {
		a.reason = "path filters: " + string(prep.PathFilters)
	}
	return a
}

func skipReason(s triggers.Skip) string {
	if s.Message == "" {
		return string(s.Reason)
	}
	return string(s.Reason) + ": " + s.Message
}

// completeFromAPI asks a forge whose payloads are sparse (Bitbucket) for
// what they lack: the files a push changed (for path filters) and the
// default branch (for "latest"). Without a configured forge the push goes
// on unfiltered and without it.
func (h *Handler) completeFromAPI(ctx context.Context, t *store.Trigger, push *triggers.PushEvent) {
	fg, err := h.service.ForTrigger(t)
	if err != nil {
		h.log.WarnContext(ctx, "push without API access: no path filters or default branch", "trigger", t.UUID, "service", t.Service, "err", err)
		return
	}
	if push.Metadata.DefaultBranch == "" {
		if branch, err := fg.DefaultBranch(ctx, push.Repository); err == nil {
			push.Metadata.DefaultBranch = branch
		} else {
			h.log.WarnContext(ctx, "forge default branch lookup failed", "trigger", t.UUID, "service", t.Service, "err", err)
		}
	}
	if push.Before != "" {
		if files, err := fg.GetChangedFiles(ctx, push.Repository, push.Before, push.Metadata.Commit); err == nil {
			push.Files, push.FilesKnown = files, true
		} else {
			h.log.WarnContext(ctx, "forge changed files lookup failed", "trigger", t.UUID, "service", t.Service, "err", err)
		}
	}
}

// cancelSuperseded cancels t's builds of b's ref still waiting in the queue:
// under the serial policy only the newest push of a ref builds.
func (h *Handler) cancelSuperseded(ctx context.Context, t *store.Trigger, b *store.Build) {
	waiting, err := h.o.Store.ListTriggerBuilds(ctx, t.UUID, 0, store.PhaseWaiting)
	if err != nil {
		h.log.WarnContext(ctx, "listing superseded builds failed", "trigger", t.UUID, "err", err)
		return
	}
	for _, old := range waiting {
		if old.ID == b.ID || old.Request.Git == nil || old.Request.Git.Ref != b.Request.Git.Ref ||
			old.CreatedAt.After(b.CreatedAt) {
			continue
		}
		if _, err := h.o.Manager.Cancel(ctx, old.ID); err != nil && !errors.Is(err, buildmanager.ErrNotCancellable) {
			h.log.WarnContext(ctx, "cancelling superseded build failed", "trigger", t.UUID, "build", old.ID, "err", err)
			continue
		}
		h.log.InfoContext(ctx, "superseded build cancelled", "trigger", t.UUID, "build", old.ID, "by", b.ID)
	}
}
