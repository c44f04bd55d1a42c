-- Compact results: what a report repeats is stored once, and each stored report is a narrow row.
--
-- `results` was one wide row per report (321 bytes with its two indexes) with a foreign key
-- checked per row; writing it cost ~1.7 times a plain table's `COPY`. Now:
--
-- - `series`: one row per distinct (target, URL, checker, topic, pattern, timeout, period,
--   certificate expiry): what every report of a target from one region repeats. Its `key`
--   (`series_key`) makes it unique however long its texts are. The foreign key to `targets` is
--   checked once per series, not once per report.
-- - `reports`: one narrow row per report, partitioned by day on scheduled_at, written straight
--   into the day's partition. Its primary key (series_id, scheduled_at) both refuses a report
--   stored twice and serves "this target, last N hours". Narrower types: durations as float4
--   milliseconds, status, failure class and HTTP status as smallint codes, started_at as
--   microseconds after scheduled_at (`started_at` itself only when that does not fit in an
--   int4), and report_id only when it is not the one derived from (checker_id, target_id,
--   scheduled_at) (`report_id()`).
-- - `results`: a view with the old table's columns, types and meaning, which every reader
--   (the `web_monitoring` view, `sink report`, the dashboard, tests) reads as before.
--
-- One report per (series, scheduled_at): the checker sends one report per check, and a
-- re-sent report is the same report. The old key was report_id alone; the two differ only for
-- crafted reports whose id is not the derived one.
--
-- The rows of `results` move into `reports` (their day partitions made first); the old
-- table is dropped.

-- The report id the checker derives (monitor_core::report::report_id): a UUID in the version 7
-- layout, the scheduled time in Unix milliseconds, then the first 10 bytes of the SHA-256 of
-- the checker id and target id (each after its length, 8 bytes big-endian) and the scheduled
-- time in microseconds (8 bytes big-endian), with the version and variant bits set.
CREATE FUNCTION report_id(checker_id text, target_id text, scheduled_at timestamptz)
RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (
    WITH t AS (
        SELECT (extract(epoch FROM scheduled_at) * 1000000)::int8 AS us
    ), h AS (
        SELECT us, substr(sha256(
            int8send(octet_length(checker_id)::int8) || textsend(checker_id)
            || int8send(octet_length(target_id)::int8) || textsend(target_id)
            || int8send(us)), 1, 10) AS tail
        FROM t
    )
    SELECT encode(
        substr(int8send(greatest(floor(us / 1000.0), 0)::int8), 3, 6)
        || set_byte(set_byte(tail, 0, (get_byte(tail, 0) & 15) | 112), 2,
                    (get_byte(tail, 2) & 63) | 128),
        'hex')::uuid
    FROM h
);

-- What makes a series unique: a digest of its fields, each text after its length, a NULL
-- marked apart from every value.
CREATE FUNCTION series_key(
    target_id text, url text, checker_id text, kafka_topic text, regexp text,
    timeout_s float8, period_s float8, tls_cert_not_after timestamptz
) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN encode(substr(sha256(
    int8send(octet_length(target_id)::int8) || textsend(target_id)
    || int8send(octet_length(url)::int8) || textsend(url)
    || int8send(octet_length(checker_id)::int8) || textsend(checker_id)
    || int8send(octet_length(kafka_topic)::int8) || textsend(kafka_topic)
    || COALESCE('\x01'::bytea || int8send(octet_length(regexp)::int8) || textsend(regexp),
                '\x00'::bytea)
    || float8send(timeout_s) || float8send(period_s)
    || COALESCE('\x01'::bytea || timestamptz_send(tls_cert_not_after), '\x00'::bytea)
), 1, 16), 'hex')::uuid;

