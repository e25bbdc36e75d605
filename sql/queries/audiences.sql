-- Audiences for marketing (flows/audience.py). One REPEATABLE READ
-- transaction per audience (the cut-off is its start): the members, the
-- list written out, the per-subject log of a partner's audience and the
-- record all see the same snapshot, objections and withdrawals included.

-- name: audience_create_temp
CREATE TEMP TABLE IF NOT EXISTS audience_subjects (
    subject_id  uuid PRIMARY KEY
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS audience_map (
    subject_id  uuid PRIMARY KEY,
    member      text NOT NULL
) ON COMMIT DROP

-- name: audience_select
-- Subjects in the group at the cut-off (an open membership, still backed by
-- an unwithdrawn analytics consent: groups exist only under it) who hold an
-- unwithdrawn marketing consent covering the cut-off and no unlifted
-- marketing objection. For a partner (partner_id not null) also: no unlifted
-- disclosure objection, general or for that partner, and FI residents only
-- when the partner's region is FI. Active subjects only (nobody erasing or
-- whose relationship ended).
INSERT INTO audience_subjects (subject_id)
SELECT DISTINCT g.subject_id
FROM group_memberships g
JOIN subjects s ON s.subject_id = g.subject_id
WHERE g.group_key = %(group)s
  AND g.valid_from <= %(cutoff)s
  AND (g.valid_until IS NULL OR g.valid_until > %(cutoff)s)
  AND s.status = 'active'
  AND EXISTS (
      SELECT 1 FROM consents c
      WHERE c.subject_id = g.subject_id AND c.purpose = 'analytics'
        AND c.valid_from <= %(cutoff)s AND %(cutoff)s < c.valid_until
        AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w WHERE w.consent_id = c.consent_id))
  AND EXISTS (
      SELECT 1 FROM consents c
      WHERE c.subject_id = g.subject_id AND c.purpose = 'marketing'
        AND c.valid_from <= %(cutoff)s AND %(cutoff)s < c.valid_until
        AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w WHERE w.consent_id = c.consent_id))
  AND NOT EXISTS (
      SELECT 1 FROM objections o
      WHERE o.subject_id = g.subject_id AND o.purpose = 'marketing'
        AND NOT EXISTS (SELECT 1 FROM objection_lifts l WHERE l.objection_id = o.objection_id))
  AND (%(partner_id)s::uuid IS NULL OR (
      (s.residency = 'EU' OR %(region)s::text = 'FI')
      AND NOT EXISTS (
          SELECT 1 FROM objections o
          WHERE o.subject_id = g.subject_id AND o.purpose = 'disclosure'
            AND (o.partner_id IS NULL OR o.partner_id = %(partner_id)s::uuid)
            AND NOT EXISTS (SELECT 1 FROM objection_lifts l
                            WHERE l.objection_id = o.objection_id))))

-- name: audience_subject_ids
SELECT subject_id FROM audience_subjects ORDER BY subject_id

-- name: audience_copy_map
COPY audience_map (subject_id, member) FROM STDIN

-- name: audience_members
-- Sorted by member: for a partner the pseudonyms, so two partners' lists of
-- the same people cannot be lined up by position.
SELECT member FROM audience_map ORDER BY member

-- name: audience_log
-- A partner's audience is a disclosure: one log row per member.
INSERT INTO partner_disclosures (disclosure_id, kind, partner_id, subject_id, disclosed_at,
                                 what, rows)
SELECT %(audience_id)s, 'audience', %(partner_id)s, subject_id, %(cutoff)s,
       jsonb_build_object('group', %(group)s::text), 1
FROM audience_subjects

-- name: audience_insert
INSERT INTO audiences (audience_id, group_key, partner_id, cutoff, path, member_count,
                       created_by)
VALUES (%(audience_id)s, %(group)s, %(partner_id)s, %(cutoff)s, %(path)s, %(members)s,
        %(actor)s)
