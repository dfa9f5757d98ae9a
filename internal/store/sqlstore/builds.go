package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// CreateBuild inserts b, filling CreatedAt, Version, Phase (waiting when
// empty) and the names read back from the repository and requester.
func (s *Store) CreateBuild(ctx context.Context, b *store.Build) error {
	if b.ID == "" {
		return fmt.Errorf("sqlstore: create build: empty ID")
	}
	if b.Phase == "" {
		b.Phase = store.PhaseWaiting
	}
	if !b.Phase.Valid() {
		return fmt.Errorf("sqlstore: create build %s: invalid phase %q", b.ID, b.Phase)
	}
	tags, request, digests, err := marshalBuild(b)
	if err != nil {
		return fmt.Errorf("sqlstore: create build %s: %w", b.ID, err)
	}
	created := now()
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO builds (id, repo_id, phase, attempts, display_name,
			tags, request, priority, requester_id, trigger_id, trigger_metadata, created_at, started_at,
			completed_at, error_message, manifest_digests, executor_name, execution_id, lease_expiry,
			logs_archive, version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`),
			b.ID, b.RepoID, string(b.Phase), b.Attempts, b.DisplayName, tags, request, b.Priority,
			nullID(b.RequesterID), b.TriggerID, string(b.TriggerMetadata), nanos(created),
			zeroNanos(b.StartedAt), zeroNanos(b.CompletedAt), b.ErrorMessage, digests, b.ExecutorName,
			b.ExecutionID, zeroNanos(b.LeaseExpiry), b.LogsArchive)
		if err != nil {
			return err
		}
		got, err := scanBuild(tx.QueryRowContext(ctx, s.q(buildSelect+`WHERE b.id = ?`), b.ID))
		if err != nil {
			return err
		}
		*b = got
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlstore: create build %s: %w", b.ID, classify(err))
	}
	return nil
}

// marshalBuild encodes the JSON columns of b.
func marshalBuild(b *store.Build) (tags, request, digests string, err error) {
	t := b.Tags
	if t == nil {
		t = []string{}
	}
	d := b.ManifestDigests
	if d == nil {
		d = map[string]string{}
	}
	tb, err := json.Marshal(t)
	if err != nil {
		return "", "", "", err
	}
	rb, err := json.Marshal(b.Request)
	if err != nil {
		return "", "", "", err
	}
	db, err := json.Marshal(d)
	if err != nil {
		return "", "", "", err
	}
	if len(b.TriggerMetadata) > 0 && !json.Valid(b.TriggerMetadata) {
		return "", "", "", fmt.Errorf("trigger metadata is not JSON")
	}
	return string(tb), string(rb), string(db), nil
}

func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// zeroNanos stores the zero time as 0 rather than a large negative number.
func zeroNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return nanos(t)
}

func fromZeroNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return fromNanos(n)
}

const buildSelect = `SELECT b.id, b.repo_id, ns.name, r.namespace_id, r.name, b.phase, b.attempts,
	b.display_name, b.tags, b.request, b.priority, COALESCE(b.requester_id, 0), COALESCE(req.name, ''),
	b.trigger_id, b.trigger_metadata, b.created_at, b.started_at, b.completed_at, b.error_message,
	b.manifest_digests, b.executor_name, b.execution_id, b.lease_expiry, b.logs_archive, b.version
	FROM builds b
	JOIN repositories r ON r.id = b.repo_id
	JOIN accounts ns ON ns.id = r.namespace_id
	LEFT JOIN accounts req ON req.id = b.requester_id `

func scanBuild(sc interface{ Scan(...any) error }) (store.Build, error) {
	var (
		b                              store.Build
		phase, tags, request, digests  string
		meta                           string
		created, started, done, leased int64
	)
	err := sc.Scan(&b.ID, &b.RepoID, &b.Namespace, &b.NamespaceID, &b.Repository, &phase, &b.Attempts,
		&b.DisplayName, &tags, &request, &b.Priority, &b.RequesterID, &b.Requester,
		&b.TriggerID, &meta, &created, &started, &done, &b.ErrorMessage,
		&digests, &b.ExecutorName, &b.ExecutionID, &leased, &b.LogsArchive, &b.Version)
	if err != nil {
		return b, err
	}
	b.Phase = store.BuildPhase(phase)
	b.CreatedAt, b.StartedAt, b.CompletedAt = fromNanos(created), fromZeroNanos(started), fromZeroNanos(done)
	b.LeaseExpiry = fromZeroNanos(leased)
	if meta != "" {
		b.TriggerMetadata = json.RawMessage(meta)
	}
	if err := json.Unmarshal([]byte(tags), &b.Tags); err != nil {
		return b, fmt.Errorf("build %s tags: %w", b.ID, err)
	}
	if err := json.Unmarshal([]byte(request), &b.Request); err != nil {
		return b, fmt.Errorf("build %s request: %w", b.ID, err)
	}
	if err := json.Unmarshal([]byte(digests), &b.ManifestDigests); err != nil {
		return b, fmt.Errorf("build %s digests: %w", b.ID, err)
	}
	return b, nil
}

// GetBuild finds a build by ID.
func (s *Store) GetBuild(ctx context.Context, id string) (*store.Build, error) {
	b, err := scanBuild(s.r.QueryRowContext(ctx, s.q(buildSelect+`WHERE b.id = ?`), id))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get build %s: %w", id, notFoundIfNoRows(err))
	}
	return &b, nil
}

func (s *Store) queryBuilds(ctx context.Context, what, query string, args ...any) ([]store.Build, error) {
	rows, err := s.r.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: %s: %w", what, err)
	}
	defer rows.Close()
	var out []store.Build
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: %s: %w", what, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: %s: %w", what, err)
	}
	return out, nil
}

// ListBuilds returns repoID's builds created at or after since, newest first.
func (s *Store) ListBuilds(ctx context.Context, repoID int64, since time.Time, n int) ([]store.Build, error) {
	if n == 0 {
		n = -1
	}
	return s.queryBuilds(ctx, "list builds", buildSelect+`WHERE b.repo_id = ? AND b.created_at >= ?
		ORDER BY b.created_at DESC, b.id DESC LIMIT ?`, repoID, zeroNanos(since), limit(n))
}

// phaseList renders phases as placeholders and arguments for an IN list.
func phaseList(phases []store.BuildPhase) (string, []any) {
	args := make([]any, len(phases))
	for i, p := range phases {
		args[i] = string(p)
	}
	return strings.TrimSuffix(strings.Repeat("?, ", len(phases)), ", "), args
}

// unfinishedBuildsPage is the keyset page ListUnfinishedBuilds reads,
// served in order by the builds_unfinished_created index.
const unfinishedBuildsPage = buildSelect + `WHERE b.phase NOT IN ` + terminalSQL + `
	AND (b.created_at, b.id) > (?, ?) ORDER BY b.created_at, b.id LIMIT ?`

// ListUnfinishedBuilds returns a page of the builds not yet ended, oldest
// first: each page reads only its own rows, however many builds ended.
func (s *Store) ListUnfinishedBuilds(ctx context.Context, after *store.Build, n int) ([]store.Build, error) {
	if n <= 0 {
		n = -1
	}
	// Before every build: creation times are positive.
	afterCreated, afterID := int64(math.MinInt64), ""
	if after != nil {
		afterCreated, afterID = nanos(after.CreatedAt), after.ID
	}
	return s.queryBuilds(ctx, "list unfinished builds", unfinishedBuildsPage, afterCreated, afterID, limit(n))
}

// ListTriggerBuilds returns triggerID's builds, newest first, through the
// (trigger_id, created_at) index: at most limit of them (0: all), only
// those in one of phases when phases are given.
func (s *Store) ListTriggerBuilds(ctx context.Context, triggerID string, n int, phases ...store.BuildPhase) ([]store.Build, error) {
	if n == 0 {
		n = -1
	}
	where, args := `WHERE b.trigger_id = ? AND b.trigger_id <> ''`, []any{triggerID}
	if len(phases) > 0 {
		in, pargs := phaseList(phases)
		where += ` AND b.phase IN (` + in + `)`
		args = append(args, pargs...)
	}
	return s.queryBuilds(ctx, "list trigger builds", buildSelect+where+`
		ORDER BY b.created_at DESC, b.id DESC LIMIT ?`, append(args, limit(n))...)
}

// CountNamespaceBuilds counts namespaceID's builds in one of phases.
func (s *Store) CountNamespaceBuilds(ctx context.Context, namespaceID int64, phases ...store.BuildPhase) (int, error) {
	if len(phases) == 0 {
		return 0, nil
	}
	in, args := phaseList(phases)
	var n int
	err := s.r.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM builds b JOIN repositories r ON r.id = b.repo_id
		WHERE r.namespace_id = ? AND b.phase IN (`+in+`)`), append([]any{namespaceID}, args...)...).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: count builds of namespace %d: %w", namespaceID, err)
	}
	return n, nil
}