-- What the reports of one target from one checker repeat. The sink keeps the ids it has
-- written in memory; a new series is one insert, in the transaction of its first report.
CREATE TABLE series (
    series_id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id          text NOT NULL REFERENCES targets (target_id),
    url                text NOT NULL,
    checker_id         text NOT NULL,
    kafka_topic        text NOT NULL,
    regexp             text,
    timeout_s          double precision NOT NULL,
    period_s           double precision NOT NULL,
    tls_cert_not_after timestamptz,
    key                uuid NOT NULL GENERATED ALWAYS AS (series_key(target_id, url, checker_id,
                           kafka_topic, regexp, timeout_s, period_s, tls_cert_not_after)) STORED,
    -- The bounds of the report contract, named as they were on `results`.
    CONSTRAINT results_target_id_length CHECK (char_length(target_id) BETWEEN 1 AND 200),
    CONSTRAINT results_checker_id_length CHECK (char_length(checker_id) <= 200),
    CONSTRAINT results_url_length CHECK (char_length(url) <= 8192),
    CONSTRAINT results_regexp_length CHECK (char_length(regexp) <= 4096)
);
CREATE UNIQUE INDEX series_key ON series (key);
-- "This target": its series.
CREATE INDEX series_target ON series (target_id);

-- One narrow row per stored report. Codes: status 0 up, 1 down, 2 missed; failure_class the
-- position of the class in the `failure_class` type (0 dns … 10 io); http_status the 16 bits
-- of the code as a smallint (a code above 32767 is stored negative).
CREATE TABLE reports (
    series_id        integer NOT NULL,
    scheduled_at     timestamptz NOT NULL,
    kafka_offset     bigint NOT NULL,
    body_bytes       bigint,
    -- When the row was stored (the database's clock), to the microsecond: ingestion lag is
    -- read from it.
    stored_at        timestamptz NOT NULL DEFAULT now(),
    -- started_at - scheduled_at, in microseconds, when it fits; else NULL and `started_at`.
    started_us       integer,
    kafka_partition  integer NOT NULL,
    response_time_ms real,
    dns_ms           real,
    connect_ms       real,
    tls_ms           real,
    ttfb_ms          real,
    transfer_ms      real,
    status           smallint NOT NULL,
    failure_class    smallint,
    http_status      smallint,
    body_truncated   boolean,
    regexp_matched   boolean,
    started_at       timestamptz,
    -- Only when it is not report_id(checker_id, target_id, scheduled_at).
    report_id        uuid,
    error            text,
    PRIMARY KEY (series_id, scheduled_at),
    CONSTRAINT results_error_length CHECK (char_length(error) <= 1024),
    CONSTRAINT reports_started CHECK ((started_us IS NULL) <> (started_at IS NULL))
) PARTITION BY RANGE (scheduled_at);

-- Move the stored rows: series first, then each day into its own partition.
INSERT INTO targets (target_id, url)
SELECT DISTINCT ON (target_id) target_id, url FROM results ORDER BY target_id
ON CONFLICT DO NOTHING;

INSERT INTO series (target_id, url, checker_id, kafka_topic, regexp, timeout_s, period_s,
                    tls_cert_not_after)
SELECT DISTINCT target_id, url, checker_id, kafka_topic, regexp, timeout_s, period_s,
       tls_cert_not_after
FROM results
ON CONFLICT (key) DO NOTHING;

DO $$
DECLARE
    day date;
BEGIN
    FOR day IN
        SELECT to_date(substr(c.relname, 10), 'YYYYMMDD')
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'results'::regclass AND c.relname ~ '^results_p[0-9]{8}$'
    LOOP
        EXECUTE format(
            'CREATE TABLE reports_p%s PARTITION OF reports FOR VALUES FROM (%L) TO (%L)',
            to_char(day, 'YYYYMMDD'), day::text || ' 00:00:00+00',
            (day + 1)::text || ' 00:00:00+00');
    END LOOP;
END
$$;

INSERT INTO reports (series_id, scheduled_at, kafka_offset, body_bytes, stored_at, started_us,
                     kafka_partition, response_time_ms, dns_ms, connect_ms, tls_ms, ttfb_ms,
                     transfer_ms, status, failure_class, http_status, body_truncated,
                     regexp_matched, started_at, report_id, error)
SELECT s.series_id, r.scheduled_at, r.kafka_offset, r.body_bytes, r.stored_at,
       CASE WHEN abs(extract(epoch FROM r.started_at - r.scheduled_at)) < 2147
            THEN (extract(epoch FROM r.started_at - r.scheduled_at) * 1000000)::integer END,
       r.kafka_partition, r.response_time_ms, r.dns_ms, r.connect_ms, r.tls_ms, r.ttfb_ms,
       r.transfer_ms,
       array_position(enum_range(NULL::check_status), r.status) - 1,
       array_position(enum_range(NULL::failure_class), r.failure_class) - 1,
       CASE WHEN r.http_status BETWEEN 0 AND 65535
            THEN (r.http_status - CASE WHEN r.http_status > 32767 THEN 65536 ELSE 0 END)::smallint
       END,
       r.body_truncated, r.regexp_matched,
       CASE WHEN abs(extract(epoch FROM r.started_at - r.scheduled_at)) >= 2147
            THEN r.started_at END,
       NULLIF(r.report_id, report_id(r.checker_id, r.target_id, r.scheduled_at)),
       r.error
FROM results r
JOIN series s ON s.key = series_key(r.target_id, r.url, r.checker_id, r.kafka_topic, r.regexp,
                                    r.timeout_s, r.period_s, r.tls_cert_not_after)
ON CONFLICT DO NOTHING;

DROP VIEW web_monitoring;
DROP TABLE results;

-- The old table's columns, types and meaning, over the compact tables.
CREATE VIEW results AS
SELECT
    COALESCE(r.report_id, report_id(s.checker_id, s.target_id, r.scheduled_at)) AS report_id,
    s.target_id,
    s.url,
    s.checker_id,
    r.scheduled_at,
    COALESCE(r.started_at, r.scheduled_at + r.started_us * interval '1 microsecond')
                                                   AS started_at,
    (CASE r.status WHEN 0 THEN 'up' WHEN 1 THEN 'down' ELSE 'missed' END)::check_status
                                                   AS status,
    (CASE r.failure_class
        WHEN 0 THEN 'dns' WHEN 1 THEN 'connect_refused' WHEN 2 THEN 'connect_timeout'
        WHEN 3 THEN 'tls' WHEN 4 THEN 'timeout' WHEN 5 THEN 'http_status'
        WHEN 6 THEN 'body_mismatch' WHEN 7 THEN 'body_too_large' WHEN 8 THEN 'redirect'
        WHEN 9 THEN 'protocol' WHEN 10 THEN 'io'
    END)::failure_class                            AS failure_class,
    r.error,
    r.http_status::integer & 65535                 AS http_status,
    r.response_time_ms::double precision           AS response_time_ms,
    r.dns_ms::double precision                     AS dns_ms,
    r.connect_ms::double precision                 AS connect_ms,
    r.tls_ms::double precision                     AS tls_ms,
    r.ttfb_ms::double precision                    AS ttfb_ms,
    r.transfer_ms::double precision                AS transfer_ms,
    r.body_bytes,
    r.body_truncated,
    s.regexp,
    r.regexp_matched,
    s.tls_cert_not_after,
    s.timeout_s,
    s.period_s,
    s.kafka_topic,
    r.kafka_partition,
    r.kafka_offset,
    r.stored_at
FROM reports r
JOIN series s USING (series_id);

-- The original service's table, as a view over results: one row per stored report.
CREATE VIEW web_monitoring AS
SELECT
    r.kafka_topic                                  AS topic,
    r.url                                          AS url,
    (r.started_at AT TIME ZONE 'UTC')              AS event_date,
    (r.status = 'up')                              AS is_fine,
    CASE
        WHEN r.http_status IS NOT NULL THEN 'connected'
        WHEN r.failure_class IN ('connect_timeout', 'timeout') THEN 'conn_timeout'
        WHEN r.status = 'missed' THEN 'missed'
        ELSE 'conn_error'
    END                                            AS transport,
    CASE WHEN r.http_status BETWEEN 0 AND 32767 THEN r.http_status::smallint END AS response_code,
    (r.response_time_ms / 1000.0)::real            AS response_time,
    r.regexp                                       AS regexp,
    r.regexp_matched                               AS regexp_found,
    r.timeout_s::real                              AS timeout,
    r.period_s::real                               AS period,
    (r.stored_at AT TIME ZONE 'UTC')               AS date_created,
    r.report_id                                    AS report_id
FROM results r;
