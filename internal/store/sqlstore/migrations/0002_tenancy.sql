-- Migration 2: tenancy. Organizations, teams and invitations, robots,
-- repository permissions, default permissions (prototypes), stars, OAuth
-- applications and access tokens, web sessions.
--
-- Everything hangs off accounts or repositories with ON DELETE CASCADE, so
-- deleting a user or an organization removes what it owns: its
-- repositories (repositories.namespace_id), its robots (accounts.owner_id)
-- and, through those and directly, teams, memberships, permissions,
-- prototypes, stars, applications, tokens and sessions. Every referencing
-- column is indexed so that the cascades never scan a table.

-- Organization settings. An organization without a row has the defaults.
CREATE TABLE org_settings (
    org_id                BIGINT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    invoice_email         BOOLEAN NOT NULL DEFAULT FALSE,
    invoice_email_address TEXT NOT NULL DEFAULT '',
    tag_expiration_s      BIGINT NOT NULL DEFAULT 1209600
);

CREATE TABLE teams (
    id          {{serial}},
    org_id      BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        {{ctext}} NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    role        TEXT NOT NULL CHECK (role IN ('member', 'creator', 'admin')),
    created_at  BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE team_members (
    team_id    BIGINT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, account_id)
){{norowid}};
-- The authorization queries start from the account.
CREATE INDEX team_members_account ON team_members (account_id, team_id);

-- Pending invitations by email; the token is what the emailed link carries.
CREATE TABLE team_invites (
    team_id    BIGINT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    email      {{ctext}} NOT NULL,
    token      TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, email)
);

-- A role on a repository held by an account (user or robot) or a team.
-- NULLs are distinct in unique constraints on both databases, so each
-- UNIQUE applies only to the rows of its own kind.
CREATE TABLE repo_permissions (
    id         {{serial}},
    repo_id    BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    account_id BIGINT REFERENCES accounts (id) ON DELETE CASCADE,
    team_id    BIGINT REFERENCES teams (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    CHECK ((account_id IS NULL) <> (team_id IS NULL)),
    UNIQUE (repo_id, account_id),
    UNIQUE (repo_id, team_id)
);
CREATE INDEX repo_permissions_account ON repo_permissions (account_id);
CREATE INDEX repo_permissions_team ON repo_permissions (team_id);

-- Default permissions: when the activating user (NULL: anyone) creates a
-- repository in the organization, the delegate gets the role.
CREATE TABLE prototypes (
    id                  TEXT PRIMARY KEY,
    org_id              BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    activating_user_id  BIGINT REFERENCES accounts (id) ON DELETE CASCADE,
    delegate_account_id BIGINT REFERENCES accounts (id) ON DELETE CASCADE,
    delegate_team_id    BIGINT REFERENCES teams (id) ON DELETE CASCADE,
    role                TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    created_at          BIGINT NOT NULL,
    CHECK ((delegate_account_id IS NULL) <> (delegate_team_id IS NULL))
);
CREATE INDEX prototypes_org ON prototypes (org_id, created_at);
CREATE INDEX prototypes_activating ON prototypes (activating_user_id);
CREATE INDEX prototypes_delegate_account ON prototypes (delegate_account_id);
CREATE INDEX prototypes_delegate_team ON prototypes (delegate_team_id);

CREATE TABLE robot_info (
    robot_id              BIGINT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    description           TEXT NOT NULL DEFAULT '',
    unstructured_metadata TEXT NOT NULL DEFAULT '',
    token_enc             {{bytes}},
    last_accessed         BIGINT
);

CREATE TABLE stars (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    repo_id    BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, repo_id)
){{norowid}};
CREATE INDEX stars_repo ON stars (repo_id);

CREATE TABLE oauth_applications (
    id                {{serial}},
    org_id            BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    client_id         {{ctext}} NOT NULL UNIQUE,
    client_secret_enc {{bytes}},
    name              TEXT NOT NULL,
    application_uri   TEXT NOT NULL DEFAULT '',
    redirect_uri      TEXT NOT NULL DEFAULT '',
    description       TEXT NOT NULL DEFAULT '',
    avatar_email      TEXT NOT NULL DEFAULT '',
    created_at        BIGINT NOT NULL
);
CREATE INDEX oauth_applications_org ON oauth_applications (org_id);

-- Only the hex SHA-256 of a token is kept. Scopes are space-separated, as
-- in OAuth. application_id is NULL for tokens made by the admin command.
CREATE TABLE access_tokens (
    id             {{serial}},
    application_id BIGINT REFERENCES oauth_applications (id) ON DELETE CASCADE,
    account_id     BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_hash     {{ctext}} NOT NULL UNIQUE,
    scopes         TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT
);
CREATE INDEX access_tokens_account ON access_tokens (account_id);
CREATE INDEX access_tokens_application ON access_tokens (application_id);

-- Web sessions, keyed by the hash of the cookie value.
CREATE TABLE sessions (
    id_hash    {{ctext}} PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_account ON sessions (account_id);
