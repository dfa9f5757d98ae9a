-- Migration 1: the registry's core. Placeholders in double braces are
-- replaced per dialect (see dialect.go): {{serial}} an auto-increment
-- primary key, {{ctext}} text compared byte-wise, {{bytes}} binary data,
-- {{norowid}} SQLite's clustered-table option for narrow key-only tables.
-- Timestamps are unix nanoseconds in BIGINT columns.

-- Users, organizations and robots share one name space, as in Quay. Later
-- migrations hang teams, permissions and tokens off accounts.id.
CREATE TABLE accounts (
    id            {{serial}},
    kind          TEXT NOT NULL CHECK (kind IN ('user', 'organization', 'robot')),
    name          {{ctext}} NOT NULL UNIQUE,
    email         {{ctext}} NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL DEFAULT '',
    superuser     BOOLEAN NOT NULL DEFAULT FALSE,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    owner_id      BIGINT REFERENCES accounts (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX accounts_user_email ON accounts (email) WHERE kind = 'user' AND email <> '';
CREATE INDEX accounts_owner ON accounts (owner_id);

CREATE TABLE repositories (
    id           {{serial}},
    namespace_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name         {{ctext}} NOT NULL,
    visibility   TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    description  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    UNIQUE (namespace_id, name)
);

-- Bytes present in blob storage. Rows outlive their links; garbage
-- collection removes them (created_at gives uploads a grace period).
CREATE TABLE blobs (
    digest     {{ctext}} PRIMARY KEY,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
){{norowid}};

-- Which repositories may serve which blobs. The reference to blobs has no
-- cascade on purpose: a blob still linked somewhere cannot be collected.
CREATE TABLE repository_blobs (
    repo_id    BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest     {{ctext}} NOT NULL REFERENCES blobs (digest),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
){{norowid}};
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo_id     BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    byte_offset BIGINT NOT NULL,
    algorithm   TEXT NOT NULL,
    hash_state  {{bytes}},
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX uploads_repo ON uploads (repo_id);
CREATE INDEX uploads_updated ON uploads (updated_at);

CREATE TABLE manifests (
    repo_id       BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        {{ctext}} NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT NOT NULL DEFAULT '',
    size          BIGINT NOT NULL,
    payload       {{bytes}} NOT NULL,
    subject       {{ctext}} NOT NULL DEFAULT '',
    annotations   TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
-- Most manifests have no subject; the referrers query repeats the
-- condition so both planners may use this partial index.
CREATE INDEX manifests_subject ON manifests (repo_id, subject, digest) WHERE subject <> '';

CREATE TABLE manifest_refs (
    repo_id         BIGINT NOT NULL,
    manifest_digest {{ctext}} NOT NULL,
    ref_digest      {{ctext}} NOT NULL,
    size            BIGINT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo_id, manifest_digest, ref_digest),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
){{norowid}};
CREATE INDEX manifest_refs_ref ON manifest_refs (repo_id, ref_digest);

CREATE TABLE tags (
    repo_id    BIGINT NOT NULL,
    name       {{ctext}} NOT NULL,
    digest     {{ctext}} NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
){{norowid}};
CREATE INDEX tags_digest ON tags (repo_id, digest);