// terminalSQL lists the terminal phases for WHERE clauses.
const terminalSQL = `('complete', 'error', 'internalerror', 'cancelled')`

// UpdateBuild writes b's mutable fields if the stored version is still
// b.Version and the stored phase is not terminal.
//
// An empty ExecutorName or ExecutionID keeps the stored one: those belong
// to SetBuildExecution, which may have run after b was read.
func (s *Store) UpdateBuild(ctx context.Context, b *store.Build) error {
	if !b.Phase.Valid() {
		return fmt.Errorf("sqlstore: update build %s: invalid phase %q", b.ID, b.Phase)
	}
	_, _, digests, err := marshalBuild(b)
	if err != nil {
		return fmt.Errorf("sqlstore: update build %s: %w", b.ID, err)
	}
	res, err := s.w.ExecContext(ctx, s.q(`UPDATE builds SET phase = ?, attempts = ?, started_at = ?,
		completed_at = ?, error_message = ?, manifest_digests = ?,
		executor_name = COALESCE(NULLIF(?, ''), executor_name), execution_id = COALESCE(NULLIF(?, ''), execution_id),
		lease_expiry = ?, version = version + 1
		WHERE id = ? AND version = ? AND phase NOT IN `+terminalSQL),
		string(b.Phase), b.Attempts, zeroNanos(b.StartedAt), zeroNanos(b.CompletedAt), b.ErrorMessage,
		digests, b.ExecutorName, b.ExecutionID, zeroNanos(b.LeaseExpiry), b.ID, b.Version)
	if err != nil {
		return fmt.Errorf("sqlstore: update build %s: %w", b.ID, err)
	}
	if err := s.staleIfNone(ctx, res, b.ID); err != nil {
		return fmt.Errorf("sqlstore: update build %s: %w", b.ID, err)
	}
	b.Version++
	return nil
}

