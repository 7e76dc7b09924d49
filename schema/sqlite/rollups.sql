-- footfall schema of the rollups file, version 2 (PRAGMA user_version = 2).
-- The aggregate tables analytics read, derived from the visits file (`visits.sql`) and kept in a
-- file of their own (`<db>` -> `<db stem>.rollups.<ext>`, e.g. visits.db -> visits.rollups.db)
-- so that the roll-up thread holds this file's write lock while the writer commits visits to the
-- other. Applied by src/store/sqlite/mod.rs to a new file. Everything here can be rebuilt from
-- the visits file: a missing rollups file is recreated and refilled, and a file of an older
-- version is emptied and refilled the same way (no migration steps here).
-- Version 2 added site_hour_sources, site_hour_devices, site_totals and site_ips (API.md §12).

-- How far the rollups have read the visits file's logs: one row, moved in the same transaction
-- as the rollups themselves. Every visit with an id below `rolled_up_to` is counted in every
-- rollup table except the late visits with a seq above `late_seq`; every visit at or above it
-- (the "tail": rolled up when it reaches 50,000 visits or writes pause) is not — queries add the
-- tail from the raw rows. Late visits and clicks are acknowledged only once counted here.
-- `cleanup_seq`/`cleanup_before`: the last cleanup, and the visit id below which it took every
-- visit out of the rollups (the visits file then deletes them; see its `raw_state`).
CREATE TABLE progress (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    rolled_up_to   INTEGER NOT NULL,
    late_seq       INTEGER NOT NULL,
    clicks_seq     INTEGER NOT NULL,
    cleanup_seq    INTEGER NOT NULL,
    cleanup_before INTEGER NOT NULL
);
INSERT INTO progress VALUES (1, 0, 0, 0, 0, 0);

-- Whole-database totals: one row.
CREATE TABLE totals (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    visits     INTEGER NOT NULL,
    unique_ips INTEGER NOT NULL
);
INSERT INTO totals (id, visits, unique_ips) VALUES (1, 0, 0);

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


-- Visits per site (0 = all sites), hour and source / device (API.md §12): /sources and /devices
-- read one site's window as one range, /hourly sums site_hour_devices per hour (visits only: the
-- clicks of POST /domains are not visits).
CREATE TABLE site_hour_sources (
    site_id   INTEGER NOT NULL,
    hour      INTEGER NOT NULL,
    source_id INTEGER NOT NULL,
    visits    INTEGER NOT NULL,
    PRIMARY KEY (site_id, hour, source_id)
) WITHOUT ROWID;

CREATE TABLE site_hour_devices (
    site_id   INTEGER NOT NULL,
    hour      INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    visits    INTEGER NOT NULL,
    PRIMARY KEY (site_id, hour, device_id)
) WITHOUT ROWID;

-- Per-site totals over all retained visits, real sites only (all sites: `totals`); a site with
-- none has no row. Kept exact like page_totals, through site_ips.
CREATE TABLE site_totals (
    site_id    INTEGER PRIMARY KEY,
    visits     INTEGER NOT NULL,
    unique_ips INTEGER NOT NULL
);

-- Every distinct (site, IP) with the id of its last visit: cleanup drops the pairs whose last
-- visit it deleted and subtracts them from site_totals.unique_ips, exactly.
CREATE TABLE site_ips (
    site_id INTEGER NOT NULL,
    ip      BLOB NOT NULL,
    last_id INTEGER NOT NULL,
    PRIMARY KEY (site_id, ip)
) WITHOUT ROWID;
