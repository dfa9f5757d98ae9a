package store

import (
	"context"
	"encoding/json"
	"time"
)

// BuildPhase is a build's state, spelled as Quay spells it (these strings
// are part of the API).
type BuildPhase string

const (
	PhaseWaiting        BuildPhase = "waiting"
	PhaseBuildScheduled BuildPhase = "build-scheduled"
	PhaseUnpacking      BuildPhase = "unpacking"
	PhasePulling        BuildPhase = "pulling"
	PhaseBuilding       BuildPhase = "building"
	PhasePushing        BuildPhase = "pushing"
	PhaseComplete       BuildPhase = "complete"
	PhaseError          BuildPhase = "error"
	PhaseInternalError  BuildPhase = "internalerror"
	PhaseCancelled      BuildPhase = "cancelled"
	// PhaseExpired is never recorded: the API shows an internalerror build
	// that used all its attempts as "expired", as Quay does.
	PhaseExpired BuildPhase = "expired"
)

// Terminal reports whether p ends a build: complete, error, internalerror
// and cancelled never change again.
func (p BuildPhase) Terminal() bool {
	switch p {
	case PhaseComplete, PhaseError, PhaseInternalError, PhaseCancelled:
		return true
	}
	return false
}

// TerminalView is Terminal for a phase as the API shows it, where expired
// ends a build too: what a client waits for.
func (p BuildPhase) TerminalView() bool { return p == PhaseExpired || p.Terminal() }

// Running reports whether a worker has been (or is being) started for the
// build: build-scheduled through pushing.
func (p BuildPhase) Running() bool {
	switch p {
	case PhaseBuildScheduled, PhaseUnpacking, PhasePulling, PhaseBuilding, PhasePushing:
		return true
	}
	return false
}

// Valid reports whether p is one of the phases above.
func (p BuildPhase) Valid() bool { return p == PhaseWaiting || p.Running() || p.Terminal() }

// BuildGitSource is a commit to clone. Secrets (deploy keys, tokens) are not
// kept here: they belong to the trigger and are read when a worker registers.
type BuildGitSource struct {
	URL       string `json:"url"`
	CommitSHA string `json:"commit_sha,omitempty"`
	Ref       string `json:"ref,omitempty"`
}