// staleIfNone turns "no row changed" into ErrStale when the build exists
// and ErrNotFound when it does not.
func (s *Store) staleIfNone(ctx context.Context, res sql.Result, id string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	var one int
	err = s.w.QueryRowContext(ctx, s.q(`SELECT 1 FROM builds WHERE id = ?`), id).Scan(&one)
	if err != nil {
		return notFoundIfNoRows(err)
	}
	return store.ErrStale
}

// running is the WHERE condition of a build whose worker may be alive.
const runningSQL = `phase IN ('build-scheduled', 'unpacking', 'pulling', 'building', 'pushing')`

// RenewBuildLease moves the lease of attempt `attempt` of a running build.
func (s *Store) RenewBuildLease(ctx context.Context, id string, attempt int, until time.Time) error {
	res, err := s.w.ExecContext(ctx, s.q(`UPDATE builds SET lease_expiry = ?
		WHERE id = ? AND attempts = ? AND `+runningSQL), zeroNanos(until), id, attempt)
	if err != nil {
		return fmt.Errorf("sqlstore: renew lease of build %s: %w", id, err)
	}
	if err := s.staleIfNone(ctx, res, id); err != nil {
		return fmt.Errorf("sqlstore: renew lease of build %s: %w", id, err)
	}
	return nil
}

// SetBuildExecution records the worker of attempt `attempt`.
func (s *Store) SetBuildExecution(ctx context.Context, id string, attempt int, executorName, executionID string) error {
	res, err := s.w.ExecContext(ctx, s.q(`UPDATE builds SET executor_name = ?, execution_id = ?
		WHERE id = ? AND attempts = ? AND `+runningSQL), executorName, executionID, id, attempt)
	if err != nil {
		return fmt.Errorf("sqlstore: set execution of build %s: %w", id, err)
	}
	if err := s.staleIfNone(ctx, res, id); err != nil {
		return fmt.Errorf("sqlstore: set execution of build %s: %w", id, err)
	}
	return nil
}

// SetBuildLogsArchive records where an ended build's log was archived.
func (s *Store) SetBuildLogsArchive(ctx context.Context, id, ref string) error {
	if err := s.execOne(ctx, `UPDATE builds SET logs_archive = ? WHERE id = ?`, ref, id); err != nil {
		return fmt.Errorf("sqlstore: set logs archive of build %s: %w", id, err)
	}
	return nil
}

// PutBuildFile records a file whose upload URL is being issued.
func (s *Store) PutBuildFile(ctx context.Context, f *store.BuildFile) error {
	created := now()
	_, err := s.w.ExecContext(ctx, s.q(`INSERT INTO build_files (id, uploader_id, repo_id, digest, size, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`),
		f.ID, nullInt(f.UploaderID), nullInt(f.RepoID), f.Digest, f.Size, nanos(created), zeroNanos(f.ExpiresAt))
	if err != nil {
		return fmt.Errorf("sqlstore: put build file %s: %w", f.ID, classify(err))
	}
	f.CreatedAt = created
	return nil
}

