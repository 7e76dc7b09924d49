-- Visits file, schema version 3 -> 4: the dimensions of API.md §12. Visits stored before this
-- step get source 0 and device 0, '(unknown)' in every dimension (the column default: SQLite
-- does not rewrite the old rows). The rollups file's version moves with it (rollups.sql v2) and
-- is rebuilt from these rows. See `sources`, `devices` and `salts` in visits.sql.
CREATE TABLE sources (
    id           INTEGER PRIMARY KEY,
    referrer     TEXT NOT NULL,
    utm_source   TEXT NOT NULL,
    utm_medium   TEXT NOT NULL,
    utm_campaign TEXT NOT NULL,
    UNIQUE (referrer, utm_source, utm_medium, utm_campaign)
);
INSERT INTO sources (id, referrer, utm_source, utm_medium, utm_campaign)
    VALUES (0, '(unknown)', '(unknown)', '(unknown)', '(unknown)');
CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    browser     TEXT NOT NULL,
    os          TEXT NOT NULL,
    device_type TEXT NOT NULL,
    UNIQUE (browser, os, device_type)
);
INSERT INTO devices (id, browser, os, device_type)
    VALUES (0, '(unknown)', '(unknown)', '(unknown)');
ALTER TABLE visits ADD COLUMN source_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE visits ADD COLUMN device_id INTEGER NOT NULL DEFAULT 0;
CREATE TABLE salts (
    day  INTEGER PRIMARY KEY,
    salt BLOB NOT NULL
);
