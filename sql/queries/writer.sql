-- name: create_staging
-- Per-connection staging, emptied at every commit: one row per reading, no values.
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    idx             integer NOT NULL,
    provider_id     uuid NOT NULL,
    reading_id      text,
    user_ref        text,
    type            text,
    effective_time  timestamptz,
    pre_reason      text
) ON COMMIT DELETE ROWS

-- name: copy_staging_readings
COPY staging_readings (idx, provider_id, reading_id, user_ref, type, effective_time, pre_reason)
FROM STDIN (FORMAT BINARY)

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

-- name: decide_batch
-- The consent decision that counts, made in the committing transaction, set-based:
-- the batch's subjects' live consents (withdrawals anti-joined once per consent),
-- one hashed semi-join per purpose for the readings they cover, probed per
-- reading through hashed subplans (no per-reading sort or aggregate). Records
-- refusals (never a value) and returns the decision of every reading staged
-- without pre_reason: the reason (NULL = store it; 'duplicate' = a resend), the
-- subject (its 16 bytes, as the writer's COPY sends a uuid), and whether its
-- coordinates may be kept. The writer then COPYs the components it may store.
WITH base AS (
    SELECT st.idx, st.provider_id, st.reading_id, st.type, st.effective_time, st.pre_reason,
           l.subject_id, s.status AS subject_status,
           p.status AS provider_status, p.types AS provider_types
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
    SELECT b.idx, b.provider_id, b.reading_id, b.subject_id, b.effective_time, b.pre_reason,
           b.idx IN (SELECT idx FROM located) AS location_ok,
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
refused AS (
    INSERT INTO rejections (provider_id, reading_id, subject_id, reason, transport, effective_time)
    SELECT d.provider_id, d.reading_id, d.subject_id, d.reason, %(transport)s, d.effective_time
    FROM decided d
    WHERE d.reason IS NOT NULL AND d.reason <> 'duplicate'
)
SELECT d.idx, d.reason, uuid_send(d.subject_id), d.location_ok
FROM decided d
WHERE d.pre_reason IS NULL

-- name: copy_readings
COPY readings (effective_time, subject_id, provider_id, reading_id, type, component,
               value, unit, orig_value, orig_unit, latitude, longitude) FROM STDIN (FORMAT BINARY)
