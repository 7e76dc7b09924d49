-- Visits file, schema version 1 -> 2: the rollups move to their own file (rollups.sql), which
-- is created empty and refilled from the raw rows by the code that runs this step; clicks become
-- an append-only log; late visits get their log; raw_state is new.
CREATE TABLE late_visits (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    visit_id INTEGER NOT NULL
);
CREATE TABLE clicks (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id  INTEGER NOT NULL,
    minute   INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    clicks   INTEGER NOT NULL
);
INSERT INTO clicks (site_id, minute, event_id, clicks)
    SELECT site_id, minute, event_id, clicks FROM site_clicks;
CREATE TABLE raw_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    high_id     INTEGER NOT NULL,
    cleanup_seq INTEGER NOT NULL
);
INSERT INTO raw_state (id, high_id, cleanup_seq) VALUES (1, 0, 0);
DROP TABLE site_clicks;
DROP TABLE totals;
DROP TABLE page_totals;
DROP TABLE page_ips;
DROP TABLE ips;
DROP TABLE page_hours;
DROP TABLE page_hour_agents;
DROP TABLE page_recent;
DROP TABLE site_minutes;
DROP TABLE site_hours;
DROP TABLE site_days;
