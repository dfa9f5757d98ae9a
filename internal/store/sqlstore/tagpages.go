package sqlstore

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/store"
)

// ListTagsNewestFirst pages in SQL, over the tags_newest index: the page is
// cut first, and only its tags' manifests and blob sizes are read, so a
// page costs one query whatever the repository holds.
func (s *Store) ListTagsNewestFirst(ctx context.Context, repoID int64, name string, offset, n int) ([]store.TagSummary, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT p.name, p.digest, p.updated_at, m.media_type,
			COALESCE((SELECT CAST(SUM(r.size) AS BIGINT) FROM manifest_refs r
				WHERE r.repo_id = p.repo_id AND r.manifest_digest = p.digest AND r.kind = 'blob'), 0)
		FROM (SELECT repo_id, name, digest, updated_at FROM tags
			WHERE repo_id = ? AND (? = '' OR name = ?)
			ORDER BY updated_at / 1000000000 DESC, name LIMIT ? OFFSET ?) p
		JOIN manifests m ON m.repo_id = p.repo_id AND m.digest = p.digest
		ORDER BY p.updated_at / 1000000000 DESC, p.name`), repoID, name, name, limit(n), max(offset, 0))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
	}
	defer rows.Close()
	out := []store.TagSummary{}
	for rows.Next() {
		var t store.TagSummary
		var updated int64
		if err := rows.Scan(&t.Name, &t.Digest, &updated, &t.MediaType, &t.BlobSize); err != nil {
			return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
		}
		t.UpdatedAt = fromNanos(updated)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list tags of repository %d: %w", repoID, err)
	}
	return out, nil
}
