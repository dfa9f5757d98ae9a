-- Migration 6: an uploaded build context belongs to someone, and web
-- sessions and OAuth access tokens end with their account's credentials.
--
-- A build_files row is now made when the upload URL is issued (digest ''
-- until the bytes arrive). It records who the URL was issued to and the
-- first repository a build used the file in: only that uploader, or writers
-- of that repository, may build it. A file no build used is purged once
-- its URL expired (expires_at) plus a grace period.
ALTER TABLE build_files ADD COLUMN uploader_id BIGINT REFERENCES accounts (id) ON DELETE SET NULL;
ALTER TABLE build_files ADD COLUMN repo_id BIGINT REFERENCES repositories (id) ON DELETE SET NULL;
ALTER TABLE build_files ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
-- Upload URLs lived one hour.
UPDATE build_files SET expires_at = created_at + 3600000000000;
-- Files uploaded before this migration have no recorded uploader: bind each
-- to the repository of the earliest build that used it. A build's request
-- is the JSON of store.BuildRequest, whose first field is file_id, so a
-- request naming a file starts with {"file_id":" and the 36-character UUID
-- follows at position 13 (portable SQL, no JSON functions).
UPDATE build_files SET repo_id = first_use.repo_id
FROM (SELECT file_id, repo_id FROM (
        SELECT substr(request, 13, 36) AS file_id, repo_id,
               ROW_NUMBER() OVER (PARTITION BY substr(request, 13, 36) ORDER BY created_at, id) AS n
        FROM builds WHERE request LIKE '{"file_id":"%') AS uses
      WHERE n = 1) AS first_use
WHERE build_files.id = first_use.file_id;
-- Per-account rate and quota of uploads.
CREATE INDEX build_files_uploader ON build_files (uploader_id, created_at);
-- The purge looks for files no build used.
CREATE INDEX build_files_unused ON build_files (expires_at) WHERE repo_id IS NULL;
-- Before a purged file's blob is deleted, other references to the same
-- bytes are looked up: other files, registry blobs, archived build logs.
CREATE INDEX build_files_digest ON build_files (digest);
CREATE INDEX builds_logs_archive ON builds (logs_archive) WHERE logs_archive <> '';

-- The credential epoch of the account when the session or token was made:
-- once the epoch rose (password changed, account disabled), they no longer
-- work, on every server. Existing rows take the current epoch.
ALTER TABLE sessions ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE access_tokens ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET credential_epoch = COALESCE((SELECT e.epoch FROM credential_epochs e
    JOIN accounts a ON a.name = e.subject WHERE a.id = sessions.account_id), 0);
UPDATE access_tokens SET credential_epoch = COALESCE((SELECT e.epoch FROM credential_epochs e
    JOIN accounts a ON a.name = e.subject WHERE a.id = access_tokens.account_id), 0);
