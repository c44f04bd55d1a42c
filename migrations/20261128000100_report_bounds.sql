-- The bounds of the report contract (monitor_core::report::MAX_ID_CHARS, MAX_URL_CHARS,
-- MAX_PATTERN_CHARS, MAX_ERROR_CHARS), held by the database too, so no writer can store an id
-- too long for the indexes on it. The sink refuses such reports before they reach the database
-- (they become dead letters); a row that breaks one of these anyway fails with SQLSTATE 23514
-- naming the constraint, and the sink turns that one message into a dead letter.
--
-- NOT VALID: rows stored before these bounds are not checked (and the migration does not scan
-- the whole table under a lock); every new row is.

ALTER TABLE targets
    ADD CONSTRAINT targets_target_id_length CHECK (char_length(target_id) BETWEEN 1 AND 200) NOT VALID,
    ADD CONSTRAINT targets_url_length CHECK (char_length(url) <= 8192) NOT VALID;

ALTER TABLE results
    ADD CONSTRAINT results_target_id_length CHECK (char_length(target_id) BETWEEN 1 AND 200) NOT VALID,
    ADD CONSTRAINT results_checker_id_length CHECK (char_length(checker_id) <= 200) NOT VALID,
    ADD CONSTRAINT results_url_length CHECK (char_length(url) <= 8192) NOT VALID,
    ADD CONSTRAINT results_regexp_length CHECK (char_length(regexp) <= 4096) NOT VALID,
    ADD CONSTRAINT results_error_length CHECK (char_length(error) <= 1024) NOT VALID;

ALTER TABLE dead_letters
    ADD CONSTRAINT dead_letters_error_length CHECK (char_length(error) <= 1024) NOT VALID;
