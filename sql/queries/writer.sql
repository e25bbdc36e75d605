-- name: create_staging
-- Per-connection staging, emptied at every commit: one row per reading with its
-- (at most two) components; a reading refused before the database has only its
-- pre_reason.
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    idx             integer NOT NULL,
    provider_id     uuid NOT NULL,
    reading_id      text,
    user_ref        text,
    type            text,
    effective_time  timestamptz,
    pre_reason      text,
    c1_component    text,
    c1_value        double precision,
    c1_unit         text,
    c1_orig_value   double precision,
    c1_orig_unit    text,
    c2_component    text,
    c2_value        double precision,
    c2_unit         text,
    c2_orig_value   double precision,
    c2_orig_unit    text,
    latitude        double precision,
    longitude       double precision
) ON COMMIT DELETE ROWS

-- name: copy_staging_readings
COPY staging_readings FROM STDIN (FORMAT BINARY)

-- name: lock_batch_subjects
-- Serialise against consent withdrawal and erasure (which take FOR UPDATE on the
-- subject): a withdrawal committed before this returns is seen by store_batch's
-- fresh snapshot; one that starts later waits for this batch to commit.
SELECT s.subject_id
FROM subjects s
WHERE s.subject_id IN (
    SELECT l.subject_id
    FROM staging_readings st
    JOIN links l ON l.provider_id = st.provider_id AND l.user_ref = st.user_ref
)
ORDER BY s.subject_id
FOR SHARE OF s

-- name: store_batch
-- The consent decision that counts, made in the committing transaction, and the
-- readings it lets in, stored by the same statement. Set-based: the batch's
-- subjects' live consents (withdrawals anti-joined once per consent), one hashed
-- semi-join per purpose for the readings they cover, probed per reading through
-- hashed subplans. A resend is a duplicate (one index probe per reading), and so
-- is the second of the same reading in one batch. Stores the components of the
-- readings let in (coordinates only under a location consent), records
-- refusals in `rejections` (never a value) and returns the readings staged
-- without pre_reason that were not stored: (idx, reason).
WITH base AS (
    SELECT st.*, l.subject_id,
           s.status AS subject_status, p.status AS provider_status, p.types AS provider_types
    FROM staging_readings st
    LEFT JOIN providers p ON p.provider_id = st.provider_id
    LEFT JOIN links l ON l.provider_id = st.provider_id AND l.user_ref = st.user_ref
    LEFT JOIN subjects s ON s.subject_id = l.subject_id
),
live AS MATERIALIZED (
    SELECT c.subject_id, c.purpose, c.provider_id, c.types, c.valid_from, c.valid_until
    FROM consents c
    WHERE c.subject_id IN (SELECT subject_id FROM base)
      AND c.purpose IN ('collection', 'location')
      AND NOT EXISTS (SELECT FROM consent_withdrawals w WHERE w.consent_id = c.consent_id)
),
collected AS (
    SELECT b.idx FROM base b
    WHERE EXISTS (
        SELECT FROM live c
        WHERE c.subject_id = b.subject_id AND c.purpose = 'collection'
          AND (c.provider_id IS NULL OR c.provider_id = b.provider_id)
          AND (c.types IS NULL OR b.type = ANY (c.types))
          AND b.effective_time >= c.valid_from AND b.effective_time < c.valid_until
    )
),
located AS (
    SELECT b.idx FROM base b
    WHERE EXISTS (
        SELECT FROM live c
        WHERE c.subject_id = b.subject_id AND c.purpose = 'location'
          AND (c.provider_id IS NULL OR c.provider_id = b.provider_id)
          AND b.effective_time >= c.valid_from AND b.effective_time < c.valid_until
    )
),
decided AS (
    SELECT b.*, b.idx IN (SELECT idx FROM located) AS location_ok,
           CASE
               WHEN b.pre_reason IS NOT NULL THEN b.pre_reason
               WHEN b.subject_id IS NULL OR b.subject_status <> 'active' THEN 'unknown_subject'
               WHEN b.provider_status <> 'active' OR NOT (b.type = ANY (b.provider_types))
                   THEN 'type_not_approved'
               WHEN b.idx NOT IN (SELECT idx FROM collected) THEN 'no_consent'
               WHEN b.type = 'geoposition' AND b.idx NOT IN (SELECT idx FROM located)
                   THEN 'no_consent'
               WHEN dup.found THEN 'duplicate'
           END AS reason
    FROM base b
    -- A resend: one index probe per reading (LATERAL + LIMIT keeps the planner
    -- from hashing the whole readings table).
    LEFT JOIN LATERAL (
        SELECT true AS found FROM readings r
        WHERE r.provider_id = b.provider_id AND r.reading_id = b.reading_id
          AND r.effective_time = b.effective_time
        LIMIT 1
    ) dup ON b.pre_reason IS NULL
),
final AS (
    SELECT d.*,
           CASE
               WHEN d.reason IS NULL AND row_number() OVER (
                   PARTITION BY d.provider_id, d.reading_id, d.effective_time, d.reason IS NULL
                   ORDER BY d.idx) > 1 THEN 'duplicate'  -- the same reading twice in one batch
               ELSE d.reason
           END AS outcome
    FROM decided d
),
stored AS (
    INSERT INTO readings (effective_time, subject_id, provider_id, reading_id, type, component,
                          value, unit, orig_value, orig_unit, latitude, longitude)
    SELECT f.effective_time, f.subject_id, f.provider_id, f.reading_id, f.type, c.component,
           c.value, c.unit, c.orig_value, c.orig_unit,
           CASE WHEN f.location_ok THEN f.latitude END,
           CASE WHEN f.location_ok THEN f.longitude END
    FROM final f
    CROSS JOIN LATERAL (
        VALUES (f.c1_component, f.c1_value, f.c1_unit, f.c1_orig_value, f.c1_orig_unit),
               (f.c2_component, f.c2_value, f.c2_unit, f.c2_orig_value, f.c2_orig_unit)
    ) AS c (component, value, unit, orig_value, orig_unit)
    WHERE f.outcome IS NULL AND c.component IS NOT NULL
),
refused AS (
    INSERT INTO rejections (provider_id, reading_id, subject_id, reason, transport, effective_time)
    SELECT f.provider_id, f.reading_id, f.subject_id, f.outcome, %(transport)s, f.effective_time
    FROM final f
    WHERE f.outcome IS NOT NULL AND f.outcome <> 'duplicate'
)
SELECT f.idx, f.outcome
FROM final f
WHERE f.outcome IS NOT NULL AND f.pre_reason IS NULL
