-- Partners (store/partners.py): who may receive audiences (purpose
-- marketing) or readings (purpose disclosure), in which region, which types.

-- name: partner_insert
INSERT INTO partners (partner_id, name, region, purposes, types, created_by)
VALUES (%(partner_id)s, %(name)s, %(region)s, %(purposes)s, %(types)s, %(actor)s)

-- name: partner_get
SELECT partner_id, name, region, purposes, types, created_at
FROM partners WHERE partner_id = %(partner_id)s

-- name: partner_list
SELECT partner_id, name, region, purposes, types, created_at
FROM partners ORDER BY created_at, name

-- name: partner_notices
-- What a partner must be told about people whose data it received: erasure
-- or objection, each person named by that partner's pseudonym.
SELECT notice_id, kind, pseudonym, purpose, created_at
FROM partner_notices WHERE partner_id = %(partner_id)s
ORDER BY notice_id

-- name: partner_notice_insert
INSERT INTO partner_notices (partner_id, kind, pseudonym, purpose, objection_id)
VALUES (%(partner_id)s, %(kind)s, %(pseudonym)s, %(purpose)s, %(objection_id)s)
ON CONFLICT DO NOTHING
RETURNING notice_id
