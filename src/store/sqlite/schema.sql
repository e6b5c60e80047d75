-- CityStream's embedded store. Times are integer milliseconds since the Unix epoch (UTC).
-- The file's own settings (page size, WAL) are `FILE_PRAGMAS` in mod.rs; this file runs in one
-- transaction with the check of the schema version.

-- Query 1: every valid event, the seed's citystream-raw-events, in blocks: the new events of
-- one write of one city and one five-minute span of event time (aligned), at most 512,
-- encoded together, newest first (block.rs). raw_keys holds each event's identity, (timestamp, event_id), and its
-- block: whether an event is new is one key lookup. The key leads with the time so that
-- inserts land at the right edge of the tree (events arrive in roughly time order). An id that
-- is a lowercase hyphenated UUID is kept as its 16 bytes, any other as its text (the column
-- has no type, so that both keep their own). Whoever inserts an event's key applies everything
-- else the event adds, in the same transaction (store/rules.rs).
CREATE TABLE IF NOT EXISTS raw_keys (
    ts       INTEGER NOT NULL,
    event_id         NOT NULL,
    block    INTEGER NOT NULL,
    PRIMARY KEY (ts, event_id)
) WITHOUT ROWID;
-- A block's row: its city, the range of its event times and of its expiries (an event
-- expires at its ttl), its events and their encoding. A page of a city's newest events reads
-- the blocks by their newest event (blocks.rs); the purge deletes a block once all its events
-- expired, and until then reads leave its expired events out.
CREATE TABLE IF NOT EXISTS raw_blocks (
    id      INTEGER PRIMARY KEY,
    city    TEXT    NOT NULL,
    min_ts  INTEGER NOT NULL,
    max_ts  INTEGER NOT NULL,
    min_ttl INTEGER NOT NULL,
    max_ttl INTEGER NOT NULL,
    events  INTEGER NOT NULL,
    body    BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_blocks_by_city ON raw_blocks (city, max_ts, min_ts);
CREATE INDEX IF NOT EXISTS raw_blocks_by_time ON raw_blocks (max_ts, min_ts);
CREATE INDEX IF NOT EXISTS raw_blocks_by_expiry ON raw_blocks (min_ttl);

-- Stored raw events per city, type and severity, and per city, kept in step with the blocks by
-- every insert and purge, so /summary and /cities never count rows.
CREATE TABLE IF NOT EXISTS raw_counts (
    city       TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    severity   TEXT    NOT NULL,
    events     INTEGER NOT NULL,
    PRIMARY KEY (city, event_type, severity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS city_counts (
    city   TEXT    NOT NULL PRIMARY KEY,
    events INTEGER NOT NULL
) WITHOUT ROWID;

-- Whole-store totals kept in step the same way: 'raw' and 'late'; and 'window_writes', the
-- writes that added to windows, which only grows (window_versions).
CREATE TABLE IF NOT EXISTS totals (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Query 2 at every resolution: the base windows (--window) and their rollups (an hour, a day),
-- each the sum of the new events of every write (store/rules.rs); `span` is the resolution in
-- ms. A window is kept its resolution's retention after it ends (expires_at). The key serves a
-- city's windows of one resolution over a range of starts, newest first; one type's windows are
-- the same range, filtered. The seed's partition_key (city#event_type#window_start) is derived
-- when a window is served.
CREATE TABLE IF NOT EXISTS windows (
    city        TEXT    NOT NULL,
    span        INTEGER NOT NULL,
    start       INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    event_count INTEGER NOT NULL,
    severities  TEXT    NOT NULL, -- one letter per event, arrival order: l, m, h, c
    low         INTEGER NOT NULL,
    medium      INTEGER NOT NULL,
    high        INTEGER NOT NULL,
    critical    INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (city, span, start, event_type)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS windows_by_expiry ON windows (expires_at);
-- Each city's windows version: the number the last write that changed its windows took from
-- totals' 'window_writes', which only grows, so a version is never given twice. The API keeps
-- an answer while the city's version holds (api/answers.rs). A city has a row while it has
-- windows: the purge deletes the row with the city's last window.
CREATE TABLE IF NOT EXISTS window_versions (
    city    TEXT    NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

-- Query 3: the events an alert rule matched (by default, high and critical), the seed's
-- citystream-alerts, in blocks as the raw events are, each event with the rules that matched
-- (`id@version`, comma separated, in the rules' order). An alert expires with its raw event.
-- It needs no keys of its own: only a new raw event makes alerts.
CREATE TABLE IF NOT EXISTS alert_blocks (
    id      INTEGER PRIMARY KEY,
    city    TEXT    NOT NULL,
    min_ts  INTEGER NOT NULL,
    max_ts  INTEGER NOT NULL,
    min_ttl INTEGER NOT NULL,
    max_ttl INTEGER NOT NULL,
    events  INTEGER NOT NULL,
    body    BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_blocks_by_city ON alert_blocks (city, max_ts, min_ts);
CREATE INDEX IF NOT EXISTS alert_blocks_by_time ON alert_blocks (max_ts, min_ts);
CREATE INDEX IF NOT EXISTS alert_blocks_by_expiry ON alert_blocks (min_ttl);

-- The outbox (store/outbox.rs): one row per alert and sink, inserted with the alert, its id a
-- hash of the alert's and the sink's. `alert` is the alert as sent (JSON). A pending row is
-- due at next_at (a lease moves it on while it is sent); a finished one (delivered, failed)
-- expires with its alert (expires_at); a pending one never does.
CREATE TABLE IF NOT EXISTS deliveries (
    id          TEXT    NOT NULL PRIMARY KEY,
    alert_id    TEXT    NOT NULL,
    sink        TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    alert       TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    next_at     INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (sink, next_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_by_expiry ON deliveries (expires_at)
    WHERE status <> 'pending';

-- Stored alerts per severity, kept in step with every insert.
CREATE TABLE IF NOT EXISTS alert_counts (
    severity TEXT    NOT NULL PRIMARY KEY,
    alerts   INTEGER NOT NULL
) WITHOUT ROWID;

-- Events whose window had closed when they arrived: stored raw, not aggregated; kept until
-- expires_at (event time + --late-retention).
CREATE TABLE IF NOT EXISTS late_events (
    event_id    TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    city        TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    description TEXT    NOT NULL,
    watermark   INTEGER NOT NULL,
    partition   INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (ts, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS late_by_city ON late_events (city, ts);
CREATE INDEX IF NOT EXISTS late_by_expiry ON late_events (expires_at);

-- Stored late events per city and type, kept in step with every insert and purge.
CREATE TABLE IF NOT EXISTS late_counts (
    city        TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    late_events INTEGER NOT NULL,
    PRIMARY KEY (city, event_type)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS late_counts_by_size ON late_counts (late_events);

-- Records that are not valid new events, with the reason and where they came from; kept until
-- expires_at (arrival + --dead-letter-retention).
CREATE TABLE IF NOT EXISTS dead_letters (
    id             INTEGER PRIMARY KEY,
    source         TEXT    NOT NULL,
    partition      INTEGER NOT NULL,
    offset         INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    payload_prefix BLOB    NOT NULL,
    payload_len    INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    UNIQUE (source, partition, offset)
);
CREATE INDEX IF NOT EXISTS dead_by_time ON dead_letters (received_at, source, partition, offset);
CREATE INDEX IF NOT EXISTS dead_by_expiry ON dead_letters (expires_at);

-- Stored dead letters per kind, kept in step with every insert and purge.
CREATE TABLE IF NOT EXISTS dead_letter_counts (
    kind         TEXT    NOT NULL PRIMARY KEY,
    dead_letters INTEGER NOT NULL
) WITHOUT ROWID;

-- Each partition's position and watermark state, written in the same transaction as the
-- results it covers, and only ever moved forwards.
CREATE TABLE IF NOT EXISTS checkpoints (
    source         TEXT    NOT NULL,
    partition      INTEGER NOT NULL,
    next_offset    INTEGER NOT NULL,
    max_event_time INTEGER,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (source, partition)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkpoints_by_update ON checkpoints (updated_at);

-- API keys (`citystream keys`), by name: the digest of each key's secret, never the secret.
CREATE TABLE IF NOT EXISTS api_keys (
    name       TEXT    NOT NULL PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    scopes     TEXT    NOT NULL,
    rate       INTEGER NOT NULL,
    burst      INTEGER NOT NULL,
    digest     BLOB    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
