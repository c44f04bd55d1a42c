-- Notifications: an outbox written by the verdicts fold in the same transaction as the
-- incident it tells of, and worked off by the dispatcher. The id is the UUID v5 of the
-- event's key and the channel, so a replay of the same reports inserts nothing new
-- (`ON CONFLICT DO NOTHING`) and each event reaches each channel once.
CREATE TABLE notifications (
    id              uuid PRIMARY KEY,
    -- Order of writing: events of one transaction go out in the order the fold saw them.
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    event_key       text NOT NULL,
    channel         text NOT NULL,
    -- The event as delivered (the sink's notify::message::Event).
    event           jsonb NOT NULL,
    -- Events of one channel and transition that may go out as one message.
    group_key       text NOT NULL,
    -- The key of the message that carries this event, once it is decided (a group's key is
    -- kept so that a retried group is the same message).
    message_key     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);

-- The dispatcher's query: due pending notifications, oldest due first.
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
-- Reminders: the opening notifications of incidents still open.
CREATE INDEX notifications_event_key ON notifications (event_key);
-- `sink report` and the failed count.
CREATE INDEX notifications_failed ON notifications (channel) WHERE status = 'failed';

-- Every delivery attempt, for finding out why a channel does not get its messages.
CREATE TABLE notification_attempts (
    notification_id uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempted_at    timestamptz NOT NULL,
    duration        interval NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'refused')),
    http_status     integer,
    error           text
);

CREATE INDEX notification_attempts_notification
    ON notification_attempts (notification_id, attempted_at);
