// Package store is berth's metadata database: accounts, repositories, blobs
// known to each repository, manifests, tags, referrers and upload state.
//
// One implementation (SQL) serves both SQLite and PostgreSQL. Every method is
// safe for concurrent use. Methods return ErrNotFound (wrapped) when the thing
// asked for does not exist, and ErrConflict when a uniqueness rule would be
// broken. Callers test with errors.Is.
package store

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound reports that the requested row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict reports that a uniqueness rule (name, email, ...) would be broken.
	ErrConflict = errors.New("conflict")
	// ErrStale reports that a compare-and-set lost: the row changed since it was read.
	ErrStale = errors.New("stale")
)

// AccountKind tells users, organizations and robots apart. They share one
// table and one name space, as in Quay: an organization's name is a namespace
// just like a user's, and a robot is named "<namespace>+<shortname>".
type AccountKind string

const (
	KindUser         AccountKind = "user"
	KindOrganization AccountKind = "organization"
	KindRobot        AccountKind = "robot"
)

// Account is a user, an organization or a robot.
type Account struct {
	ID           int64
	Kind         AccountKind
	Name         string // unique across all kinds
	Email        string // unique among users when non-empty
	PasswordHash string // users: a bcrypt hash; empty for organizations and robots
	Superuser    bool
	Enabled      bool
	// OwnerID is the namespace account owning a robot; 0 otherwise.
	OwnerID   int64
	CreatedAt time.Time
}

// Visibility of a repository.
type Visibility string

const (
	Public  Visibility = "public"
	Private Visibility = "private"
)

// Repository is a named collection of manifests and tags inside a namespace.
// Name may contain slashes (nested repositories): "ns/a/b" has Namespace "ns"
// and Name "a/b".
type Repository struct {
	ID          int64
	NamespaceID int64
	Namespace   string
	Name        string
	Visibility  Visibility
	Description string
	CreatedAt   time.Time
}

// FullName is "<namespace>/<name>", the name used on /v2.
func (r *Repository) FullName() string { return r.Namespace + "/" + r.Name }

// Blob is a content-addressed byte sequence known to the store.
type Blob struct {
	Digest string
	Size   int64
}

