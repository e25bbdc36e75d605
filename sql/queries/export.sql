-- Pseudonymised Parquet exports (flows/export.py). One REPEATABLE READ
-- transaction per export: the cut-off is its start time, every query sees
-- the same snapshot, and the export is recorded in the same transaction.

-- name: export_create_temp
CREATE TEMP TABLE IF NOT EXISTS export_map (
    subject_id  uuid PRIMARY KEY,
    pseudonym   text NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS export_consents (
    subject_id  uuid NOT NULL,
    provider_id uuid,
    types       text[]
) ON COMMIT DROP

-- name: export_work_mem
-- The readings COPY sorts by type and time.
SET LOCAL work_mem = '64MB'

-- name: export_cutoff
SELECT now()

-- name: export_consents
-- Unwithdrawn research consents covering the cut-off, of subjects that may
-- go to this region: FI residents only to FI; nobody being erased; nobody
-- with an unlifted research objection (it beats every research consent).
INSERT INTO export_consents (subject_id, provider_id, types)
SELECT c.subject_id, c.provider_id, c.types
FROM consents c
JOIN subjects s ON s.subject_id = c.subject_id
WHERE c.purpose = 'research'
  AND c.valid_from <= %(cutoff)s AND %(cutoff)s < c.valid_until
  AND c.granted_at <= %(cutoff)s
  AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w WHERE w.consent_id = c.consent_id)
  AND s.status <> 'erasing'
  AND (s.residency = %(region)s OR %(region)s = 'FI')
  AND NOT EXISTS (
      SELECT 1 FROM objections o
      WHERE o.subject_id = c.subject_id AND o.purpose = 'research'
        AND NOT EXISTS (SELECT 1 FROM objection_lifts l WHERE l.objection_id = o.objection_id))

-- name: export_subject_ids
SELECT DISTINCT subject_id FROM export_consents ORDER BY subject_id

-- name: export_copy_map
COPY export_map (subject_id, pseudonym) FROM STDIN

-- name: export_readings
-- Long format, ordered so each type=/date= partition arrives in one run.
-- effective_time as epoch microseconds (UTC), the partition date alongside.
-- Never: coordinates, geoposition, erroneous readings, ids, user refs.
COPY (
    SELECT m.pseudonym, r.type, r.component,
           (extract(epoch FROM r.effective_time) * 1000000)::bigint,
           r.value, r.unit,
           to_char(r.effective_time AT TIME ZONE 'UTC', 'YYYY-MM-DD')
    FROM readings r
    JOIN export_map m ON m.subject_id = r.subject_id
    WHERE NOT r.erroneous
      AND r.type <> 'geoposition'
      AND r.component NOT IN ('latitude', 'longitude')
      AND r.effective_time <= %(cutoff)s
      AND r.received_at <= %(cutoff)s
      AND EXISTS (SELECT 1 FROM export_consents c
                  WHERE c.subject_id = r.subject_id
                    AND (c.provider_id IS NULL OR c.provider_id = r.provider_id)
                    AND (c.types IS NULL OR r.type = ANY (c.types)))
    ORDER BY r.type, r.effective_time
) TO STDOUT (FORMAT csv)

-- name: export_groups
-- Memberships valid at the cut-off of subjects in this export who still hold
-- an unwithdrawn analytics consent (groups exist only under that consent).
SELECT m.pseudonym, g.group_key, g.rule_version, g.valid_from, g.valid_until,
       g.evidence::text
FROM group_memberships g
JOIN export_map m ON m.subject_id = g.subject_id
WHERE g.valid_from <= %(cutoff)s
  AND (g.valid_until IS NULL OR g.valid_until > %(cutoff)s)
  AND EXISTS (SELECT 1 FROM consents c
              WHERE c.subject_id = g.subject_id AND c.purpose = 'analytics'
                AND c.valid_from <= %(cutoff)s AND %(cutoff)s < c.valid_until
                AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w
                                WHERE w.consent_id = c.consent_id))
  -- ... and only memberships whose evidence the research consent covers: every
  -- evidence key's reading types (%(evidence_types)s: key -> [types], [] for no
  -- health data, null or missing for every type) within the subject's research
  -- consents at the cut-off. Evidence aggregates readings of any provider, so
  -- only a research consent not limited to one provider covers it.
  AND NOT EXISTS (
      SELECT 1
      FROM jsonb_object_keys(g.evidence) AS k(key)
      CROSS JOIN LATERAL (SELECT %(evidence_types)s::jsonb -> k.key AS need) n
      WHERE CASE
          WHEN n.need IS NULL OR jsonb_typeof(n.need) <> 'array' THEN
              NOT EXISTS (SELECT 1 FROM export_consents c
                          WHERE c.subject_id = g.subject_id AND c.provider_id IS NULL
                            AND c.types IS NULL)
          ELSE EXISTS (
              SELECT 1 FROM jsonb_array_elements_text(n.need) AS t(type)
              WHERE NOT EXISTS (SELECT 1 FROM export_consents c
                                WHERE c.subject_id = g.subject_id AND c.provider_id IS NULL
                                  AND (c.types IS NULL OR t.type = ANY (c.types))))
      END)
ORDER BY m.pseudonym, g.group_key

-- name: export_insert
INSERT INTO exports (export_id, region, cutoff, salt_enc, path, subject_count, row_count,
                     created_by)
VALUES (%(export_id)s, %(region)s, %(cutoff)s, %(salt_enc)s, %(path)s, %(subject_count)s,
        %(row_count)s, %(actor)s)

-- name: export_copy_subjects
COPY export_subjects (export_id, subject_id) FROM STDIN

-- name: export_salt
SELECT salt_enc, region, cutoff, path FROM exports WHERE export_id = %(export_id)s

-- name: export_erasure_lock_shared
-- Held (session level) by every running export from before its snapshot to
-- after its commit; erasure takes it exclusively before it marks a subject
-- 'erasing', so an export either sees the subject as erasing (and leaves it
-- out) or commits first (and the erasure queues it for purge).
SELECT pg_advisory_lock_shared(7669746165787074)

-- name: export_erasure_unlock_shared
SELECT pg_advisory_unlock_shared(7669746165787074)
