-- The sessions a host's busy processes hold are kept as 64-bit keys of their ids (see
-- `writer::session_key`) instead of the ids: the list is read and rewritten on every create
-- and every snapshot, and fifty ARNs made each row several kilobytes, compressed on every
-- write. `busy` stays for a replica of the previous version during a rolling upgrade; this
-- version neither reads nor writes it.
ALTER TABLE instances ADD COLUMN busy_keys bigint[] NOT NULL DEFAULT '{}';

-- Rows rewritten thousands of times a second keep room on their page, so a write that
-- changes no indexed column stays on the page (a HOT update) and old versions are pruned
-- without a vacuum. Takes effect on pages written from now on.
ALTER TABLE instances SET (fillfactor = 50);
ALTER TABLE placements SET (fillfactor = 70);
ALTER TABLE idempotency SET (fillfactor = 70);
