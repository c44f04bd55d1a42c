-- Targets made through the sink's API: their definitions (the keys of a monitored_urls entry,
-- as accepted), every change made to them, and the outbox that carries each change to the
-- compacted targets topic the checkers follow.

CREATE TABLE api_targets (
    target_id  text PRIMARY KEY,
    -- The definition as accepted, `id` included; header values marked secret are kept here
    -- (the checkers need them) and never shown by the API or the audit.
    definition jsonb NOT NULL,
    -- Raised by every change; the API's ETag, so a client can change what it read (If-Match).
    version    bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);

-- Every change: who (the token's name), when, what, before and after (secret header values
-- replaced by a marker). Kept as long as the database: a target's audit outlives the target.
CREATE TABLE target_changes (
    change_id  bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL CHECK (action IN ('create', 'replace', 'patch', 'delete')),
    target_id  text NOT NULL,
    before     jsonb,
    after      jsonb
);
CREATE INDEX target_changes_by_target ON target_changes (target_id, change_id);

-- Changes not yet on the targets topic, in the order they were made: a definition, or NULL for
-- a deletion (a tombstone). Written in the change's transaction; the publisher deletes the rows
-- it has produced, in the transaction that holds the publishers' lock.
CREATE TABLE target_outbox (
    seq        bigserial PRIMARY KEY,
    target_id  text NOT NULL,
    definition jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
