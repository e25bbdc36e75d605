-- Subject rights: pseudonyms to purge from past exports after an erasure or a
-- research withdrawal. Holds pseudonyms (keyed per export), never subject ids.
CREATE TABLE export_purge_queue (
    export_id           text NOT NULL REFERENCES exports ON DELETE CASCADE,
    pseudonym           text NOT NULL,
    cause               text NOT NULL CHECK (cause IN ('erasure', 'research_withdrawn')),
    queued_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (export_id, pseudonym)
);

-- Corrections: a reading marked erroneous keeps its row for the record.
CREATE INDEX readings_erroneous_idx ON readings (subject_id) WHERE erroneous;