// BuildRequest is what was asked for. Exactly one of FileID, ArchiveURL and
// Git names the source.
type BuildRequest struct {
	FileID     string          `json:"file_id,omitempty"`
	ArchiveURL string          `json:"archive_url,omitempty"`
	Git        *BuildGitSource `json:"git,omitempty"`
	// DockerfilePath and Context are relative to the source root; a
	// leading "/" means that root (Quay's convention).
	DockerfilePath string            `json:"dockerfile_path,omitempty"`
	Context        string            `json:"context,omitempty"`
	Subdirectory   string            `json:"subdirectory,omitempty"`
	PullRobot      string            `json:"pull_robot,omitempty"`
	BuildArgs      map[string]string `json:"build_args,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Target         string            `json:"target,omitempty"`
	NoCache        bool              `json:"no_cache,omitempty"`
	// Engine is "buildah" (default when empty) or "buildkit".
	Engine string `json:"engine,omitempty"`
}

// Build is one repository build: the source of truth for its phase.
type Build struct {
	ID     string // UUID
	RepoID int64
	// Namespace, NamespaceID and Repository are filled on reads.
	Namespace   string
	NamespaceID int64
	Repository  string

	Phase BuildPhase
	// Attempts counts the workers started for the build so far.
	Attempts    int
	DisplayName string
	Tags        []string
	Request     BuildRequest
	// Priority picks the queue: higher runs first (0 is normal).
	Priority int
	// RequesterID is the account that asked (0: none, e.g. a trigger
	// without an owner); Requester is its name, filled on reads.
	RequesterID int64
	Requester   string
	// TriggerID is the trigger that started the build ("" for manual
	// builds); TriggerMetadata is the prepared metadata (JSON) the trigger
	// recorded, nil when none.
	TriggerID       string
	TriggerMetadata json.RawMessage

	CreatedAt   time.Time
	StartedAt   time.Time // zero until a worker was first scheduled
	CompletedAt time.Time // zero until terminal
	// ErrorMessage is the user-facing reason of error/internalerror.
	ErrorMessage string
	// ManifestDigests maps each pushed tag to its manifest digest.
	ManifestDigests map[string]string
	// ExecutorName and ExecutionID name the current attempt's worker.
	ExecutorName string
	ExecutionID  string
	// LeaseExpiry is when the current attempt's worker is presumed lost
	// unless it heartbeats first (zero while waiting).
	LeaseExpiry time.Time
	// LogsArchive references the archived log once the build ended ("" while
	// the log is live).
	LogsArchive string
	// Version increases with every UpdateBuild; it is the compare-and-set
	// token.
	Version int64
}

// BuildFile is an uploaded build context (POST /api/v1/filedrop/). It is
// recorded when the upload URL is issued, before any bytes arrive, and
// belongs to someone: only its uploader, or writers of the repository it
// was first built in, may build it.
type BuildFile struct {
	ID string
	// UploaderID is the account the upload URL was issued to (0: deleted
	// since).
	UploaderID int64
	// RepoID is the repository the file was first built in (0: no build
	// used it yet, or that repository was deleted). RepoNamespace and
	// RepoName are filled on reads.
	RepoID        int64
	RepoNamespace string
	RepoName      string
	// Digest names the blob holding the bytes: "" until they arrived.
	Digest string
	Size   int64
	// CreatedAt is when the upload URL was issued, ExpiresAt when it stops
	// working; a file no build used is purged some time after ExpiresAt.
	CreatedAt time.Time
	ExpiresAt time.Time
}

// BuildStore keeps builds.
//
// Contract (checked on SQLite and PostgreSQL by sqlstore's tests):
//   - CreateBuild inserts b (ID set by the caller, Phase defaulting to
//     waiting), filling CreatedAt and Version; ErrNotFound if the repository
//     does not exist, ErrConflict if the ID is taken.
//   - UpdateBuild is a compare-and-set on b.Version: it writes every
//     mutable field (phase, attempts, times, error, digests, executor,
//     execution, lease) and increments b.Version, or returns ErrStale when
//     the stored version differs or the stored phase is terminal, so a
//     terminal build never changes.
//   - RenewBuildLease moves only the lease of a running build whose
//     attempt is `attempt`, without bumping Version; ErrStale otherwise.
//   - SetBuildExecution records the worker of attempt `attempt` the same
//     way (the worker may already be changing phases).
type BuildStore interface {
	CreateBuild(ctx context.Context, b *Build) error
	GetBuild(ctx context.Context, id string) (*Build, error)
	// ListBuilds returns repoID's builds created at or after since (zero:
	// any time), newest first, at most limit (limit <= 0: all).
	ListBuilds(ctx context.Context, repoID int64, since time.Time, limit int) ([]Build, error)
	// ListUnfinishedBuilds returns one page of the builds that have not
	// ended (waiting or running), oldest first (by CreatedAt, then ID): at
	// most limit of them (limit <= 0: all) that come after `after` in that
	// order (nil: from the oldest). Passing the last build of a page gets
	// the next one, so a walk sees every build that stays unfinished
	// exactly once.
	ListUnfinishedBuilds(ctx context.Context, after *Build, limit int) ([]Build, error)
	// ListTriggerBuilds returns at most limit (0: no limit) builds that
	// triggerID started, newest first, only those in one of phases when
	// phases are given.
	ListTriggerBuilds(ctx context.Context, triggerID string, limit int, phases ...BuildPhase) ([]Build, error)
	// CountNamespaceBuilds counts builds of repositories in namespaceID in
	// one of phases.
	CountNamespaceBuilds(ctx context.Context, namespaceID int64, phases ...BuildPhase) (int, error)
	UpdateBuild(ctx context.Context, b *Build) error
	RenewBuildLease(ctx context.Context, id string, attempt int, until time.Time) error
	SetBuildExecution(ctx context.Context, id string, attempt int, executorName, executionID string) error
	// SetBuildLogsArchive records where the ended build's log was archived.
	SetBuildLogsArchive(ctx context.Context, id, ref string) error

	// PutBuildFile records a file whose upload URL is being issued (and
	// its content, when f.Digest is set), filling CreatedAt; ErrConflict if
	// the ID is taken. GetBuildFile finds it.
	PutBuildFile(ctx context.Context, f *BuildFile) error
	GetBuildFile(ctx context.Context, id string) (*BuildFile, error)
	// SetBuildFileContent records the bytes of a file that has none yet:
	// ErrNotFound for an unknown file, ErrConflict if it already has them.
	SetBuildFileContent(ctx context.Context, id, digest string, size int64) error
	// ClaimBuildFile records repoID as the first repository the file is
	// built in, unless one is recorded already (then it does nothing);
	// ErrNotFound for an unknown file.
	ClaimBuildFile(ctx context.Context, id string, repoID int64) error
	// BuildFileUsage counts the files issued to uploaderID at or after
	// since, and the bytes of those that arrived.
	BuildFileUsage(ctx context.Context, uploaderID int64, since time.Time) (files int, bytes int64, err error)
	// DeleteUnusedBuildFiles removes the files no build used whose upload
	// URL expired before expiredBefore. It returns how many it removed and
	// the digests of their bytes that nothing references any more (no
	// other file, registry blob or archived build log): the caller deletes
	// those blobs.
	DeleteUnusedBuildFiles(ctx context.Context, expiredBefore time.Time) (removed int, unreferenced []string, err error)
}
