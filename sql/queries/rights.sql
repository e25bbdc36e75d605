-- name: extract_subject
SELECT subject_id, residency, status, relationship_end, created_at
FROM subjects WHERE subject_id = %(subject_id)s

-- name: extract_readings
SELECT reading_id, provider_id, type, component, effective_time, value, unit,
       orig_value, orig_unit, latitude, longitude, received_at, erroneous
FROM readings WHERE subject_id = %(subject_id)s
ORDER BY effective_time, reading_id, component

-- name: extract_readings_by_reading
-- The same rows, the components of one reading adjacent (the FHIR extract
-- writes one Observation per reading).
SELECT reading_id, provider_id, type, component, effective_time, value, unit,
       orig_value, orig_unit, latitude, longitude, received_at, erroneous
FROM readings WHERE subject_id = %(subject_id)s
ORDER BY effective_time, provider_id, reading_id, type, component

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

-- name: erasure_export_lock
-- Waits for running exports to commit (see export_erasure_lock_shared).
SELECT pg_advisory_xact_lock(7669746165787074)

-- name: queue_purge_research_withdrawn
-- A research consent was withdrawn: every export still holding the subject
-- is queued for purge.
INSERT INTO export_purge_queue (export_id, subject_id, cause)
SELECT es.export_id, es.subject_id, 'research_withdrawn'
FROM consents c
JOIN export_subjects es ON es.subject_id = c.subject_id
WHERE c.consent_id = %(consent_id)s AND c.purpose = 'research' AND es.purged_at IS NULL
ON CONFLICT DO NOTHING

-- name: erasure_queue_exports
-- Step 2: remember which past exports hold the subject, by pseudonym, with
-- the receipt that stays 'pending_purge' until the purge has done them all.
INSERT INTO export_purge_queue (export_id, pseudonym, cause, subject_hash)
SELECT es.export_id, %(pseudonym)s, 'erasure', %(subject_hash)s
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

-- name: aggregate_refresh_role
-- TimescaleDB: the role that owns the aggregates (migration 0007), when the
-- connected role may act as it.
SELECT EXISTS (
    SELECT 1 FROM pg_roles
    WHERE rolname = 'vitals_aggregates' AND pg_has_role('vitals_aggregates', 'MEMBER')
)

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
-- regular expression for its id); rights.erasure rewrites them.
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
-- The database holds nothing of the subject now; the erasure is complete
-- only when no export is still queued for purge under this receipt.
WITH s AS (DELETE FROM subjects WHERE subject_id = %(subject_id)s RETURNING 1),
pending AS (
    SELECT EXISTS (SELECT 1 FROM export_purge_queue
                   WHERE subject_hash = %(subject_hash)s) AS any
)
UPDATE erasure_receipts
SET database_erased_at = coalesce(database_erased_at, now()),
    status = CASE WHEN pending.any THEN 'pending_purge' ELSE 'complete' END,
    completed_at = CASE WHEN pending.any THEN NULL ELSE coalesce(completed_at, now()) END
FROM pending
WHERE subject_hash = %(subject_hash)s

-- name: erasure_receipt
SELECT r.subject_hash, r.requested_at, r.completed_at, r.erased_by, r.counts, r.status,
       r.database_erased_at,
       (SELECT count(DISTINCT export_id) FROM export_purge_queue q
        WHERE q.subject_hash = r.subject_hash) AS exports_pending_purge
FROM erasure_receipts r WHERE r.subject_hash = %(subject_hash)s

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

-- name: queue_purge_residency
-- A subject corrected to residency FI may be in past exports to region EU,
-- where FI residents never go: queue those exports for purge.
INSERT INTO export_purge_queue (export_id, subject_id, cause)
SELECT es.export_id, es.subject_id, 'residency'
FROM export_subjects es
JOIN exports e USING (export_id)
JOIN subjects s ON s.subject_id = es.subject_id
WHERE es.subject_id = %(subject_id)s AND es.purged_at IS NULL
  AND s.residency = 'FI' AND e.region = 'EU'
ON CONFLICT DO NOTHING

