-- web-monitor schema, version 1: targets, results (partitioned by day), dead letters, Kafka
-- offsets, and the original service's `web_monitoring` view.

CREATE TYPE check_status AS ENUM ('up', 'down', 'missed');

CREATE TYPE failure_class AS ENUM (
    'dns', 'connect_refused', 'connect_timeout', 'tls', 'timeout', 'http_status',
    'body_mismatch', 'body_too_large', 'redirect', 'protocol', 'io'
);

-- One row per target ever reported.
CREATE TABLE targets (
    target_id  text PRIMARY KEY,
    url        text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now()
);

-- One row per report. Partitioned by day on scheduled_at: the sink creates the partitions it
-- needs and drops whole partitions past the retention. report_id is derived from the target
-- and scheduled_at, so (report_id, scheduled_at) is as unique as report_id alone.
CREATE TABLE results (
    report_id          uuid NOT NULL,
    target_id          text NOT NULL REFERENCES targets (target_id),
    url                text NOT NULL,
    checker_id         text NOT NULL,
    scheduled_at       timestamptz NOT NULL,
    started_at         timestamptz NOT NULL,
    status             check_status NOT NULL,
    failure_class      failure_class,
    error              text,
    http_status        integer,
    response_time_ms   double precision,
    dns_ms             double precision,
    connect_ms         double precision,
    tls_ms             double precision,
    ttfb_ms            double precision,
    transfer_ms        double precision,
    body_bytes         bigint,
    body_truncated     boolean,
    regexp             text,
    regexp_matched     boolean,
    tls_cert_not_after timestamptz,
    timeout_s          double precision NOT NULL,
    period_s           double precision NOT NULL,
    kafka_topic        text NOT NULL,
    kafka_partition    integer NOT NULL,
    kafka_offset       bigint NOT NULL,
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_id, scheduled_at)
) PARTITION BY RANGE (scheduled_at);

-- "This target, last N hours."
CREATE INDEX results_target_time ON results (target_id, scheduled_at DESC);

-- Messages that are not valid reports, kept as received.
CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    key             bytea,
    payload         bytea,
    error           text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);

-- Where each partition's consumption resumes, written in the same transaction as its rows.
CREATE TABLE kafka_offsets (
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition)
);

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
