-- Objections (store/objections.py): the person's prohibitions, append-only
-- like consents. An objection beats every consent of its purpose in every
-- flow run that starts after it committed; a lift is another row.

-- name: objection_insert
INSERT INTO objections (objection_id, subject_id, purpose, partner_id, objected_by)
VALUES (%(objection_id)s, %(subject_id)s, %(purpose)s, %(partner_id)s, %(actor)s)
RETURNING objected_at

-- name: objection_subject
SELECT o.subject_id, o.purpose, o.partner_id, l.lifted_at
FROM objections o LEFT JOIN objection_lifts l USING (objection_id)
WHERE o.objection_id = %(objection_id)s

-- name: objection_lift_insert
INSERT INTO objection_lifts (objection_id, lifted_by)
VALUES (%(objection_id)s, %(actor)s)
RETURNING lifted_at

-- name: objection_history
SELECT o.objection_id, o.purpose, o.partner_id, o.objected_at, o.objected_by,
       l.lifted_at, l.lifted_by
FROM objections o LEFT JOIN objection_lifts l USING (objection_id)
WHERE o.subject_id = %(subject_id)s
ORDER BY o.objected_at, o.objection_id

-- name: objection_partners_to_notify
-- Partners that received the subject's data which this objection concerns:
-- a disclosure objection, everything the partner (or, without one, every
-- partner) received; a marketing objection, the partners' audiences.
SELECT DISTINCT d.partner_id
FROM partner_disclosures d
WHERE d.subject_id = %(subject_id)s
  AND CASE %(purpose)s
          WHEN 'disclosure' THEN %(partner_id)s::uuid IS NULL
                                 OR d.partner_id = %(partner_id)s::uuid
          WHEN 'marketing' THEN d.kind = 'audience'
          ELSE false
      END
ORDER BY d.partner_id

-- name: objection_queue_purge_research
-- A research objection, like a research withdrawal: every past export still
-- holding the subject is queued for purge.
INSERT INTO export_purge_queue (export_id, subject_id, cause)
SELECT es.export_id, es.subject_id, 'research_withdrawn'
FROM export_subjects es
WHERE es.subject_id = %(subject_id)s AND es.purged_at IS NULL
ON CONFLICT DO NOTHING

-- name: objection_erasure_flag
-- Erasure is the only deletion the append-only trigger lets through.
SET LOCAL vitals.erasure = 'on'

-- name: objection_erase
WITH l AS (
    DELETE FROM objection_lifts
    WHERE objection_id IN (SELECT objection_id FROM objections WHERE subject_id = %(subject_id)s)
    RETURNING 1
), o AS (
    DELETE FROM objections WHERE subject_id = %(subject_id)s RETURNING 1
)
SELECT (SELECT count(*) FROM o) AS objections, (SELECT count(*) FROM l) AS objection_lifts
