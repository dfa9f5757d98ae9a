-- Reconciliation walks the unfinished builds oldest first, a page at a time
-- (keyset on created_at, id): an index over exactly those rows, in that
-- order, reads each page without a scan or a sort however many builds have
-- ended.
CREATE INDEX builds_unfinished_created ON builds (created_at, id)
    WHERE phase NOT IN ('complete', 'error', 'internalerror', 'cancelled');
