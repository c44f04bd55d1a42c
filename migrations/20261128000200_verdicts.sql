-- Verdicts, state and incidents: what the sink concludes from the reports of every region.
-- Written by the sink in the same transaction as the reports they come from and the
-- partition's offset, so they hold exactly the stored reports, once each. Only new tables
-- and views: a sink without verdicts keeps running against this schema.

-- Each target's state, and the fold's whole memory (`fold`: pending slots, each region's
-- newest slot, runs of verdicts, the open incident's tally) as JSON with short keys (the
-- sink's verdicts::state names them: `rg` regions, `sl` silent regions). The row is written
-- for every target of every batch, so the JSON is kept as text: PostgreSQL neither parses
-- it on each write nor prints it on each read (that was about half of what the verdicts
-- cost the database); readers cast it (`fold::jsonb`). The other columns are the fold's
-- current values, for reading, among them the current hour's verdict counts. Updated in
-- place: room is left in each page so the updates stay heap-only.
CREATE TABLE target_states (
    target_id      text PRIMARY KEY REFERENCES targets (target_id),
    state          text NOT NULL CHECK (state IN ('up', 'down', 'degraded', 'unknown')),
    since          timestamptz,
    watermark      timestamptz,
    last_final     timestamptz,
    open_incident  uuid,
    cert_not_after timestamptz,
    cert_warning   boolean NOT NULL DEFAULT false,
    silent_regions integer NOT NULL DEFAULT 0,
    hour           timestamptz,
    hour_up        integer NOT NULL DEFAULT 0,
    hour_degraded  integer NOT NULL DEFAULT 0,
    hour_down      integer NOT NULL DEFAULT 0,
    hour_unknown   integer NOT NULL DEFAULT 0,
    fold           text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);

-- Incidents (`down`: a quorum of regions failed) and degraded periods (`degraded`: some
-- regions failed). The id is derived from the target, the kind and the opening slot, so a
-- replay writes the same rows.
CREATE TABLE incidents (
    incident_id   uuid PRIMARY KEY,
    target_id     text NOT NULL REFERENCES targets (target_id),
    kind          text NOT NULL CHECK (kind IN ('down', 'degraded')),
    opened_at     timestamptz NOT NULL,
    detected_at   timestamptz NOT NULL,
    closed_at     timestamptz,
    duration      interval GENERATED ALWAYS AS (closed_at - opened_at) STORED,
    cause_class   text,
    cause_error   text,
    regions       text[] NOT NULL,
    checks_failed integer NOT NULL
);

CREATE INDEX incidents_target_opened ON incidents (target_id, opened_at DESC);
CREATE INDEX incidents_open ON incidents (target_id) WHERE closed_at IS NULL;

-- Final slots by verdict, per target and hour (UTC): what uptime is computed from. A
-- 90-day status page reads 2,160 rows per target whatever the period. The sink counts the
-- current hour in the target's state and adds it here once a slot of a later hour is final,
-- so that a batch writes one row per target; read `verdicts_by_hour`, which adds the
-- current hours.
CREATE TABLE verdict_hours (
    target_id text NOT NULL REFERENCES targets (target_id),
    hour      timestamptz NOT NULL,
    up        integer NOT NULL DEFAULT 0,
    degraded  integer NOT NULL DEFAULT 0,
    down      integer NOT NULL DEFAULT 0,
    unknown   integer NOT NULL DEFAULT 0,
    PRIMARY KEY (target_id, hour)
);

-- Final slots by verdict per target and hour, the current hour included.
CREATE VIEW verdicts_by_hour AS
SELECT target_id, hour, sum(up)::int8 AS up, sum(degraded)::int8 AS degraded,
       sum(down)::int8 AS down, sum(unknown)::int8 AS unknown
FROM (
    SELECT target_id, hour, up, degraded, down, unknown FROM verdict_hours
    UNION ALL
    SELECT target_id, hour, hour_up, hour_degraded, hour_down, hour_unknown
    FROM target_states
    WHERE hour IS NOT NULL
) AS counted
GROUP BY target_id, hour;

-- One row per target: its state, since when, its newest slot, the certificate warning, the
-- regions that report it and those gone silent, and the open incident.
CREATE VIEW current_state AS
SELECT
    s.target_id,
    t.url,
    s.state,
    s.since,
    s.watermark                                              AS last_slot,
    s.cert_warning,
    s.cert_not_after,
    ARRAY(SELECT jsonb_object_keys(s.fold::jsonb -> 'rg') ORDER BY 1)          AS regions,
    ARRAY(SELECT jsonb_array_elements_text(s.fold::jsonb -> 'sl') ORDER BY 1)  AS silent_regions,
    s.open_incident,
    s.updated_at
FROM target_states s
JOIN targets t USING (target_id);

-- Incidents and degraded periods not closed yet.
CREATE VIEW open_incidents AS
SELECT
    i.incident_id,
    i.target_id,
    t.url,
    i.kind,
    i.opened_at,
    i.detected_at,
    i.cause_class,
    i.cause_error,
    i.regions,
    i.checks_failed
FROM incidents i
JOIN targets t USING (target_id)
WHERE i.closed_at IS NULL;
