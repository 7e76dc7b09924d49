-- footfall schema, version 1 (PRAGMA user_version = 1).
-- Applied by src/store/mod.rs when the file's user_version is lower. A shipped version is never
-- edited: a change adds a migration step and bumps the version.
--
-- Times are unix milliseconds (UTC). A visit's id is `millis << 20 | seq`, so the rowid order of
-- `visits` is time order: exports, cleanup and "newest" need no time index, and the time of a
-- visit costs no column. Buckets are whole units since the epoch: hour = millis / 3600000, etc.
-- Rollup tables hold exactly the visits below the watermark `totals.rolled_up_to`, moved in the
-- same transaction as the rollups; an invariant test rebuilds each from the raw rows and compares.

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

-- Whole-database totals: one row. `rolled_up_to` is the rollup watermark: every visit with an id
-- below it is counted in every rollup table, every visit at or above it (the "tail": at most
-- ~20,000 visits, rolled up whenever writes pause) in none — queries add the tail from the raw
-- rows. Recording commits only raw rows; the writer rolls the tail up in large batches, where
-- random-key B-tree updates cost a fraction of what they cost one small commit at a time.
CREATE TABLE totals (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    visits       INTEGER NOT NULL,
    unique_ips   INTEGER NOT NULL,
    rolled_up_to INTEGER NOT NULL
);
INSERT INTO totals (id, visits, unique_ips, rolled_up_to) VALUES (1, 0, 0, 0);

-- Per-page totals over all retained visits; a page with none has no row.
CREATE TABLE page_totals (
    page_id    INTEGER PRIMARY KEY,
    visits     INTEGER NOT NULL,
    unique_ips INTEGER NOT NULL
);

-- Every distinct (page, IP) with the id of its last visit: cleanup drops the pairs whose last
-- visit it deleted and subtracts them from page_totals.unique_ips, exactly.
CREATE TABLE page_ips (
    page_id INTEGER NOT NULL,
    ip      BLOB NOT NULL,
    last_id INTEGER NOT NULL,
    PRIMARY KEY (page_id, ip)
) WITHOUT ROWID;

-- Every distinct IP with the id of its last visit (unique visitors of the whole database).
CREATE TABLE ips (
    ip      BLOB PRIMARY KEY,
    last_id INTEGER NOT NULL
) WITHOUT ROWID;

-- Visits per page and hour: /stats/{url} reads one page's window.
CREATE TABLE page_hours (
    page_id INTEGER NOT NULL,
    hour    INTEGER NOT NULL,
    visits  INTEGER NOT NULL,
    PRIMARY KEY (page_id, hour)
) WITHOUT ROWID;

-- Visits per hour, page and user agent, hour first: /summary reads one window for all pages.
CREATE TABLE page_hour_agents (
    hour     INTEGER NOT NULL,
    page_id  INTEGER NOT NULL,
    agent_id INTEGER NOT NULL,
    visits   INTEGER NOT NULL,
    PRIMARY KEY (hour, page_id, agent_id)
) WITHOUT ROWID;

-- The newest (at most 20) visits of each page, copied: recent_visits is one probe per page.
-- The retained visits are always a time suffix, so cleanup never needs to refill this.
-- Keyed newest first, the order every reader wants.
CREATE TABLE page_recent (
    page_id  INTEGER NOT NULL,
    id       INTEGER NOT NULL,
    ip       BLOB NOT NULL,
    agent_id INTEGER NOT NULL,
    PRIMARY KEY (page_id, id DESC)
) WITHOUT ROWID;

-- Visits per site (0 = all sites), event and bucket: /breakdown reads one (site, event) range;
-- /domains sums a short range per site and event.
CREATE TABLE site_minutes (
    site_id  INTEGER NOT NULL,
    minute   INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    visits   INTEGER NOT NULL,
    PRIMARY KEY (site_id, event_id, minute)
) WITHOUT ROWID;

CREATE TABLE site_hours (
    site_id  INTEGER NOT NULL,
    hour     INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    visits   INTEGER NOT NULL,
    PRIMARY KEY (site_id, event_id, hour)
) WITHOUT ROWID;

CREATE TABLE site_days (
    site_id  INTEGER NOT NULL,
    day      INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    visits   INTEGER NOT NULL,
    PRIMARY KEY (site_id, event_id, day)
) WITHOUT ROWID;

-- Pre-counted clicks from POST /domains (seed 000), raw: they count in the site rollups above
-- but are not visits.
CREATE TABLE site_clicks (
    site_id  INTEGER NOT NULL,
    minute   INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    clicks   INTEGER NOT NULL,
    PRIMARY KEY (site_id, event_id, minute)
) WITHOUT ROWID;

-- Per-page counters of POST /visit/{page_id} (seed 004).
CREATE TABLE page_counters (
    name   TEXT PRIMARY KEY,
    visits INTEGER NOT NULL
) WITHOUT ROWID;