// GetBuildFile finds an uploaded build context.
func (s *Store) GetBuildFile(ctx context.Context, id string) (*store.BuildFile, error) {
	var (
		f                  = store.BuildFile{ID: id}
		uploader, repo     sql.NullInt64
		ns, name           sql.NullString
		created, expiresAt int64
	)
	err := s.r.QueryRowContext(ctx, s.q(`SELECT f.uploader_id, f.repo_id, a.name, r.name, f.digest, f.size, f.created_at, f.expires_at
		FROM build_files f LEFT JOIN repositories r ON r.id = f.repo_id LEFT JOIN accounts a ON a.id = r.namespace_id
		WHERE f.id = ?`), id).Scan(&uploader, &repo, &ns, &name, &f.Digest, &f.Size, &created, &expiresAt)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get build file %s: %w", id, notFoundIfNoRows(err))
	}
	f.UploaderID, f.RepoID, f.RepoNamespace, f.RepoName = uploader.Int64, repo.Int64, ns.String, name.String
	f.CreatedAt, f.ExpiresAt = fromNanos(created), fromZeroNanos(expiresAt)
	return &f, nil
}

// SetBuildFileContent records the bytes of a file that has none yet.
func (s *Store) SetBuildFileContent(ctx context.Context, id, digest string, size int64) error {
	if digest == "" {
		return fmt.Errorf("sqlstore: set content of build file %s: empty digest", id)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE build_files SET digest = ?, size = ? WHERE id = ? AND digest = ''`), digest, size, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
		var one int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM build_files WHERE id = ?`), id).Scan(&one); err != nil {
			return notFoundIfNoRows(err)
		}
		return store.ErrConflict
	})
	if err != nil {
		return fmt.Errorf("sqlstore: set content of build file %s: %w", id, err)
	}
	return nil
}

// ClaimBuildFile records the first repository a file is built in.
func (s *Store) ClaimBuildFile(ctx context.Context, id string, repoID int64) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE build_files SET repo_id = ? WHERE id = ? AND repo_id IS NULL`), repoID, id); err != nil {
			return classify(err)
		}
		var one int
		return notFoundIfNoRows(tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM build_files WHERE id = ?`), id).Scan(&one))
	})
	if err != nil {
		return fmt.Errorf("sqlstore: claim build file %s: %w", id, err)
	}
	return nil
}

// BuildFileUsage counts an uploader's recent files and their bytes.
func (s *Store) BuildFileUsage(ctx context.Context, uploaderID int64, since time.Time) (int, int64, error) {
	var (
		files int
		bytes int64
	)
	err := s.r.QueryRowContext(ctx, s.q(`SELECT COUNT(*), COALESCE(SUM(size), 0) FROM build_files
		WHERE uploader_id = ? AND created_at >= ?`), uploaderID, nanos(since)).Scan(&files, &bytes)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlstore: build file usage of %d: %w", uploaderID, err)
	}
	return files, bytes, nil
}

// DeleteUnusedBuildFiles removes files no build used once their upload URL
// expired before expiredBefore, in one transaction with the reference
// check of their bytes, so that a file recorded with the same digest
// before the check keeps its blob.
func (s *Store) DeleteUnusedBuildFiles(ctx context.Context, expiredBefore time.Time) (int, []string, error) {
	var (
		removed      int
		unreferenced []string
	)
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		removed, unreferenced = 0, nil
		rows, err := tx.QueryContext(ctx, s.q(`DELETE FROM build_files WHERE repo_id IS NULL AND expires_at < ? RETURNING digest`),
			nanos(expiredBefore))
		if err != nil {
			return err
		}
		digests := map[string]bool{}
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				rows.Close()
				return err
			}
			removed++
			if d != "" {
				digests[d] = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for d := range digests {
			var used bool
			err := tx.QueryRowContext(ctx, s.q(`SELECT EXISTS (SELECT 1 FROM build_files WHERE digest = ?)
				OR EXISTS (SELECT 1 FROM blobs WHERE digest = ?)
				OR EXISTS (SELECT 1 FROM builds WHERE logs_archive = ? AND logs_archive <> '')`), d, d, d).Scan(&used)
			if err != nil {
				return err
			}
			if !used {
				unreferenced = append(unreferenced, d)
			}
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("sqlstore: delete unused build files: %w", err)
	}
	sort.Strings(unreferenced)
	return removed, unreferenced, nil
}
