-- Migration 8: credential epochs that may be forgotten. A build's registry
-- tokens are revoked when its attempt ends through an epoch of their own;
-- once every token the revocation was for has expired the epoch says
-- nothing any more, and its row is deleted at keep_until (nanoseconds).
-- NULL keeps the row for ever, as accounts' epochs are kept.
ALTER TABLE credential_epochs ADD COLUMN keep_until BIGINT;
CREATE INDEX credential_epochs_keep_until ON credential_epochs (keep_until) WHERE keep_until IS NOT NULL;
