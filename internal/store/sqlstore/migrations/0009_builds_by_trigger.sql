-- A trigger's builds are read newest first, a page at a time (the trigger's
-- builds endpoint) and by phase (superseded builds under the serial policy):
-- an index on (trigger_id, created_at) serves both without a scan.
DROP INDEX builds_trigger;
CREATE INDEX builds_trigger_created ON builds (trigger_id, created_at) WHERE trigger_id <> '';
