-- Every purpose the privacy notice names (issue 13): marketing consents,
-- objections (the person's prohibitions, append-only like consents),
-- partners, the per-subject log of what went to which partner, notices owed
-- to partners (GDPR Art. 19), and the records of audience, disclosure and
-- statistics runs with the differential-privacy budget they spent.
-- Runs on plain PostgreSQL 15+ and on TimescaleDB alike.

-- Marketing: explicit consent to targeted marketing built from derived groups.
ALTER TABLE consents DROP CONSTRAINT consents_purpose_check;
ALTER TABLE consents ADD CONSTRAINT consents_purpose_check
    CHECK (purpose IN ('collection', 'location', 'analytics', 'research', 'marketing'));

-- Partners data may be disclosed to, or audiences built for.
CREATE TABLE partners (
    partner_id          uuid PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    region              text NOT NULL CHECK (region IN ('FI', 'EU')),
    purposes            text[] NOT NULL
                        CHECK (cardinality(purposes) > 0
                               AND purposes <@ ARRAY['marketing', 'disclosure']),
    types               text[],                  -- the reading types agreed for disclosure
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text
);

-- Objections are append-only like consents: an objection is one row, its lift
-- another row in objection_lifts. Neither is ever updated; only erasure deletes.
CREATE TABLE objections (
    objection_id        uuid PRIMARY KEY,
    subject_id          uuid NOT NULL REFERENCES subjects,
    purpose             text NOT NULL CHECK (purpose IN ('marketing', 'research', 'disclosure')),
    partner_id          uuid REFERENCES partners,    -- disclosure only; NULL: every partner
    objected_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    objected_by         text,
    CHECK (partner_id IS NULL OR purpose = 'disclosure')
);
CREATE INDEX objections_subject_idx ON objections (subject_id, purpose);

CREATE TABLE objection_lifts (
    objection_id        uuid PRIMARY KEY REFERENCES objections,
    lifted_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    lifted_by           text
);

CREATE TRIGGER objections_append_only BEFORE UPDATE OR DELETE ON objections
    FOR EACH ROW EXECUTE FUNCTION vitals_append_only();
CREATE TRIGGER objection_lifts_append_only BEFORE UPDATE OR DELETE ON objection_lifts
    FOR EACH ROW EXECUTE FUNCTION vitals_append_only();

-- Runs: audiences (own use, or for a partner), disclosures of readings to a
-- partner, statistics. The output files are under the export root.
CREATE TABLE audiences (
    audience_id         text PRIMARY KEY,
    group_key           text NOT NULL,
    partner_id          uuid REFERENCES partners,    -- NULL: the company's own marketing
    cutoff              timestamptz NOT NULL,
    path                text NOT NULL,
    member_count        integer NOT NULL,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE disclosures (
    disclosure_id       text PRIMARY KEY,
    partner_id          uuid NOT NULL REFERENCES partners,
    types               text[] NOT NULL,
    cutoff              timestamptz NOT NULL,
    path                text NOT NULL,
    subject_count       integer NOT NULL,
    row_count           bigint NOT NULL,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- The per-subject log of what went to which partner: a disclosure of readings
-- (what: rows per type) or membership in a partner's audience (what: the
-- group). Erasure replaces the subject id with its keyed hash.
CREATE TABLE partner_disclosures (
    entry_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    disclosure_id       text NOT NULL,               -- disclosures or audiences
    kind                text NOT NULL CHECK (kind IN ('readings', 'audience')),
    partner_id          uuid NOT NULL REFERENCES partners,
    subject_id          uuid,
    subject_hash        text,
    disclosed_at        timestamptz NOT NULL,
    what                jsonb NOT NULL,
    rows                bigint NOT NULL,
    CHECK ((subject_id IS NULL) <> (subject_hash IS NULL))
);
CREATE INDEX partner_disclosures_subject_idx ON partner_disclosures (subject_id)
    WHERE subject_id IS NOT NULL;
CREATE INDEX partner_disclosures_run_idx ON partner_disclosures (disclosure_id);

-- Notices owed to a partner that received someone's data, when that person
-- is erased or objects (GDPR Art. 19). The person is named as the partner
-- knows them: the partner's pseudonym. Never a subject id.
CREATE TABLE partner_notices (
    notice_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id          uuid NOT NULL REFERENCES partners,
    kind                text NOT NULL CHECK (kind IN ('erasure', 'objection')),
    pseudonym           text NOT NULL,
    purpose             text,                        -- objection: marketing or disclosure
    objection_id        uuid,                        -- no reference: erasure deletes objections
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX partner_notices_objection_idx
    ON partner_notices (partner_id, objection_id) WHERE objection_id IS NOT NULL;
CREATE UNIQUE INDEX partner_notices_erasure_idx
    ON partner_notices (partner_id, pseudonym) WHERE kind = 'erasure';

CREATE TABLE statistics_runs (
    statistics_id       text PRIMARY KEY,
    region              text NOT NULL CHECK (region IN ('FI', 'EU')),
    period              text NOT NULL CHECK (period IN ('day', 'week', 'month')),
    min_subjects        integer NOT NULL,
    epsilon             double precision,            -- NULL: exact (no DP mechanism)
    cutoff              timestamptz NOT NULL,
    path                text NOT NULL,
    cells               integer NOT NULL,
    suppressed_cells    integer,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- The privacy budget: every differentially private release spends epsilon
-- (and delta) of a dataset (statistics of one region). Append-only.
CREATE TABLE privacy_ledger (
    entry_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset             text NOT NULL,
    release_id          text NOT NULL,
    epsilon             double precision NOT NULL CHECK (epsilon > 0),
    delta               double precision NOT NULL CHECK (delta >= 0),
    mechanism           text NOT NULL,
    spent_at            timestamptz NOT NULL DEFAULT now(),
    spent_by            text
);
CREATE INDEX privacy_ledger_dataset_idx ON privacy_ledger (dataset);
CREATE TRIGGER privacy_ledger_append_only BEFORE UPDATE OR DELETE ON privacy_ledger
    FOR EACH ROW EXECUTE FUNCTION vitals_append_only();
