-- name: create_staging
-- Per-connection staging, emptied at every commit. One row per reading, and
-- one row per component of a reading.
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    idx             integer NOT NULL,
    provider_id     uuid NOT NULL,
    reading_id      text,
    user_ref        text,
    type            text,
    effective_time  timestamptz,
    latitude        double precision,
    longitude       double precision,
    pre_reason      text,
    transport       text NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_components (
    idx             integer NOT NULL,
    component       text NOT NULL,
    value           double precision NOT NULL,
    unit            text NOT NULL,
    orig_value      double precision NOT NULL,
    orig_unit       text NOT NULL
) ON COMMIT DELETE ROWS;

-- name: copy_staging_readings
COPY staging_readings (idx, provider_id, reading_id, user_ref, type, effective_time,
                       latitude, longitude, pre_reason, transport) FROM STDIN

-- name: copy_staging_components
COPY staging_components (idx, component, value, unit, orig_value, orig_unit) FROM STDIN

-- name: lock_batch_subjects
-- Serialise against consent withdrawal and erasure (which take FOR UPDATE on the
-- subject): a withdrawal committed before this returns is seen by gate_batch's
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

-- name: gate_batch
-- The consent decision that counts: evaluated in the committing transaction.
-- Returns one row per reading that was NOT newly stored (accepted is the default).
WITH decided AS (
    SELECT st.idx, st.provider_id, st.reading_id, st.type, st.effective_time,
           st.transport, st.latitude, st.longitude, l.subject_id,
           loc.ok IS NOT NULL AS location_ok,
           CASE
               WHEN st.pre_reason IS NOT NULL THEN st.pre_reason
               WHEN l.subject_id IS NULL OR s.status <> 'active' THEN 'unknown_subject'
               WHEN p.status <> 'active' OR NOT (st.type = ANY (p.types)) THEN 'type_not_approved'
               WHEN NOT EXISTS (
                   SELECT 1 FROM consents c
                   WHERE c.subject_id = l.subject_id
                     AND c.purpose = 'collection'
                     AND (c.provider_id IS NULL OR c.provider_id = st.provider_id)
                     AND (c.types IS NULL OR st.type = ANY (c.types))
                     AND st.effective_time >= c.valid_from
                     AND st.effective_time < c.valid_until
                     AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w
                                     WHERE w.consent_id = c.consent_id)
               ) THEN 'no_consent'
               WHEN st.type = 'geoposition' AND loc.ok IS NULL THEN 'no_consent'
           END AS reason
    FROM staging_readings st
    LEFT JOIN providers p ON p.provider_id = st.provider_id
    LEFT JOIN links l ON l.provider_id = st.provider_id AND l.user_ref = st.user_ref
    LEFT JOIN subjects s ON s.subject_id = l.subject_id
    LEFT JOIN LATERAL (
        SELECT true AS ok FROM consents c
        WHERE c.subject_id = l.subject_id
          AND c.purpose = 'location'
          AND (c.provider_id IS NULL OR c.provider_id = st.provider_id)
          AND st.effective_time >= c.valid_from
          AND st.effective_time < c.valid_until
          AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w WHERE w.consent_id = c.consent_id)
        LIMIT 1
    ) loc ON st.pre_reason IS NULL AND (st.type = 'geoposition' OR st.latitude IS NOT NULL)
),
ranked AS (
    -- Only the first consented copy of a reading id in the batch is inserted.
    SELECT d.*,
           row_number() OVER (PARTITION BY d.reason IS NULL, d.provider_id, d.reading_id,
                                           d.effective_time
                              ORDER BY d.idx) AS copy_no
    FROM decided d
),
inserted AS (
    INSERT INTO readings (effective_time, subject_id, provider_id, reading_id, type, component,
                          value, unit, orig_value, orig_unit, latitude, longitude)
    SELECT d.effective_time, d.subject_id, d.provider_id, d.reading_id, d.type, c.component,
           c.value, c.unit, c.orig_value, c.orig_unit,
           CASE WHEN d.location_ok THEN d.latitude END,
           CASE WHEN d.location_ok THEN d.longitude END
    FROM ranked d
    JOIN staging_components c ON c.idx = d.idx
    WHERE d.reason IS NULL AND d.copy_no = 1
    ON CONFLICT ON CONSTRAINT readings_dedup DO NOTHING
    RETURNING provider_id, reading_id, effective_time
),
refused AS (
    INSERT INTO rejections (provider_id, reading_id, subject_id, reason, transport, effective_time)
    SELECT d.provider_id, d.reading_id, d.subject_id, d.reason, d.transport, d.effective_time
    FROM decided d
    WHERE d.reason IS NOT NULL
)
SELECT d.idx, d.reason
FROM ranked d
LEFT JOIN (SELECT DISTINCT provider_id, reading_id, effective_time FROM inserted) i
       ON i.provider_id = d.provider_id AND i.reading_id = d.reading_id
      AND i.effective_time = d.effective_time AND d.copy_no = 1
WHERE d.reason IS NOT NULL OR i.reading_id IS NULL
