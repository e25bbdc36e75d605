-- Core registry: providers, subjects, links, consents (append-only), audit.
-- Runs on plain PostgreSQL 15+; TimescaleDB features are applied in 0002 when present.

CREATE TABLE providers (
    provider_id         uuid PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    types               text[] NOT NULL,
    webhook_secret_enc  bytea NOT NULL,          -- Fernet token under the master key
    mqtt_username       text,
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'suspended', 'removed')),
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subjects (
    subject_id          uuid PRIMARY KEY,
    residency           text NOT NULL CHECK (residency IN ('FI', 'EU')),
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'ended', 'erasing')),
    relationship_end    timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- The provider's own reference for a person -> our subject.
CREATE TABLE links (
    provider_id         uuid NOT NULL REFERENCES providers,
    user_ref            text NOT NULL,
    subject_id          uuid NOT NULL REFERENCES subjects,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, user_ref)
);
CREATE INDEX links_subject_idx ON links (subject_id);

-- Consents are append-only: a grant is one row, a withdrawal another row in
-- consent_withdrawals. Neither is ever updated; only erasure deletes.
CREATE TABLE consents (
    consent_id          uuid PRIMARY KEY,
    subject_id          uuid NOT NULL REFERENCES subjects,
    purpose             text NOT NULL
                        CHECK (purpose IN ('collection', 'location', 'analytics', 'research')),
    provider_id         uuid REFERENCES providers,   -- NULL: any provider
    types               text[],                      -- NULL: every type
    valid_from          timestamptz NOT NULL DEFAULT '-infinity',
    valid_until         timestamptz NOT NULL DEFAULT 'infinity',
    granted_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    granted_by          text,
    CHECK (valid_from < valid_until)
);
CREATE INDEX consents_subject_idx ON consents (subject_id, purpose);

CREATE TABLE consent_withdrawals (
    consent_id          uuid PRIMARY KEY REFERENCES consents,
    withdrawn_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    withdrawn_by        text
);

CREATE FUNCTION vitals_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('vitals.erasure', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'table % is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER consents_append_only BEFORE UPDATE OR DELETE ON consents
    FOR EACH ROW EXECUTE FUNCTION vitals_append_only();
CREATE TRIGGER consent_withdrawals_append_only BEFORE UPDATE OR DELETE ON consent_withdrawals
    FOR EACH ROW EXECUTE FUNCTION vitals_append_only();

-- Readings: narrow rows, one per component (the export contract is long format).
CREATE TABLE readings (
    effective_time      timestamptz NOT NULL,
    subject_id          uuid NOT NULL,
    provider_id         uuid NOT NULL,
    reading_id          text NOT NULL,
    type                text NOT NULL,
    component           text NOT NULL,
    value               double precision NOT NULL,   -- canonical UCUM unit
    unit                text NOT NULL,
    orig_value          double precision NOT NULL,   -- as sent
    orig_unit           text NOT NULL,
    latitude            double precision,            -- only with location consent
    longitude           double precision,
    received_at         timestamptz NOT NULL DEFAULT now(),
    erroneous           boolean NOT NULL DEFAULT false,
    -- A resend of the same provider reading is a no-op.
    CONSTRAINT readings_dedup UNIQUE (provider_id, reading_id, component, effective_time)
);
CREATE INDEX readings_subject_idx ON readings (subject_id, type, effective_time);

-- Refused readings: the reason, provider, reading id and times. Never a value.
CREATE TABLE rejections (
    rejection_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_id         uuid,
    reading_id          text,
    subject_id          uuid,
    reason              text NOT NULL,
    transport           text NOT NULL,
    effective_time      timestamptz,
    received_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejections_subject_idx ON rejections (subject_id) WHERE subject_id IS NOT NULL;
CREATE INDEX rejections_received_idx ON rejections (received_at);

-- Derived analytic user groups; a membership ends, it is never overwritten.
CREATE TABLE group_memberships (
    membership_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id          uuid NOT NULL,
    group_key           text NOT NULL,
    rule_version        text NOT NULL,
    evidence            jsonb NOT NULL,
    valid_from          timestamptz NOT NULL,
    valid_until         timestamptz,
    end_reason          text
);
CREATE UNIQUE INDEX group_memberships_open_idx
    ON group_memberships (subject_id, group_key) WHERE valid_until IS NULL;

-- Exports and the disclosure log (which subjects went into which export).
CREATE TABLE exports (
    export_id           text PRIMARY KEY,
    region              text NOT NULL CHECK (region IN ('FI', 'EU')),
    cutoff              timestamptz NOT NULL,
    salt_enc            bytea NOT NULL,
    path                text NOT NULL,
    subject_count       integer NOT NULL DEFAULT 0,
    row_count           bigint NOT NULL DEFAULT 0,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    purged_at           timestamptz
);
CREATE TABLE export_subjects (
    export_id           text NOT NULL REFERENCES exports ON DELETE CASCADE,
    subject_id          uuid NOT NULL,
    PRIMARY KEY (export_id, subject_id)
);
CREATE INDEX export_subjects_subject_idx ON export_subjects (subject_id);

-- Bearer tokens (hashed) with roles.
CREATE TABLE api_tokens (
    token_hash          bytea PRIMARY KEY,
    name                text NOT NULL,
    role                text NOT NULL CHECK (role IN ('admin', 'dpo', 'analyst')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz
);

-- Audit: who did what, when, to which subject.
CREATE TABLE audit_log (
    audit_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                  timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor               text NOT NULL,
    action              text NOT NULL,
    subject_ref         text,            -- subject id, or its keyed hash after erasure
    detail              jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject_idx ON audit_log (subject_ref);
CREATE INDEX audit_log_at_idx ON audit_log (at);

CREATE TABLE erasure_receipts (
    subject_hash        text PRIMARY KEY,
    requested_at        timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    erased_by           text NOT NULL,
    counts              jsonb NOT NULL DEFAULT '{}'
);
