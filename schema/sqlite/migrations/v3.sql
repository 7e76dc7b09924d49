-- Visits file, schema version 2 -> 3: the ids of bus events already recorded (API.md §11), so a
-- redelivered or republished event is not counted twice. See `event_ids` in visits.sql.
CREATE TABLE event_ids (
    id      TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_ids_seen_at ON event_ids (seen_at);
