-- Migration 3: repository builds and uploaded build contexts. The build row
-- is the source of truth for a build's phase; the queue only delivers it.
-- JSON documents (tags, request, trigger metadata, digests) are TEXT so that
-- both dialects read them the same way.
CREATE TABLE builds (
    id               TEXT PRIMARY KEY,
    repo_id          BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    phase            TEXT NOT NULL CHECK (phase IN ('waiting', 'build-scheduled', 'unpacking',
                         'pulling', 'building', 'pushing', 'complete', 'error', 'internalerror', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    display_name     TEXT NOT NULL DEFAULT '',
    tags             TEXT NOT NULL DEFAULT '[]',
    request          TEXT NOT NULL DEFAULT '{}',
    priority         INTEGER NOT NULL DEFAULT 0,
    -- The requester may be deleted later; the build stays.
    requester_id     BIGINT REFERENCES accounts (id) ON DELETE SET NULL,
    trigger_id       TEXT NOT NULL DEFAULT '',
    trigger_metadata TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    started_at       BIGINT NOT NULL DEFAULT 0,
    completed_at     BIGINT NOT NULL DEFAULT 0,
    error_message    TEXT NOT NULL DEFAULT '',
    manifest_digests TEXT NOT NULL DEFAULT '{}',
    executor_name    TEXT NOT NULL DEFAULT '',
    execution_id     TEXT NOT NULL DEFAULT '',
    lease_expiry     BIGINT NOT NULL DEFAULT 0,
    logs_archive     TEXT NOT NULL DEFAULT '',
    version          BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX builds_repo_created ON builds (repo_id, created_at);
-- Only unfinished builds are looked up by phase (reconciliation, limits).
CREATE INDEX builds_unfinished ON builds (phase, created_at)
    WHERE phase NOT IN ('complete', 'error', 'internalerror', 'cancelled');
CREATE INDEX builds_trigger ON builds (trigger_id) WHERE trigger_id <> '';

-- Uploaded build contexts (POST /api/v1/filedrop/): file ID to blob digest.
CREATE TABLE build_files (
    id         TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