-- name: purge_lock
-- One purge at a time (CLI, API, scheduled flow): two would rewrite the same files.
SELECT pg_advisory_lock(7669746170757267)

-- name: purge_orphans
-- Disclosure-log rows of subjects that no longer exist (an export that
-- committed while its subject was being erased): their rows must go from the
-- export, and the raw subject id from the log.
SELECT es.export_id, es.subject_id, e.salt_enc
FROM export_subjects es JOIN exports e USING (export_id)
WHERE NOT EXISTS (SELECT 1 FROM subjects s WHERE s.subject_id = es.subject_id)
ORDER BY es.export_id, es.subject_id

-- name: purge_queue_pseudonym
INSERT INTO export_purge_queue (export_id, pseudonym, cause, subject_hash)
VALUES (%(export_id)s, %(pseudonym)s, 'erasure', %(subject_hash)s)
ON CONFLICT DO NOTHING

-- name: purge_forget_orphan
DELETE FROM export_subjects
WHERE export_id = %(export_id)s AND subject_id = %(subject_id)s
  AND NOT EXISTS (SELECT 1 FROM subjects s WHERE s.subject_id = %(subject_id)s)

-- name: purge_detect
-- Subjects still in an export (not purged from it) who may no longer be
-- there: no unwithdrawn research consent covering now (withdrawn, expired),
-- an unlifted research objection, or FI residents in an export to region EU.
-- Catches what raced an export.
INSERT INTO export_purge_queue (export_id, subject_id, cause)
SELECT es.export_id, es.subject_id,
       CASE WHEN s.residency = 'FI' AND e.region = 'EU' THEN 'residency'
            ELSE 'research_withdrawn' END
FROM export_subjects es
JOIN exports e USING (export_id)
JOIN subjects s ON s.subject_id = es.subject_id
WHERE es.purged_at IS NULL
  AND ((s.residency = 'FI' AND e.region = 'EU')
       OR EXISTS (
           SELECT 1 FROM objections o
           WHERE o.subject_id = es.subject_id AND o.purpose = 'research'
             AND NOT EXISTS (SELECT 1 FROM objection_lifts l
                             WHERE l.objection_id = o.objection_id))
       OR NOT EXISTS (
           SELECT 1 FROM consents c
           WHERE c.subject_id = es.subject_id AND c.purpose = 'research'
             AND c.valid_from <= now() AND now() < c.valid_until
             AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w
                             WHERE w.consent_id = c.consent_id)))
ON CONFLICT DO NOTHING

-- name: purge_pending_count
SELECT count(*) AS entries, count(DISTINCT export_id) AS exports FROM export_purge_queue

-- name: purge_exports
-- Exports with queued work, oldest first.
SELECT e.export_id, e.path, e.salt_enc
FROM exports e
WHERE EXISTS (SELECT 1 FROM export_purge_queue q WHERE q.export_id = e.export_id)
ORDER BY e.created_at, e.export_id

-- name: purge_queued
-- This export's queue entries; the ones read now are the ones marked done.
SELECT queue_id, pseudonym, subject_id
FROM export_purge_queue WHERE export_id = %(export_id)s
ORDER BY queue_id

-- name: purge_failed
UPDATE export_purge_queue
SET attempts = attempts + 1, last_attempt_at = now(), last_error = %(error)s
WHERE queue_id = ANY (%(queue_ids)s)

-- name: purge_done
-- The export is rewritten: its entries leave the queue and its subjects are
-- marked purged in the disclosure log.
WITH d AS (
    DELETE FROM export_purge_queue WHERE queue_id = ANY (%(queue_ids)s)
), es AS (
    UPDATE export_subjects SET purged_at = now()
    WHERE export_id = %(export_id)s AND subject_id = ANY (%(subject_ids)s)
)
UPDATE exports SET purged_at = now(), row_count = %(row_count)s
WHERE export_id = %(export_id)s

-- name: purge_complete_receipts
-- Erasures whose exports are all purged are complete.
UPDATE erasure_receipts er
SET status = 'complete', completed_at = now()
WHERE er.status = 'pending_purge'
  AND NOT EXISTS (SELECT 1 FROM export_purge_queue q WHERE q.subject_hash = er.subject_hash)
