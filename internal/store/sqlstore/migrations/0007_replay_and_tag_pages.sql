-- Hashes of the webhook payloads each trigger received recently. A
-- forge's delivery-ID header is not covered by its signature, so a
-- captured delivery replayed under a fresh ID is recognised by its body.
CREATE TABLE trigger_payloads (
    trigger_uuid TEXT NOT NULL REFERENCES triggers (uuid) ON DELETE CASCADE,
    sha256       {{ctext}} NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (trigger_uuid, sha256)
){{norowid}};

-- The REST API lists tags newest first (by the second, then by name) a
-- page at a time; this index serves that order without sorting the
-- repository's every tag.
CREATE INDEX tags_newest ON tags (repo_id, (updated_at / 1000000000) DESC, name);