// Upload is the persisted state of a blob upload session, so that any server
// instance, or the same one after a restart, can resume it.
type Upload struct {
	ID     string
	RepoID int64
	// Offset is the number of bytes durably appended and hashed so far.
	Offset int64
	// Algorithm is the digest algorithm the running hash uses ("sha256" or "sha512").
	Algorithm string
	// HashState is the marshalled state of the running hash at Offset.
	HashState []byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

// RefKind says what a manifest reference points at.
type RefKind string

const (
	RefBlob     RefKind = "blob"
	RefManifest RefKind = "manifest"
)

// Ref is a descriptor inside a manifest that must exist in the same
// repository before the manifest is accepted.
type Ref struct {
	Digest string
	Size   int64
	Kind   RefKind
}

// Manifest is a stored manifest. Payload is kept byte-exact.
type Manifest struct {
	RepoID       int64
	Digest       string
	MediaType    string
	ArtifactType string
	Size         int64
	Payload      []byte
	// Subject is the digest of the manifest this one refers to ("" if none).
	Subject string
	// Annotations is the JSON object of the manifest's annotations, kept for
	// the referrers API ("" if none).
	Annotations string
	Refs        []Ref
	CreatedAt   time.Time
}

// MissingRefError is returned by PutManifest when a required reference is not
// present in the repository, or is present with another size.
type MissingRefError struct {
	Ref          Ref
	SizeMismatch bool
}

func (e *MissingRefError) Error() string {
	if e.SizeMismatch {
		return "reference " + e.Ref.Digest + " has a different size"
	}
	return "reference " + e.Ref.Digest + " is not in the repository"
}

// Tag points a name at a manifest digest within a repository.
type Tag struct {
	Name      string
	Digest    string
	UpdatedAt time.Time
}

// TagSummary is a tag with what a tag listing shows of its manifest.
type TagSummary struct {
	Tag
	MediaType string
	// BlobSize adds up the blobs the manifest references (config and
	// layers); an index references none.
	BlobSize int64
}

// Store is the metadata database: the union of the parts below, which
// the SQL store implements. Consumers declare the few methods they use
// beside themselves, or take one of the parts; cmd wires the whole.
type Store interface {
	AccountStore
	RepositoryStore
	BlobStore
	UploadStore
	ManifestStore
	// Builds (builds.go).
	BuildStore
	// Organizations, teams, robots, permissions, tokens, sessions (tenancy.go).
	TenancyStore
	// Build triggers and their webhook deliveries (triggers.go).
	TriggerStore

	// Close releases the database connections.
	Close() error
	// Dialect is "sqlite" or "postgres".
	Dialect() string
}

// AccountStore keeps users, organizations and robots.
type AccountStore interface {
	// CreateAccount inserts a, filling ID and CreatedAt. ErrConflict if the
	// name (or a user's email) is taken.
	CreateAccount(ctx context.Context, a *Account) error
	GetAccountByName(ctx context.Context, name string) (*Account, error)
	GetAccountByID(ctx context.Context, id int64) (*Account, error)
	// CountAccounts counts accounts of the given kind.
	CountAccounts(ctx context.Context, kind AccountKind) (int, error)
}

// RepositoryStore keeps repositories.
type RepositoryStore interface {
	// CreateRepository inserts r (NamespaceID and Name set), filling ID and
	// CreatedAt. ErrConflict if it exists.
	CreateRepository(ctx context.Context, r *Repository) error
	// GetRepository finds namespace/name.
	GetRepository(ctx context.Context, namespace, name string) (*Repository, error)
	// ListRepositories returns repositories ordered by full name, after
	// `last` (exclusive), at most n (n <= 0: all).
	ListRepositories(ctx context.Context, last string, n int) ([]Repository, error)
	DeleteRepository(ctx context.Context, id int64) error
}

// BlobStore records which blobs exist and which repositories they are
// linked to.
type BlobStore interface {
	// PutBlob records that the bytes of a blob are in storage (idempotent)
	// and links it to repoID.
	PutBlob(ctx context.Context, repoID int64, b Blob) error
	// CompleteUpload is PutBlob and the removal of the upload session
	// uploadID (if it is still recorded) in one transaction: a finished
	// upload costs one commit.
	CompleteUpload(ctx context.Context, uploadID string, repoID int64, b Blob) error
	// GetBlob finds a blob by digest in any repository: whether bytes exist.
	GetBlob(ctx context.Context, digest string) (*Blob, error)
	// GetRepoBlob finds a blob linked to repoID.
	GetRepoBlob(ctx context.Context, repoID int64, digest string) (*Blob, error)
	// LinkBlob links an existing blob to repoID (a cross-repository mount).
	// ErrNotFound if no such blob is recorded.
	LinkBlob(ctx context.Context, repoID int64, digest string) error
	// UnlinkBlob removes the blob from repoID only. ErrNotFound if it was not linked.
	UnlinkBlob(ctx context.Context, repoID int64, digest string) error
}

// UploadStore keeps the state of blob upload sessions.
type UploadStore interface {
	// CreateUpload records a new, empty upload session. Its commit may not
	// survive a power cut (a process crash loses nothing): the session holds
	// no bytes, and a client whose session is gone restarts the upload.
	CreateUpload(ctx context.Context, u *Upload) error
	GetUpload(ctx context.Context, id string) (*Upload, error)
	// AdvanceUpload moves an upload from offset `from` to u.Offset with the
	// new hash state. ErrStale if the stored offset is not `from` (another
	// request advanced it).
	AdvanceUpload(ctx context.Context, u *Upload, from int64) error
	DeleteUpload(ctx context.Context, id string) error
	// ListUploadsBefore returns uploads not touched since t (for cleanup).
	ListUploadsBefore(ctx context.Context, t time.Time) ([]Upload, error)
}

// ManifestStore keeps manifests, tags and referrers.
type ManifestStore interface {
	// PutManifest stores m (idempotently: an identical digest is kept) after
	// checking, in the same transaction, that each of m.Refs exists in the
	// repository with the declared size (*MissingRefError otherwise), and
	// points tag at it when tag is not "".
	PutManifest(ctx context.Context, m *Manifest, tag string) error
	GetManifest(ctx context.Context, repoID int64, digest string) (*Manifest, error)
	// ResolveTag returns the digest a tag points at.
	ResolveTag(ctx context.Context, repoID int64, tag string) (string, error)
	// ListTags returns tag names in lexical (byte) order after `last`
	// (exclusive), at most n (n < 0: all).
	ListTags(ctx context.Context, repoID int64, last string, n int) ([]string, error)
	// ListTagDetails returns the tags with their digests, lexically ordered.
	ListTagDetails(ctx context.Context, repoID int64, last string, n int) ([]Tag, error)
	// ListTagsNewestFirst returns one page of tags: newest first by the
	// second of their last change, then by name; offset skipped, at most n
	// (n < 0: all); only the tag called name when name is not "".
	ListTagsNewestFirst(ctx context.Context, repoID int64, name string, offset, n int) ([]TagSummary, error)
	DeleteTag(ctx context.Context, repoID int64, tag string) error
	// DeleteManifest removes the manifest and every tag pointing at it.
	DeleteManifest(ctx context.Context, repoID int64, digest string) error
	// ListReferrers returns manifests whose subject is `subject`, optionally
	// only those with the given artifactType, ordered by digest. Payload and
	// Refs are not filled.
	ListReferrers(ctx context.Context, repoID int64, subject, artifactType string) ([]Manifest, error)
}
