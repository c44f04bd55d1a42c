-- Maintenance windows: slots in a target's window are counted apart (left out of uptime),
-- and incidents opened in one are marked (and not notified until they outlast it).
ALTER TABLE incidents ADD COLUMN maintenance boolean NOT NULL DEFAULT false;
ALTER TABLE verdict_hours ADD COLUMN maintenance integer NOT NULL DEFAULT 0;
ALTER TABLE target_states ADD COLUMN hour_maintenance integer NOT NULL DEFAULT 0;

-- Final slots by verdict per target and hour, the current hour included; `maintenance`
-- counts the slots in a maintenance window (whatever their verdict), which uptime leaves out.
CREATE OR REPLACE VIEW verdicts_by_hour AS
SELECT target_id, hour, sum(up)::int8 AS up, sum(degraded)::int8 AS degraded,
       sum(down)::int8 AS down, sum(unknown)::int8 AS unknown,
       sum(maintenance)::int8 AS maintenance
FROM (
    SELECT target_id, hour, up, degraded, down, unknown, maintenance FROM verdict_hours
    UNION ALL
    SELECT target_id, hour, hour_up, hour_degraded, hour_down, hour_unknown, hour_maintenance
    FROM target_states
    WHERE hour IS NOT NULL
) AS counted
GROUP BY target_id, hour;

-- Incidents and degraded periods not closed yet; `maintenance`: opened in a maintenance
-- window and not notified.
CREATE OR REPLACE VIEW open_incidents AS
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
    i.checks_failed,
    i.maintenance
FROM incidents i
JOIN targets t USING (target_id)
WHERE i.closed_at IS NULL;
