-- The status page's rollups, written with the verdicts when an hour turns (never per batch),
-- so the page reads 90 rows per target for 90 days and never `results`.

-- Response times (milliseconds) of the checks that found the target up, per hour, as counts
-- per log bucket: bucket 0 under 1 ms, bucket b in [2^((b-1)/4), 2^(b/4)) ms (the sink's
-- verdicts::latency). Trailing empty buckets are left out; NULL when none was counted.
-- Adding a nullable column rewrites nothing.
ALTER TABLE verdict_hours ADD COLUMN response int4[];

-- Final slots by verdict per target and UTC day: the sums of the day's `verdict_hours`
-- (the current hour, still in `target_states`, not included).
CREATE TABLE verdict_days (
    target_id   text NOT NULL REFERENCES targets (target_id),
    day         date NOT NULL,
    up          integer NOT NULL DEFAULT 0,
    degraded    integer NOT NULL DEFAULT 0,
    down        integer NOT NULL DEFAULT 0,
    unknown     integer NOT NULL DEFAULT 0,
    maintenance integer NOT NULL DEFAULT 0,
    PRIMARY KEY (target_id, day)
);

-- The hours counted before this migration.
INSERT INTO verdict_days (target_id, day, up, degraded, down, unknown, maintenance)
SELECT target_id, (hour AT TIME ZONE 'UTC')::date, sum(up), sum(degraded), sum(down),
       sum(unknown), sum(maintenance)
FROM verdict_hours
GROUP BY 1, 2;

-- The status page reads the newest days of every target.
CREATE INDEX verdict_days_day ON verdict_days (day);

-- The status page reads the last day's hours of every target.
CREATE INDEX verdict_hours_hour ON verdict_hours (hour);
