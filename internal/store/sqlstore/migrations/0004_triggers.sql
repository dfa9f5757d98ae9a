-- Migration 4: build triggers and the webhook deliveries they received.
-- Secrets (webhook secret, deploy key, forge token) are sealed by the
-- server before they get here; the columns hold ciphertext.
CREATE TABLE triggers (
    uuid                       TEXT PRIMARY KEY,
    repo_id                    BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    service                    TEXT NOT NULL CHECK (service IN ('github', 'gitlab', 'bitbucket', 'custom-git')),
    config                     TEXT NOT NULL DEFAULT '{}',
    sealed_secret              {{bytes}},
    sealed_private_key         {{bytes}},
    public_key                 TEXT NOT NULL DEFAULT '',
    sealed_auth_token          {{bytes}},
    known_hosts                TEXT NOT NULL DEFAULT '',
    pull_robot                 TEXT NOT NULL DEFAULT '',
    enabled                    BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason            TEXT NOT NULL DEFAULT '',
    disabled_at                BIGINT NOT NULL DEFAULT 0,
    successive_failures        INTEGER NOT NULL DEFAULT 0,
    successive_internal_errors INTEGER NOT NULL DEFAULT 0,
    hook_id                    TEXT NOT NULL DEFAULT '',
    deploy_key_id              TEXT NOT NULL DEFAULT '',
    -- The user who set the trigger up may be deleted; the trigger stays.
    connected_user_id          BIGINT REFERENCES accounts (id) ON DELETE SET NULL,
    created_at                 BIGINT NOT NULL
);
CREATE INDEX triggers_repo ON triggers (repo_id, created_at);

-- One row per delivery. (trigger_uuid, id) is unique: a forge's delivery
-- id seen twice is a replay, and is built once.
CREATE TABLE trigger_deliveries (
    trigger_uuid TEXT NOT NULL REFERENCES triggers (uuid) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    event        TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL CHECK (status IN ('accepted', 'skipped', 'rejected')),
    reason       TEXT NOT NULL DEFAULT '',
    build_id     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (trigger_uuid, id)
);
CREATE INDEX trigger_deliveries_received ON trigger_deliveries (trigger_uuid, received_at);
