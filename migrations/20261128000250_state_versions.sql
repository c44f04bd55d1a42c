-- Each target state's version, raised by every write of the state. A sink keeps the states it
-- wrote in memory and writes them back only where the stored version is still the one it
-- wrote (`WHERE version = …`), so it no longer reads and locks every batch's states: a state
-- written by anyone else since (another replica after a partition moved) is found, re-read
-- and folded again. Adding a column with a constant default rewrites nothing.
ALTER TABLE target_states ADD COLUMN version bigint NOT NULL DEFAULT 0;
