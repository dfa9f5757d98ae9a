package store

import (
	"context"
	"encoding/json"
	"time"
)

// Trigger disable reasons, as Quay spells them (TriggerView.disabled_reason).
const (
	DisabledByUser             = "user_toggled"
	DisabledByFailures         = "successive_build_failures"
	DisabledByInternalFailures = "successive_build_internal_errors"
)

// Trigger is a repository's build trigger: a forge (or any git server) whose
// pushes start builds. Secrets are kept sealed (internal/auth.Secrets): the
// store never sees them in clear.
type Trigger struct {
	UUID   string
	RepoID int64
	// Namespace and Repository are filled on reads.
	Namespace  string
	Repository string
	// Service is github, gitlab, bitbucket or custom-git.
	Service string
	// Config is the trigger's JSON object (Quay's keys: build_source,
	// dockerfile_path, tag_templates, ...); "{}" when empty.
	Config json.RawMessage
	// SealedSecret is the webhook secret (HMAC key, GitLab token, the
	// custom-git URL's $token password); empty until activation.
	SealedSecret []byte
	// SealedPrivateKey is the deploy key's private half (OpenSSH PEM);
	// PublicKey its authorized_keys line.
	SealedPrivateKey []byte
	PublicKey        string
	// SealedAuthToken is the forge access token the trigger acts with
	// (empty: the configured service token).
	SealedAuthToken []byte
	// KnownHosts is the git server's host key line recorded at activation,
	// which clones must match.
	KnownHosts string
	// PullRobot is the robot account builds pull base images as ("" none).
	PullRobot string
	Enabled   bool
	// DisabledReason is one of the Disabled* reasons when !Enabled.
	DisabledReason string
	DisabledAt     time.Time
	// Successive build outcomes since the last success, for auto-disable.
	SuccessiveFailures       int
	SuccessiveInternalErrors int
	// HookID and DeployKeyID are the forge's ids of what activation
	// installed ("" for custom-git).
	HookID      string
	DeployKeyID string
	// ConnectedUserID is the account that set the trigger up (0: none);
	// ConnectedUser its name, filled on reads.
	ConnectedUserID int64
	ConnectedUser   string
	CreatedAt       time.Time
}

// Active reports whether activation completed: the trigger has its secret,
// and a forge trigger its webhook (Quay's is_active).
func (t *Trigger) Active() bool {
	if len(t.SealedSecret) == 0 {
		return false
	}
	return t.Service == "custom-git" || t.HookID != ""
}

// DeliveryStatus is what became of a webhook delivery.
type DeliveryStatus string

const (
	// DeliveryAccepted: a build was queued (BuildID).
	DeliveryAccepted DeliveryStatus = "accepted"
	// DeliverySkipped: valid, but nothing to build (ping, deletion,
	// filtered ref, [skip build], replay).
	DeliverySkipped DeliveryStatus = "skipped"
	// DeliveryRejected: refused (bad signature, malformed, disabled
	// trigger, processing failed).
	DeliveryRejected DeliveryStatus = "rejected"
)

// TriggerDelivery is one webhook delivery to a trigger. ID is the forge's
// delivery id when the delivery was authenticated and carried one (replay
// protection keys on it), a generated UUID otherwise.
type TriggerDelivery struct {
	ID          string
	TriggerUUID string
	ReceivedAt  time.Time
	Event       string
	Status      DeliveryStatus
	Reason      string
	BuildID     string
}

// TriggerStore keeps build triggers and their deliveries.
//
// Contract (checked on SQLite and PostgreSQL by sqlstore's tests):
//   - CreateTrigger inserts t (UUID set by the caller), filling CreatedAt
//     and the names; ErrNotFound if the repository does not exist,
//     ErrConflict if the UUID is taken. Deleting the repository deletes
//     its triggers and their deliveries.
//   - UpdateTrigger writes every field but the UUID, repository, counters
//     and CreatedAt; ErrNotFound when the trigger is gone.
//   - RecordTriggerBuild counts a trigger build's end atomically: complete
//     resets both counters, error adds a failure, internalerror an
//     internal error (other phases change nothing); when a counter reaches
//     its threshold (> 0) an enabled trigger is disabled with Quay's
//     reason. It returns the trigger as it is afterwards.
//   - AddTriggerDelivery inserts d unless (d.TriggerUUID, d.ID) exists and
//     reports whether it was new: the replay check. ReceivedAt is filled
//     when zero.
//   - FinishTriggerDelivery sets status, reason and build of a delivery.
//   - ListTriggerDeliveries is newest first, at most limit (<= 0: all).
//   - PruneTriggerDeliveries keeps the newest `keep` deliveries of a
//     trigger and returns how many it deleted.
//   - ClaimTriggerPayload records that a trigger received a payload with
//     the given hash at `at`, and reports whether it is new: false when
//     the same hash was recorded at or after notBefore (a replay). An
//     older record is taken over. Deleting the trigger deletes them.
//   - PruneTriggerPayloads deletes a trigger's payload records from before
//     `before` and returns how many.
type TriggerStore interface {
	CreateTrigger(ctx context.Context, t *Trigger) error
	GetTrigger(ctx context.Context, uuid string) (*Trigger, error)
	// ListTriggers returns repoID's triggers, oldest first.
	ListTriggers(ctx context.Context, repoID int64) ([]Trigger, error)
	UpdateTrigger(ctx context.Context, t *Trigger) error
	DeleteTrigger(ctx context.Context, uuid string) error
	RecordTriggerBuild(ctx context.Context, uuid string, phase BuildPhase, failureThreshold, internalThreshold int) (*Trigger, error)

	AddTriggerDelivery(ctx context.Context, d *TriggerDelivery) (bool, error)
	FinishTriggerDelivery(ctx context.Context, triggerUUID, id string, status DeliveryStatus, reason, buildID string) error
	ListTriggerDeliveries(ctx context.Context, triggerUUID string, limit int) ([]TriggerDelivery, error)
	PruneTriggerDeliveries(ctx context.Context, triggerUUID string, keep int) (int, error)
	ClaimTriggerPayload(ctx context.Context, triggerUUID, sha256Hex string, at, notBefore time.Time) (bool, error)
	PruneTriggerPayloads(ctx context.Context, triggerUUID string, before time.Time) (int, error)
}
