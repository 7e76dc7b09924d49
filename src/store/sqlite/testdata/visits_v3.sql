-- footfall schema of the visits file, version 3 (PRAGMA user_version = 3).
-- Applied by src/store/mod.rs to a new file; an older file is brought here by the steps in
-- migrations/ instead. A shipped version is never edited: a change adds a migration step and
-- bumps the version.
--
-- Times are unix milliseconds (UTC). A visit's id is `millis << 20 | seq`, so the rowid order of
-- `visits` is time order: exports, cleanup and "newest" need no time index, and the time of a
-- visit costs no column. Buckets are whole units since the epoch: hour = millis / 3600000, etc.
--
-- This file holds what was recorded; the rollups derived from it live in a second file beside it
-- (`rollups.sql`), written by their own thread, so rolling up never holds this file's write lock.
-- The rollups read three append-only logs from here — visits by id, `late_visits`, `clicks` —
-- and record in their own file how far they have read each; cleanup is the one change that
-- goes the other way (see `raw_state`).

-- Dimensions: each value stored once, referenced by id; rows are never deleted, so an id a
-- process has cached stays right forever.
CREATE TABLE sites (
    id   INTEGER PRIMARY KEY,          -- 0 is the pseudo-site "all", used by the site rollups
    name TEXT NOT NULL UNIQUE
);
INSERT INTO sites (id, name) VALUES (0, '');

CREATE TABLE pages (
    id      INTEGER PRIMARY KEY,
    url     TEXT NOT NULL UNIQUE,      -- normalised page URL; UNIQUE is the lookup index
    site_id INTEGER NOT NULL
);

CREATE TABLE agents (
    id INTEGER PRIMARY KEY,
    ua TEXT NOT NULL UNIQUE
);

CREATE TABLE events (
    id   INTEGER PRIMARY KEY,          -- 1 is 'pageview': SQLite stores the integer 1 in 0 bytes
    name TEXT NOT NULL UNIQUE
);
INSERT INTO events (id, name) VALUES (1, 'pageview');

-- Raw visits, one row each. ip is 4 (IPv4) or 16 (IPv6) bytes.
CREATE TABLE visits (
    id       INTEGER PRIMARY KEY,
    page_id  INTEGER NOT NULL,
    ip       BLOB NOT NULL,
    agent_id INTEGER NOT NULL,
    event_id INTEGER NOT NULL
);

-- Visits stored below the newest id at the time (imports of past data, a clock stepping back):
-- the roll-up reads visits from its watermark on, so these are listed here for it to find. The
-- rollups file records the last seq it counted; rows up to it are deleted by the writer later.
-- AUTOINCREMENT: a seq is never reused after those deletions.
CREATE TABLE late_visits (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    visit_id INTEGER NOT NULL
);

-- Pre-counted clicks from POST /domains (seed 000), raw and append-only: they count in the site
-- rollups but are not visits.
CREATE TABLE clicks (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id  INTEGER NOT NULL,
    minute   INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    clicks   INTEGER NOT NULL
);

-- One row. `high_id`: the highest visit id ever stored, kept when cleanup deletes the newest
-- visits, so a visit stored after that is still recognised as late (below the rollups'
-- watermark). `cleanup_seq`: the last cleanup whose raw rows are deleted here. A cleanup first
-- takes the visits out of the rollups (the rollups file's `progress.cleanup_seq` moves), then
-- deletes them here; a crash in between is finished when the file is next opened for writing.
CREATE TABLE raw_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    high_id     INTEGER NOT NULL,
    cleanup_seq INTEGER NOT NULL
);
INSERT INTO raw_state (id, high_id, cleanup_seq) VALUES (1, 0, 0);

-- Per-page counters of POST /visit/{page_id} (seed 004).
CREATE TABLE page_counters (
    name   TEXT PRIMARY KEY,
    visits INTEGER NOT NULL
) WITHOUT ROWID;

-- Ids of bus events already recorded (API.md §11): an event whose id is here is a redelivery or a
-- republish and is not counted again. An id goes in the same transaction as its visit, so a
-- crash keeps both or neither. Rows first seen before the dedup window (`--bus-dedup-hours`) are
-- deleted by the writer as it records more; `seen_at` (unix ms, when it was recorded) is indexed
-- for that deletion.
CREATE TABLE event_ids (
    id      TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_ids_seen_at ON event_ids (seen_at);
