-- Migration 5: credential epochs. A registry token carries its subject's
-- epoch from when it was issued; revoking the subject's credentials (robot
-- token regenerated, account disabled or deleted) bumps the epoch, and
-- tokens with an older one fail. Kept in the database so that a restart,
-- or another server on the same database, does not forget a revocation.
CREATE TABLE credential_epochs (
    subject    TEXT PRIMARY KEY,
    epoch      BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX credential_epochs_updated ON credential_epochs (updated_at);
