-- Disclosures of readings to a partner (flows/disclosure.py), the per-subject
-- log of everything partners received (readings and audiences), and what
-- erasure and late objections owe partners. One REPEATABLE READ transaction
-- per disclosure: its start is the cut-off, every query sees that snapshot.

-- name: disclosure_create_temp
CREATE TEMP TABLE IF NOT EXISTS disclosure_map (
    subject_id  uuid PRIMARY KEY,
    pseudonym   text NOT NULL
) ON COMMIT DROP

-- name: disclosure_subjects
-- Active subjects with readings of the partner's types and no disclosure
-- objection (general or for this partner) unlifted in this snapshot; FI
-- residents only to a partner in region FI. Nobody being erased.
SELECT s.subject_id
FROM subjects s
WHERE s.status = 'active'
  AND (s.residency = 'EU' OR %(region)s = 'FI')
  AND NOT EXISTS (
      SELECT 1 FROM objections o
      WHERE o.subject_id = s.subject_id AND o.purpose = 'disclosure'
        AND (o.partner_id IS NULL OR o.partner_id = %(partner_id)s)
        AND NOT EXISTS (SELECT 1 FROM objection_lifts l WHERE l.objection_id = o.objection_id))
  AND EXISTS (
      SELECT 1 FROM readings r
      WHERE r.subject_id = s.subject_id AND r.type = ANY (%(types)s) AND NOT r.erroneous)
ORDER BY s.subject_id

-- name: disclosure_copy_map
COPY disclosure_map (subject_id, pseudonym) FROM STDIN

-- name: disclosure_readings
-- The export's long format under the partner's pseudonym, ordered so each
-- type=/date= partition arrives in one run. Never: coordinates, geoposition,
-- erroneous readings, ids, user refs, types the partner was not agreed.
COPY (
    SELECT m.pseudonym, r.type, r.component,
           (extract(epoch FROM r.effective_time) * 1000000)::bigint,
           r.value, r.unit,
           to_char(r.effective_time AT TIME ZONE 'UTC', 'YYYY-MM-DD')
    FROM readings r
    JOIN disclosure_map m ON m.subject_id = r.subject_id
    WHERE NOT r.erroneous
      AND r.type = ANY (%(types)s)
      AND r.type <> 'geoposition'
      AND r.component NOT IN ('latitude', 'longitude')
      AND r.effective_time <= %(cutoff)s
      AND r.received_at <= %(cutoff)s
    ORDER BY r.type, r.effective_time
) TO STDOUT (FORMAT csv)

-- name: disclosure_log_readings
-- One log row per subject disclosed: rows per type, in the same snapshot as
-- the files (the same filter as disclosure_readings).
INSERT INTO partner_disclosures (disclosure_id, kind, partner_id, subject_id, disclosed_at,
                                 what, rows)
SELECT %(disclosure_id)s, 'readings', %(partner_id)s, t.subject_id, %(cutoff)s,
       jsonb_build_object('types', jsonb_object_agg(t.type, t.n)), sum(t.n)
FROM (
    SELECT r.subject_id, r.type, count(*) AS n
    FROM readings r
    JOIN disclosure_map m ON m.subject_id = r.subject_id
    WHERE NOT r.erroneous
      AND r.type = ANY (%(types)s)
      AND r.type <> 'geoposition'
      AND r.component NOT IN ('latitude', 'longitude')
      AND r.effective_time <= %(cutoff)s
      AND r.received_at <= %(cutoff)s
    GROUP BY r.subject_id, r.type
) t
GROUP BY t.subject_id

-- name: disclosure_insert
INSERT INTO disclosures (disclosure_id, partner_id, types, cutoff, path, subject_count,
                         row_count, created_by)
VALUES (%(disclosure_id)s, %(partner_id)s, %(types)s, %(cutoff)s, %(path)s,
        %(subject_count)s, %(row_count)s, %(actor)s)

-- name: disclosure_late_objections
-- Objections committed while a disclosure or audience was being written
-- (its snapshot could not see them) by people it went out with, and that
-- concern it: the partner is owed a notice (sent once per objection).
SELECT d.partner_id, d.subject_id, o.objection_id, o.purpose
FROM partner_disclosures d
JOIN objections o ON o.subject_id = d.subject_id
WHERE d.disclosure_id = %(disclosure_id)s
  AND CASE o.purpose
          WHEN 'disclosure' THEN o.partner_id IS NULL OR o.partner_id = d.partner_id
          WHEN 'marketing' THEN d.kind = 'audience'
          ELSE false
      END
  AND NOT EXISTS (SELECT 1 FROM objection_lifts l WHERE l.objection_id = o.objection_id)
ORDER BY d.partner_id, d.subject_id, o.objection_id

-- name: disclosure_partners_of_subject
SELECT DISTINCT partner_id FROM partner_disclosures
WHERE subject_id = %(subject_id)s ORDER BY partner_id

-- name: disclosure_log_pseudonymise
-- Erasure: the log keeps what went where and when, the person only as the
-- keyed hash of the erasure receipt.
UPDATE partner_disclosures SET subject_id = NULL, subject_hash = %(subject_hash)s
WHERE subject_id = %(subject_id)s

-- name: disclosure_history
SELECT d.disclosure_id, d.kind, d.partner_id, p.name AS partner_name,
       p.region AS partner_region, d.disclosed_at, d.what, d.rows
FROM partner_disclosures d JOIN partners p USING (partner_id)
WHERE d.subject_id = %(subject_id)s
ORDER BY d.disclosed_at, d.entry_id
