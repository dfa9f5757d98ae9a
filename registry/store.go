package registry

import (
	"context"

	"github.com/berth-dev/berth/internal/store"
)

// Store is what the /v2 handler reads and writes in the metadata store:
// repositories (and the accounts that own or create them), blob links,
// upload sessions, manifests, tags and referrers. The SQL store implements
// it; the methods' contracts are those of store.Store.
type Store interface {
	GetAccountByName(ctx context.Context, name string) (*store.Account, error)

	GetRepository(ctx context.Context, namespace, name string) (*store.Repository, error)
	ListRepositories(ctx context.Context, last string, n int) ([]store.Repository, error)
	CreateRepositoryWithDefaults(ctx context.Context, r *store.Repository, creatorID int64, creatorRole store.Role) error

	PutBlob(ctx context.Context, repoID int64, b store.Blob) error
	GetRepoBlob(ctx context.Context, repoID int64, digest string) (*store.Blob, error)
	LinkBlob(ctx context.Context, repoID int64, digest string) error
	UnlinkBlob(ctx context.Context, repoID int64, digest string) error
	CompleteUpload(ctx context.Context, uploadID string, repoID int64, b store.Blob) error

	// Upload sessions are the registry's alone: it uses every method.
	store.UploadStore

	PutManifest(ctx context.Context, m *store.Manifest, tag string) error
	GetManifest(ctx context.Context, repoID int64, digest string) (*store.Manifest, error)
	DeleteManifest(ctx context.Context, repoID int64, digest string) error
	ResolveTag(ctx context.Context, repoID int64, tag string) (string, error)
	ListTags(ctx context.Context, repoID int64, last string, n int) ([]string, error)
	DeleteTag(ctx context.Context, repoID int64, tag string) error
	ListReferrers(ctx context.Context, repoID int64, subject, artifactType string) ([]store.Manifest, error)
}
