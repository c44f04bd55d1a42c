-- Answers to "check now" requests (POST /api/v1/targets/{id}/checks): stored apart from the
-- scheduled results, so no verdict, uptime figure or dashboard ever counts them. One row per
-- region's answer; the whole report is kept as JSON. Pruned with the results' retention.
CREATE TABLE check_results (
    report_id  uuid PRIMARY KEY,
    request_id uuid NOT NULL,
    target_id  text NOT NULL,
    checker_id text NOT NULL,
    started_at timestamptz NOT NULL,
    report     jsonb NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX check_results_by_request ON check_results (request_id);
CREATE INDEX check_results_by_time ON check_results (stored_at);
