-- name: extract_subject
SELECT subject_id, residency, status, relationship_end, created_at
FROM subjects WHERE subject_id = %(subject_id)s

-- name: extract_readings
SELECT reading_id, provider_id, type, component, effective_time, value, unit,
       orig_value, orig_unit, latitude, longitude, received_at, erroneous
FROM readings WHERE subject_id = %(subject_id)s
ORDER BY effective_time, reading_id, component

-- name: extract_groups
SELECT group_key, rule_version, evidence, valid_from, valid_until, end_reason
FROM group_memberships WHERE subject_id = %(subject_id)s
ORDER BY valid_from, group_key

-- name: extract_rejections
SELECT provider_id, reading_id, reason, transport, effective_time, received_at
FROM rejections WHERE subject_id = %(subject_id)s
ORDER BY received_at

-- name: extract_disclosures
SELECT e.export_id, e.region, e.cutoff, e.created_at, e.created_by, e.purged_at
FROM export_subjects es JOIN exports e USING (export_id)
WHERE es.subject_id = %(subject_id)s
ORDER BY e.created_at

-- name: erasure_begin
-- Step 1: the subject stops being active (new readings: unknown_subject) and a
-- receipt records the request. Re-running finds the receipt and continues.
WITH s AS (
    UPDATE subjects SET status = 'erasing' WHERE subject_id = %(subject_id)s
    RETURNING subject_id
)
INSERT INTO erasure_receipts (subject_hash, erased_by)
SELECT %(subject_hash)s, %(actor)s FROM s
ON CONFLICT (subject_hash) DO NOTHING

-- name: erasure_queue_exports
-- Step 2: remember which past exports hold the subject, by pseudonym.
INSERT INTO export_purge_queue (export_id, pseudonym, cause)
SELECT es.export_id, %(pseudonym)s, 'erasure'
FROM export_subjects es
WHERE es.subject_id = %(subject_id)s AND es.export_id = %(export_id)s
ON CONFLICT DO NOTHING

-- name: erasure_exports_of
SELECT e.export_id, e.salt_enc
FROM export_subjects es JOIN exports e USING (export_id)
WHERE es.subject_id = %(subject_id)s

-- name: erasure_delete_readings
-- Step 3, in bounded chunks. Rows are matched by their key, not ctid: on a
-- hypertable ctid repeats across chunks and compressed chunks have none.
WITH doomed AS (
    SELECT provider_id, reading_id, component, effective_time
    FROM readings WHERE subject_id = %(subject_id)s LIMIT %(chunk)s
)
DELETE FROM readings r USING doomed d
WHERE r.subject_id = %(subject_id)s
  AND r.provider_id = d.provider_id AND r.reading_id = d.reading_id
  AND r.component = d.component AND r.effective_time = d.effective_time

-- name: erasure_continuous_aggregates
-- TimescaleDB only: aggregates over readings to refresh after deleting rows.
SELECT format('%I.%I', view_schema, view_name)
FROM timescaledb_information.continuous_aggregates
WHERE hypertable_name = 'readings'

-- name: timescaledb_present
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')

-- name: erasure_delete_rest
-- Step 4: everything else that names the subject, then the subject itself.
WITH g AS (DELETE FROM group_memberships WHERE subject_id = %(subject_id)s RETURNING 1),
     r AS (DELETE FROM rejections WHERE subject_id = %(subject_id)s RETURNING 1),
     l AS (DELETE FROM links WHERE subject_id = %(subject_id)s RETURNING 1),
     x AS (DELETE FROM export_subjects WHERE subject_id = %(subject_id)s RETURNING 1)
SELECT (SELECT count(*) FROM g) AS groups, (SELECT count(*) FROM r) AS rejections,
       (SELECT count(*) FROM l) AS links, (SELECT count(*) FROM x) AS disclosures

-- name: erasure_delete_consents
WITH w AS (
    DELETE FROM consent_withdrawals
    WHERE consent_id IN (SELECT consent_id FROM consents WHERE subject_id = %(subject_id)s)
    RETURNING 1
), c AS (
    DELETE FROM consents WHERE subject_id = %(subject_id)s RETURNING 1
)
SELECT (SELECT count(*) FROM c) AS consents, (SELECT count(*) FROM w) AS withdrawals

-- name: erasure_audit_entries
-- Every audit entry naming the subject, in any case or format (`pattern` is a
-- regular expression for its id); flows.rights.pseudonymise_audit rewrites them.
SELECT audit_id, subject_ref, detail
FROM audit_log
WHERE subject_ref ~* %(pattern)s OR detail::text ~* %(pattern)s
ORDER BY audit_id
FOR UPDATE

-- name: erasure_audit_update
UPDATE audit_log SET subject_ref = %(subject_ref)s, detail = %(detail)s
WHERE audit_id = %(audit_id)s

-- name: erasure_delete_late_rejections
-- Last step, under the subject's lock: rejections a concurrent batch recorded
-- with the subject id after step 4.
DELETE FROM rejections WHERE subject_id = %(subject_id)s

-- name: erasure_add_counts
UPDATE erasure_receipts
SET counts = counts || (
    SELECT coalesce(jsonb_object_agg(k, coalesce((counts ->> k)::bigint, 0) + v::bigint), '{}')
    FROM jsonb_each_text(%(counts)s) AS t(k, v))
WHERE subject_hash = %(subject_hash)s

-- name: erasure_finish
WITH s AS (DELETE FROM subjects WHERE subject_id = %(subject_id)s RETURNING 1)
UPDATE erasure_receipts SET completed_at = now() WHERE subject_hash = %(subject_hash)s

-- name: erasure_receipt
SELECT subject_hash, requested_at, completed_at, erased_by, counts
FROM erasure_receipts WHERE subject_hash = %(subject_hash)s

-- name: mark_reading_erroneous
UPDATE readings SET erroneous = %(erroneous)s
WHERE subject_id = %(subject_id)s AND provider_id = %(provider_id)s
  AND reading_id = %(reading_id)s
RETURNING component, erroneous

-- name: delete_reading
DELETE FROM readings
WHERE subject_id = %(subject_id)s AND provider_id = %(provider_id)s
  AND reading_id = %(reading_id)s
RETURNING component

-- name: set_residency
UPDATE subjects SET residency = %(residency)s WHERE subject_id = %(subject_id)s

-- name: set_relationship_end
UPDATE subjects SET relationship_end = %(relationship_end)s WHERE subject_id = %(subject_id)s

-- name: delete_link
DELETE FROM links WHERE subject_id = %(subject_id)s AND provider_id = %(provider_id)s
  AND user_ref = %(user_ref)s
RETURNING provider_id

-- name: purge_exports
SELECT export_id, path, salt_enc FROM exports ORDER BY created_at

-- name: purge_queued
SELECT pseudonym FROM export_purge_queue WHERE export_id = %(export_id)s

-- name: purge_research_withdrawn
-- Subjects disclosed in an export who no longer hold a research consent now.
SELECT es.subject_id
FROM export_subjects es
WHERE es.export_id = %(export_id)s
  AND NOT EXISTS (
      SELECT 1 FROM consents c
      WHERE c.subject_id = es.subject_id AND c.purpose = 'research'
        AND c.valid_from <= now() AND now() < c.valid_until
        AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w WHERE w.consent_id = c.consent_id))

-- name: purge_done
WITH d AS (DELETE FROM export_purge_queue WHERE export_id = %(export_id)s)
UPDATE exports SET purged_at = now(), row_count = %(row_count)s
WHERE export_id = %(export_id)s
