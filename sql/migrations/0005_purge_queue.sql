-- The purge queue: every past export that must be rewritten without someone,
-- filled by erasure (by pseudonym: the subject id is about to go), by a
-- research-consent withdrawal and a residency correction (by subject id, until
-- the purge turns it into a pseudonym), and by `vitals export purge` itself
-- when it finds a disclosed subject who may no longer be in an export. A row
-- leaves the queue only when its export has been rewritten; a failed attempt
-- stays, with the error, for the next run.
ALTER TABLE export_purge_queue DROP CONSTRAINT export_purge_queue_pkey;
ALTER TABLE export_purge_queue DROP CONSTRAINT export_purge_queue_cause_check;
ALTER TABLE export_purge_queue
    ADD COLUMN queue_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ALTER COLUMN pseudonym DROP NOT NULL,
    -- Erasure drops the subject row last; its pseudonym rows are queued before.
    ADD COLUMN subject_id uuid REFERENCES subjects ON DELETE CASCADE,
    -- Erasure rows: the receipt that completes when they are all done.
    ADD COLUMN subject_hash text,
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN last_error text,
    ADD CONSTRAINT export_purge_queue_cause_check
        CHECK (cause IN ('erasure', 'research_withdrawn', 'residency')),
    ADD CONSTRAINT export_purge_queue_who_check
        CHECK ((pseudonym IS NULL) <> (subject_id IS NULL));
CREATE UNIQUE INDEX export_purge_queue_pseudonym_idx
    ON export_purge_queue (export_id, pseudonym) WHERE pseudonym IS NOT NULL;
CREATE UNIQUE INDEX export_purge_queue_subject_idx
    ON export_purge_queue (export_id, subject_id, cause) WHERE subject_id IS NOT NULL;
CREATE INDEX export_purge_queue_hash_idx
    ON export_purge_queue (subject_hash) WHERE subject_hash IS NOT NULL;

-- The disclosure log remembers when a subject's rows were purged from an
-- export, so the purge does not find them again.
ALTER TABLE export_subjects ADD COLUMN purged_at timestamptz;

-- An erasure is complete only when every export that held the subject is
-- purged: 'erasing' (database steps running), 'pending_purge' (database done,
-- exports queued), 'complete' (completed_at set).
ALTER TABLE erasure_receipts
    ADD COLUMN status text NOT NULL DEFAULT 'erasing'
        CHECK (status IN ('erasing', 'pending_purge', 'complete')),
    ADD COLUMN database_erased_at timestamptz;
UPDATE erasure_receipts
SET status = 'complete', database_erased_at = completed_at
WHERE completed_at IS NOT NULL;
